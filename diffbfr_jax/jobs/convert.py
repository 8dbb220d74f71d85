r"""The convert job: a stage checkpoint from published PyTorch weights.

  python -m diffbfr_jax.main --config=configs/tem.py --config.job=convert \
      --config.convert.source=iddpm_ffhq512_ema500000.pth --workdir=runs/tem_difface

reads the file, maps it onto the stage's network (the config must describe the checkpoint's
network), and writes step 0 of an Orbax checkpoint in `<workdir>/checkpoints` like the ones
training writes: `params` = `ema_params` = the converted weights, a fresh optimizer state, and a
meta item naming the source file and its SHA-256. Training resumes from it (fine-tuning), and the
cascade loads it as the stage (`config.<stage>.checkpoint=<workdir>`).
"""

import hashlib
import logging
import pathlib

import jax

from diffbfr_jax import checkpointing
from diffbfr_jax import config_checks
from diffbfr_jax import errors
from diffbfr_jax import job_outputs
from diffbfr_jax import models
from diffbfr_jax import parallel
from diffbfr_jax import train
from diffbfr_jax.convert import state_dict
from diffbfr_jax.diffusion import schedules


def sha256(path) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def convert(config):
  """(params, note): the stage's parameter tree from `config.convert.source`, and what was read."""
  source = pathlib.Path(config.convert.source)
  if not config.convert.source:
    raise errors.ConfigError('config.convert.source is empty: give the PyTorch .pth file to '
                             'convert')
  if not source.is_file():
    raise errors.NotFound(f'config.convert.source={str(source)!r} does not exist')
  tensors = state_dict.strip_wrappers(state_dict.read(source, key=config.convert.key))
  tensors, buffers = state_dict.split_schedule_buffers(tensors)
  if 'betas' in buffers:
    state_dict.check_betas(buffers['betas'],
                           schedules.make_schedule(**config.diffusion.schedule).betas,
                           source=source)
  params = state_dict.to_flax(tensors, models.abstract_params(config), source=source)
  note = {'file': source.name, 'sha256': sha256(source), 'key': config.convert.key,
          'tensors': len(tensors), 'schedule_buffers_ignored': sorted(buffers),
          'parameters': int(sum(p.size for p in jax.tree_util.tree_leaves(params)))}
  return params, note


def run(config, workdir) -> dict:
  """Writes the converted checkpoint into `workdir`; returns the note stored in its meta, with
  the checkpoint's folder."""
  config_checks.check_stage_config(config)
  workdir = job_outputs.workdir_folder(workdir, 'the converted checkpoint (<workdir>/checkpoints)')
  folder = workdir / 'checkpoints'
  if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()):
    raise errors.Exists(f'{folder} already holds checkpoints; convert into a new workdir')
  params, note = convert(config)
  tc = config.train
  tx, _ = train.make_optimizer(optimizer=tc.optimizer, learning_rate=tc.learning_rate,
                               warmup_steps=tc.warmup_steps, weight_decay=tc.weight_decay,
                               grad_clip=tc.grad_clip)
  # Placed as the train step leaves a state: on several processes every one converts the same
  # file and they save the replicated state together.
  state = parallel.place_state(train.state_from_params(params, tx))
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    ckpt.save(0, state, {**checkpointing.meta_of(config), 'source': note})
    ckpt.wait()
  finally:
    ckpt.close()
  logging.info('Converted %s', note)
  print(f'{config.stage}: {note["parameters"]:,} parameters from {note["file"]} (sha256 '
        f'{note["sha256"]}) written to {folder}/0')
  if note['schedule_buffers_ignored']:
    print(f'  ignored the schedule buffers {", ".join(note["schedule_buffers_ignored"])} '
          '(betas checked against config.diffusion.schedule)')
  return job_outputs.write_summary(workdir, {**note, 'checkpoint': str(folder / '0')})
