"""The tf.data pipeline: stage examples, bad files, shards, and exact resume."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from configs import irm1
from configs import irm2
from configs import tem
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import pipeline
from diffbfr_jax.data import sources

SIZES = {'irm1': 16, 'irm2': 32, 'tem': 32}


def _dataset(folder, stage='irm2', **kwargs):
  args = dict(stage=stage, image_size=SIZES[stage], seed=7, global_batch=4, local_devices=2)
  args.update(kwargs)
  return pipeline.make_dataset(sources.FolderSource(folder, 32), **args)


def _take(ds, n):
  return [{k: v.numpy() for k, v in batch.items()} for batch in ds.take(n)]


@pytest.mark.parametrize('stage, keys', [('irm1', {'cond', 'gt', 'id'}),
                                         ('irm2', {'cond', 'gt', 'id'}), ('tem', {'gt', 'id'})])
def test_stage_batches_have_device_shape_dtype_and_range(face_folder, stage, keys):
  ds, _ = _dataset(face_folder, stage)
  (batch,) = _take(ds, 1)
  assert set(batch) == keys
  size = SIZES[stage]
  for key in keys - {'id'}:
    assert batch[key].shape == (2, 2, size, size, 3) and batch[key].dtype == np.float32
    assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
  assert batch['id'].shape == (2, 2)


def test_make_example_runs_eagerly(face_folder):
  face = sources.FolderSource(face_folder, 32).load(0)
  example = pipeline.make_example(face, 3, 11, stage='irm1', image_size=16, degradation={})
  assert example['cond'].shape == (16, 16, 3) and example['gt'].dtype == tf.float32
  # The LQ is degraded: further from the GT than the GT's own rounding.
  assert float(tf.reduce_mean(tf.abs(example['cond'] - example['gt']))) > 0.01


def test_irm2s_default_condition_is_the_degradations_gt_without_an_lq(face_folder):
  from diffbfr_jax.data import degradations  # pylint: disable=g-import-not-at-top
  face = sources.FolderSource(face_folder, 32).load(0)
  hq = tf.image.convert_image_dtype(face, tf.float32)
  flips = set()
  for example_id in range(8):
    example = pipeline.make_example(face, 3, example_id, stage='irm2', image_size=32,
                                    degradation={}, condition_size=16)
    key = tf.stack([tf.constant(3, tf.int64), tf.constant(example_id, tf.int64)])
    _, gt, params = degradations.degrade(key, hq)  # the whole degradation, as before
    flips.add(bool(params['flip']))
    resize = lambda x, s: tf.clip_by_value(
        tf.image.resize(x, (s, s), method='bicubic', antialias=True), 0.0, 1.0)
    np.testing.assert_array_equal(example['gt'].numpy(), resize(gt, 32).numpy() * 2 - 1)
    np.testing.assert_allclose(example['cond'].numpy(),
                               resize(resize(resize(gt, 32), 16), 32).numpy() * 2 - 1, atol=1e-6)
  assert flips == {True, False}


def test_bad_files_are_skipped_counted_and_logged_once(face_folder, caplog):
  ds, loader = _dataset(face_folder)
  with caplog.at_level(logging.WARNING):
    batches = _take(ds, 6)  # 24 examples: four passes over the 6 decodable faces
  source = loader.source
  assert sorted(source.name(i) for i in loader.skipped) == [
      'a/b/text.jpeg', 'a/truncated.png', 'corrupt.png', 'empty.jpg']
  warnings = [r.getMessage() for r in caplog.records if 'undecodable' in r.getMessage()]
  assert len(warnings) == 4 and all(any(n in w for w in warnings) for n in ('corrupt', 'empty'))
  assert len(batches) == 6  # nothing crashed and every batch is full


def test_same_seed_and_start_step_give_the_same_batches(face_folder):
  straight = _take(_dataset(face_folder)[0], 5)
  resumed = _take(_dataset(face_folder, start_step=3)[0], 2)
  for a, b in zip(straight[3:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other_seed = _take(_dataset(face_folder, seed=8)[0], 1)[0]
  assert np.abs(other_seed['cond'] - straight[0]['cond']).max() > 0


def test_two_processes_read_disjoint_shards_of_the_global_batch(face_folder):
  whole = _take(_dataset(face_folder, local_devices=1)[0], 2)
  parts = [_take(_dataset(face_folder, local_devices=1, process_index=p, process_count=2)[0], 2)
           for p in (0, 1)]
  for step in range(2):
    ids = [part[step]['id'].ravel() for part in parts]
    assert not set(ids[0]) & set(ids[1])
    np.testing.assert_array_equal(np.concatenate(ids), whole[step]['id'].ravel())
    np.testing.assert_array_equal(
        np.concatenate([part[step]['gt'][0] for part in parts]), whole[step]['gt'][0])


def test_batch_that_does_not_split_names_the_field(face_folder):
  with pytest.raises(ValueError, match=r'config.train.batch_size=6 .* 4 local devices'):
    _dataset(face_folder, global_batch=6, local_devices=4)


@pytest.mark.parametrize('get_config', [irm1.get_config, irm2.get_config, tem.get_config])
def test_smoke_configs_read_the_bundled_faces(get_config):
  config = get_config('smoke')
  ds, _ = pipeline.from_config(config, start_step=0, process_index=0, process_count=1,
                               local_devices=1)
  (batch,) = _take(ds, 1)
  size = config.data.image_size
  assert batch['gt'].shape == (1, config.train.batch_size, size, size, 3)


def test_a_paper_config_without_a_source_says_what_to_set():
  with pytest.raises(ConfigError, match=r"kind=''.*'bundled'"):
    pipeline.from_config(tem.get_config(), start_step=0, process_index=0, process_count=1,
                         local_devices=1)


@pytest.mark.parametrize('stage', ['irm1', 'irm2', 'tem'])
def test_device_batches_become_the_host_batches_on_the_device(face_folder, stage):
  """degrade_on='device': the pipeline sends faces and parameters; the device-side examples of
  a batch match the host pipeline's batch of the same seed and step (no noise, so the two draw
  nothing different; the JPEG coders differ by rounding)."""
  import jax  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import device_degradation  # pylint: disable=g-import-not-at-top

  options = dict(stage=stage, degradation={'noise_range': (0.0, 0.0)}, start_step=3)
  (host,) = _take(_dataset(face_folder, **options)[0], 1)
  ds, _ = _dataset(face_folder, degrade_on='device', **options)
  device = jax.tree_util.tree_map(lambda v: v.numpy(), next(iter(ds)))
  assert device['hq'].shape == (2, 2, 32, 32, 3) and device['hq'].dtype == np.uint8
  np.testing.assert_array_equal(device['id'], host['id'])
  examples = device_degradation.make_examples(
      jax.tree_util.tree_map(lambda v: v.reshape((4,) + v.shape[2:]), device), stage=stage,
      image_size=SIZES[stage], kernel_size=41, buffer=device_degradation.buffer_size(32, 0.8))
  assert set(examples) == set(host)
  for key in set(host) - {'id'}:
    ours, ref = np.asarray(examples[key]).reshape(host[key].shape), host[key]
    mse = np.mean(((ours - ref) / 2) ** 2)
    assert mse == 0 or 10 * np.log10(1 / mse) > 40, (key, mse)


def test_device_batches_resume_exactly(face_folder):
  import jax  # pylint: disable=g-import-not-at-top
  as_numpy = lambda batch: jax.tree_util.tree_map(lambda v: v.numpy(), batch)
  straight = [as_numpy(b) for b in _dataset(face_folder, degrade_on='device')[0].take(4)]
  resumed = as_numpy(next(iter(_dataset(face_folder, degrade_on='device', start_step=3)[0])))
  jax.tree_util.tree_map(np.testing.assert_array_equal, straight[3], resumed)
  assert not np.array_equal(straight[2]['hq'], straight[3]['hq'])


def test_degrade_on_must_be_host_or_device(face_folder):
  with pytest.raises(ConfigError, match="degrade_on='gpu'"):
    _dataset(face_folder, degrade_on='gpu')
