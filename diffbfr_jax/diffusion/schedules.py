"""Beta schedules, the arrays derived from them, and time respacing.

All arrays are computed in float64 NumPy and cast to float32 where they are used (`at`).
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """A diffusion schedule on a grid of `num_steps` steps and every array derived from its betas.

  Immutable; float64 NumPy arrays indexed by grid index `i` (the paper's step `t = i + 1`).
  `timesteps[i]` is the step of the training schedule that index `i` stands for: `arange(T)` for
  a full schedule, the kept steps for a respaced one. Build with `make_schedule` or `respace`.
  """
  num_train_timesteps: int
  timesteps: np.ndarray
  betas: np.ndarray
  alphas: np.ndarray
  gammas: np.ndarray  # gamma_t = prod alpha: q(x_t | x_0) = N(sqrt(gamma_t) x_0, (1 - gamma_t) I)
  gammas_prev: np.ndarray  # gamma_{t-1}, with gamma_0 = 1
  # Variance of q(x_{t-1} | x_t, x_0): beta~_t = beta_t (1 - gamma_{t-1}) / (1 - gamma_t).
  posterior_variance: np.ndarray
  # log beta~_t with beta~ at index 0 (which is 0) replaced by index 1's (guided-diffusion).
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray  # coefficient of x_0 in the posterior mean
  posterior_mean_coef2: np.ndarray  # coefficient of x_t in the posterior mean

  @property
  def num_steps(self) -> int:
    return len(self.betas)


def schedule_from_betas(betas, timesteps=None, num_train_timesteps=None) -> Schedule:
  """Derives every array of a `Schedule` from its betas, in float64."""
  betas = np.asarray(betas, np.float64)
  if betas.ndim != 1 or not np.all((betas > 0) & (betas <= 1)):
    raise ValueError('betas must be a 1-D array of values in (0, 1].')
  alphas = 1.0 - betas
  gammas = np.cumprod(alphas)
  gammas_prev = np.append(1.0, gammas[:-1])
  posterior_variance = betas * (1.0 - gammas_prev) / (1.0 - gammas)
  clipped = np.append(posterior_variance[1], posterior_variance[1:]) if len(betas) > 1 else betas
  return Schedule(
      num_train_timesteps=len(betas) if num_train_timesteps is None else num_train_timesteps,
      timesteps=np.arange(len(betas)) if timesteps is None else np.asarray(timesteps),
      betas=betas,
      alphas=alphas,
      gammas=gammas,
      gammas_prev=gammas_prev,
      posterior_variance=posterior_variance,
      posterior_log_variance_clipped=np.log(clipped),
      posterior_mean_coef1=betas * np.sqrt(gammas_prev) / (1.0 - gammas),
      posterior_mean_coef2=(1.0 - gammas_prev) * np.sqrt(alphas) / (1.0 - gammas),
  )


def at(array, index, x=None):
  """`array[index]` as float32; with `x`, broadcast to x's rank ([B] -> [B, 1, 1, 1])."""
  value = jnp.asarray(np.asarray(array), jnp.float32)[index]
  if x is not None:
    value = jnp.reshape(value, jnp.shape(value) + (1,) * (x.ndim - jnp.ndim(value)))
  return value


def model_time(schedule: Schedule, index, time_input: str):
  """What the network is given as time at grid `index`.

  'step': the training-schedule step the index stands for (ADM's integer timestep, as float32).
  'noise_level': sqrt(gamma) at that index (SR3's continuous noise level).
  """
  if time_input == 'step':
    return at(schedule.timesteps, index)
  if time_input == 'noise_level':
    return at(np.sqrt(schedule.gammas), index)
  raise ValueError(f"time_input={time_input!r}; expected 'step' or 'noise_level'.")


def make_betas(kind: str, num_timesteps: int, beta_start: float = 1e-4,
               beta_end: float = 2e-2) -> np.ndarray:
  """Betas of a named schedule in float64.

  'linear': `linspace(beta_start, beta_end, T)` (the paper's ranges, Table 6).
  'cosine': improved DDPM's `alpha_bar(t) = cos((t/T + 0.008) / 1.008 * pi / 2)^2`, betas
  clipped at 0.999 (beta_start and beta_end are not used).
  """
  if num_timesteps < 1:
    raise ValueError(f'num_timesteps={num_timesteps}: need at least one step.')
  if kind == 'linear':
    if not 0 < beta_start <= beta_end < 1:
      raise ValueError(f'linear schedule needs 0 < beta_start <= beta_end < 1, got '
                       f'beta_start={beta_start}, beta_end={beta_end}.')
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
  if kind == 'cosine':
    def alpha_bar(t):
      return math.cos((t / num_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar(i + 1) / alpha_bar(i), 0.999)
                     for i in range(num_timesteps)], np.float64)
  raise ValueError(f"schedule kind={kind!r}; expected 'linear' or 'cosine'.")


def make_schedule(kind: str, num_timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 2e-2) -> Schedule:
  """`make_schedule(**config.diffusion.schedule)`: the full training schedule."""
  return schedule_from_betas(make_betas(kind, num_timesteps, beta_start, beta_end))


def space_timesteps(num_timesteps: int, section_counts) -> list[int]:
  """The steps to keep, with guided-diffusion's `space_timesteps` meaning, sorted.

  `section_counts`: 'ddimN' (an integer stride giving exactly N steps, starting at 0), a comma
  string or sequence of counts (split the T steps into equal sections and take that many evenly
  spaced steps from each, with Python's rounding), or '' / None for every step.
  """
  if section_counts in ('', None):
    return list(range(num_timesteps))
  if isinstance(section_counts, str):
    if section_counts.startswith('ddim'):
      desired = int(section_counts[len('ddim'):])
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return list(range(0, num_timesteps, stride))
      raise ValueError(f'respacing={section_counts!r}: no integer stride gives exactly '
                       f'{desired} of {num_timesteps} steps.')
    section_counts = [int(x) for x in section_counts.split(',')]
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, steps = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < count:
      raise ValueError(f'respacing: cannot take {count} steps from a section of {size}.')
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    cur = 0.0
    for _ in range(count):
      steps.append(start + round(cur))
      cur += stride
    start += size
  return sorted(set(steps))


SEGMENT = 'segment'  # respacing='segmentK': see segment_timesteps


def segment_timesteps(start_step: int, count: int) -> list[int]:
  """The K = `count` steps of a chain's segment 1..N (N = `start_step`, training-grid steps),
  evenly spaced and ending at N: 0-based steps round(j N / K) - 1 for j = 1..K (halves rounded
  up). Halving K keeps every second step (K's step j is 2K's step 2j), the grids of progressive
  distillation: one step of the K-step chain spans two of the 2K-step chain."""
  if not 1 <= count <= start_step:
    raise ValueError(f'respacing={SEGMENT}{count}: need 1 <= {count} <= the start step '
                     f'{start_step}.')
  return [(2 * j * start_step + count) // (2 * count) - 1 for j in range(1, count + 1)]


def sampling_grid(schedule: Schedule, respacing, start_step: int, start_grid: str):
  """(the grid a chain runs on, its number of reverse steps) for a sampling config: `respacing`
  as `respace` takes it, or 'segmentK' (K steps of the segment the chain runs, see
  `segment_timesteps`; start_grid must be 'original')."""
  if isinstance(respacing, str) and respacing.startswith(SEGMENT):
    count = respacing[len(SEGMENT):]
    if not count.isdigit():
      raise ValueError(f'respacing={respacing!r}: expected {SEGMENT}K with a whole number K.')
    if start_grid != 'original':
      raise ValueError(f"respacing={respacing!r} needs start_grid='original', got "
                       f'{start_grid!r}.')
    if not 0 < start_step <= schedule.num_train_timesteps:
      raise ValueError(f'start_step={start_step} is outside [1, {schedule.num_train_timesteps}].')
    grid = respace_to(schedule, segment_timesteps(start_step, int(count)))
  else:
    grid = respace(schedule, respacing)
  return grid, start_count(grid, start_step, start_grid)


def respace(schedule: Schedule, respacing) -> Schedule:
  """Keep a subset of steps; new betas make the kept gammas exact (guided-diffusion's rule)."""
  if not respacing:
    return schedule
  if schedule.num_steps != schedule.num_train_timesteps:
    raise ValueError('respace a full schedule, not an already respaced one.')
  return respace_to(schedule, space_timesteps(schedule.num_steps, respacing))


def respace_to(schedule: Schedule, keep) -> Schedule:
  """The full `schedule` on the sorted steps `keep` (0-based), their gammas exact."""
  if schedule.num_steps != schedule.num_train_timesteps:
    raise ValueError('respace a full schedule, not an already respaced one.')
  keep = list(keep)
  if keep != sorted(set(keep)) or not keep or keep[0] < 0 or keep[-1] >= schedule.num_steps:
    raise ValueError(f'steps to keep must be increasing and within [0, {schedule.num_steps}).')
  gammas = schedule.gammas[keep]
  betas = 1.0 - gammas / np.append(1.0, gammas[:-1])
  return schedule_from_betas(betas, keep, schedule.num_steps)


def start_count(schedule: Schedule, start_step: int, grid: str) -> int:
  """How many reverse steps a chain starting at `start_step` runs on `schedule`'s grid.

  grid='respaced': `start_step` counts steps of `schedule` itself (DifFace's "100 of 250").
  grid='original': `start_step` is a step of the training schedule (the paper's N1 = 1000 of
  2000); the chain starts at the last kept step at or below it, which is exact when kept.
  The chain noises x_0 to grid index `count - 1` and denoises indices `count - 1, ..., 0`.
  """
  if grid == 'respaced':
    limit = schedule.num_steps
  elif grid == 'original':
    limit = schedule.num_train_timesteps
  else:
    raise ValueError(f"start grid={grid!r}; expected 'original' or 'respaced'.")
  if not 0 <= start_step <= limit:
    raise ValueError(f'start_step={start_step} is outside [0, {limit}] on the {grid} grid.')
  if grid == 'respaced':
    return start_step
  # Paper step N is training index N - 1; count the kept indices at or below it.
  return int(np.sum(schedule.timesteps <= start_step - 1))
