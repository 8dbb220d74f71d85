"""Reverse steps and jitted chains (one `lax.fori_loop` each), with truncated starts.

A chain on a schedule grid with start count N: diffuse the start image to grid index N - 1 with q
(or start from pure noise), then denoise indices N - 1, ..., 0, one model call each. The paper's
"start at N" (Algorithm 1, N1 = 1000, N2 = 100) is N on the training grid: x_N ~ q(x_N | x_0)
with gamma_N, and the first model call is at step t = N. (DifFace's sampler noises its index 100
of a 250-step grid but first denoises index 99; here the noised index and the first denoised
index are always the same.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion import schedules
from diffbfr_jax.diffusion.schedules import Schedule, at, model_time

VARIANCES = ('beta', 'posterior', 'learned_range')
SAMPLERS = ('ancestral', 'ddim')
# The noise in DDIM's direction term when x_0 is clipped (identical without clipping):
# 'from_x0' re-derives it from the clipped x_0 (guided-diffusion's `ddim_sample`); 'model' keeps
# the network's prediction (DifFace's `ddim_sample`, `eps = out["pred_noise"]`).
DDIM_EPS = ('from_x0', 'model')
# What a network's first C output channels predict: 'eps' (the noise; every stage as trained) or
# 'v' (sqrt(gamma) eps - sqrt(1 - gamma) x_0; a distilled student's, diffusion/distillation.py).
PREDICTIONS = ('eps', 'v')


def _split_output(model_out, channels: int):
  """The noise prediction (first C channels) and, if present, the variance output v."""
  return model_out[..., :channels], model_out[..., channels:]


def as_noise_prediction(schedule: Schedule, *, model_out, x_t, index, prediction: str):
  """The model output with its first C channels as the noise prediction (see PREDICTIONS)."""
  if prediction == 'eps':
    return model_out
  if prediction != 'v':
    raise ValueError(f'prediction={prediction!r}; expected one of {PREDICTIONS}.')
  v, rest = _split_output(model_out, x_t.shape[-1])
  eps = gaussian.eps_from_v(schedule, x_t=x_t, index=index, v=v)
  return jnp.concatenate([eps, rest], axis=-1) if rest.shape[-1] else eps


def _noise_mask(index, x):
  """1 where a step adds noise, 0 at index 0 (the last step), broadcast to x's rank."""
  mask = (jnp.asarray(index) > 0).astype(x.dtype)
  return jnp.reshape(mask, jnp.shape(mask) + (1,) * (x.ndim - jnp.ndim(mask)))


def _per_example(key) -> bool:
  """Whether `key` is a batch of keys `[B]` (one per example) rather than one key."""
  return jnp.ndim(key) == 1


def _split(key):
  if _per_example(key):
    pair = jax.vmap(jax.random.split)(key)
    return pair[:, 0], pair[:, 1]
  return tuple(jax.random.split(key))


def _fold_in(key, data):
  if _per_example(key):
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, data)
  return jax.random.fold_in(key, data)


def _normal(key, shape):
  """N(0, I) of `shape`; with per-example keys, example b's draw depends on `key[b]` only, so
  it is the same whatever else is in the batch."""
  if _per_example(key):
    if key.shape[0] != shape[0]:
      raise ValueError(f'{key.shape[0]} keys for a batch of {shape[0]} examples.')
    return jax.vmap(lambda k: jax.random.normal(k, shape[1:], jnp.float32))(key)
  return jax.random.normal(key, shape, jnp.float32)


def p_mean_variance(schedule: Schedule, *, model_out, x_t, index, variance: str,
                    clip_x0: bool):
  """Mean and log-variance of p(x_{t-1} | x_t), and the x_0 estimate.

  variance: 'beta' (sigma^2 = beta_t, the paper's Algorithm 1), 'posterior' (beta~_t, SR3's code),
  'learned_range' (improved DDPM; v in the model's extra channels).
  The mean is the posterior mean at the x_0 estimate; unclipped, it equals Algorithm 1's
  `(x_t - beta_t / sqrt(1 - gamma_t) eps) / sqrt(alpha_t)`.
  """
  eps, v = _split_output(model_out, x_t.shape[-1])
  if variance == 'beta':
    log_var = at(np.log(schedule.betas), index, x_t)
  elif variance == 'posterior':
    log_var = at(schedule.posterior_log_variance_clipped, index, x_t)
  elif variance == 'learned_range':
    if v.shape[-1] != x_t.shape[-1]:
      raise ValueError(f"variance='learned_range' needs a model with {2 * x_t.shape[-1]} output "
                       f'channels, got {model_out.shape[-1]}.')
    log_var = gaussian.learned_range_log_variance(schedule, v=v, index=index)
  else:
    raise ValueError(f'variance={variance!r}; expected one of {VARIANCES}.')
  x0 = gaussian.predict_x0(schedule, x_t=x_t, index=index, eps=eps)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
  mean, _ = gaussian.q_posterior(schedule, x0=x0, x_t=x_t, index=index)
  return mean, log_var, x0


def ancestral_step(schedule: Schedule, *, model_out, x_t, index, noise, variance: str,
                   clip_x0: bool):
  """x_{t-1} = mean + sigma z; no noise at index 0 (the paper's z = 0 at t = 1)."""
  mean, log_var, _ = p_mean_variance(schedule, model_out=model_out, x_t=x_t, index=index,
                                     variance=variance, clip_x0=clip_x0)
  return mean + _noise_mask(index, x_t) * jnp.exp(0.5 * log_var) * noise


def _check_ddim_eps(ddim_eps: str):
  if ddim_eps not in DDIM_EPS:
    raise ValueError(f'ddim_eps={ddim_eps!r}; expected one of {DDIM_EPS}.')


def ddim_step(schedule: Schedule, *, model_out, x_t, index, noise, eta: float, clip_x0: bool,
              ddim_eps: str = 'from_x0'):
  """DDIM (Song et al.) with stochasticity eta (0: deterministic).

  x_{t-1} = sqrt(gamma_prev) x0 + sqrt(1 - gamma_prev - sigma^2) eps + sigma z, with
  sigma = eta sqrt((1 - gamma_prev) / (1 - gamma)) sqrt(1 - gamma / gamma_prev), x0 the (clipped)
  estimate, and eps per `ddim_eps` (see DDIM_EPS): 'from_x0' the noise of the clipped x0
  (guided-diffusion), 'model' the network's own (DifFace). Variance channels are ignored.
  """
  _check_ddim_eps(ddim_eps)
  eps, _ = _split_output(model_out, x_t.shape[-1])
  x0 = gaussian.predict_x0(schedule, x_t=x_t, index=index, eps=eps)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
  if ddim_eps == 'from_x0':
    eps = gaussian.predict_eps(schedule, x_t=x_t, index=index, x0=x0)
  gamma = at(schedule.gammas, index, x_t)
  gamma_prev = at(schedule.gammas_prev, index, x_t)
  sigma = eta * jnp.sqrt((1 - gamma_prev) / (1 - gamma)) * jnp.sqrt(1 - gamma / gamma_prev)
  mean = x0 * jnp.sqrt(gamma_prev) + jnp.sqrt(1 - gamma_prev - sigma ** 2) * eps
  return mean + _noise_mask(index, x_t) * sigma * noise


def sample_chain(model_fn, schedule: Schedule, key, start, *, num_steps: int, time_input: str,
                 cond=None, from_noise: bool = False, sampler: str = 'ancestral',
                 variance: str = 'beta', clip_x0: bool = False, eta: float = 0.0,
                 ddim_eps: str = 'from_x0', prediction: str = 'eps'):
  """Runs N = `num_steps` reverse steps on `schedule`'s grid from `start`.

  Args:
    model_fn: `model_fn(x_t, time, cond) -> [B, H, W, C or 2C]` (a closure over parameters).
    schedule: the grid to run on (full or respaced).
    key: a typed PRNG key, or one per example (`[B]`, so each example's result does not
      depend on the rest of the batch); the start noise and each step's noise
      (`fold_in(key, index)`) derive from it.
    start: [B, H, W, C] image diffused to index N - 1 with q (truncated sampling); with
      `from_noise` only its shape is used and the chain starts from N(0, I).
    num_steps: N, a Python int (0 returns `start`).
    time_input: 'step' or 'noise_level' (see `model_time`).
    ddim_eps: DDIM's noise under clipping, one of DDIM_EPS (sampler='ddim' only; checked always).
    prediction: what the network predicts, one of PREDICTIONS.
  """
  if not 0 <= num_steps <= schedule.num_steps:
    raise ValueError(f'num_steps={num_steps} is outside [0, {schedule.num_steps}].')
  if sampler not in SAMPLERS:
    raise ValueError(f'sampler={sampler!r}; expected one of {SAMPLERS}.')
  _check_ddim_eps(ddim_eps)
  if prediction not in PREDICTIONS:
    raise ValueError(f'prediction={prediction!r}; expected one of {PREDICTIONS}.')
  if num_steps == 0:
    return start
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    raise TypeError('sample_chain needs typed keys (jax.random.key), got dtype '
                    f'{key.dtype}.')
  start_key, step_key = _split(key)
  batch = start.shape[0]
  first = num_steps - 1
  noise = _normal(start_key, start.shape)
  if from_noise:
    x = noise
  else:
    x = gaussian.q_sample(schedule, x0=start.astype(jnp.float32), index=jnp.full((batch,), first),
                          noise=noise)

  def body(i, x):
    index = jnp.full((batch,), first - i)
    out = as_noise_prediction(schedule, model_out=model_fn(x, model_time(schedule, index,
                                                                         time_input), cond),
                              x_t=x, index=index, prediction=prediction)
    z = _normal(_fold_in(step_key, first - i), x.shape).astype(x.dtype)
    if sampler == 'ddim':
      return ddim_step(schedule, model_out=out, x_t=x, index=index, noise=z, eta=eta,
                       clip_x0=clip_x0, ddim_eps=ddim_eps)
    return ancestral_step(schedule, model_out=out, x_t=x, index=index, noise=z, variance=variance,
                          clip_x0=clip_x0)

  x = jax.lax.fori_loop(0, num_steps, body, x)
  assert x.shape == start.shape, (x.shape, start.shape)
  return x


def make_sampler(model_fn, train_schedule: Schedule, *, time_input: str, start_step: int,
                 from_noise: bool, variance: str, clip_x0: bool, respacing: str = '',
                 start_grid: str = 'original', sampler: str = 'ancestral', eta: float = 0.0,
                 ddim_eps: str = 'from_x0', prediction: str = 'eps'):
  """`make_sampler(model_fn, schedule, time_input=..., **config.sampling)`.

  Returns `sample(key, start, cond=None)` and the number of reverse steps (= model calls) it runs.
  respacing: '' (every step), a guided-diffusion count string ('250', '10,20'), 'ddimN' or
    'segmentK' (K steps evenly spaced over the chain's segment, ending at its start step: the
    grids of a distilled stage, schedules.segment_timesteps).
  start_grid: whether `start_step` counts steps of the training grid ('original') or of the
  respaced grid ('respaced').
  ddim_eps: with sampler='ddim' and clip_x0, 'from_x0' (guided-diffusion) or 'model' (DifFace).
  prediction: what the network's output predicts (PREDICTIONS; a stage's checkpoint says).
  """
  _check_ddim_eps(ddim_eps)
  schedule, num_steps = schedules.sampling_grid(train_schedule, respacing, start_step, start_grid)

  def sample(key, start, cond=None):
    return sample_chain(model_fn, schedule, key, start, num_steps=num_steps, time_input=time_input,
                        cond=cond, from_noise=from_noise, sampler=sampler, variance=variance,
                        clip_x0=clip_x0, eta=eta, ddim_eps=ddim_eps, prediction=prediction)

  return sample, num_steps
