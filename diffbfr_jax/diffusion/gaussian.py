"""The Gaussians of DDPM: the forward process q, its posterior, and the terms of the ELBO.

`index` arguments are schedule grid indices (int arrays of shape [B] or scalars).
"""

import jax.numpy as jnp
import numpy as np

from diffbfr_jax.diffusion.schedules import Schedule, at


def q_sample(schedule: Schedule, *, x0, index, noise):
  """A draw of q(x_t | x_0) at integer step `index`: sqrt(gamma) x_0 + sqrt(1 - gamma) noise."""
  return (at(np.sqrt(schedule.gammas), index, x0) * x0
          + at(np.sqrt(1.0 - schedule.gammas), index, x0) * noise)


def q_sample_noise_level(*, x0, noise_level, noise):
  """A draw of q at a continuous noise level g = sqrt(gamma) (SR3): g x_0 + sqrt(1 - g^2) noise."""
  g = jnp.reshape(noise_level, jnp.shape(noise_level) + (1,) * (x0.ndim - jnp.ndim(noise_level)))
  return g * x0 + jnp.sqrt(1.0 - g ** 2) * noise


def q_mean_variance(schedule: Schedule, *, x0, index):
  """Mean, variance and log-variance of q(x_t | x_0)."""
  mean = at(np.sqrt(schedule.gammas), index, x0) * x0
  var = at(1.0 - schedule.gammas, index, x0)
  log_var = at(np.log(1.0 - schedule.gammas), index, x0)
  return mean, var, log_var


def predict_x0(schedule: Schedule, *, x_t, index, eps):
  """x_0 from x_t and its noise: (x_t - sqrt(1 - gamma) eps) / sqrt(gamma)."""
  return (at(np.sqrt(1.0 / schedule.gammas), index, x_t) * x_t
          - at(np.sqrt(1.0 / schedule.gammas - 1.0), index, x_t) * eps)


def predict_eps(schedule: Schedule, *, x_t, index, x0):
  """The noise that takes x_0 to x_t (inverse of `predict_x0`)."""
  return ((at(np.sqrt(1.0 / schedule.gammas), index, x_t) * x_t - x0)
          / at(np.sqrt(1.0 / schedule.gammas - 1.0), index, x_t))


def eps_from_v(schedule: Schedule, *, x_t, index, v):
  """The noise of x_t from v = sqrt(gamma) eps - sqrt(1 - gamma) x_0 (Salimans and Ho's
  v-prediction): eps = sqrt(1 - gamma) x_t + sqrt(gamma) v."""
  return (at(np.sqrt(1.0 - schedule.gammas), index, x_t) * x_t
          + at(np.sqrt(schedule.gammas), index, x_t) * v)


def x0_from_v(schedule: Schedule, *, x_t, index, v):
  """x_0 from x_t and v: sqrt(gamma) x_t - sqrt(1 - gamma) v."""
  return (at(np.sqrt(schedule.gammas), index, x_t) * x_t
          - at(np.sqrt(1.0 - schedule.gammas), index, x_t) * v)


def q_posterior(schedule: Schedule, *, x0, x_t, index):
  """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
  mean = (at(schedule.posterior_mean_coef1, index, x_t) * x0
          + at(schedule.posterior_mean_coef2, index, x_t) * x_t)
  return mean, at(schedule.posterior_log_variance_clipped, index, x_t)


def learned_range_log_variance(schedule: Schedule, *, v, index):
  """Improved DDPM's variance: log var = frac log beta + (1 - frac) log beta~, frac = (v + 1) / 2."""
  frac = (v + 1.0) / 2.0
  max_log = at(np.log(schedule.betas), index, v)
  min_log = at(schedule.posterior_log_variance_clipped, index, v)
  return frac * max_log + (1.0 - frac) * min_log


def normal_kl(*, mean1, log_var1, mean2, log_var2):
  """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))), elementwise, in nats."""
  return 0.5 * (-1.0 + log_var2 - log_var1 + jnp.exp(log_var1 - log_var2)
                + (mean1 - mean2) ** 2 * jnp.exp(-log_var2))


def _approx_standard_normal_cdf(x):
  # The tanh approximation guided-diffusion uses, kept for identical loss values.
  return 0.5 * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """log p(x) of images in [-1, 1] quantised to 256 levels under N(means, exp(log_scales)^2)."""
  centered = x - means
  inv_std = jnp.exp(-log_scales)
  cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus,
                   jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def prior_kl(schedule: Schedule, *, x0, index):
  """KL(q(x_t | x_0) || N(0, I)) summed per example, in nats (the ELBO's L_T at `index`)."""
  mean, _, log_var = q_mean_variance(schedule, x0=x0, index=index)
  kl = normal_kl(mean1=mean, log_var1=log_var, mean2=0.0, log_var2=0.0)
  return jnp.sum(kl, axis=tuple(range(1, x0.ndim)))
