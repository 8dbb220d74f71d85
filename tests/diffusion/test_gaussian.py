"""The forward process, its posterior and the ELBO terms against closed forms and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion import schedules

SCHED = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)


def test_monte_carlo_moments_of_q():
  x0 = jnp.array([-0.9, 0.0, 0.4, 1.0])
  n, index = 200_000, 300
  noise = jax.random.normal(jax.random.key(0), (n, 4))
  samples = np.asarray(gaussian.q_sample(SCHED, x0=jnp.broadcast_to(x0, (n, 4)),
                                         index=jnp.full((n,), index), noise=noise), np.float64)
  gamma = SCHED.gammas[index]
  std_err = math.sqrt((1 - gamma) / n)
  np.testing.assert_allclose(samples.mean(0), math.sqrt(gamma) * np.asarray(x0), atol=5 * std_err)
  np.testing.assert_allclose(samples.var(0), 1 - gamma, rtol=0.02)


def test_noise_level_form_equals_the_step_form():
  x0 = jax.random.uniform(jax.random.key(1), (3, 4, 4, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(2), x0.shape)
  index = jnp.array([0, 400, 999])
  level = jnp.sqrt(jnp.asarray(SCHED.gammas, jnp.float32)[index])
  np.testing.assert_allclose(gaussian.q_sample_noise_level(x0=x0, noise_level=level, noise=noise),
                             gaussian.q_sample(SCHED, x0=x0, index=index, noise=noise), atol=1e-5)


def test_posterior_mean_recovers_x0_given_the_true_noise():
  x0 = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(2), x0.shape)
  index = jnp.array([0, 10, 500, 999])
  x_t = gaussian.q_sample(SCHED, x0=x0, index=index, noise=noise)
  x0_hat = gaussian.predict_x0(SCHED, x_t=x_t, index=index, eps=noise)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-3)  # 1/sqrt(gamma) amplifies float32 rounding
  np.testing.assert_allclose(gaussian.predict_eps(SCHED, x_t=x_t, index=index, x0=x0), noise,
                             atol=2e-3)
  mean, _ = gaussian.q_posterior(SCHED, x0=x0_hat, x_t=x_t, index=jnp.zeros(4, jnp.int32))
  np.testing.assert_allclose(mean, x0_hat, atol=1e-6)  # the last step's mean is the estimate


def test_posterior_matches_bayes_rule_in_float64(rng):
  # q(x_{t-1} | x_t, x0) from the product of q(x_{t-1} | x0) and q(x_t | x_{t-1}).
  i = 250
  x0, x_t = rng.uniform(-1, 1, 5), rng.standard_normal(5)
  g_prev, a, b = SCHED.gammas[i - 1], 1 - SCHED.betas[i], SCHED.betas[i]
  var = 1 / (1 / (1 - g_prev) + a / b)
  mean = var * (math.sqrt(g_prev) * x0 / (1 - g_prev) + math.sqrt(a) * x_t / b)
  ours_mean, ours_log_var = gaussian.q_posterior(SCHED, x0=jnp.asarray(x0, jnp.float32),
                                                 x_t=jnp.asarray(x_t, jnp.float32), index=i)
  np.testing.assert_allclose(ours_mean, mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours_log_var, math.log(var), rtol=1e-6)


def test_normal_kl_equals_the_closed_form_on_random_gaussians(rng):
  m1, m2 = rng.standard_normal(100), rng.standard_normal(100)
  s1, s2 = rng.uniform(0.1, 2, 100), rng.uniform(0.1, 2, 100)
  direct = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  ours = gaussian.normal_kl(mean1=m1, log_var1=2 * np.log(s1), mean2=m2, log_var2=2 * np.log(s2))
  np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6)


def test_proposition1_prior_term_equals_the_kl_of_the_modules_q(rng):
  # L_T|IRM = KL(q(x_T | x) || q(x_T | y0)) = 0.5 * gamma_T / (1 - gamma_T) * ||x - y0||^2.
  sched = schedules.make_schedule('linear', 2000, 1e-6, 1e-2)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
  y0 = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
  for index in (999, 1999):  # N1 = 1000 and the full T = 2000
    mean_x, _, log_var = gaussian.q_mean_variance(sched, x0=x, index=index)
    mean_y, _, log_var_y = gaussian.q_mean_variance(sched, x0=y0, index=index)
    kl = jnp.sum(gaussian.normal_kl(mean1=mean_x, log_var1=log_var, mean2=mean_y,
                                    log_var2=log_var_y), axis=(1, 2, 3))
    g = sched.gammas[index]
    expected = 0.5 * g / (1 - g) * np.sum((np.asarray(x) - np.asarray(y0)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(kl, expected, rtol=1e-4)


def test_discretized_likelihood_is_a_distribution_over_256_levels():
  levels = jnp.linspace(-1.0, 1.0, 256)
  for mean, log_scale in ((0.1, -2.0), (-0.7, -4.0), (0.95, -1.0)):
    logp = gaussian.discretized_gaussian_log_likelihood(
        levels, means=jnp.full(256, mean), log_scales=jnp.full(256, log_scale))
    assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=1e-4)
    # Interior bins are close to the exact normal probability of the bin.
    std = math.exp(log_scale)
    cdf = lambda v: 0.5 * (1 + math.erf((v - mean) / (std * math.sqrt(2))))
    k = 128
    exact = cdf(float(levels[k]) + 1 / 255) - cdf(float(levels[k]) - 1 / 255)
    assert math.exp(float(logp[k])) == pytest.approx(exact, abs=2e-3)


def test_arrays_of_one_shape_are_passed_by_name():
  """x0, x_t, eps, noise and index are keyword-only: a swapped positional call fails loudly
  instead of computing with the arrays in the wrong places."""
  x = jnp.zeros((1, 2, 2, 3))
  index = jnp.zeros((1,), jnp.int32)
  for call in (lambda: gaussian.q_posterior(SCHED, x, x, index),
               lambda: gaussian.predict_x0(SCHED, x, index, x),
               lambda: gaussian.predict_eps(SCHED, x, index, x),
               lambda: gaussian.q_sample(SCHED, x, index, x),
               lambda: gaussian.normal_kl(x, x, x, x)):
    with pytest.raises(TypeError, match='positional argument'):
      call()
