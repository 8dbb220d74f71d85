"""The ADM UNet (TEM) against DifFace's PyTorch architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tem
from diffbfr_jax import models
from diffbfr_jax.models import adm_unet
from tests import torch_reference as ref
from tests.models import reference_shapes


def _random_params(tree, rng, scale=0.2):
  return jax.tree_util.tree_map(
      lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), jnp.float32), tree)


def test_paper_parameter_count_matches_difface():
  assert models.count_params(models.abstract_params(tem.get_config())) == 159_788_454


def test_parameter_tree_is_the_pytorch_state_dict_by_rule():
  reference_shapes.assert_tree_matches(models.abstract_params(tem.get_config()),
                                       'difface_iddpm_ffhq512_TEM_state_dict_shapes.txt')


def test_res_block_scale_shift_matches_pytorch_formula(rng):
  block = adm_unet.ResBlock(16, 4, 0.0, jnp.float32)
  x = rng.standard_normal((2, 6, 6, 8))
  emb = rng.standard_normal((2, 12))
  args = (jnp.asarray(x, jnp.float32), jnp.asarray(emb, jnp.float32), False)
  params = _random_params(block.init(jax.random.key(0), *args)['params'], rng)
  ours = block.apply({'params': params}, *args)
  sd = ref.flax_to_torch_state_dict(params)
  assert set(sd) >= {'skip_connection.weight', 'emb_layers.1.weight', 'out_layers.3.bias'}
  expected = ref.adm_res_block(x.transpose(0, 3, 1, 2), emb, sd, 4)
  np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_attention_uses_the_legacy_head_split(rng):
  c, head_channels = 16, 4  # 4 heads: a wrong q/k/v split or head order changes the output
  block = adm_unet.AttentionBlock(head_channels, 4, jnp.float32)
  x = rng.standard_normal((2, 3, 3, c))
  params = _random_params(block.init(jax.random.key(0), jnp.asarray(x, jnp.float32))['params'],
                          rng)
  ours = block.apply({'params': params}, jnp.asarray(x, jnp.float32))
  sd = ref.flax_to_torch_state_dict(params)
  assert sd['qkv.weight'].shape == (3 * c, c, 1)
  expected = ref.adm_attention_block(x.transpose(0, 3, 1, 2), sd, c // head_channels, 4)
  np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_fresh_model_outputs_zero_like_guided_diffusion():
  # guided-diffusion zero-initialises the output conv, so an untrained TEM predicts exactly 0.
  config = tem.get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  x_t = jax.random.normal(jax.random.key(1), (1, 16, 16, 3))
  variables = jax.jit(model.init)(jax.random.key(0), x_t, jnp.array([5]))
  assert float(jnp.abs(jax.jit(model.apply)(variables, x_t, jnp.array([5]))).max()) == 0.0
  assert float(jnp.abs(variables['params']['input_blocks_1_0']['in_layers_2']['kernel']).max()) > 0


def test_smoke_model_forward(rng):
  config = tem.get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  size = config.model.image_size
  x_t = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  t = jnp.array([3, 700])
  params = _random_params(jax.eval_shape(model.init, jax.random.key(0), x_t, t)['params'], rng,
                          scale=0.1)
  apply = jax.jit(model.apply, static_argnames='train')
  out = apply({'params': params}, x_t, t, train=True, rngs={'dropout': jax.random.key(2)})
  assert out.shape == (2, size, size, 6) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.abs(apply({'params': params}, x_t, t[::-1]) - out).max()) > 1e-4


def test_condition_on_an_unconditional_model_is_a_clear_error():
  config = tem.get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  x_t = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match='3 input channels, got 6'):
    model.init(jax.random.key(0), x_t, jnp.zeros(1), jnp.zeros((1, 16, 16, 3)))
