"""Training losses against direct formulas and oracle models."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffbfr_jax.diffusion import losses
from diffbfr_jax.diffusion import schedules

SR3 = schedules.make_schedule('linear', 2000, 1e-6, 1e-2)
ADM = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)


def _x0(key=0, shape=(8, 4, 4, 3)):
  return jax.random.uniform(jax.random.key(key), shape, minval=-1, maxval=1)


@pytest.mark.parametrize('per_example_t', [False, True])
def test_noise_levels_lie_between_consecutive_sqrt_gammas(per_example_t):
  level, index = losses.sample_noise_level(SR3, jax.random.key(3), 64,
                                           per_example_t=per_example_t)
  index = np.asarray(index)
  assert (len(set(index)) > 1) == per_example_t  # SR3 draws one t per batch by default
  hi, lo = np.sqrt(SR3.gammas_prev[index]), np.sqrt(SR3.gammas[index])
  assert np.all((np.asarray(level) >= lo - 1e-6) & (np.asarray(level) <= hi + 1e-6))


def test_noise_level_loss_is_zero_for_an_oracle_and_known_for_a_zero_model():
  x0 = _x0()

  def oracle(x_t, level, cond):
    g = level[:, None, None, None]
    return (x_t - g * x0) / jnp.sqrt(1 - g ** 2)

  loss, _ = losses.noise_level_loss(oracle, SR3, x0, jax.random.key(0), per_example_t=True)
  assert float(loss) < 1e-3
  big = _x0(shape=(64, 16, 16, 3))
  zero = lambda x_t, level, cond: jnp.zeros_like(x_t)
  l1, _ = losses.noise_level_loss(zero, SR3, big, jax.random.key(1), kind='l1')
  l2, _ = losses.noise_level_loss(zero, SR3, big, jax.random.key(1), kind='l2')
  assert float(l1) == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)  # E|z|
  assert float(l2) == pytest.approx(1.0, rel=0.02)  # E z^2


def test_conditional_model_receives_the_condition():
  seen = []
  cond = jnp.ones((2, 4, 4, 3))

  def model(x_t, level, c):
    seen.append(c)
    return jnp.zeros_like(x_t)

  losses.noise_level_loss(model, SR3, _x0(shape=(2, 4, 4, 3)), jax.random.key(0), cond)
  assert seen[0] is cond


def _kl(m1, v1, m2, v2):  # closed form, in nats
  return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def test_hybrid_vb_term_equals_a_direct_formula(rng):
  x0 = rng.uniform(-1, 1, (3, 2, 2, 3))
  noise = rng.standard_normal(x0.shape)
  out = np.concatenate([rng.standard_normal(x0.shape), rng.uniform(-1, 1, x0.shape)], -1)
  index = np.array([5, 400, 999])
  g = ADM.gammas[index][:, None, None, None]
  g_prev = ADM.gammas_prev[index][:, None, None, None]
  a, b = 1 - ADM.betas[index][:, None, None, None], ADM.betas[index][:, None, None, None]
  x_t = np.sqrt(g) * x0 + np.sqrt(1 - g) * noise
  # True posterior by Bayes; model Gaussian from its eps and v, written out directly.
  post_var = 1 / (1 / (1 - g_prev) + a / b)
  true_mean = post_var * (np.sqrt(g_prev) * x0 / (1 - g_prev) + np.sqrt(a) * x_t / b)
  eps, v = out[..., :3], out[..., 3:]
  x0_hat = (x_t - np.sqrt(1 - g) * eps) / np.sqrt(g)
  model_mean = post_var * (np.sqrt(g_prev) * x0_hat / (1 - g_prev) + np.sqrt(a) * x_t / b)
  frac = (v + 1) / 2
  model_var = np.exp(frac * np.log(b) + (1 - frac) * np.log(post_var))
  expected = _kl(true_mean, post_var, model_mean, model_var).mean(axis=(1, 2, 3)) / math.log(2)
  f32 = lambda z: jnp.asarray(z, jnp.float32)
  ours = losses.vb_term(ADM, model_out=f32(out), x0=f32(x0), x_t=f32(x_t), index=jnp.asarray(index))
  np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=1e-5)


def test_vb_term_trains_only_the_variance_and_uses_the_decoder_at_t1(rng):
  x0 = jnp.asarray(rng.uniform(-1, 1, (2, 2, 2, 3)), jnp.float32)
  x_t = jnp.asarray(rng.standard_normal((2, 2, 2, 3)), jnp.float32)
  out = jnp.asarray(rng.standard_normal((2, 2, 2, 6)), jnp.float32) * 0.5
  grad = jax.grad(lambda o: jnp.sum(losses.vb_term(ADM, model_out=o, x0=x0, x_t=x_t,
                                                   index=jnp.array([0, 300]))))(out)
  assert float(jnp.abs(grad[..., :3]).max()) == 0.0  # stop-gradient on the mean
  assert float(jnp.abs(grad[..., 3:]).max()) > 0.0
  # At t = 1 (index 0) the term is the decoder NLL: it stays positive and bounded by 8 bits
  # per dimension only when the model mean is near x0; far away it is large.
  near = losses.vb_term(ADM, model_out=jnp.zeros_like(out), x0=x0,
                        x_t=jnp.sqrt(ADM.gammas[0]) * x0, index=jnp.array([0, 0]))
  far = losses.vb_term(ADM, model_out=jnp.zeros_like(out), x0=x0,
                       x_t=-jnp.sqrt(ADM.gammas[0]) * x0, index=jnp.array([0, 0]))
  assert np.all(np.asarray(near) < np.asarray(far))


def test_timestep_loss_adds_the_vb_term_only_for_a_learned_variance():
  x0 = _x0()
  eps_only = lambda x_t, t, cond: jnp.zeros_like(x_t)
  with_v = lambda x_t, t, cond: jnp.zeros(x_t.shape[:-1] + (6,))
  loss3, m3 = losses.timestep_loss(eps_only, ADM, x0, jax.random.key(0))
  loss6, m6 = losses.timestep_loss(with_v, ADM, x0, jax.random.key(0))
  assert 'loss_vb' not in m3 and float(loss3) == pytest.approx(float(m3['loss_eps']))
  assert float(loss6) == pytest.approx(float(m6['loss_eps'] + m6['loss_vb']), rel=1e-6)
  assert float(m6['loss_vb']) > 0


def test_timestep_model_receives_integer_steps():
  seen = []

  def model(x_t, t, cond):
    seen.append(t)
    return jnp.zeros_like(x_t)

  losses.timestep_loss(model, ADM, _x0(), jax.random.key(0))
  t = np.asarray(seen[0])
  assert t.shape == (8,) and np.all(t == np.round(t)) and t.min() >= 0 and t.max() <= 999


@pytest.mark.parametrize('loss_fn, schedule, per_example_t', [
    (losses.noise_level_loss, SR3, False), (losses.noise_level_loss, SR3, True),
    (losses.timestep_loss, ADM, None)])
def test_example_ids_make_the_loss_independent_of_how_the_batch_is_split(loss_fn, schedule,
                                                                           per_example_t):
  x0 = _x0(shape=(6, 4, 4, 3))
  ids = jnp.arange(100, 106)
  model = lambda x_t, t, cond: 0.5 * x_t
  kwargs = {} if per_example_t is None else {'per_example_t': per_example_t}
  key = jax.random.key(9)
  whole, _ = loss_fn(model, schedule, x0, key, example_ids=ids, **kwargs)
  halves = [loss_fn(model, schedule, x0[s], key, example_ids=ids[s], **kwargs)[0]
            for s in (slice(0, 3), slice(3, 6))]
  assert float(whole) == pytest.approx(float(np.mean(halves)), rel=1e-5)
  other, _ = loss_fn(model, schedule, x0, key, example_ids=ids + 6, **kwargs)
  assert float(other) != pytest.approx(float(whole), rel=1e-5)
