"""Small pieces of the UNets against hand-written NumPy formulas (tests/torch_reference.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_group_norm_values_and_gradients_match_flax_group_norm(rng):
  # Flax's GroupNorm (two-pass variance, eps 1e-5) is the second implementation; values are also
  # checked against the NumPy reference, on a non-zero mean and several sizes.
  for shape, groups in (((2, 8, 8, 32), 8), ((3, 4, 4, 6), 3), ((1, 16, 16, 64), 32)):
    x = jnp.asarray(3.0 + 2.0 * rng.standard_normal(shape), jnp.float32)
    c = shape[-1]
    params = {'params': {'norm': {'scale': jnp.asarray(rng.standard_normal(c), jnp.float32),
                                  'bias': jnp.asarray(rng.standard_normal(c), jnp.float32)}}}
    flax_norm = nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_fast_variance=False)
    ours = lambda p, v: _Norm(groups=groups).apply(p, v)
    theirs = lambda p, v: flax_norm.apply({'params': p['params']['norm']}, v)
    weights = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    np.testing.assert_allclose(ours(params, x), theirs(params, x), atol=2e-5)
    nchw = np.asarray(x, np.float64).transpose(0, 3, 1, 2)
    expected = ref.group_norm(nchw, groups, np.asarray(params['params']['norm']['scale']),
                              np.asarray(params['params']['norm']['bias']), eps=1e-5)
    np.testing.assert_allclose(ours(params, x), expected.transpose(0, 2, 3, 1), atol=2e-5)
    grad = lambda f: jax.grad(lambda p, v: jnp.sum(weights * f(p, v)), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(grad(ours)), jax.tree_util.tree_leaves(grad(theirs))):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


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


@pytest.mark.parametrize('rows_on', [('cpu',), ()], ids=['rows kernel gradient', 'xla'])
def test_conv3x3_values_and_gradients_match_xlas_convolution(rng, monkeypatch, rows_on):
  # The second implementation: lax.conv_general_dilated and its own autodiff. Both kernel
  # gradients conv3x3 can lower to (the 1-D convolutions on ROWS_KERNEL_GRAD_PLATFORMS, XLA's
  # elsewhere) are checked on the CPU by choosing which platforms get the first.
  monkeypatch.setattr(layers, 'ROWS_KERNEL_GRAD_PLATFORMS', rows_on)

  def reference(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  for b, h, w, c, o in ((2, 8, 8, 4, 6), (1, 5, 7, 3, 2), (3, 16, 16, 32, 8)):
    x = jnp.asarray(rng.standard_normal((b, h, w, c)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, o)) / 3, jnp.float32)
    weights = jnp.asarray(rng.standard_normal((b, h, w, o)), jnp.float32)
    np.testing.assert_allclose(layers.conv3x3(x, kernel), reference(x, kernel), atol=1e-5)
    grad = lambda f: jax.grad(lambda v, k: jnp.sum(weights * f(v, k)), argnums=(0, 1))
    for ours, theirs in zip(grad(layers.conv3x3)(x, kernel), grad(reference)(x, kernel)):
      np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    # Only the chosen kernel gradient is lowered: the input gradient's convolution and three
    # 1-D ones, or XLA's one (the forward is not needed: the loss is linear in it).
    lowered = jax.jit(grad(layers.conv3x3)).lower(x, kernel).as_text()
    assert lowered.count('stablehlo.convolution') == (4 if rows_on else 2)


def test_dropout_drops_at_its_rate_and_scales_what_it_keeps():
  class Drop(nn.Module):
    @nn.compact
    def __call__(self, x, keys=None):
      return layers.dropout(self, x, 0.2, True, keys)

  x = jnp.ones((4, 64, 64, 8))
  keys = jax.random.split(jax.random.key(0), 4)
  out = np.asarray(Drop().apply({}, x, keys))
  assert set(np.unique(out)) == {0.0, np.float32(1 / 0.8)}
  kept = (out > 0).mean(axis=(1, 2, 3))  # 32,768 Bernoulli(0.8) draws each: sd 0.0022
  np.testing.assert_allclose(kept, 0.8, atol=0.01)
  assert all(not np.array_equal(out[0], out[i]) for i in range(1, 4))
  # Example i's mask is its key's wherever it sits in the batch.
  swapped = np.asarray(Drop().apply({}, x, keys[::-1]))
  np.testing.assert_array_equal(swapped[::-1], out)
  # One rng for the batch, as nn.Dropout; off outside training.
  shared = np.asarray(Drop().apply({}, x, rngs={'dropout': jax.random.key(1)}))
  np.testing.assert_allclose((shared > 0).mean(), 0.8, atol=0.005)
  assert np.array_equal(layers.dropout(None, x, 0.2, False), x)
