"""Progressive distillation (Salimans and Ho, ICLR 2022) of a stage's deterministic chain over the
segment it runs in the cascade.

A chain of K DDIM steps (eta 0) over the segment 1..N (N: the stage's start step) runs on the
grid `schedules.segment_timesteps(N, K)`; the 2K-step grid holds it, every second step. A round
trains a K-step student to do in one step what its teacher does in two: from z_t at a student
step t (drawn from q(z_t | x_0) of a training face), the teacher's two unclipped DDIM steps
t -> t' -> s give z_s, and the student's x_0 estimate is pulled towards the x_0 that takes z_t
to z_s in one DDIM step:

  x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)

(alpha = sqrt(gamma), sigma = sqrt(1 - gamma); at the last step s is x_0 itself, sigma_s = 0,
and x~ is the teacher's x_0). The teacher's steps are the DDIM steps the stage samples with,
each x_0 estimate clipped to [-1, 1] or not (`clip_x0`; the paper's code does not clip, its
teachers predicting x or v; an eps teacher's unclipped x_0 near pure noise is
(x_t - sqrt(1 - gamma) eps) / sqrt(gamma), hundreds for IRM-1's first steps). The loss is the squared x_0 error weighted per the paper's
Section 4: 'snr_trunc', max(SNR_t, 1) (their "truncated SNR" weighting, the one their released
configs use), or 'snr_plus_one', SNR_t + 1 (the same as the squared error of v). This is
`training_losses` of google-research's diffusion_distillation (dpm.py) on DDPM's discrete
grids.
"""

import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion import losses
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules
from diffbfr_jax.diffusion.schedules import Schedule, at, model_time

WEIGHTINGS = ('snr_trunc', 'snr_plus_one')


def teacher_grid(train_schedule: Schedule, start_step: int, student_steps: int) -> Schedule:
  """The teacher's grid of a round whose student runs `student_steps` over the segment
  1..`start_step`: 2K steps, the student's K every second one of them (indices 1, 3, ...)."""
  return schedules.respace_to(train_schedule,
                              schedules.segment_timesteps(start_step, 2 * student_steps))


def x0_estimate(grid: Schedule, *, model_out, x_t, index, prediction: str):
  """A network's x_0 estimate at `index` of `grid`, unclipped, from what it predicts."""
  eps = samplers.as_noise_prediction(grid, model_out=model_out, x_t=x_t, index=index,
                                     prediction=prediction)[..., :x_t.shape[-1]]
  return gaussian.predict_x0(grid, x_t=x_t, index=index, eps=eps)


def teacher_target(teacher_fn, grid: Schedule, *, z_t, index, cond, time_input: str,
                   prediction: str, clip_x0: bool = False, ddim_eps: str = 'from_x0'):
  """The x_0 target of the student at `grid` index `index` (odd: a student step): two DDIM
  steps (eta 0; `clip_x0` and `ddim_eps` as samplers.ddim_step's) of `teacher_fn(x, time,
  cond)` from z_t to index - 2 (x_0 when index is 1), and the x_0 that one DDIM step from z_t
  to there would need."""
  zero = jnp.zeros_like(z_t)

  def step(x, i):
    out = teacher_fn(x, model_time(grid, i, time_input), cond)
    out = samplers.as_noise_prediction(grid, model_out=out, x_t=x, index=i, prediction=prediction)
    return samplers.ddim_step(grid, model_out=out, x_t=x, index=i, noise=zero, eta=0.0,
                              clip_x0=clip_x0, ddim_eps=ddim_eps)

  mid = index - 1
  z_s = step(step(z_t, index), mid)
  alpha_s = at(np.sqrt(grid.gammas_prev), mid, z_t)
  sigma_s = at(np.sqrt(1.0 - grid.gammas_prev), mid, z_t)
  alpha_t = at(np.sqrt(grid.gammas), index, z_t)
  sigma_t = at(np.sqrt(1.0 - grid.gammas), index, z_t)
  ratio = sigma_s / sigma_t
  return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def loss_weight(grid: Schedule, index, weighting: str):
  """The weight of the squared x_0 error at `index` (see WEIGHTINGS), shape [B]."""
  snr = at(grid.gammas / (1.0 - grid.gammas), index)
  if weighting == 'snr_trunc':
    return jnp.maximum(snr, 1.0)
  if weighting == 'snr_plus_one':
    return snr + 1.0
  raise ValueError(f'weighting={weighting!r}; expected one of {WEIGHTINGS}.')


def draw_inputs(grid: Schedule, x0, key, example_ids=None):
  """Per example (keyed like the training losses, `losses.example_keys`): a student step k ~
  U{0..K-1}, as its `grid` index 2k + 1, and z_t ~ q(z_t | x0) there. Returns (index, z_t)."""
  if grid.num_steps % 2:
    raise ValueError(f'a teacher grid has an even number of steps, got {grid.num_steps}.')
  keys = losses.example_keys(key, x0.shape[0], example_ids)
  pick = lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0, grid.num_steps // 2)
  index = 2 * jax.vmap(pick)(keys) + 1
  noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 2), x0.shape[1:],
                                               x0.dtype))(keys)
  return index, gaussian.q_sample(grid, x0=x0, index=index, noise=noise)


def loss_at(student_fn, teacher_fn, grid: Schedule, *, z_t, index, cond, time_input: str,
            student_prediction: str, teacher_prediction: str, weighting: str,
            clip_x0: bool = False, ddim_eps: str = 'from_x0'):
  """Per-example loss and x_0 squared error of the student at (z_t, index): its unclipped x_0
  estimate against the teacher's target (no gradient through the teacher)."""
  target = jax.lax.stop_gradient(teacher_target(
      teacher_fn, grid, z_t=z_t, index=index, cond=cond, time_input=time_input,
      prediction=teacher_prediction, clip_x0=clip_x0, ddim_eps=ddim_eps))
  out = student_fn(z_t, model_time(grid, index, time_input), cond)
  x_hat = x0_estimate(grid, model_out=out, x_t=z_t, index=index, prediction=student_prediction)
  x_mse = jnp.mean((x_hat - target) ** 2, axis=tuple(range(1, z_t.ndim)))
  return loss_weight(grid, index, weighting) * x_mse, x_mse


def distillation_loss(student_fn, teacher_fn, grid: Schedule, x0, key, cond=None, *,
                      time_input: str, student_prediction: str, teacher_prediction: str,
                      weighting: str = 'snr_trunc', clip_x0: bool = False,
                      ddim_eps: str = 'from_x0', example_ids=None):
  """One batch's loss of a round on the teacher's `grid` (`teacher_grid`): inputs from
  `draw_inputs`, `student_fn(z_t, time, cond)` and `teacher_fn` as the network's `apply`, the
  teacher's steps clipped or not (`teacher_target`). Returns (mean loss, metrics)."""
  index, z_t = draw_inputs(grid, x0, key, example_ids)
  per_example, x_mse = loss_at(student_fn, teacher_fn, grid, z_t=z_t, index=index, cond=cond,
                               time_input=time_input, student_prediction=student_prediction,
                               teacher_prediction=teacher_prediction, weighting=weighting,
                               clip_x0=clip_x0, ddim_eps=ddim_eps)
  return jnp.mean(per_example), {'x_mse': jnp.mean(x_mse)}
