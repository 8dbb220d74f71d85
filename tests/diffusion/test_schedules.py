"""Schedules and respacing against closed forms and guided-diffusion's documented behaviour."""

import math

import numpy as np
import pytest

from diffbfr_jax.diffusion import schedules


def test_linear_schedule_is_float64_with_the_paper_endpoints():
  s = schedules.make_schedule('linear', 2000, 1e-6, 1e-2)
  assert s.betas.dtype == np.float64 and s.num_steps == 2000
  assert (s.betas[0], s.betas[-1]) == (1e-6, 1e-2)
  np.testing.assert_allclose(np.diff(s.betas), (1e-2 - 1e-6) / 1999)


def test_derived_arrays_match_direct_formulas():
  s = schedules.make_schedule('linear', 50, 1e-4, 2e-2)
  for i in (0, 1, 17, 49):
    gamma = math.prod(1 - b for b in s.betas[:i + 1])
    gamma_prev = math.prod(1 - b for b in s.betas[:i])
    assert s.gammas[i] == pytest.approx(gamma, rel=1e-12)
    assert s.gammas_prev[i] == pytest.approx(gamma_prev, rel=1e-12)
    # Bayes for q(x_{t-1} | x_t, x_0): prior N(sqrt(g') x0, 1 - g'), likelihood N(sqrt(a) x, b).
    a, b = 1 - s.betas[i], s.betas[i]
    if i > 0:
      precision = 1 / (1 - gamma_prev) + a / b
      assert s.posterior_variance[i] == pytest.approx(1 / precision, rel=1e-10)
      assert s.posterior_mean_coef1[i] == pytest.approx(
          math.sqrt(gamma_prev) / (1 - gamma_prev) / precision, rel=1e-10)
      assert s.posterior_mean_coef2[i] == pytest.approx(math.sqrt(a) / b / precision, rel=1e-10)
  assert s.posterior_variance[0] == 0
  assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
  assert s.posterior_mean_coef1[0] == pytest.approx(1.0, rel=1e-12)
  assert s.posterior_mean_coef2[0] == 0.0


def test_cosine_schedule_follows_its_alpha_bar():
  T = 1000
  s = schedules.make_schedule('cosine', T)
  f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
  for i in (0, 10, 500, 900):
    assert s.gammas[i] == pytest.approx(f(i + 1) / f(0), rel=1e-9)
  assert s.betas.max() <= 0.999


def test_space_timesteps_has_guided_diffusion_meaning():
  assert schedules.space_timesteps(1000, 'ddim50') == list(range(0, 1000, 20))
  assert schedules.space_timesteps(2000, '') == list(range(2000))
  steps = schedules.space_timesteps(1000, '250')
  assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
  assert schedules.space_timesteps(10, '3') == [0, 4, 9]  # stride 4.5, Python's round(4.5) = 4
  # guided-diffusion's docstring: 300 steps, counts [10, 15, 20] -> 10, 15 and 20 steps taken
  # evenly from each hundred, both ends of each section included.
  steps = np.array(schedules.space_timesteps(300, [10, 15, 20]))
  for lo, count in ((0, 10), (100, 15), (200, 20)):
    section = steps[(steps >= lo) & (steps < lo + 100)]
    assert len(section) == count and section[0] == lo and section[-1] == lo + 99
  with pytest.raises(ValueError, match='no integer stride'):
    schedules.space_timesteps(1000, 'ddim999')
  with pytest.raises(ValueError, match='cannot take 30 steps'):
    schedules.space_timesteps(20, '30')


@pytest.mark.parametrize('respacing', ['ddim25', '250', '7,3', '1000'])
def test_respaced_betas_reproduce_the_kept_gammas(respacing):
  full = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)
  r = schedules.respace(full, respacing)
  keep = schedules.space_timesteps(1000, respacing)
  np.testing.assert_array_equal(r.timesteps, keep)
  np.testing.assert_allclose(np.cumprod(1 - r.betas), full.gammas[keep], rtol=1e-12)
  assert r.num_train_timesteps == 1000


def test_start_count_on_the_original_and_the_respaced_grid():
  full = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)
  assert schedules.start_count(full, 100, 'original') == 100
  r = schedules.respace(full, '250')  # kept steps 0, 4, 8, ... (0-based)
  # Paper step 100 is index 99; the kept indices at or below it are 0, 4, ..., 96: 25 of them.
  assert schedules.start_count(r, 100, 'original') == 25
  assert schedules.start_count(r, 100, 'respaced') == 100  # DifFace's "100 of 250"
  with pytest.raises(ValueError, match='outside'):
    schedules.start_count(r, 251, 'respaced')
  with pytest.raises(ValueError, match="grid='sparse'"):
    schedules.start_count(r, 1, 'sparse')
