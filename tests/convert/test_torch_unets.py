"""The PyTorch re-implementations of SR3's and ADM's UNets (tests/convert/torch_unets.py) against
the PyTorch listings of the paper models and, through the converter, against our Flax UNets."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from configs import irm1, irm2, tem  # pylint: disable=g-import-not-at-top,wrong-import-position
from diffbfr_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from diffbfr_jax.convert import state_dict as convert_state_dict  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.convert import torch_unets  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.models import reference_shapes  # pylint: disable=g-import-not-at-top,wrong-import-position

def _paper_config(module, **overrides):
  config = module.get_config()
  config.model.update(overrides)
  return config


@pytest.mark.parametrize('config_fn, listing', [
    (lambda: _paper_config(irm1), 'sr3_unet_IRM1_128_state_dict_shapes.txt'),
    # The PyTorch listing is of SR3's own sr_sr3_64_512 file, which has no attention.
    (lambda: _paper_config(irm2, attn_res=()), 'sr3_unet_IRM2_512_state_dict_shapes.txt'),
    (lambda: _paper_config(tem), 'difface_iddpm_ffhq512_TEM_state_dict_shapes.txt'),
], ids=['irm1', 'irm2', 'tem'])
def test_state_dict_is_the_pytorch_listing(config_fn, listing):
  config = config_fn()
  with torch.device('meta'):
    net = torch_unets.CLASSES[config.model_type](**config.model)
  ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
  expected, (total, count) = reference_shapes.read_listing(listing)
  assert set(ours) == set(expected), (f'missing: {sorted(set(expected) - set(ours))[:5]}, '
                                      f'extra: {sorted(set(ours) - set(expected))[:5]}')
  assert list(ours) == list(expected), 'same keys, but not in the PyTorch registration order'
  wrong = {k: (ours[k], expected[k]) for k in ours if ours[k] != expected[k]}
  assert not wrong, f'shape mismatches (ours, listing): {list(wrong.items())[:5]}'
  assert (sum(p.numel() for p in net.parameters()), len(ours)) == (total, count)


def test_irm2_with_table6_attention_count():
  # configs/irm2.py documents 291,473,603 parameters with attention at [16] (Table 6).
  with torch.device('meta'):
    net = torch_unets.SR3UNet(**irm2.get_config().model)
  assert sum(p.numel() for p in net.parameters()) == 291_473_603


@pytest.mark.parametrize('module', [irm1, irm2, tem], ids=['irm1', 'irm2', 'tem'])
def test_converted_state_dict_gives_the_torch_outputs(module):
  config = module.get_config('smoke')
  cfg = config.model
  net = torch_unets.random_net(config)
  state_dict = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  params = convert_state_dict.to_flax(state_dict, models.abstract_params(config))

  rng = np.random.default_rng(0)
  batch, size = 2, cfg.image_size
  x_t = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
  cond_channels = cfg.in_channels - 3
  cond = (rng.standard_normal((batch, size, size, cond_channels)).astype(np.float32)
          if cond_channels else None)
  if config.model_type == 'sr3':
    time = np.array([0.13, 0.87], np.float32)  # noise levels sqrt(gamma)
  else:
    time = np.array([3.0, 777.0], np.float32)  # integer timesteps
  x = x_t if cond is None else np.concatenate([cond, x_t], axis=-1)  # [cond, x_t], cond first

  with torch.no_grad():
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                   torch.from_numpy(time)).numpy().transpose(0, 2, 3, 1)
  flax_model = models.create_model(config.model_type, **cfg)
  ours = np.asarray(flax_model.apply(
      {'params': params}, jnp.asarray(x_t), jnp.asarray(time),
      None if cond is None else jnp.asarray(cond), train=False))

  assert ours.shape == expected.shape == (batch, size, size, cfg.out_channels)
  ratio = np.abs(ours - expected).max() / np.abs(expected).max()
  print(f'{module.__name__}: max|flax - torch| / max|torch| = {ratio:.3g}')
  assert ratio < 1e-5, f'max|flax - torch| / max|torch| = {ratio:.3g}'
