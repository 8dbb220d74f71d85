"""A round of the cascade on a set of faces, as the demo and iterate jobs run one: each stage
trained unless it is trained already, a held-out test set degraded once (made again when its
settings change), and a cascade config chained to the trained stages' folders.

The jobs' configs name a folder of config files (`config_dir`) and a size preset of the stages
(`networks`); `ConfigFiles` reads each (file, preset) of that folder once per run and hands out
copies, from which the stage, cascade, restore, clean, sample and evaluate configs are built.
"""

import copy
import json
import pathlib
import shutil
import time

import numpy as np
from PIL import Image

from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import config_checks
from diffbfr_jax import config_files
from diffbfr_jax import parallel
from diffbfr_jax import resume


class ConfigFiles:
  """The config files of `config_dir` with the stages' size preset `networks` ('' = the
  paper's) after any other preset; each (file, presets) loaded once, a copy handed out."""

  def __init__(self, config_dir, networks: str = ''):
    self.config_dir, self.networks, self._loaded = config_dir, networks, {}

  def get(self, name: str, *presets: str):
    """A copy of `<config_dir>/<name>.py`'s get_config('PRESET,...,NETWORKS')."""
    arg = ','.join(p for p in (*presets, self.networks) if p) or None
    if (name, arg) not in self._loaded:
      self._loaded[name, arg] = config_files.stage_config(self.config_dir, name, arg)
    return copy.deepcopy(self._loaded[name, arg])


def stage_config(files: ConfigFiles, name: str, *, seed: int, steps: int = 0, faces=None,
                 condition: str = '', save_only_at_end: bool = False):
  """The training config of stage `name` ('irm1', 'irm2', 'tem'): `steps` optimizer steps (0:
  the stage's own), on the folder `faces` (None: the stage config's source), conditioned on
  `condition` ('' : the stage's own). Checkpoints keep the stage's period, at most the run's
  steps, or with `save_only_at_end` come at the last step only."""
  stage = files.get(name)
  stage.seed = seed
  if faces is not None:
    stage.data.source.update(kind='folder', path=str(faces))
  if condition:
    stage.data.condition = condition
  if steps:
    stage.train.num_steps = steps
  period = stage.train.num_steps if save_only_at_end else stage.train.checkpoint_every
  stage.train.checkpoint_every = min(period, stage.train.num_steps)
  return stage


def train_unless_trained(label: str, stage, folder: pathlib.Path) -> None:
  """Trains `stage` in `folder` up to its num_steps, going on from the folder's last checkpoint;
  nothing when it holds that many steps already. Prints a line before and after."""
  from diffbfr_jax import train  # pylint: disable=g-import-not-at-top (TensorFlow for data)

  steps, done = stage.train.num_steps, checkpointing.trained_step(folder)
  if done >= steps:
    print(f'{label}: trained already ({done} steps) in {folder}', flush=True)
    return
  size, source = stage.model.image_size, stage.data.source
  faces = source.path if source.kind == 'folder' else source.kind
  print(f'{label}: training steps {done}..{steps}, batch {stage.train.batch_size} at '
        f'{size}x{size}, on {faces} (progress in the log file) ...', flush=True)
  config_checks.check_stage_config(stage)
  config_checks.check_data_source(stage)
  start = time.perf_counter()
  train.train_and_evaluate(stage, str(folder))
  print(f'    {label}: done in {time.perf_counter() - start:.0f} s', flush=True)


def copy_checkpoint(source: pathlib.Path, checkpoints: pathlib.Path) -> None:
  """Copies the checkpoint folder `source` into `checkpoints` unless that holds a step already
  (a training run then goes on from it)."""
  if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
    return
  partial = checkpoints / f'{source.name}.copying'
  shutil.rmtree(partial, ignore_errors=True)
  shutil.copytree(source, partial)
  partial.rename(checkpoints / source.name)


def held_out_set(folder: pathlib.Path, *, size: int, seed: int, degradation) -> pathlib.Path:
  """The held-out faces bundled with scikit-image at `size`, degraded with `degradation` (the
  paper's Eq. 13) and `seed` into the make_test_set layout (lq/, gt/, manifest.json), once:
  made again only when these settings differ from those it was made from. Process 0 writes it,
  the others wait, so that no process reads a half-written set."""
  made_from = {'faces': 'bundled test', 'size': size, 'seed': seed,
               'degradation': degradation.to_dict()}

  def write():
    if (folder / 'manifest.json').exists() and resume.reusable(folder, made_from, 'the test set'):
      return
    from diffbfr_jax.data import tensorflow_cpu  # pylint: disable=g-import-not-at-top (TensorFlow)
    from diffbfr_jax.data import sources  # pylint: disable=g-import-not-at-top
    from diffbfr_jax.data import testset  # pylint: disable=g-import-not-at-top

    shutil.rmtree(folder, ignore_errors=True)  # made here alone, from the bundled faces
    tensorflow_cpu.keep_tensorflow_on_cpu()
    sources.write_bundled_faces('test', size, folder / 'hq')
    testset.write_test_set(str(folder / 'hq'), str(folder), size=size, seed=seed,
                           degradation=dict(degradation))
    resume.record(folder, made_from)

  parallel.on_main_process('rounds: held-out set written', write)
  return folder


def read_test_set(folder: pathlib.Path):
  """(names, LQ, GT) of a make_test_set folder, uint8 [N, S, S, 3], in its manifest's order."""
  manifest = json.loads((folder / 'manifest.json').read_text())
  names = [entry['name'] for entry in manifest['images']]

  def read(kind):
    return np.stack([np.asarray(Image.open(folder / entry[kind]))
                     for entry in manifest['images']])

  return names, read('lq'), read('gt')


def chain(ccfg, folders: dict, *, fast, params: str, sampling) -> None:
  """Points a cascade-like config (the restore and clean jobs', configs/cascade.py) at the
  trained stages `folders` ({stage: workdir}), switching the others off: each sampled with the
  weights `params`, the chains of `fast` (configs/cascade.py's `fast` preset; None keeps the
  config's) and then the fields of `sampling[stage]` on top."""
  for name in cascade.STAGES:
    if name not in folders:
      ccfg[name].enabled = False
      continue
    ccfg[name].update(enabled=True, checkpoint=str(folders[name]), params=params)
    if fast is not None:
      ccfg[name].sampling.update({f: fast[name].sampling[f] for f in cascade.CHAIN_FIELDS})
    ccfg[name].sampling.update(sampling[name])
