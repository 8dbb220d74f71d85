r"""Train-step throughput and peak memory of a stage, with synthetic batches (no data pipeline).

  python -m diffbfr_jax.benchmarks.train_step --config=configs/irm1.py:demo --steps=10

Prints images per second of the pmapped train step (median over --steps timed steps after a
compile step) and the peak memory: the accelerator's `peak_bytes_in_use` where JAX reports it,
otherwise the process's peak resident memory (CPU).
"""

import functools
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from diffbfr_jax import models
from diffbfr_jax import parallel
from diffbfr_jax import train
from diffbfr_jax.diffusion import schedules

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a program, so importing `measure` defines no flags.
  config_flags.DEFINE_config_file('config', None, 'A stage config, e.g. configs/irm1.py:demo.')
  flags.DEFINE_integer('steps', 10, 'Timed train steps.')
  flags.mark_flag_as_required('config')


def model_and_step(config, devices=None, donate_state: bool = False):
  """(the network, the optimizer, the pmapped train step): the train job's, over `devices` (this
  process's by default; parallel.pmap_train_step)."""
  tc = config.train
  model = models.create_model(config.model_type, **config.model)
  schedule = schedules.make_schedule(**config.diffusion.schedule)
  tx, lr_schedule = train.make_optimizer(optimizer=tc.optimizer, learning_rate=tc.learning_rate,
                                         warmup_steps=tc.warmup_steps,
                                         weight_decay=tc.weight_decay, grad_clip=tc.grad_clip)
  step_fn = parallel.pmap_train_step(functools.partial(
      train.train_step, loss_fn=train.make_loss_fn(config, model, schedule), tx=tx,
      ema_decay=tc.ema_decay, microbatches=tc.microbatches, lr_schedule=lr_schedule),
      devices=devices, donate_state=donate_state)
  return model, tx, step_fn


def build(config):
  """(the pmapped train step, the placed state, the step key): the train job's step."""
  model, tx, step_fn = model_and_step(config)
  state = parallel.place_state(train.create_state(config, model, tx, jax.random.key(0)))
  return step_fn, state, jax.random.key(1)


def flops_per_image(config) -> float:
  """XLA's FLOPs (a multiply-add counts 2) of the train step for one image: forward, backward
  and the optimizer, from the cost analysis of the step lowered at one image per device. Nothing
  is compiled or allocated."""
  model, tx, step_fn = model_and_step(config)
  state = jax.eval_shape(lambda: train.create_state(config, model, tx, jax.random.key(0)))
  batch = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                 synthetic_batch(config, 1))
  return flops(step_fn.lower(state, batch, jax.random.key(1)).cost_analysis())


def flops(cost_analysis) -> float:
  """The FLOPs of a lowered or compiled step's `cost_analysis()` (a dict; a list of one dict
  per program in older JAX)."""
  first = cost_analysis[0] if isinstance(cost_analysis, (list, tuple)) else cost_analysis
  return float(first['flops'])


def synthetic_batch(config, per_device_batch: int) -> dict:
  """Uniform random images, `per_device_batch` on each local device, as the step takes them."""
  devices = parallel.local_device_count()
  size = config.model.image_size
  rng = np.random.default_rng(0)
  shape = (devices, per_device_batch, size, size, 3)
  batch = {'gt': rng.uniform(-1, 1, shape).astype(np.float32),
           'id': np.arange(devices * per_device_batch).reshape(devices, per_device_batch)}
  if config.model.in_channels > 3:
    batch['cond'] = rng.uniform(-1, 1, shape).astype(np.float32)
  return batch


def median_step_seconds(step_fn, state, batch, key, steps: int) -> float:
  """Median seconds of `steps` train steps, after one untimed step (the compile, if any)."""
  state, metrics = step_fn(state, batch, key)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def peak_memory():
  """(peak bytes, where they were read): the accelerator's `peak_bytes_in_use` where JAX reports
  it, otherwise the process's peak resident memory (CPU)."""
  stats = parallel.device_memory_stats()
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'], 'device peak_bytes_in_use'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'process peak RSS'


def measure(config, *, steps: int):
  """Returns (images per second, peak bytes, where the peak was read)."""
  batch_size = config.train.batch_size
  step_fn, state, key = build(config)
  batch = synthetic_batch(config, batch_size // parallel.local_device_count())
  seconds = median_step_seconds(step_fn, state, batch, key, steps)
  peak, where = peak_memory()
  return batch_size / seconds, peak, where


def main(argv):
  del argv
  config = FLAGS.config
  rate, peak, where = measure(config, steps=FLAGS.steps)
  print(f'device: {parallel.device_label()}  stage: '
        f'{config.stage}  image: {config.model.image_size}  batch: {config.train.batch_size}  '
        f'dtype: {config.model.dtype}  remat: {config.model.remat}  microbatches: '
        f'{config.train.microbatches}')
  print(f'train step: {rate:.3g} images/s ({config.train.batch_size / rate:.3g} s per step)')
  print(f'peak memory: {peak / 2**30:.2f} GiB ({where})')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
