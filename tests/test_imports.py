"""TensorFlow stays in the data pipeline: accelerator machines often have JAX but no TensorFlow."""

import subprocess
import sys

_TENSORFLOW_FREE = [
    'diffbfr_jax.main', 'diffbfr_jax.models', 'diffbfr_jax.jobs.summary', 'diffbfr_jax.diffusion.samplers',
    'diffbfr_jax.diffusion.losses', 'diffbfr_jax.benchmarks.chain_overhead',
    'diffbfr_jax.benchmarks.train_step', 'diffbfr_jax.benchmarks.peer', 'diffbfr_jax.train',
    'diffbfr_jax.cascade', 'diffbfr_jax.benchmarks.accelerator',
    'diffbfr_jax.benchmarks.compile_for', 'diffbfr_jax.benchmarks.feeding',
    'diffbfr_jax.jobs.restore', 'diffbfr_jax.benchmarks.cascade', 'diffbfr_jax.jobs.evaluate',
    'diffbfr_jax.metrics.psnr_ssim', 'diffbfr_jax.metrics.lpips', 'diffbfr_jax.metrics.niqe',
    'diffbfr_jax.metrics.inception', 'diffbfr_jax.metrics.fid',
    'diffbfr_jax.benchmarks.metrics', 'configs.irm1', 'configs.irm2', 'configs.tem',
    'configs.cascade', 'configs.evaluate', 'diffbfr_jax.data.device_degradation',
    'diffbfr_jax.jobs.sample', 'configs.sample', 'diffbfr_jax.jobs.clean', 'configs.clean',
    'diffbfr_jax.jobs.iterate', 'configs.iterate', 'diffbfr_jax.jobs.longtail', 'configs.longtail',
    'diffbfr_jax.jobs.train', 'diffbfr_jax.jobs.convert', 'diffbfr_jax.jobs.demo',
    'diffbfr_jax.jobs.make_test_set', 'diffbfr_jax.jobs.prepare', 'diffbfr_jax.rounds',
]


def test_modules_do_not_import_tensorflow():
  # One process imports them one after another and looks after each: the first module that
  # pulls TensorFlow in is named (imports only add to sys.modules).
  code = (f'import importlib, sys\n'
          f'for module in {_TENSORFLOW_FREE!r}:\n'
          '  importlib.import_module(module)\n'
          '  bad = sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tensorflow_datasets"))\n'
          '  assert not bad, (module, bad[:5])\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]


def test_the_package_never_imports_the_top_level_configs_folder():
  """configs/ is the command-line interface, not part of the package: a job that needs a config
  file loads it by path (diffbfr_jax/config_files.py), so the package works wherever it is
  installed. Every module is imported from another folder, where `configs` cannot be found."""
  import pathlib  # pylint: disable=g-import-not-at-top
  package = pathlib.Path(__file__).resolve().parent.parent / 'diffbfr_jax'
  modules = sorted('.'.join(p.relative_to(package.parent).with_suffix('').parts)
                   for p in package.rglob('*.py') if p.name != '__init__.py')
  code = ('import importlib, sys\n'
          f'for m in {modules!r}:\n'
          '  importlib.import_module(m)\n'
          'assert "configs" not in sys.modules\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=package.parent / 'tests' / 'models')
  assert result.returncode == 0, result.stderr[-3000:]
  for path in package.rglob('*.py'):
    for line in path.read_text().splitlines():
      assert not line.strip().startswith(('from configs', 'import configs')), (path, line)


def test_only_parallel_py_asks_about_devices_and_processes():
  """Everything else is written for one device; the benchmarks ask parallel.py too."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  package = pathlib.Path(__file__).resolve().parent.parent / 'diffbfr_jax'
  query = re.compile(r'jax\.(devices|local_devices|device_count|local_device_count|process_index'
                     r'|process_count|sharding\.Mesh)\(')
  offenders = [f'{path.relative_to(package)}:{n}' for path in package.rglob('*.py')
               if path.name != 'parallel.py'
               for n, line in enumerate(path.read_text().splitlines(), 1) if query.search(line)]
  assert not offenders, offenders
