"""The make_test_set job: reproducible pairs and a manifest that reproduces every LQ."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import test_set as test_set_config
from diffbfr_jax.data import degradations
from diffbfr_jax.data import sources
from diffbfr_jax.data import testset


def _write(face_folder, out, **kwargs):
  config = test_set_config.get_config()
  return testset.write_test_set(str(face_folder), str(out), size=32, seed=3,
                                degradation=dict(config.data.degradation), **kwargs)


def test_manifest_reproduces_every_lq_and_lists_skipped_files(face_folder, tmp_path):
  manifest = _write(face_folder, tmp_path / 'set')
  assert len(manifest['images']) == 6
  assert sorted(s['name'] for s in manifest['skipped']) == [
      'a/b/text.jpeg', 'a/truncated.png', 'corrupt.png', 'empty.jpg']
  on_disk = json.loads((tmp_path / 'set' / 'manifest.json').read_text())
  source = sources.FolderSource(face_folder, 32)
  for entry in on_disk['images']:
    face = source.load(source.files.index(entry['name']))
    lq, gt = degradations.apply_params(entry['params'], tf.image.convert_image_dtype(face, tf.float32))
    saved_lq = np.asarray(Image.open(tmp_path / 'set' / entry['lq']))
    saved_gt = np.asarray(Image.open(tmp_path / 'set' / entry['gt']))
    np.testing.assert_array_equal(saved_lq, np.round(lq.numpy() * 255).astype(np.uint8))
    np.testing.assert_array_equal(saved_gt, face)  # no flips in a test set
    assert not entry['params']['flip']


def test_same_folder_and_seed_give_identical_files_and_nothing_is_overwritten(face_folder,
                                                                              tmp_path):
  _write(face_folder, tmp_path / 'one')
  _write(face_folder, tmp_path / 'two')
  for name in ('lq/rgb.png', 'lq/a/b/deep.png', 'gt/photo.png'):
    assert (tmp_path / 'one' / name).read_bytes() == (tmp_path / 'two' / name).read_bytes()
  with pytest.raises(FileExistsError, match='overwrite'):
    _write(face_folder, tmp_path / 'one')
  _write(face_folder, tmp_path / 'one', overwrite=True)


def test_the_job_runs_from_main(face_folder, tmp_path):
  run = lambda *args: subprocess.run(
      [sys.executable, '-m', 'diffbfr_jax.main', '--config=configs/test_set.py', *args],
      capture_output=True, text=True, timeout=300)
  result = run(f'--config.test_set.input_dir={face_folder}',
               f'--config.test_set.output_dir={tmp_path / "out"}', '--config.test_set.size=64')
  assert result.returncode == 0, result.stderr
  assert Image.open(tmp_path / 'out' / 'lq' / 'rgb.png').size == (64, 64)
  missing = run(f'--config.test_set.output_dir={tmp_path / "x"}')
  assert missing.returncode != 0 and 'config.test_set.input_dir' in missing.stderr
  assert 'Traceback' not in missing.stderr


def test_inputs_that_share_a_stem_each_get_their_own_files(tmp_path):
  """a.jpg and a.png (and b.bmp, b.tif, b.webp) were written to one pair each."""
  root = tmp_path / 'hq'
  root.mkdir()
  rng = np.random.default_rng(0)
  names = ['a.jpg', 'a.png', 'b.bmp', 'b.tif', 'b.webp', 'c.png']
  for name in names:
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / name)
  manifest = _write(root, tmp_path / 'set')
  assert [e['name'] for e in manifest['images']] == names
  for kind in ('lq', 'gt'):
    files = sorted(p.name for p in (tmp_path / 'set' / kind).iterdir())
    assert files == ['a_jpg.png', 'a_png.png', 'b_bmp.png', 'b_tif.png', 'b_webp.png', 'c.png']
    assert sorted(e[kind].split('/')[1] for e in manifest['images']) == files
  source = sources.FolderSource(root, 32)
  for entry in manifest['images']:  # each GT file is its own input
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'set' / entry['gt'])),
                                  source.load(source.files.index(entry['name'])))


def test_a_test_set_from_a_prepared_dataset_equals_the_one_from_its_folder(face_folder, tmp_path):
  """`tfds:face_folder/512:image:train` as the input: the faces it holds give the same pairs
  as the folder they were prepared from (whose undecodable files the dataset left out)."""
  from configs import prepare as prepare_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import main  # pylint: disable=g-import-not-at-top

  config = prepare_config.get_config()
  config.prepare.update(name='face_folder/512', manual_dir=str(face_folder),
                        data_dir=str(tmp_path / 'tfds'))
  main.run(config, None)
  options = dict(size=512, seed=5, degradation={'flip_prob': 0.0})  # the dataset's size
  by_name = testset.write_test_set('tfds:face_folder/512:image:train', str(tmp_path / 'a'),
                                   data_dir=str(tmp_path / 'tfds'), **options)
  by_folder = testset.write_test_set(str(face_folder), str(tmp_path / 'b'), **options)
  assert [e['name'] for e in by_name['images']] == [e['name'] for e in by_folder['images']]
  for entry in by_name['images']:
    for side in ('lq', 'gt'):
      np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'a' / entry[side])),
                                    np.asarray(Image.open(tmp_path / 'b' / entry[side])))
  assert not by_name['skipped'] and len(by_folder['skipped']) == 4
