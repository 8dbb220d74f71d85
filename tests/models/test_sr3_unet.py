"""The SR3 UNet (IRM-1, IRM-2) against SR3's PyTorch architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irm1
from configs import irm2
from diffbfr_jax import models
from diffbfr_jax.models import sr3_unet
from tests import torch_reference as ref
from tests.models import reference_shapes


def test_paper_parameter_counts_match_published_sr3_counts():
  assert models.count_params(models.abstract_params(irm1.get_config())) == 97_807_491
  no_attn = irm2.get_config()
  no_attn.model.attn_res = ()
  assert models.count_params(models.abstract_params(no_attn)) == 278_881_475
  # Table 6's attention at 16 adds one single-head attention (GroupNorm, bias-free qkv 1x1 conv,
  # out 1x1 conv with bias) at width 64 * 16 = 1024 to each of the 1 + 2 blocks of level 5.
  c = 1024
  per_attention = 2 * c + 3 * c * c + (c * c + c)
  expected = 278_881_475 + 3 * per_attention
  assert expected == 291_473_603
  assert models.count_params(models.abstract_params(irm2.get_config())) == expected


@pytest.mark.parametrize('config, shapes_file', [
    (irm1.get_config(), 'sr3_unet_IRM1_128_state_dict_shapes.txt'),
    (irm2.get_config(), 'sr3_unet_IRM2_512_state_dict_shapes.txt'),
])
def test_parameter_tree_is_the_pytorch_state_dict_by_rule(config, shapes_file):
  if shapes_file.startswith('sr3_unet_IRM2'):
    config.model.attn_res = ()  # the PyTorch listing is of SR3's own sr_sr3_64_512 file
  reference_shapes.assert_tree_matches(models.abstract_params(config), shapes_file)


def _random_params(tree, rng, scale=0.2):
  return jax.tree_util.tree_map(
      lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), jnp.float32), tree)


def test_resnet_block_matches_pytorch_formula(rng):
  c_in, c_out, groups = 8, 16, 4
  block = sr3_unet.ResnetBlock(c_out, groups, 0.0, jnp.float32)
  x = rng.standard_normal((2, 6, 6, c_in))
  emb = rng.standard_normal((2, 12))
  params = _random_params(block.init(jax.random.key(0), jnp.asarray(x, jnp.float32),
                                     jnp.asarray(emb, jnp.float32), False)['params'], rng)
  ours = block.apply({'params': params}, jnp.asarray(x, jnp.float32),
                     jnp.asarray(emb, jnp.float32), False)
  sd = ref.flax_to_torch_state_dict(params)
  assert set(sd) >= {'res_conv.weight', 'noise_func.noise_func.0.weight', 'block2.block.3.bias'}
  expected = ref.sr3_resnet_block(x.transpose(0, 3, 1, 2), emb, sd, groups)
  np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_self_attention_matches_pytorch_formula(rng):
  attn = sr3_unet.SelfAttention(4, jnp.float32)
  x = rng.standard_normal((2, 4, 4, 8))
  params = _random_params(attn.init(jax.random.key(0), jnp.asarray(x, jnp.float32))['params'],
                          rng)
  assert 'bias' not in params['qkv']
  ours = attn.apply({'params': params}, jnp.asarray(x, jnp.float32))
  expected = ref.sr3_self_attention(x.transpose(0, 3, 1, 2), ref.flax_to_torch_state_dict(params), 4)
  np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('get_config', [irm1.get_config, irm2.get_config])
def test_smoke_model_forward(get_config):
  config = get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  size = config.model.image_size
  x_t = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  cond = jax.random.normal(jax.random.key(2), (2, size, size, 3))
  levels = jnp.array([0.1, 0.9])
  variables = jax.jit(model.init)(jax.random.key(0), x_t, levels, cond)
  apply = jax.jit(model.apply, static_argnames='train')
  out = apply(variables, x_t, levels, cond, train=True, rngs={'dropout': jax.random.key(3)})
  assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  # The noise level reaches the output, and so does the condition.
  other_level = apply(variables, x_t, levels[::-1], cond)
  other_cond = apply(variables, x_t, levels, -cond)
  base = apply(variables, x_t, levels, cond)
  assert float(jnp.abs(other_level - base).max()) > 1e-4
  assert float(jnp.abs(other_cond - base).max()) > 1e-4


def test_wrong_input_gives_a_clear_error():
  config = irm1.get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  x_t = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match='6 input channels, got 3'):
    model.init(jax.random.key(0), x_t, jnp.zeros(1), None)
  with pytest.raises(ValueError, match='divisible by 2'):
    model.init(jax.random.key(0), jnp.zeros((1, 15, 15, 3)), jnp.zeros(1), jnp.zeros((1, 15, 15, 3)))


def test_unknown_model_field_fails_by_name():
  with pytest.raises(TypeError, match='attn_resolution'):
    models.create_model('sr3', attn_resolution=(16,))
  with pytest.raises(ValueError, match="model_type='unet'"):
    models.create_model('unet')
