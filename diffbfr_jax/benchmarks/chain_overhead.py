r"""Time per reverse step inside the jitted chain against one bare jitted network evaluation.

  python -m diffbfr_jax.benchmarks.chain_overhead --config=configs/irm1.py:demo --steps=100

Prints both times (median of --repeats runs, after a compile run) and the chain's overhead. The
network has freshly initialised parameters; the time does not depend on their values.
"""

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from diffbfr_jax import models
from diffbfr_jax import parallel
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a program, so importing `measure` defines no flags.
  config_flags.DEFINE_config_file('config', None, 'A stage config, e.g. configs/tem.py:demo.')
  flags.DEFINE_integer('steps', 100, 'Reverse steps in the timed chain.')
  flags.DEFINE_integer('batch', 4, 'Images per batch.')
  flags.DEFINE_integer('repeats', 5, 'Timed runs of each; the median is reported.')
  flags.mark_flag_as_required('config')

def _median_seconds(fn, repeats):
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure(config, *, steps, batch, repeats):
  """Returns (seconds per bare network evaluation, seconds per chain step)."""
  model = models.create_model(config.model_type, **config.model)
  size = config.model.image_size
  x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
  cond_channels = config.model.in_channels - 3
  cond = jax.random.normal(jax.random.key(2), (batch, size, size, cond_channels)) \
      if cond_channels else None
  time_input = models.TIME_INPUT[config.model_type]
  schedule = schedules.make_schedule(**config.diffusion.schedule)
  t = schedules.model_time(schedule, jnp.full((batch,), steps - 1), time_input)
  params = jax.jit(model.init)(jax.random.key(0), x, t, cond)

  # Parameters are arguments, not closed-over constants, as in training and sampling.
  bare = jax.jit(model.apply)

  @jax.jit
  def chain(params, key, start, c):
    return samplers.sample_chain(
        lambda x_t, time_, cc: model.apply(params, x_t, time_, cc), schedule, key, start,
        num_steps=steps, time_input=time_input, cond=c, variance=config.sampling.variance,
        clip_x0=config.sampling.clip_x0)

  per_eval = _median_seconds(lambda: bare(params, x, t, cond), repeats)
  per_step = _median_seconds(lambda: chain(params, jax.random.key(3), x, cond), repeats) / steps
  return per_eval, per_step


def main(argv):
  del argv
  config = FLAGS.config
  per_eval, per_step = measure(config, steps=FLAGS.steps, batch=FLAGS.batch,
                               repeats=FLAGS.repeats)
  print(f'device: {parallel.device_label()}  stage: {config.stage}  '
        f'image: {config.model.image_size}  batch: {FLAGS.batch}  steps: {FLAGS.steps}')
  print(f'bare network evaluation: {per_eval * 1e3:.3f} ms')
  print(f'chain, per reverse step: {per_step * 1e3:.3f} ms')
  print(f'chain overhead: {100 * (per_step / per_eval - 1):+.1f}%')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
