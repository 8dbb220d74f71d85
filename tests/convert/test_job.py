"""The convert job end to end: a PyTorch file written by torch.save -> an Orbax checkpoint that
the cascade loads as a stage (same outputs as the PyTorch network) and training resumes from."""

import hashlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import cascade as cascade_config
from configs import irm1, tem
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax import models
from diffbfr_jax.cascade import stage_from_checkpoint
from diffbfr_jax.diffusion import schedules

torch = pytest.importorskip('torch')
from tests.convert import torch_unets  # pylint: disable=g-import-not-at-top,wrong-import-position



def _save_as_published(net, config, path):
  """As the code bases write them: SR3 saves its GaussianDiffusion (the UNet under `denoise_fn.`
  plus float32 schedule buffers); DifFace's weights may carry DataParallel's `module.`."""
  if config.model_type == 'sr3':
    betas = schedules.make_schedule(**config.diffusion.schedule).betas
    gammas = np.cumprod(1 - betas)
    sd = {f'denoise_fn.{k}': v for k, v in net.state_dict().items()}
    sd['betas'] = torch.tensor(betas, dtype=torch.float32)
    sd['alphas_cumprod'] = torch.tensor(gammas, dtype=torch.float32)
  else:
    sd = {f'module.{k}': v for k, v in net.state_dict().items()}
  torch.save(sd, path)


def _convert_config(module, source):
  config = module.get_config('smoke')
  config.job = 'convert'
  config.convert.source = str(source)
  return config


def _inputs(config):
  rng = np.random.default_rng(1)
  size, cond_channels = config.model.image_size, config.model.in_channels - 3
  x_t = rng.standard_normal((2, size, size, 3)).astype(np.float32)
  cond = (rng.standard_normal((2, size, size, cond_channels)).astype(np.float32)
          if cond_channels else None)
  time = (np.array([0.13, 0.87], np.float32) if config.model_type == 'sr3'
          else np.array([3.0, 777.0], np.float32))
  return x_t, time, cond


@pytest.mark.parametrize('module', [irm1, tem], ids=['irm1', 'tem'])
def test_converted_checkpoint_loads_as_a_cascade_stage(module, tmp_path):
  source = tmp_path / 'published.pth'
  workdir = tmp_path / 'run'
  config = _convert_config(module, source)
  net = torch_unets.random_net(config)
  _save_as_published(net, config, source)

  summary = main.run(config, str(workdir))
  note = {k: v for k, v in summary.items() if k != 'checkpoint'}
  assert note['sha256'] == hashlib.sha256(source.read_bytes()).hexdigest()
  assert note['parameters'] == sum(p.numel() for p in net.parameters())
  assert note['schedule_buffers_ignored'] == (
      ['alphas_cumprod', 'betas'] if config.model_type == 'sr3' else [])
  folder, step = checkpointing.find(workdir)
  assert step == 0 and checkpointing.read_meta(folder, 0)['source'] == note
  assert summary['checkpoint'] == str(workdir / 'checkpoints' / '0')

  stage_config = cascade_config.get_config(',smoke')[config.stage]
  stage_config.checkpoint = str(workdir)
  stage, params = stage_from_checkpoint(config.stage, stage_config)
  x_t, time, cond = _inputs(config)
  x = x_t if cond is None else np.concatenate([cond, x_t], -1)
  with torch.no_grad():
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                   torch.from_numpy(time)).numpy().transpose(0, 2, 3, 1)
  ours = np.asarray(stage.apply(params, x_t, time, cond))
  ratio = np.abs(ours - expected).max() / np.abs(expected).max()
  assert ratio < 1e-5, f'max|ours - torch| / max|torch| = {ratio:.3g}'

  with pytest.raises(FileExistsError, match='already holds checkpoints'):
    main.run(config, str(workdir))


def test_training_resumes_from_a_converted_checkpoint(tmp_path):
  source, workdir = tmp_path / 'difface.pth', tmp_path / 'run'
  config = _convert_config(tem, source)
  _save_as_published(torch_unets.random_net(config), config, source)
  main.run(config, str(workdir))
  converted = checkpointing.restore_params(
      *checkpointing.find(workdir), models.abstract_params(config), item='params')

  config.job = 'train'
  config.train.update(num_steps=1, checkpoint_every=1, log_every=1)
  assert main.run(config, str(workdir))['step'] == 1
  after = checkpointing.restore_params(*checkpointing.find(workdir), models.abstract_params(config),
                                       item='params')
  changes = [np.abs(a - b).max() for a, b in zip(jax.tree_util.tree_leaves(after),
                                                 jax.tree_util.tree_leaves(converted))]
  # One Adam step moves each weight by about the learning rate: the run started from the
  # converted weights, not from a fresh initialisation.
  assert 0 < max(changes) <= 2 * config.train.learning_rate


def test_wrong_schedule_is_refused(tmp_path):
  source = tmp_path / 'sr3.pth'
  config = _convert_config(irm1, source)
  _save_as_published(torch_unets.random_net(config), config, source)
  config.diffusion.schedule.beta_end = 2e-2
  with pytest.raises(errors.ConversionError, match=r'sr3.pth: was trained with .* betas'):
    main.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_wrong_network_is_an_error_line_without_traceback(tmp_path):
  source = tmp_path / 'irm1.pth'
  config = _convert_config(irm1, source)
  _save_as_published(torch_unets.random_net(config), config, source)
  result = subprocess.run(
      [sys.executable, '-m', 'diffbfr_jax.main', '--config=configs/irm2.py:smoke',
       '--config.job=convert', f'--config.convert.source={source}',
       f'--workdir={tmp_path / "run"}'], capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert f'error: {source} does not fit the configured network' in result.stderr
  assert 'missing from the file' in result.stderr and 'Traceback' not in result.stderr
