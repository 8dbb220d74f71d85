"""bfloat16 compute and rematerialisation on the smoke models of both UNet families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irm1
from configs import tem
from diffbfr_jax import models


def _setup(get_config, **overrides):
  config = get_config('smoke')
  config.model.update(overrides)
  model = models.create_model(config.model_type, **config.model)
  size = config.model.image_size
  x_t = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  cond = (jax.random.normal(jax.random.key(2), (2, size, size, 3))
          if config.model_type == 'sr3' else None)
  time = jnp.array([0.3, 0.8]) if config.model_type == 'sr3' else jnp.array([10.0, 600.0])
  return model, x_t, time, cond


def _random_params(model, x_t, time, cond):
  """Random parameters of the right shapes (no init compile; ADM's zero-init layers get signal)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x_t, time, cond)['params']
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.mark.parametrize('get_config', [irm1.get_config, tem.get_config])
def test_bfloat16_compute_stays_close_to_float32(get_config):
  model32, x_t, time, cond = _setup(get_config)
  model16, *_ = _setup(get_config, dtype='bfloat16')
  params = _random_params(model32, x_t, time, cond)
  out32 = jax.jit(model32.apply)({'params': params}, x_t, time, cond)
  out16 = jax.jit(model16.apply)({'params': params}, x_t, time, cond)
  assert out16.dtype == jnp.float32  # the output is float32 for the diffusion math
  rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
  assert 0 < rel < 0.05, rel
  jaxpr = str(jax.make_jaxpr(lambda p: model16.apply({'params': p}, x_t, time, cond))(params))
  assert 'bf16[2,' in jaxpr  # the activations really are bfloat16
  # Parameters stay float32 whatever the compute dtype.
  init16 = jax.eval_shape(model16.init, jax.random.key(0), x_t, time, cond)['params']
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(init16)} == {jnp.dtype('float32')}


@pytest.mark.parametrize('get_config', [irm1.get_config, tem.get_config])
def test_remat_gives_the_same_gradients(get_config):
  plain, x_t, time, cond = _setup(get_config)
  remat, *_ = _setup(get_config, remat=True)
  params = _random_params(plain, x_t, time, cond)
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(
              jax.eval_shape(remat.init, jax.random.key(0), x_t, time, cond)['params']))

  keys = jax.random.split(jax.random.key(5), x_t.shape[0])  # IRM-1's smoke network drops out

  def loss(model, p):
    out = model.apply({'params': p}, x_t, time, cond, train=True, dropout_keys=keys)
    return jnp.mean(out ** 2)

  g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(g_plain)) > 0


@pytest.mark.parametrize('get_config', [irm1.get_config, tem.get_config])
def test_each_examples_dropout_masks_come_from_its_own_key(get_config):
  """The network runs once on the batch, and each output is the one that example gets alone
  with its key: what makes the train step's masks independent of how a batch is split."""
  model, x_t, time, cond = _setup(get_config, dropout=0.3)
  params = {'params': _random_params(model, x_t, time, cond)}
  keys = jax.random.split(jax.random.key(11), x_t.shape[0])
  apply = jax.jit(lambda x, t, c, k: model.apply(params, x, t, c, train=True, dropout_keys=k))
  batched = apply(x_t, time, cond, keys)
  for i in range(x_t.shape[0]):
    alone = apply(x_t[i:i + 1], time[i:i + 1], None if cond is None else cond[i:i + 1],
                  keys[i:i + 1])
    np.testing.assert_allclose(batched[i], alone[0], rtol=0, atol=1e-5)
  # The masks do something: other keys, or no dropout, give other outputs.
  other = apply(x_t, time, cond, jax.random.split(jax.random.key(12), x_t.shape[0]))
  plain = model.apply(params, x_t, time, cond)
  assert float(jnp.abs(other - batched).max()) > 1e-3
  assert float(jnp.abs(plain - batched).max()) > 1e-3
