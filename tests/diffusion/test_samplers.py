"""Reverse steps and chains: Algorithm 1, DDIM with an oracle, truncated starts, call counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tem
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
  ours = samplers.ancestral_step(SR3, f32(eps), f32(x_t), jnp.full((2,), i), f32(z),
                                 variance='beta', clip_x0=False)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
  # At t = 1 Algorithm 1 adds no noise.
  last = [samplers.ancestral_step(SR3, f32(eps), f32(x_t), jnp.zeros(2, jnp.int32), f32(n),
                                  variance='beta', clip_x0=False) for n in (z, -z)]
  np.testing.assert_array_equal(last[0], last[1])


def test_variances(rng):
  x_t = jnp.asarray(rng.standard_normal((1, 2, 2, 3)), jnp.float32)
  v = jnp.asarray(rng.uniform(-1, 1, (1, 2, 2, 3)), jnp.float32)
  out = jnp.concatenate([jnp.zeros_like(x_t), v], -1)
  i = jnp.array([37])
  for kind, expected in (('beta', np.log(ADM.betas[37])),
                         ('posterior', np.log(ADM.posterior_variance[37]))):
    _, log_var, _ = samplers.p_mean_variance(ADM, out, x_t, i, variance=kind, clip_x0=False)
    np.testing.assert_allclose(np.broadcast_to(log_var, x_t.shape), np.full(x_t.shape, expected),
                               rtol=1e-5)
  _, log_var, _ = samplers.p_mean_variance(ADM, out, x_t, i, variance='learned_range',
                                           clip_x0=False)
  frac = (np.asarray(v) + 1) / 2
  expected = frac * np.log(ADM.betas[37]) + (1 - frac) * np.log(ADM.posterior_variance[37])
  np.testing.assert_allclose(log_var, expected, rtol=1e-5)
  with pytest.raises(ValueError, match='needs a model with 6 output channels'):
    samplers.p_mean_variance(ADM, x_t, x_t, i, variance='learned_range', clip_x0=False)


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
  noised = gaussian.q_sample(grid_schedule, Y0, jnp.full((2,), expected_steps - 1),
                             jax.random.normal(jax.random.split(key)[0], Y0.shape))
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
  x = gaussian.q_sample(SR3, Y0[:1], jnp.full((1,), 4),
                        jax.random.normal(start_key, (4, 4, 3))[None])
  for index in range(4, -1, -1):
    z = jax.random.normal(jax.random.fold_in(step_key, index), (4, 4, 3))[None]
    x = samplers.ancestral_step(SR3, 0.3 * x, x, jnp.full((1,), index), z, variance='beta',
                                clip_x0=False)
  np.testing.assert_allclose(both[:1], x, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match='typed keys'):
    samplers.sample_chain(model_fn, SR3, jax.random.PRNGKey(0), Y0, num_steps=2,
                          time_input='noise_level')
