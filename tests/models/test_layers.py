"""Small pieces of the UNets against hand-written NumPy formulas (tests/torch_reference.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax.models import layers
from tests import torch_reference as ref


def test_sr3_noise_level_embedding_is_sin_first(rng):
  levels = rng.uniform(0, 1, size=5)
  ours = layers.sinusoidal_embedding(jnp.asarray(levels), 64, sin_first=True)
  np.testing.assert_allclose(ours, ref.sr3_noise_level_encoding(levels, 64), atol=1e-6)
  np.testing.assert_allclose(ours[:, 0], np.sin(levels), atol=1e-6)  # frequency 1, sin first


def test_adm_timestep_embedding_is_cos_first_and_pads_odd_widths():
  steps = np.array([0.0, 1.0, 17.0, 999.0])
  for dim in (32, 33):
    ours = layers.sinusoidal_embedding(jnp.asarray(steps), dim, sin_first=False)
    assert ours.shape == (4, dim)
    np.testing.assert_allclose(ours, ref.adm_timestep_embedding(steps, dim), atol=2e-4)
  np.testing.assert_allclose(ours[0, :16], 1.0)  # cos(0) first
  np.testing.assert_allclose(ours[:, -1], 0.0)


class _Norm(nn.Module):
  groups: int

  @nn.compact
  def __call__(self, x):
    return layers.group_norm(x, self.groups, name='norm')


def test_group_norm_uses_pytorch_epsilon(rng):
  # A variance of about 1e-6 makes eps 1e-5 and Flax's default 1e-6 give clearly different results.
  x = 1e-3 * rng.standard_normal((2, 4, 4, 8)) + 5.0
  module = _Norm(groups=4)
  scale = rng.standard_normal(8)
  bias = rng.standard_normal(8)
  params = {'params': {'norm': {'scale': jnp.asarray(scale, jnp.float32),
                                'bias': jnp.asarray(bias, jnp.float32)}}}
  ours = np.asarray(module.apply(params, jnp.asarray(x, jnp.float32)))
  nchw = x.transpose(0, 3, 1, 2)
  expected = ref.group_norm(nchw, 4, scale, bias, eps=1e-5).transpose(0, 2, 3, 1)
  other_eps = ref.group_norm(nchw, 4, scale, bias, eps=1e-6).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, expected, atol=2e-3)
  assert np.abs(ours - other_eps).max() > 20 * np.abs(ours - expected).max()


def test_group_norm_keeps_bfloat16_out_and_computes_in_float32(rng):
  x = jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.bfloat16)
  module = _Norm(groups=2)
  params = module.init(jax.random.key(0), x)
  assert module.apply(params, x).dtype == jnp.bfloat16
  jaxpr = str(jax.make_jaxpr(lambda v: module.apply(params, v))(x))
  assert 'convert_element_type[new_dtype=float32' in jaxpr


def _conv_weights(rng, c_out, c_in):
  return rng.standard_normal((c_out, c_in, 3, 3)) / 6, rng.standard_normal(c_out)


def test_stride2_downsample_pads_one_on_each_side(rng):
  x = rng.standard_normal((2, 3, 8, 8))  # NCHW, even size: where 'SAME' and PyTorch differ
  w, b = _conv_weights(rng, 3, 3)
  module = layers.Downsample('op', nn.initializers.zeros, jnp.float32)
  params = {'params': {'op': {'kernel': jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32),
                              'bias': jnp.asarray(b, jnp.float32)}}}
  ours = np.asarray(module.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)))
  expected = ref.conv2d(x, w, b, stride=2, padding=1).transpose(0, 2, 3, 1)
  assert ours.shape == (2, 4, 4, 3)
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  same = nn.Conv(3, (3, 3), strides=(2, 2), padding='SAME').apply(
      {'params': params['params']['op']}, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
  assert np.abs(np.asarray(same) - expected).max() > 1e-2  # Flax 'SAME' would be wrong here


def test_upsample_is_nearest_then_conv(rng):
  x = rng.standard_normal((1, 2, 3, 3))
  w, b = _conv_weights(rng, 2, 2)
  module = layers.Upsample(nn.initializers.zeros, jnp.float32)
  params = {'params': {'conv': {'kernel': jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32),
                                'bias': jnp.asarray(b, jnp.float32)}}}
  ours = np.asarray(module.apply(params, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)))
  up = x.repeat(2, axis=2).repeat(2, axis=3)
  np.testing.assert_allclose(ours, ref.conv2d(up, w, b, padding=1).transpose(0, 2, 3, 1),
                             atol=1e-5)
