"""The prepared datasets: built by the prepare job from local folders, read by name."""

import json
import logging

import numpy as np
from PIL import Image
import pytest

from configs import irm2
from configs import prepare as prepare_config
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax.data import pipeline
from diffbfr_jax.data import prepared
from diffbfr_jax.data import sources


def _prepare(name, manual_dir, data_dir, workdir=None):
  config = prepare_config.get_config()
  config.prepare.update(name=name, manual_dir=str(manual_dir), data_dir=str(data_dir))
  return main.run(config, workdir and str(workdir))


@pytest.mark.parametrize('name', ['face_folder/512', 'face_folder/512_raw'])
def test_face_folder_holds_the_folder_sources_faces_at_512(face_folder, tmp_path, caplog, name):
  with caplog.at_level(logging.WARNING):
    summary = _prepare(name, face_folder, tmp_path / 'tfds', tmp_path / 'job')
  assert summary['splits'] == {'train': 6}  # the 4 undecodable files left out
  assert json.loads((tmp_path / 'job' / 'summary.json').read_text()) == summary
  assert 'corrupt.png' in caplog.text and 'truncated.png' in caplog.text
  prepared = sources.make_source('tfds', 512, tfds_name=name, data_dir=str(tmp_path / 'tfds'))
  folder = sources.FolderSource(face_folder, 512)
  readable = {}
  for i in range(len(folder)):
    try:
      readable[folder.name(i)] = folder.load(i)
    except errors.DecodeError:
      pass
  names = [prepared.records[i]['name'] for i in range(len(prepared))]
  names = [n.decode() if isinstance(n, bytes) else n for n in names]
  assert sorted(names) == sorted(readable)
  for i, file in enumerate(names):  # PNG is lossless: the same pixels as the folder's
    np.testing.assert_array_equal(prepared.load(i), readable[file])
    assert prepared.name(i) == f'{name}[{i}] {file}'


def test_a_stage_trains_from_the_prepared_dataset_with_exact_resume(face_folder, tmp_path):
  _prepare('face_folder/512', face_folder, tmp_path / 'tfds')
  config = irm2.get_config('smoke')
  config.data.source = dict(kind='tfds', tfds_name='face_folder/512', split='train',
                            data_dir=str(tmp_path / 'tfds'), path='', manual_dir='')

  def batches(start_step, n):
    ds, _ = pipeline.from_config(config, start_step=start_step, process_index=0,
                                 process_count=1, local_devices=1)
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]

  straight, resumed = batches(0, 3), batches(2, 1)
  size = config.data.image_size
  assert straight[0]['gt'].shape == (1, config.train.batch_size, size, size, 3)
  for key in straight[2]:
    np.testing.assert_array_equal(straight[2][key], resumed[0][key])


def _pairs(root):
  rng = np.random.default_rng(0)
  images = {}
  for name in ('a.png', 'b/c.png', 'd.png'):
    lq = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for folder, image in (('lq', lq), ('gt', gt)):
      (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(root / folder / name)
    images[name] = (lq, gt)
  return images


def test_face_pairs_keep_each_lq_with_its_gt(tmp_path):
  images = _pairs(tmp_path / 'test_set')
  assert _prepare('face_pairs', tmp_path / 'test_set', tmp_path / 'tfds')['splits'] == {'test': 3}
  builder = prepared.tfds.builder('face_pairs', data_dir=str(tmp_path / 'tfds'))
  records = builder.as_data_source(split='test')
  for i in range(len(records)):
    record = records[i]
    name = record['name'].decode() if isinstance(record['name'], bytes) else record['name']
    np.testing.assert_array_equal(record['lq'], images[name][0])
    np.testing.assert_array_equal(record['gt'], images[name][1])


def test_a_prepared_field_is_listed_from_its_names_index_without_reading_records(
    tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  images = _pairs(tmp_path / 'test_set')
  _prepare('face_pairs', tmp_path / 'test_set', tmp_path / 'tfds')
  reads = []

  class Counting:  # the data source, counting the records read
    def __init__(self, records):
      self.records = records

    def __len__(self):
      return len(self.records)

    def __getitem__(self, i):
      reads.append(i)
      return self.records[i]

  original = tfds.core.DatasetBuilder.as_data_source
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'as_data_source',
                      lambda self, **kw: Counting(original(self, **kw)))
  spec = 'tfds:face_pairs:gt'
  first = sources.image_set(spec, data_dir=str(tmp_path / 'tfds'))
  assert first.names == sorted(images) and len(reads) == 3  # every record, once
  reads.clear()
  second = sources.image_set(spec, data_dir=str(tmp_path / 'tfds'))
  assert second.names == sorted(images) and reads == []  # the index only
  name = sorted(images)[1]
  np.testing.assert_array_equal(second.decode(name), images[name][1])
  assert len(reads) == 1


def test_an_undecodable_pair_is_left_out_and_named(tmp_path, caplog):
  images = _pairs(tmp_path / 'test_set')
  broken = sorted(images)[0]
  (tmp_path / 'test_set' / 'gt' / broken).write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  with caplog.at_level(logging.WARNING):
    summary = _prepare('face_pairs', tmp_path / 'test_set', tmp_path / 'tfds')
  assert summary['splits'] == {'test': 2}
  builder = prepared.tfds.builder('face_pairs', data_dir=str(tmp_path / 'tfds'))
  records = builder.as_data_source(split='test')
  names = sorted(str(records[i]['name'], 'utf-8') if isinstance(records[i]['name'], bytes)
                 else records[i]['name'] for i in range(len(records)))
  assert names == sorted(images)[1:]
  assert '1 pair(s) left out' in caplog.text and broken in caplog.text


def test_unpaired_files_and_missing_folders_are_named(tmp_path):
  _pairs(tmp_path / 'test_set')
  (tmp_path / 'test_set' / 'gt' / 'b' / 'c.png').unlink()
  with pytest.raises(errors.NotFound, match=r'lq/ has 3 images and gt/ 2; not in both: b/c'):
    _prepare('face_pairs', tmp_path / 'test_set', tmp_path / 'tfds')
  with pytest.raises(errors.NotFound, match=r"manual_dir '.*nowhere' is not a folder"):
    _prepare('face_folder/512', tmp_path / 'nowhere', tmp_path / 'tfds')
  with pytest.raises(errors.NotFound, match=r"TFDS dataset 'no_such_faces'"):
    _prepare('no_such_faces', tmp_path / 'test_set', tmp_path / 'tfds')
