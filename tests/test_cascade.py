"""The cascade: each preset of configs/cascade.py runs the chains it claims (counted through the
model functions), stages hand over the right images, and the resize is the pipeline's."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cascade as cascade_config
from diffbfr_jax import cascade
from diffbfr_jax.errors import ConfigError

# preset: {stage: (network evaluations, first training step denoised)} (Table 2 rows and fast)
EXPECTED = {
    '': {'irm1': (2000, 1999), 'irm2': (1000, 999), 'tem': (100, 99)},
    'tem_w': {'irm1': (2000, 1999), 'irm2': (1000, 999), 'tem': (100, 99)},
    'irm_c_t': {'irm1': (2000, 1999), 'irm2': (1000, 999)},
    'irm_c': {'irm1': (2000, 1999), 'irm2': (2000, 1999)},
    'irm_s': {'irm2': (2000, 1999)},
    # Respaced as guided-diffusion: 100 of 2000 keeps round(i * 1999 / 99), i = 0..99, so IRM-1
    # starts at 1999 and N1 = 1000 keeps i <= 49 (step round(989.4) = 989); 250 of 1000 keeps
    # round(i * 999 / 249), so N2 = 100 keeps i <= 24 (step round(96.3) = 96).
    'fast': {'irm1': (100, 1999), 'irm2': (50, 989), 'tem': (25, 96)},
}


def _stages(preset, log):
  """The preset's stages (smoke networks' sizes and the real schedules and samplers), each with
  a stand-in network that returns 0.1 * x_t (+ 0.05 * cond) as its noise prediction and records every call in
  `log` (unless None)."""
  config = cascade_config.get_config(f'{preset},smoke')
  from configs import irm1, irm2, tem  # pylint: disable=g-import-not-at-top
  stage_configs = {'irm1': irm1.get_config('smoke'), 'irm2': irm2.get_config('smoke'),
                   'tem': tem.get_config('smoke')}
  stages = []
  for name in cascade.STAGES:
    if not config[name].enabled:
      continue
    sc = stage_configs[name]
    stage = cascade.build_stage(name, sc.model_type, sc.model, sc.diffusion, config[name].sampling)

    def fake(params, x_t, time, cond, name=name, out=sc.model.out_channels):
      del params
      if log is not None:
        jax.debug.callback(
            lambda t, x, c, n=name: log.append((n, np.asarray(t), np.asarray(x), np.asarray(c))),
            time, x_t, cond if cond is not None else jnp.zeros(()))
      eps = 0.1 * x_t + (0.05 * cond if cond is not None else 0.0)
      return jnp.concatenate([eps] + ([jnp.zeros_like(x_t)] if out == 6 else []), -1)

    stages.append(stage._replace(apply=fake))
  return config, stages


@pytest.mark.parametrize('preset', list(EXPECTED))
def test_each_preset_runs_the_chains_it_claims(preset):
  log = []
  config, stages = _stages(preset, log)
  cascade.check_sizes(stages, config.image_size)
  lq = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
  keys = jax.random.key(1)[None]
  outputs = jax.jit(cascade.make_cascade(stages))({s.name: {} for s in stages},
                                                  {'lq': lq, 'key': keys})
  expected = EXPECTED[preset]
  assert sorted(k for k in outputs if k != 'output') == sorted(expected)
  ran = [name for name, *_ in log]
  for name, (count, first_step) in expected.items():
    assert ran.count(name) == count, name
    assert cascade.num_steps(next(s for s in stages if s.name == name)) == count
    stage = next(s for s in stages if s.name == name)
    t, x, c = next((t, x, c) for n, t, x, c in log if n == name)
    if stage.time_input == 'step':
      assert int(t[0]) == first_step
    else:  # SR3 networks take sqrt(gamma) of the training step
      np.testing.assert_allclose(t[0], np.sqrt(stage.schedule.gammas[first_step]), rtol=1e-6)
  # The stages run in order, and hand over: IRM-1 is conditioned on the LQ face at its size;
  # IRM-2 on IRM-1's output resized to 32 (or on the LQ face without IRM-1, IRM-s).
  assert ran == sorted(ran, key=cascade.STAGES.index)
  first_cond = {n: c for n, _, _, c in reversed(log)}
  if 'irm1' in expected:
    np.testing.assert_allclose(first_cond['irm1'], cascade.resize(lq, 16), atol=1e-6)
  if 'irm2' in expected:
    source = cascade.resize(outputs['irm1'], 32) if 'irm1' in expected else lq
    np.testing.assert_allclose(first_cond['irm2'], source, atol=1e-6)
  last = [s.name for s in stages][-1]
  np.testing.assert_array_equal(outputs['output'], outputs[last])


def test_truncated_stages_start_from_the_previous_output_diffused_to_their_start_step():
  log = []
  _, stages = _stages('', log)
  lq = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
  keys = jax.random.key(1)[None]
  outputs = jax.jit(cascade.make_cascade(stages))({s.name: {} for s in stages},
                                                  {'lq': lq, 'key': keys})
  first_x = {n: x for n, _, x, _ in reversed(log)}
  for name, previous, index in (('irm2', cascade.resize(outputs['irm1'], 32), 999),
                                ('tem', outputs['irm2'], 99)):
    stage = next(s for s in stages if s.name == name)
    # Re-derive the start: the stage's key, split as sample_chain does, noise to `index`.
    stage_key = jax.random.fold_in(keys[0], cascade.STAGES.index(name))
    noise = jax.random.normal(jax.random.split(stage_key)[0], (32, 32, 3))[None]
    g = stage.schedule.gammas[index]
    expected = np.sqrt(g) * np.asarray(previous) + np.sqrt(1 - g) * np.asarray(noise)
    np.testing.assert_allclose(first_x[name], expected, atol=1e-5)


@pytest.mark.parametrize('shape, size', [((2, 64, 64, 3), 16), ((1, 16, 16, 3), 64),
                                         ((1, 128, 128, 3), 512)])
def test_resize_is_the_training_pipelines_tensorflow_resize(shape, size, rng):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (this module runs in a subprocess)
  images = rng.uniform(-1, 1, shape).astype(np.float32)
  ours = cascade.resize(jnp.asarray(images), size)
  # The pipeline resizes [0, 1] images with TensorFlow and clips (data/pipeline.py).
  theirs = tf.clip_by_value(tf.image.resize((images + 1) / 2, (size, size), method='bicubic',
                                            antialias=True), 0.0, 1.0).numpy() * 2 - 1
  np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_a_cascade_without_stages_or_of_the_wrong_size_is_refused():
  with pytest.raises(ConfigError, match='no stage enabled'):
    cascade.make_cascade([])
  _, stages = _stages('irm_c_t', [])
  with pytest.raises(ConfigError, match=r'config.image_size=512 differs .* \(irm2: 32\)'):
    cascade.check_sizes(stages, 512)


def test_unknown_presets_name_the_choices():
  with pytest.raises(ValueError, match=r"Unknown config preset 'irm_x'.*cascade: tem_w, irm_c_t, "
                                       r'irm_c, irm_s, fast, distill8, distill4, distill2, distill1; '
                                       r'size: demo, smoke'):
    cascade_config.get_config('irm_x')


_SHARDED = '''
import sys
import jax, jax.numpy as jnp, numpy as np
from diffbfr_jax import parallel
from tests.test_cascade import _stages, _inputs
from diffbfr_jax import cascade
_, stages = _stages('fast', None)
restore = parallel.jit_over_local_devices(cascade.make_cascade(stages))
params = parallel.place_state({s.name: {} for s in stages})
out = restore(params, _inputs(8))
assert len(out['output'].sharding.device_set) == jax.local_device_count()
np.save(sys.argv[1], np.asarray(out['output']))
'''


def _inputs(batch):
  lq = jax.random.uniform(jax.random.key(0), (batch, 32, 32, 3), minval=-1, maxval=1)
  return {'lq': lq, 'key': jax.random.split(jax.random.key(1), batch)}


def test_the_batch_split_over_8_devices_gives_what_one_device_gives(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', _SHARDED, str(tmp_path / 'eight.npy')],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  _, stages = _stages('fast', None)
  one = jax.jit(cascade.make_cascade(stages))({s.name: {} for s in stages}, _inputs(8))
  np.testing.assert_allclose(np.load(tmp_path / 'eight.npy'), one['output'], atol=1e-5)


@pytest.mark.parametrize('field, value', [('ddim_eps', 'difface'), ('sampler', 'ddpm'),
                                          ('variance', 'fixed')])
def test_a_sampling_option_of_no_known_value_is_refused_by_field(field, value):
  from configs import tem  # pylint: disable=g-import-not-at-top
  sc = tem.get_config('smoke')
  sampling = dict(sc.sampling)
  sampling[field] = value
  with pytest.raises(ConfigError, match=f"config.tem.sampling.{field}='{value}'"):
    cascade.build_stage('tem', sc.model_type, sc.model, sc.diffusion, sampling)
