"""Reverse steps and chains: Algorithm 1, DDIM with an oracle and with clipping (guided-diffusion's
and DifFace's eps), truncated starts, call counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irm1
from configs import irm2
from configs import tem
from diffbfr_jax import config_checks
from diffbfr_jax import errors
from diffbfr_jax.diffusion import gaussian
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules

SR3 = schedules.make_schedule('linear', 2000, 1e-6, 1e-2)
ADM = schedules.make_schedule('linear', 1000, 1e-4, 2e-2)
Y0 = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3), minval=-1, maxval=1)


def _oracle(schedule_for_steps=None):
  """A perfect noise predictor for Y0, from the noise level or from an integer step."""
  def model_fn(x_t, time, cond):
    if schedule_for_steps is None:
      g = time[:, None, None, None] ** 2
    else:
      g = jnp.asarray(schedule_for_steps.gammas, jnp.float32)[time.astype(jnp.int32)]
      g = g[:, None, None, None]
    return (x_t - jnp.sqrt(g) * Y0) / jnp.sqrt(1 - g)
  return model_fn


def test_one_ancestral_step_is_algorithm_1(rng):
  x_t = rng.standard_normal((2, 4, 4, 3))
  eps = rng.standard_normal(x_t.shape)
  z = rng.standard_normal(x_t.shape)
  i = 700  # the paper's t = 701
  a, g = 1 - SR3.betas[i], SR3.gammas[i]
  expected = (x_t - (1 - a) / math.sqrt(1 - g) * eps) / math.sqrt(a) + math.sqrt(1 - a) * z
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  ours = samplers.ancestral_step(SR3, model_out=f32(eps), x_t=f32(x_t), index=jnp.full((2,), i),
                                 noise=f32(z), variance='beta', clip_x0=False)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
  # At t = 1 Algorithm 1 adds no noise.
  last = [samplers.ancestral_step(SR3, model_out=f32(eps), x_t=f32(x_t),
                                  index=jnp.zeros(2, jnp.int32), noise=f32(n), variance='beta',
                                  clip_x0=False) for n in (z, -z)]
  np.testing.assert_array_equal(last[0], last[1])


def test_variances(rng):
  x_t = jnp.asarray(rng.standard_normal((1, 2, 2, 3)), jnp.float32)
  v = jnp.asarray(rng.uniform(-1, 1, (1, 2, 2, 3)), jnp.float32)
  out = jnp.concatenate([jnp.zeros_like(x_t), v], -1)
  i = jnp.array([37])
  for kind, expected in (('beta', np.log(ADM.betas[37])),
                         ('posterior', np.log(ADM.posterior_variance[37]))):
    _, log_var, _ = samplers.p_mean_variance(ADM, model_out=out, x_t=x_t, index=i, variance=kind,
                                             clip_x0=False)
    np.testing.assert_allclose(np.broadcast_to(log_var, x_t.shape), np.full(x_t.shape, expected),
                               rtol=1e-5)
  _, log_var, _ = samplers.p_mean_variance(ADM, model_out=out, x_t=x_t, index=i,
                                           variance='learned_range',
                                           clip_x0=False)
  frac = (np.asarray(v) + 1) / 2
  expected = frac * np.log(ADM.betas[37]) + (1 - frac) * np.log(ADM.posterior_variance[37])
  np.testing.assert_allclose(log_var, expected, rtol=1e-5)
  with pytest.raises(ValueError, match='needs a model with 6 output channels'):
    samplers.p_mean_variance(ADM, model_out=x_t, x_t=x_t, index=i, variance='learned_range',
                             clip_x0=False)


@pytest.mark.parametrize('respacing, start, from_noise', [
    ('ddim50', 50, False), ('ddim50', 50, True), ('250', 17, False), ('', 1000, True),
])
def test_ddim_eta0_with_an_oracle_returns_y0_from_any_start(respacing, start, from_noise):
  schedule = schedules.respace(ADM, respacing)
  start_image = jax.random.normal(jax.random.key(5), Y0.shape)  # anything: x_N is overwritten
  out = jax.jit(lambda k: samplers.sample_chain(
      _oracle(ADM), schedule, k, start_image, num_steps=start, time_input='step',
      from_noise=from_noise, sampler='ddim', eta=0.0))(jax.random.key(1))
  # The oracle makes every x0 estimate Y0, so the deterministic chain lands on Y0 exactly.
  np.testing.assert_allclose(out, Y0, atol=2e-4)


def test_ancestral_chain_with_an_oracle_lands_on_y0():
  out = jax.jit(lambda k: samplers.sample_chain(
      _oracle(), SR3, k, Y0, num_steps=1000, time_input='noise_level', variance='beta'))(
          jax.random.key(2))
  np.testing.assert_allclose(out, Y0, atol=2e-4)


def test_a_chain_of_zero_steps_returns_its_start():
  out = samplers.sample_chain(_oracle(), SR3, jax.random.key(0), Y0, num_steps=0,
                              time_input='noise_level')
  assert out is Y0


def _recording_model(log, channels=3):
  def model_fn(x_t, time, cond):
    jax.debug.callback(lambda t, x: log.append((np.asarray(t), np.asarray(x))), time, x_t)
    return jnp.zeros(x_t.shape[:-1] + (channels,))
  return model_fn


@pytest.mark.parametrize('respacing, start_step, grid, expected_steps', [
    ('', 100, 'original', 100),  # TEM as the paper: N2 = 100 of 1000
    ('250', 100, 'original', 25),  # the same start on a 250-step grid: kept steps 0, 4, ..., 96
    ('250', 100, 'respaced', 100),  # DifFace's "100 of 250": training step 396 first
])
def test_model_calls_equal_the_configured_steps_with_the_right_times(respacing, start_step, grid,
                                                                     expected_steps):
  log = []
  sample, num_steps = samplers.make_sampler(
      _recording_model(log, channels=6), ADM, time_input='step', start_step=start_step,
      from_noise=False, variance='learned_range', clip_x0=True, respacing=respacing,
      start_grid=grid)
  assert num_steps == expected_steps
  key = jax.random.key(3)
  jax.block_until_ready(jax.jit(sample)(key, Y0))
  times = [int(t[0]) for t, _ in log]
  kept = schedules.space_timesteps(1000, respacing)
  assert times == [kept[i] for i in reversed(range(expected_steps))]
  # The start image is noised to exactly the grid index that is denoised first.
  grid_schedule = schedules.respace(ADM, respacing)
  noised = gaussian.q_sample(grid_schedule, x0=Y0, index=jnp.full((2,), expected_steps - 1),
                             noise=jax.random.normal(jax.random.split(key)[0], Y0.shape))
  np.testing.assert_allclose(log[0][1], noised, atol=1e-6)


def test_tem_config_maps_onto_make_sampler():
  config = tem.get_config('smoke')
  log = []
  _, num_steps = samplers.make_sampler(_recording_model(log, 6), ADM, time_input='step',
                                       **config.sampling)
  assert num_steps == 100


def test_a_chain_compiles_once_for_the_same_shapes():
  traces = []

  def model_fn(x_t, time, cond):
    traces.append(1)  # runs only while tracing
    return jnp.zeros_like(x_t)

  sample, _ = samplers.make_sampler(model_fn, SR3, time_input='noise_level', start_step=20,
                                    from_noise=False, variance='beta', clip_x0=False)
  sample = jax.jit(sample)
  a = sample(jax.random.key(0), Y0)
  b = sample(jax.random.key(1), Y0 + 1)
  assert len(traces) == 1
  assert float(jnp.abs(a - b).max()) > 0  # different keys and starts give different outputs
  sample(jax.random.key(0), jnp.zeros((3, 4, 4, 3)))  # a new batch shape traces again
  assert len(traces) == 2


def test_equal_keys_give_equal_chains():
  sample, _ = samplers.make_sampler(_oracle(), SR3, time_input='noise_level', start_step=30,
                                    from_noise=False, variance='beta', clip_x0=True)
  a = jax.jit(sample)(jax.random.key(4), Y0 * 0.5)
  b = jax.jit(sample)(jax.random.key(4), Y0 * 0.5)
  np.testing.assert_array_equal(a, b)


def test_per_example_keys_make_each_result_independent_of_the_rest_of_the_batch():
  model_fn = lambda x, t, c: 0.3 * x  # any network: only the noise draws matter here
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(4), i))(jnp.arange(2))

  def run(keys, start):
    return samplers.sample_chain(model_fn, SR3, keys, start, num_steps=5,
                                 time_input='noise_level')

  both = jax.jit(run)(keys, Y0)
  for b in range(2):
    alone = jax.jit(run)(keys[b:b + 1], Y0[b:b + 1])
    np.testing.assert_allclose(both[b:b + 1], alone, rtol=1e-6, atol=1e-6)
  assert not np.allclose(both[0], both[1])  # different keys, different draws
  # The same draws as an explicit re-statement: start noise and step noise per key.
  start_key, step_key = jax.random.split(keys[0])
  x = gaussian.q_sample(SR3, x0=Y0[:1], index=jnp.full((1,), 4),
                        noise=jax.random.normal(start_key, (4, 4, 3))[None])
  for index in range(4, -1, -1):
    z = jax.random.normal(jax.random.fold_in(step_key, index), (4, 4, 3))[None]
    x = samplers.ancestral_step(SR3, model_out=0.3 * x, x_t=x, index=jnp.full((1,), index),
                                noise=z, variance='beta',
                                clip_x0=False)
  np.testing.assert_allclose(both[:1], x, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match='typed keys'):
    samplers.sample_chain(model_fn, SR3, jax.random.PRNGKey(0), Y0, num_steps=2,
                          time_input='noise_level')


# DDIM's eps when x_0 is clipped: 'from_x0' (guided-diffusion) and 'model' (DifFace), against
# closed forms in float64 NumPy that share nothing with the code under test.
ADM_BETAS = np.linspace(1e-4, 2e-2, 1000, dtype=np.float64)  # guided-diffusion's 'linear', T = 1000
ADM_GAMMAS = np.cumprod(1.0 - ADM_BETAS)


def _ddim_closed_form(x_t, eps, z, g, g_prev, *, eta, clip, ddim_eps):
  x0 = (x_t - np.sqrt(1 - g) * eps) / np.sqrt(g)
  if clip:
    x0 = np.clip(x0, -1.0, 1.0)
  eps_used = eps if ddim_eps == 'model' else (x_t - np.sqrt(g) * x0) / np.sqrt(1 - g)
  s = eta * np.sqrt((1 - g_prev) / (1 - g)) * np.sqrt(1 - g / g_prev)
  return np.sqrt(g_prev) * x0 + np.sqrt(1 - g_prev - s ** 2) * eps_used + s * z


# (grid, index, gamma, gamma_prev): the full grid, and DifFace's ddim250 (training steps 0, 4, ...)
# at its first denoised index 99 (training step 396, previous kept step 392).
STEP_CASES = [pytest.param('', 300, ADM_GAMMAS[300], ADM_GAMMAS[299], id='full-300'),
              pytest.param('ddim250', 99, ADM_GAMMAS[396], ADM_GAMMAS[392], id='ddim250-99')]


@pytest.mark.parametrize('respacing, index, g, g_prev', STEP_CASES)
@pytest.mark.parametrize('eta', [0.0, 0.5])
@pytest.mark.parametrize('ddim_eps', ['from_x0', 'model'])
def test_one_clipped_ddim_step_is_the_closed_form(rng, respacing, index, g, g_prev, eta, ddim_eps):
  schedule = schedules.respace(ADM, respacing)
  x_t = rng.standard_normal((2, 4, 4, 3))
  eps = rng.standard_normal(x_t.shape)
  z = rng.standard_normal(x_t.shape)
  x0 = (x_t - np.sqrt(1 - g) * eps) / np.sqrt(g)
  assert np.mean(np.abs(x0) > 1) > 0.5  # clipping is active on most elements
  v = rng.uniform(-1, 1, x_t.shape)  # learned-variance channels: DDIM ignores them
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  ours = samplers.ddim_step(schedule, model_out=f32(np.concatenate([eps, v], -1)), x_t=f32(x_t),
                            index=jnp.full((2,), index), noise=f32(z), eta=eta, clip_x0=True,
                            ddim_eps=ddim_eps)
  expected = _ddim_closed_form(x_t, eps, z, g, g_prev, eta=eta, clip=True, ddim_eps=ddim_eps)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
  # The other convention is far from this closed form: the option decides the result.
  other = _ddim_closed_form(x_t, eps, z, g, g_prev, eta=eta, clip=True,
                            ddim_eps={'model': 'from_x0', 'from_x0': 'model'}[ddim_eps])
  assert np.abs(other - expected).max() > 0.1


@pytest.mark.parametrize('respacing, index, g, g_prev', STEP_CASES)
@pytest.mark.parametrize('eta', [0.0, 0.5])
def test_without_clipping_both_ddim_conventions_agree(rng, respacing, index, g, g_prev, eta):
  schedule = schedules.respace(ADM, respacing)
  x_t = rng.standard_normal((2, 4, 4, 3))
  eps = rng.standard_normal(x_t.shape)  # x_0 estimates far outside [-1, 1], left unclipped
  z = rng.standard_normal(x_t.shape)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  steps = {c: samplers.ddim_step(schedule, model_out=f32(eps), x_t=f32(x_t),
                                 index=jnp.full((2,), index), noise=f32(z), eta=eta, clip_x0=False,
                                 ddim_eps=c) for c in samplers.DDIM_EPS}
  np.testing.assert_allclose(steps['model'], steps['from_x0'], rtol=1e-4, atol=1e-4)
  expected = _ddim_closed_form(x_t, eps, z, g, g_prev, eta=eta, clip=False, ddim_eps='model')
  np.testing.assert_allclose(steps['model'], expected, rtol=1e-4, atol=1e-4)
  # Clipping on, but every x_0 estimate inside [-1, 1]: nothing is clipped, so again equal.
  x0 = rng.uniform(-0.9, 0.9, x_t.shape)
  x_in = np.sqrt(g) * x0 + np.sqrt(1 - g) * eps
  steps = [samplers.ddim_step(schedule, model_out=f32(eps), x_t=f32(x_in),
                              index=jnp.full((2,), index), noise=f32(z), eta=eta, clip_x0=True,
                              ddim_eps=c) for c in samplers.DDIM_EPS]
  np.testing.assert_allclose(steps[0], steps[1], rtol=1e-4, atol=1e-4)


def _toy_eps(x, t):
  """A deterministic stand-in for the network: eps from x_t and the training step t."""
  return 0.7 * x + 0.4 * np.sin(0.01 * t + 3.0 * x)


def _reference_ddim_chain(x_start, noises, *, kept, start_timesteps, eta, difface):
  """DifFace's ddim_sample_loop on a SpacedDiffusion (models/respace.py, gaussian_diffusion.py),
  line by line in float64; `difface=False` swaps in guided-diffusion's one differing line.

  `x_start` is the chain's start (DifFace passes it as `noise`); its loop denoises indices
  start_timesteps - 1, ..., 0, calling the model at the kept training steps (timestep_map).
  """
  # SpacedDiffusion.__init__: betas that make the kept alphas_cumprod exact.
  last_alpha_cumprod, new_betas = 1.0, []
  for i, alpha_cumprod in enumerate(ADM_GAMMAS):
    if i in kept:
      new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
      last_alpha_cumprod = alpha_cumprod
  betas = np.array(new_betas, np.float64)
  timestep_map = sorted(kept)
  alphas_cumprod = np.cumprod(1.0 - betas)
  alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
  sqrt_recip_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod)
  sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod - 1)
  img = x_start
  for i in list(range(start_timesteps))[::-1]:
    # p_mean_variance: the model's 2C channels are split; the variance half is unused by DDIM.
    model_output = _toy_eps(img, timestep_map[i])
    pred_noise = model_output
    pred_xstart = (sqrt_recip_alphas_cumprod[i] * img
                   - sqrt_recipm1_alphas_cumprod[i] * model_output)
    pred_xstart = np.clip(pred_xstart, -1, 1)  # process_xstart with clip_denoised=True
    # ddim_sample
    if difface:
      eps = pred_noise  # `if "pred_noise" in out: eps = out["pred_noise"]`
    else:
      eps = ((sqrt_recip_alphas_cumprod[i] * img - pred_xstart)
             / sqrt_recipm1_alphas_cumprod[i])  # _predict_eps_from_xstart
    alpha_bar, alpha_bar_prev = alphas_cumprod[i], alphas_cumprod_prev[i]
    sigma = (eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
             * np.sqrt(1 - alpha_bar / alpha_bar_prev))
    mean_pred = (pred_xstart * np.sqrt(alpha_bar_prev)
                 + np.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps)
    nonzero_mask = float(i != 0)
    img = mean_pred + nonzero_mask * sigma * noises[i]
  return img


@pytest.mark.parametrize('ddim_eps, difface', [('model', True), ('from_x0', False)])
def test_a_clipped_ddim_chain_follows_difface_or_guided_diffusion(ddim_eps, difface):
  """A few steps of DifFace's sampler setting (ddim grid, eta 0.5, clipping, learned-range
  variance channels that DDIM ignores, start counted on the respaced grid)."""
  respacing, start, eta = 'ddim25', 6, 0.5  # kept steps 0, 40, ..., 960; indices 5, ..., 0

  def model_fn(x_t, time, cond):
    eps = 0.7 * x_t + 0.4 * jnp.sin(0.01 * time[:, None, None, None] + 3.0 * x_t)
    return jnp.concatenate([eps, jnp.full_like(x_t, 5.0)], -1)  # v: garbage, unused

  sample, num_steps = samplers.make_sampler(
      model_fn, ADM, time_input='step', start_step=start, from_noise=False,
      variance='learned_range', clip_x0=True, respacing=respacing, start_grid='respaced',
      sampler='ddim', eta=eta, ddim_eps=ddim_eps)
  assert num_steps == start
  key = jax.random.key(7)
  start_image = 0.5 * Y0
  ours = jax.jit(sample)(key, start_image)
  # The same draws as the chain: x_N = q(x_N | x_0) at index N - 1, then a draw per index.
  start_key, step_key = jax.random.split(key)
  kept = set(range(0, 1000, 40))
  g_start = ADM_GAMMAS[sorted(kept)[start - 1]]
  x_start = (np.sqrt(g_start) * np.asarray(start_image, np.float64)
             + np.sqrt(1 - g_start) * np.asarray(jax.random.normal(start_key, Y0.shape),
                                                  np.float64))
  noises = {i: np.asarray(jax.random.normal(jax.random.fold_in(step_key, i), Y0.shape),
                          np.float64) for i in range(start)}
  refs = {d: _reference_ddim_chain(x_start, noises, kept=kept, start_timesteps=start,
                                   eta=eta, difface=d) for d in (True, False)}
  np.testing.assert_allclose(ours, refs[difface], atol=2e-4)
  assert np.abs(refs[True] - refs[False]).max() > 0.05  # the conventions differ on this chain


def test_ddim_eps_is_checked_by_name():
  config = tem.get_config('smoke')
  assert config.sampling.ddim_eps == 'model'  # TEM's DDIM is DifFace's
  assert irm1.get_config().sampling.ddim_eps == irm2.get_config().sampling.ddim_eps == 'from_x0'
  config.sampling.ddim_eps = 'difface'
  with pytest.raises(errors.ConfigError, match=r"config.sampling.ddim_eps='difface'"):
    config_checks.check_stage_config(config)
  with pytest.raises(ValueError, match=r"ddim_eps='pred_noise'"):
    samplers.make_sampler(_oracle(), ADM, time_input='step', start_step=10, from_noise=False,
                          variance='beta', clip_x0=True, sampler='ddim',
                          ddim_eps='pred_noise')
  with pytest.raises(ValueError, match=r"ddim_eps='pred_noise'"):
    samplers.ddim_step(ADM, model_out=Y0, x_t=Y0, index=jnp.full((2,), 3), noise=Y0, eta=0.0,
                       clip_x0=True,
                       ddim_eps='pred_noise')
