"""Config files loaded by path, as `--config=FILE[:arg]` loads them.

The package never imports the top-level `configs/` folder, so it works wherever it is installed.
A job that needs another config (the demo's stages and cascades, the cascade benchmark's) gets
the folder in a field (`config_dir`, relative to the folder the command runs in), and a stage's
config file is `<config_dir>/<stage>.py`: that rule is written here and nowhere else.
"""

import importlib.util
import pathlib
import sys

from diffbfr_jax import errors


def load(path, arg=None):
  """`get_config(arg)` of the config file at `path`. Config files import their siblings as
  `configs.<name>`, so the folder that holds the config folder is put on sys.path."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.NotFound(f'config file {str(path)!r} does not exist')
  root = str(path.resolve().parent.parent)
  if root not in sys.path:
    sys.path.append(root)
  spec = importlib.util.spec_from_file_location(f'_diffbfr_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def stage_config(config_dir, stage: str, arg=None):
  """The config of `stage` ('irm1', 'irm2', 'tem'; also 'cascade', ...) from `config_dir`."""
  return load(pathlib.Path(config_dir) / f'{stage}.py', arg)
