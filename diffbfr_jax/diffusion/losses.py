"""Training losses: noise prediction at a continuous noise level (SR3, IRM) or at an integer step
(ADM, TEM), with improved DDPM's variational-bound term for a learned-range variance."""

import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion.schedules import Schedule, at, model_time


def _mean_per_example(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def eps_error(pred, target, kind: str):
  """Per-example mean |pred - target| ('l1', Table 6) or squared error ('l2'), shape [B]."""
  if kind == 'l1':
    return _mean_per_example(jnp.abs(pred - target))
  if kind == 'l2':
    return _mean_per_example((pred - target) ** 2)
  raise ValueError(f"loss kind={kind!r}; expected 'l1' or 'l2'.")


def example_keys(key, batch: int, example_ids=None):
  """One key per example: `fold_in(key, id)`. With the data pipeline's global example ids the
  draws of an example do not depend on how the batch is split over devices or microbatches."""
  ids = jnp.arange(batch) if example_ids is None else jnp.asarray(example_ids)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)


def _per_example(fn, keys, stream: int):
  return jax.vmap(lambda k: fn(jax.random.fold_in(k, stream)))(keys)


def sample_noise_level(schedule: Schedule, key, batch: int, *, per_example_t: bool = False,
                       example_ids=None):
  """SR3's training noise level: t ~ U{1..T} (one per batch unless `per_example_t`), then per
  example g ~ U(sqrt(gamma_{t-1}), sqrt(gamma_t)). Returns g [B] and the grid index t - 1."""
  k_batch, k_examples = jax.random.split(key)
  keys = example_keys(k_examples, batch, example_ids)
  draw_t = lambda k: jax.random.randint(k, (), 0, schedule.num_steps)
  if per_example_t:
    index = _per_example(draw_t, keys, 0)
  else:
    index = jnp.broadcast_to(draw_t(k_batch), (batch,))
  high = at(np.sqrt(schedule.gammas_prev), index)  # sqrt(gamma_{t-1}) >= sqrt(gamma_t)
  low = at(np.sqrt(schedule.gammas), index)
  u = _per_example(lambda k: jax.random.uniform(k, ()), keys, 1)
  return low + (high - low) * u, index


def noise_level_loss(model_fn, schedule: Schedule, x0, key, cond=None, *, kind: str = 'l1',
                     per_example_t: bool = False, example_ids=None):
  """SR3 / IRM loss: `model_fn(x_t, g, cond)` predicts the noise of x_t = g x0 + sqrt(1-g^2) eps.

  `example_ids` ([B], optional) key each example's draws (see `example_keys`); the batch-wide
  step comes from `key` alone."""
  k_level, k_noise = jax.random.split(key)
  level, index = sample_noise_level(schedule, k_level, x0.shape[0], per_example_t=per_example_t,
                                    example_ids=example_ids)
  keys = example_keys(k_noise, x0.shape[0], example_ids)
  noise = _per_example(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype), keys, 2)
  x_t = gaussian.q_sample_noise_level(x0=x0, noise_level=level, noise=noise)
  per_example = eps_error(model_fn(x_t, level, cond), noise, kind)
  return jnp.mean(per_example), {'loss_eps': jnp.mean(per_example)}


def vb_term(schedule: Schedule, *, model_out, x0, x_t, index):
  """Improved DDPM's L_vb per example, in bits: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
  t > 1 and the decoder's negative log-likelihood of x_0 at t = 1. The model mean uses a
  stop-gradient on the noise prediction, so this term trains only the variance."""
  channels = x_t.shape[-1]
  eps = jax.lax.stop_gradient(model_out[..., :channels])
  v = model_out[..., channels:]
  x0_model = gaussian.predict_x0(schedule, x_t=x_t, index=index, eps=eps)
  model_mean, _ = gaussian.q_posterior(schedule, x0=x0_model, x_t=x_t, index=index)
  model_log_var = gaussian.learned_range_log_variance(schedule, v=v, index=index)
  true_mean, true_log_var = gaussian.q_posterior(schedule, x0=x0, x_t=x_t, index=index)
  kl = _mean_per_example(gaussian.normal_kl(mean1=true_mean, log_var1=true_log_var,
                                            mean2=model_mean, log_var2=model_log_var))
  nll = -_mean_per_example(gaussian.discretized_gaussian_log_likelihood(
      x0, means=model_mean, log_scales=0.5 * model_log_var))
  return jnp.where(index == 0, nll, kl) / np.log(2.0)


def timestep_loss(model_fn, schedule: Schedule, x0, key, cond=None, *, kind: str = 'l1',
                  rescale_vb: bool = True, example_ids=None):
  """ADM / TEM loss: per-example step t ~ U{1..T}; `model_fn(x_t, step, cond)` predicts the
  noise in its first C channels.

  A model with 2C output channels has a learned-range variance (v in the last C channels) and
  gets improved DDPM's hybrid loss: eps error + L_vb, with L_vb scaled by T / 1000 when
  `rescale_vb` (guided-diffusion's rescale_learned_sigmas). `example_ids` as in
  `noise_level_loss`."""
  keys = example_keys(key, x0.shape[0], example_ids)
  index = _per_example(lambda k: jax.random.randint(k, (), 0, schedule.num_steps), keys, 0)
  noise = _per_example(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype), keys, 2)
  x_t = gaussian.q_sample(schedule, x0=x0, index=index, noise=noise)
  out = model_fn(x_t, model_time(schedule, index, 'step'), cond)
  eps_term = eps_error(out[..., :x0.shape[-1]], noise, kind)
  metrics = {'loss_eps': jnp.mean(eps_term)}
  total = eps_term
  if out.shape[-1] == 2 * x0.shape[-1]:
    vb = vb_term(schedule, model_out=out, x0=x0, x_t=x_t, index=index)
    if rescale_vb:
      vb = vb * schedule.num_train_timesteps / 1000.0
    metrics['loss_vb'] = jnp.mean(vb)
    total = total + vb
  return jnp.mean(total), metrics
