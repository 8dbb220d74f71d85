"""The tf.data pipeline: HQ faces -> per-stage examples -> device-shaped batches.

Order (fixed): global example ids for this process from the start step -> load the face (a
deterministic per-epoch shuffle; an undecodable file is replaced by the next one in that order,
logged once and counted) -> degrade (Eq. 13, stateless seed (seed, example id)) -> stage example
-> batch -> [local_devices, per_device_batch, ...] -> prefetch.

Global example id `g = step * global_batch + process_index * local_batch + j`, so a run resumed
at step s reads exactly the examples a straight run reads at step s, and processes read disjoint
shards. Values are float32 in [-1, 1]. Examples: IRM-1 {'cond': LQ, 'gt': GT} at the stage
size; IRM-2 {'cond': condition at 512, 'gt': GT}; TEM {'gt': GT}; every example also has 'id'.
With `degrade_on='device'` the degradation and the stage's resizes move into the train step
(`device_degradation`): the pipeline sends each HQ face with its drawn parameters instead.
"""

import logging
import threading

import numpy as np
import tensorflow as tf

from diffbfr_jax import errors
from diffbfr_jax.data import degradations
from diffbfr_jax.data import sources

STAGES = ('irm1', 'irm2', 'tem')


class ExampleLoader:
  """Maps a global example id to a decoded face, deterministically, skipping bad files.

  Epoch e = g // N visits the source in a permutation seeded by (seed, e); a file that fails to
  decode is replaced by the next file of that permutation, so the same files are always used in
  the same places whatever the start step.
  """

  def __init__(self, source: sources.ImageSource, seed: int, shuffle: bool = True):
    self.source, self.seed, self.shuffle = source, seed, shuffle
    self.skipped: dict[int, str] = {}  # source index -> why it was skipped
    self._lock = threading.Lock()
    self._perms: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._perms:
        n = len(self.source)
        self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
        self._perms[epoch] = (np.random.default_rng([self.seed, epoch]).permutation(n)
                              if self.shuffle else np.arange(n))
      return self._perms[epoch]

  def load(self, example_id) -> tuple[np.ndarray, np.int64]:
    n = len(self.source)
    epoch, position = divmod(int(example_id), n)
    order = self._order(epoch)
    for k in range(n):
      index = int(order[(position + k) % n])
      if index in self.skipped:
        continue
      try:
        return self.source.load(index), np.int64(index)
      except errors.DecodeError as e:
        with self._lock:
          if index not in self.skipped:
            self.skipped[index] = str(e)
            logging.warning('Skipping an undecodable image (%d so far): %s', len(self.skipped), e)
    raise errors.UserError(f'No decodable image in the source: all {n} files failed, e.g. '
                     f'{next(iter(self.skipped.values()))}')


def _resize(image, size: int):
  """Bicubic resize of [H, W, 3] in [0, 1] (antialiased when shrinking), clipped to [0, 1]."""
  out = tf.image.resize(image, (size, size), method='bicubic', antialias=True)
  return tf.clip_by_value(out, 0.0, 1.0)


def _tem_flip(key, degradation: dict):
  """TEM's only random choice: flip the face with probability flip_prob."""
  flip_prob = degradation.get('flip_prob', degradations.DEFAULTS['flip_prob'])
  return tf.random.stateless_uniform([], key) < flip_prob


def make_example(face, seed: int, example_id, *, stage: str, image_size: int,
                 degradation: dict, condition: str = 'gt_down_up', condition_size: int = 128,
                 irm1_pair: str = 'degrade_then_resize'):
  """One stage example from an HQ face (uint8 [S, S, 3]), all randomness from (seed, id)."""
  hq = tf.image.convert_image_dtype(face, tf.float32)
  key = tf.stack([tf.constant(seed, tf.int64), tf.cast(example_id, tf.int64)])
  if stage == 'tem':
    flip = _tem_flip(key, degradation)
    gt = tf.cond(flip, lambda: tf.image.flip_left_right(hq), lambda: hq)
    example = {'gt': _resize(gt, image_size)}
  elif stage == 'irm1':
    if irm1_pair == 'degrade_then_resize':
      lq, gt, _ = degradations.degrade(key, hq, **degradation)
      lq, gt = _resize(lq, image_size), _resize(gt, image_size)
    elif irm1_pair == 'resize_then_degrade':
      lq, gt, _ = degradations.degrade(key, _resize(hq, image_size), **degradation)
    else:
      raise errors.ConfigError(f"config.data.irm1_pair={irm1_pair!r}; expected 'degrade_then_resize' "
                       "or 'resize_then_degrade'")
    example = {'cond': lq, 'gt': gt}
  elif stage == 'irm2':
    if condition == 'gt_down_up':  # no LQ: only the flip of the same draws (degrade's gt)
      flip = degradations.sample_params(key, **degradation)['flip']
      gt = _resize(tf.where(flip, tf.reverse(hq, axis=[1]), hq), image_size)
      cond = _resize(_resize(gt, condition_size), image_size)
    elif condition == 'lq':
      lq, gt, _ = degradations.degrade(key, hq, **degradation)
      gt = _resize(gt, image_size)
      cond = _resize(lq, image_size)
    else:
      raise errors.ConfigError(f"config.data.condition={condition!r}; expected 'gt_down_up' or 'lq'")
    example = {'cond': cond, 'gt': gt}
  else:
    raise ValueError(f'stage={stage!r}; expected one of {STAGES}')
  example = {k: v * 2.0 - 1.0 for k, v in example.items()}
  example['id'] = tf.cast(example_id, tf.int64)
  return example


def device_item(face, seed: int, example_id, *, stage: str, image_size: int, degradation: dict,
                irm1_pair: str = 'degrade_then_resize'):
  """What the host sends when the degradation runs on the device (`degrade_on='device'`): the
  HQ face (uint8, as read), the example's degradation parameters drawn from (seed, id) exactly
  as `make_example` draws them (`degradations.device_params`), and the id.
  `device_degradation.make_example` turns it into the stage's example."""
  key = tf.stack([tf.constant(seed, tf.int64), tf.cast(example_id, tf.int64)])
  face = tf.convert_to_tensor(face, tf.uint8)
  if stage == 'tem':
    params = {'flip': _tem_flip(key, degradation)}
  elif stage in ('irm1', 'irm2'):
    size = face.shape[:2].as_list()
    if stage == 'irm1' and irm1_pair == 'resize_then_degrade':
      size = [image_size, image_size]
    params = degradations.device_params(degradations.sample_params(key, **degradation), size)
  else:
    raise ValueError(f'stage={stage!r}; expected one of {STAGES}')
  return {'hq': face, 'degradation': params,
          'id': tf.cast(example_id, tf.int64)}


def make_dataset(source: sources.ImageSource, *, stage: str, image_size: int, seed: int,
                 global_batch: int, start_step: int = 0, process_index: int = 0,
                 process_count: int = 1, local_devices: int = 1, degradation=None,
                 condition: str = 'gt_down_up', condition_size: int = 128,
                 irm1_pair: str = 'degrade_then_resize', shuffle: bool = True,
                 degrade_on: str = 'host'):
  """An endless dataset of batches `[local_devices, per_device_batch, H, W, C]` for this process.

  With degrade_on='device' the batches hold `device_item`s (faces and parameters) instead of
  examples. Returns the dataset and its `ExampleLoader` (whose `skipped` lists the files skipped
  so far).
  """
  if degrade_on not in ('host', 'device'):
    raise errors.ConfigError(f"config.data.degrade_on={degrade_on!r}; expected 'host' or "
                             "'device'")
  if global_batch % process_count:
    raise errors.ConfigError(f'config.train.batch_size={global_batch} does not split over '
                     f'{process_count} processes')
  local_batch = global_batch // process_count
  if local_batch % local_devices:
    raise errors.ConfigError(f'config.train.batch_size={global_batch} gives {local_batch} examples per '
                     f'process, which does not split over {local_devices} local devices')
  per_device = local_batch // local_devices
  degradation = dict(degradation or {})
  loader = ExampleLoader(source, seed, shuffle)
  size = source.size

  def example_id(k):
    step, j = start_step + k // local_batch, k % local_batch
    return step * global_batch + process_index * local_batch + j

  def load(g):
    face, _ = tf.numpy_function(loader.load, [g], (tf.uint8, tf.int64), stateful=False)
    face.set_shape([size, size, 3])
    return face, g

  def build(face, g):
    if degrade_on == 'device':
      return device_item(face, seed, g, stage=stage, image_size=image_size,
                         degradation=degradation, irm1_pair=irm1_pair)
    return make_example(face, seed, g, stage=stage, image_size=image_size,
                        degradation=degradation, condition=condition,
                        condition_size=condition_size, irm1_pair=irm1_pair)

  def to_devices(batch):
    return tf.nest.map_structure(
        lambda v: tf.reshape(v, [local_devices, per_device] + v.shape[1:].as_list()), batch)

  ds = tf.data.Dataset.range(np.iinfo(np.int64).max // 2).map(example_id)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(to_devices)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
  return ds, loader


def from_config(config, *, start_step: int, process_index: int, process_count: int,
                local_devices: int):
  """The training dataset of a stage config (`config.data`, `config.train.batch_size`)."""
  data = config.data
  source = sources.make_source(size=data.source_size, **data.source)
  return make_dataset(
      source, stage=config.stage, image_size=data.image_size, seed=config.seed,
      global_batch=config.train.batch_size, start_step=start_step, process_index=process_index,
      process_count=process_count, local_devices=local_devices,
      degradation=dict(data.degradation), condition=data.condition,
      condition_size=data.condition_size, irm1_pair=data.irm1_pair, shuffle=data.shuffle,
      degrade_on=data.degrade_on)
