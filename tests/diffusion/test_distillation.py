"""Progressive distillation's pieces against closed forms and the samplers' own DDIM steps: the
segment grids, v-prediction, the teacher's target, the loss weighting, and one round on a
smoke-sized network."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import irm2
from diffbfr_jax import models
from diffbfr_jax.diffusion import distillation
from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules

SR3 = schedules.make_schedule('linear', 2000, 1e-6, 1e-2)
ADM = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)


@pytest.mark.parametrize('start, count', [(1000, 8), (2000, 1024), (100, 64), (7, 3), (2000, 1),
                                          (100, 100)])
def test_segment_grids_are_evenly_spaced_end_at_the_start_and_nest(start, count):
  # round(j N / K) - 1 with halves rounded up, in exact fractions.
  expected = [int(Fraction(j * start, count) + Fraction(1, 2)) - 1 for j in range(1, count + 1)]
  assert schedules.segment_timesteps(start, count) == expected
  assert expected[-1] == start - 1
  if 2 * count <= start:
    assert schedules.segment_timesteps(start, 2 * count)[1::2] == expected
  grid, steps = schedules.sampling_grid(SR3, f'segment{count}', start, 'original')
  assert steps == count and list(grid.timesteps) == expected
  np.testing.assert_allclose(grid.gammas, SR3.gammas[expected], rtol=1e-12)


@pytest.mark.parametrize('respacing, grid, message', [
    ('segment0', 'original', 'need 1 <= 0'), ('segment2001', 'original', 'need 1 <= 2001'),
    ('segmentx', 'original', 'whole number'), ('segment4', 'respaced', "start_grid='original'")])
def test_bad_segment_grids_are_refused_by_value(respacing, grid, message):
  with pytest.raises(ValueError, match=message):
    schedules.sampling_grid(SR3, respacing, 1000 if respacing != 'segment2001' else 2000, grid)


def test_v_is_converted_to_the_noise_and_x0_it_stands_for(rng):
  index = np.array([0, 10, 500, 999])
  g = ADM.gammas[index][:, None, None, None]
  x0, eps = rng.normal(size=(2, 4, 8, 8, 3))
  x_t = np.sqrt(g) * x0 + np.sqrt(1 - g) * eps
  v = np.sqrt(g) * eps - np.sqrt(1 - g) * x0  # Salimans and Ho's definition
  args = dict(x_t=jnp.float32(x_t), index=index)
  np.testing.assert_allclose(gaussian.eps_from_v(ADM, v=jnp.float32(v), **args), eps, atol=2e-5)
  np.testing.assert_allclose(gaussian.x0_from_v(ADM, v=jnp.float32(v), **args), x0, atol=2e-5)


@pytest.mark.parametrize('sampler', ['ddim', 'ancestral'])
def test_a_v_network_samples_as_the_eps_network_it_equals(sampler):
  """A network that outputs the v of another's noise prediction gives the same chain."""
  def eps_fn(x, t, c):
    return jnp.tanh(0.7 * x + 1e-3 * t[:, None, None, None])

  def v_fn(x, t, c):  # t is the step ('step' time input on a full grid: index == step)
    index = t.astype(jnp.int32)
    x0 = gaussian.predict_x0(ADM, x_t=x, index=index, eps=eps_fn(x, t, c))
    g = schedules.at(ADM.gammas, index, x)
    return jnp.sqrt(g) * eps_fn(x, t, c) - jnp.sqrt(1 - g) * x0

  start = jnp.zeros((2, 8, 8, 3))
  kw = dict(time_input='step', start_step=100, from_noise=False, variance='beta', clip_x0=False,
            respacing='segment10', sampler=sampler)
  key = jax.random.split(jax.random.key(0), 2)
  eps_chain, _ = samplers.make_sampler(eps_fn, ADM, **kw)
  v_chain, _ = samplers.make_sampler(v_fn, ADM, prediction='v', **kw)
  np.testing.assert_allclose(v_chain(key, start), eps_chain(key, start), atol=1e-4)


def _numpy_ddim(eps_fn, gammas, steps, z, i, clip):
  """One deterministic DDIM step from grid index i to i - 1 (gamma 1 below index 0), float64;
  with `clip`, x_0 clipped to [-1, 1] and the noise re-derived from it (guided-diffusion)."""
  g, g_prev = gammas[i], (gammas[i - 1] if i > 0 else 1.0)
  eps = eps_fn(z, steps[i])
  x0 = (z - np.sqrt(1 - g) * eps) / np.sqrt(g)
  if clip:
    x0 = np.clip(x0, -1, 1)
    eps = (z - np.sqrt(g) * x0) / np.sqrt(1 - g)
  return np.sqrt(g_prev) * x0 + np.sqrt(1 - g_prev) * eps, x0


@pytest.mark.parametrize('clip', [False, True])
@pytest.mark.parametrize('schedule, start, student_steps', [(ADM, 100, 4), (SR3, 1000, 2),
                                                             (SR3, 2000, 1)])
def test_the_target_is_the_one_step_that_lands_where_two_teacher_steps_land(
    schedule, start, student_steps, clip, rng):
  eps_np = lambda x, t: np.tanh(0.8 * x + 3e-4 * t) + 0.1 * x ** 2
  teacher = lambda x, t, c: jnp.tanh(0.8 * x + 3e-4 * t[:, None, None, None]) + 0.1 * x ** 2
  grid = distillation.teacher_grid(schedule, start, student_steps)
  steps = schedules.segment_timesteps(start, 2 * student_steps)
  gammas = schedule.gammas[steps]
  for k in range(student_steps):
    i = 2 * k + 1  # the student's step k on the teacher's grid
    z = rng.normal(size=(2, 4, 4, 3))
    target = np.asarray(distillation.teacher_target(
        teacher, grid, z_t=jnp.float32(z), index=jnp.full((2,), i), cond=None,
        time_input='step', prediction='eps', clip_x0=clip), np.float64)
    z_mid, _ = _numpy_ddim(eps_np, gammas, steps, z, i, clip)
    z_s, x0_mid = _numpy_ddim(eps_np, gammas, steps, z_mid, i - 1, clip)
    # One DDIM step on the student's grid (i -> i - 2) with x_0 = target lands on z_s (float32
    # against float64: the tolerance scales with x_0, large where gamma is small).
    g_t, g_s = gammas[i], (gammas[i - 2] if i > 1 else 1.0)
    eps_target = (z - np.sqrt(g_t) * target) / np.sqrt(1 - g_t)
    tolerance = 1e-5 * max(1.0, np.abs(target).max())
    np.testing.assert_allclose(np.sqrt(g_s) * target + np.sqrt(1 - g_s) * eps_target, z_s,
                               atol=tolerance)
    if i == 1:  # the last step: the target is the teacher's x_0 after its first step
      np.testing.assert_allclose(target, x0_mid, atol=tolerance)


@pytest.mark.parametrize('weighting', distillation.WEIGHTINGS)
def test_the_weightings_are_max_of_x_and_eps_errors_and_the_v_error(weighting, rng):
  grid = distillation.teacher_grid(SR3, 1000, 4)
  teacher = lambda x, t, c: jnp.sin(x + t[:, None, None, None])
  student = lambda x, t, c: jnp.cos(x) * 0.3
  index = jnp.array([1, 3, 5, 7])
  z = jnp.float32(rng.normal(size=(4, 4, 4, 3)))
  loss, x_mse = distillation.loss_at(
      student, teacher, grid, z_t=z, index=index, cond=None, time_input='noise_level',
      student_prediction='eps', teacher_prediction='eps', weighting=weighting)
  target = distillation.teacher_target(teacher, grid, z_t=z, index=index, cond=None,
                                       time_input='noise_level', prediction='eps')
  g = grid.gammas[np.asarray(index)][:, None, None, None]
  eps_hat = np.asarray(student(z, None, None), np.float64)
  x_hat = (z - np.sqrt(1 - g) * eps_hat) / np.sqrt(g)
  eps_target = (z - np.sqrt(g) * target) / np.sqrt(1 - g)
  mean = lambda a: np.mean(a ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(x_mse, mean(x_hat - target), rtol=1e-3)
  if weighting == 'snr_trunc':  # max(SNR, 1) x_mse = max(x_mse, eps_mse)
    expected = np.maximum(mean(x_hat - target), mean(eps_hat - eps_target))
  else:  # (SNR + 1) x_mse = the squared error of v = sqrt(g) eps - sqrt(1 - g) x0
    v = lambda x0, eps: np.sqrt(g) * eps - np.sqrt(1 - g) * x0
    expected = mean(v(x_hat, eps_hat) - v(target, eps_target))
  np.testing.assert_allclose(loss, expected, rtol=2e-3)


def test_one_round_makes_one_student_step_match_two_teacher_steps_of_a_smoke_network():
  """A smoke-sized SR3 network as the teacher, its copy trained on the round's loss on fixed
  inputs: the student's one DDIM step from z (the sampler's step) ends where the teacher's two
  do, where before training it ended far from there."""
  config = irm2.get_config('smoke')
  config.model.update(inner_channels=8, channel_mults=(1, 2), attn_res=(), norm_groups=4,
                      image_size=16)
  model = models.create_model(config.model_type, **config.model)
  teacher = model.init(jax.random.key(3), *models.example_inputs(config.model))['params']
  apply = lambda p: (lambda x, t, c: model.apply({'params': p}, x, t, c))
  start = config.sampling.start_step
  grid = distillation.teacher_grid(SR3, start, 1)
  student_grid, _ = schedules.sampling_grid(SR3, 'segment1', start, 'original')
  x0 = jnp.float32(np.clip(np.random.default_rng(0).normal(size=(4, 16, 16, 3)) * 0.5, -1, 1))
  key = jax.random.key(7)
  index, z = distillation.draw_inputs(grid, x0, key)
  assert np.all(np.asarray(index) == 1)

  def ddim(fn, on, z, i):
    out = fn(z, schedules.model_time(on, jnp.full((4,), i), 'noise_level'), x0)
    return samplers.ddim_step(on, model_out=out, x_t=z, index=jnp.full((4,), i),
                              noise=jnp.zeros_like(z), eta=0.0, clip_x0=False)

  two_teacher_steps = ddim(apply(teacher), grid, ddim(apply(teacher), grid, z, 1), 0)
  rms = lambda p: float(jnp.sqrt(jnp.mean((ddim(apply(p), student_grid, z, 0)
                                           - two_teacher_steps) ** 2)))
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, opt):
    grads = jax.grad(lambda p: distillation.distillation_loss(
        apply(p), apply(teacher), grid, x0, key, x0, time_input='noise_level',
        student_prediction='eps', teacher_prediction='eps')[0])(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  params, before = teacher, rms(teacher)
  opt = tx.init(params)
  for _ in range(150):
    params, opt = step(params, opt)
  after = rms(params)
  assert before > 0.3, before  # one teacher step is not two
  assert after < 0.05 and after < before / 10, (before, after)
