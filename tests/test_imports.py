"""TensorFlow stays in the data pipeline: accelerator machines often have JAX but no TensorFlow."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize('module', [
    'diffbfr_jax.main', 'diffbfr_jax.models', 'diffbfr_jax.summary', 'diffbfr_jax.diffusion.samplers',
    'diffbfr_jax.diffusion.losses', 'diffbfr_jax.benchmarks.chain_overhead',
    'diffbfr_jax.benchmarks.train_step', 'diffbfr_jax.train', 'diffbfr_jax.cascade',
    'diffbfr_jax.restore', 'diffbfr_jax.benchmarks.cascade', 'diffbfr_jax.evaluate',
    'diffbfr_jax.metrics.psnr_ssim', 'diffbfr_jax.metrics.lpips', 'diffbfr_jax.metrics.niqe',
    'diffbfr_jax.metrics.inception', 'diffbfr_jax.metrics.fid',
    'diffbfr_jax.benchmarks.metrics', 'configs.irm1', 'configs.irm2', 'configs.tem',
    'configs.cascade', 'configs.evaluate',
])
def test_module_does_not_import_tensorflow(module):
  code = (f'import sys, {module}\n'
          'bad = sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tensorflow_datasets"))\n'
          'assert not bad, bad\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
