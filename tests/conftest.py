import atexit
import os
import shutil
import tempfile

# Many tests (and the subprocesses some start) compile the same programs: the smoke networks'
# initialisation and train steps. JAX's persistent compilation cache compiles each once per run.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='jax-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
# The tests run on the CPU. With the compile extra installed (libtpu, the CUDA plugin), JAX
# would otherwise also start those backends: the CUDA plugin logs a traceback when it finds no
# CUDA, libtpu warns, and the plugin is then unusable for compiling (docs/compile.md).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
  """`smoke_run(stage)`: the workdir of the stage's `:smoke` preset trained by `main` (its default
  4 steps), trained at most once per test session (per worker process) and shared."""
  from configs import irm1, irm2, tem  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import main  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('smoke_runs')
  modules, runs = {'irm1': irm1, 'irm2': irm2, 'tem': tem}, {}

  def get(stage):
    if stage not in runs:
      main.run(modules[stage].get_config('smoke'), str(root / stage))
      runs[stage] = root / stage
    return runs[stage]

  return get


@pytest.fixture(scope='session')
def smoke_runs(smoke_run):
  """{stage: workdir} of the three `:smoke` presets (`smoke_run`), for the training and cascade
  tests."""
  return {stage: smoke_run(stage) for stage in ('irm1', 'irm2', 'tem')}
