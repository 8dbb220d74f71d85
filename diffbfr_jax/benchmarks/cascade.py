r"""Seconds per face of the whole jitted cascade (the restore job's function, without file I/O).

  python -m diffbfr_jax.benchmarks.cascade --cascade= --size=demo --batch=4
  python -m diffbfr_jax.benchmarks.cascade --cascade=fast --size=demo --batch=4

Builds the enabled stages of `configs/cascade.py:CASCADE,SIZE` with the architecture of the
stage configs at that size (`configs/<stage>.py:SIZE`; '' = the paper's) and freshly initialised parameters (the time
does not depend on their values), runs the cascade once to compile, then prints the network
evaluations per face and the seconds per face of the median of --repeats timed runs, split over
all local devices as the restore job does.
"""

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from diffbfr_jax import cascade
from diffbfr_jax import config_files
from diffbfr_jax import models
from diffbfr_jax import parallel

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a program, so importing `measure` defines no flags.
  flags.DEFINE_string('cascade', '', "configs/cascade.py's cascade: '' (the paper's), 'fast', "
                      "'irm_c_t', 'irm_c' or 'irm_s'.")
  flags.DEFINE_string('size', 'demo', "Network size: '' (the paper's), 'demo' or 'smoke'.")
  flags.DEFINE_string('dtype', '', "Compute dtype of every stage: '' (the config's), 'float32' "
                      "or 'bfloat16'.")
  flags.DEFINE_integer('batch', 4, 'Faces per batch (a multiple of the local devices).')
  flags.DEFINE_integer('repeats', 3, 'Timed runs; the median is reported.')
  flags.DEFINE_string('config_dir', 'configs', 'The folder of the stage and cascade configs.')


def stage_configs(size: str, config_dir: str) -> dict:
  return {name: config_files.stage_config(config_dir, name, size) for name in cascade.STAGES}


def measure(config, *, size: str, batch: int, repeats: int, config_dir: str = 'configs'):
  """Returns ({stage: network evaluations per face}, median seconds per face)."""
  stages, params = [], {}
  for name, sc in stage_configs(size, config_dir).items():
    if not config[name].enabled:
      continue
    if config[name].dtype:
      sc.model.dtype = config[name].dtype
    stage = cascade.build_stage(name, sc.model_type, sc.model, sc.diffusion,
                                config[name].sampling)
    params[name] = jax.jit(stage.model.init)(jax.random.key(0),
                                             *models.example_inputs(stage.model))['params']
    stages.append(stage)
  cascade.check_sizes(stages, config.image_size)
  run = parallel.jit_over_local_devices(cascade.make_cascade(stages))
  params = parallel.place_state(params)
  image = config.image_size
  inputs = {'lq': jax.random.uniform(jax.random.key(1), (batch, image, image, 3), jnp.float32,
                                     -1, 1),
            'key': jax.random.split(jax.random.key(2), batch)}
  jax.block_until_ready(run(params, inputs))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(run(params, inputs))
    times.append(time.perf_counter() - t0)
  return {s.name: cascade.num_steps(s) for s in stages}, statistics.median(times) / batch


def main(argv):
  del argv
  config = config_files.stage_config(FLAGS.config_dir, 'cascade', f'{FLAGS.cascade},{FLAGS.size}')
  for name in cascade.STAGES:
    config[name].dtype = FLAGS.dtype
  evaluations, per_face = measure(config, size=FLAGS.size, batch=FLAGS.batch,
                                  repeats=FLAGS.repeats, config_dir=FLAGS.config_dir)
  dtypes = {name: config[name].dtype or 'as trained' for name in evaluations}
  print(f'device: {parallel.device_label()}  cascade: '
        f'{FLAGS.cascade or "paper"}  size: {FLAGS.size or "paper"}  image: {config.image_size}  '
        f'batch: {FLAGS.batch}  dtype: {dtypes}')
  print('network evaluations per face: ' + ' + '.join(
      f'{n} {c}' for n, c in evaluations.items()) + f' = {sum(evaluations.values())}')
  print(f'cascade: {per_face:.3f} s per face')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
