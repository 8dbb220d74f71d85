"""TensorFlow stays in the data pipeline: accelerator machines often have JAX but no TensorFlow."""

import subprocess
import sys


def test_models_configs_and_main_do_not_import_tensorflow():
  code = ('import sys\n'
          'import diffbfr_jax.main, diffbfr_jax.models, diffbfr_jax.summary\n'
          'import configs.irm1, configs.irm2, configs.tem\n'
          'bad = sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tensorflow_datasets"))\n'
          'assert not bad, bad\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
