"""The long-tail job (configs/longtail.py) at smoke size, its data split, GAN loss and resume."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn import datasets

from configs import longtail as longtail_config
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax.longtail import ddpm
from diffbfr_jax.longtail import digits
from diffbfr_jax.longtail import gan
from diffbfr_jax.longtail import training
from diffbfr_jax.models import gan as gan_models
from diffbfr_jax.errors import ConfigError


def test_the_long_tailed_set_keeps_the_stated_fraction_of_every_class():
  keep = (1.0, 1.0, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03)
  data = digits.digits(seed=3, held_out=0.25, keep=keep)
  counts = np.bincount(datasets.load_digits().target, minlength=10)  # 178, 182, 177, ...
  held = np.round(0.25 * counts).astype(int)
  expected = np.maximum(1, np.round(np.array(keep) * (counts - held)).astype(int))
  np.testing.assert_array_equal(digits.histogram(data['held_out'][1]), held)
  np.testing.assert_array_equal(digits.histogram(data['train'][1]), counts - held)
  np.testing.assert_array_equal(digits.histogram(data['long_tail'][1]), expected)
  # The long-tailed digits are training digits, none held out; pixels on [-1, 1].
  train = {x.tobytes() for x in data['train'][0]}
  assert all(x.tobytes() in train for x in data['long_tail'][0])
  assert data['train'][0].min() == -1.0 and data['train'][0].max() == 1.0


def test_the_gan_losses_are_the_standard_non_saturating_ones():
  real = np.array([2.0, -1.0, 0.5, 3.0])
  fake = np.array([-2.0, 0.3, 1.0, -0.5])
  d_loss, g_loss = gan.gan_losses(jnp.asarray(real), jnp.asarray(fake))
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  np.testing.assert_allclose(d_loss, -np.mean(np.log(sigmoid(real)))
                             - np.mean(np.log(1 - sigmoid(fake))), rtol=1e-6)
  np.testing.assert_allclose(g_loss, -np.mean(np.log(sigmoid(fake))), rtol=1e-6)


def test_the_gan_samples_with_the_running_statistics():
  config = longtail_config.get_config('smoke')
  init, step, sample = gan.make_gan(config)
  images = jnp.asarray(digits.digits(0, 0.25, config.keep)['long_tail'][0])
  state, _ = jax.jit(step)(init(jax.random.key(0)), images, jax.random.key(1))
  both = sample(state, jax.random.key(2), 5)
  # Each sample depends on its own latent only (no batch statistics at sampling).
  z = jax.random.normal(jax.random.key(2), (5, config.gan.latent))
  single = gan_models.Generator(config.gan.width, config.gan.hidden).apply(
      {'params': state['g'], 'batch_stats': state['g_stats']}, z[:1])
  np.testing.assert_allclose(both[:1], single, atol=1e-6)
  assert both.shape == (5, 8, 8, 1)
  stats = jax.tree.leaves(state['g_stats'])
  assert any(np.abs(np.asarray(x)).sum() > 0 for x in stats)  # updated by the step


def test_a_resumed_training_equals_an_uninterrupted_one(tmp_path):
  config = longtail_config.get_config('smoke')
  init, step, _ = gan.make_gan(config)
  images = jnp.asarray(digits.digits(0, 0.25, config.keep)['long_tail'][0])
  key = jax.random.key(7)
  straight = training.train('gan', tmp_path / 'a', init, step, images, key, 6, 6, meta={})
  training.train('gan', tmp_path / 'b', init, step, images, key, 2, 2, meta={})  # stop at 2
  resumed = training.train('gan', tmp_path / 'b', init, step, images, key, 6, 2, meta={})
  assert int(resumed['step']) == 6
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_the_job_prints_the_histograms_and_writes_the_grids(tmp_path, capsys):
  results = main.run(longtail_config.get_config('smoke'), str(tmp_path))
  out = capsys.readouterr().out
  histograms = results['histograms']
  assert list(histograms) == ['training set (long-tailed)', 'DDPM samples', 'GAN samples']
  assert sum(histograms['DDPM samples']) == sum(histograms['GAN samples']) == 40
  assert histograms['training set (long-tailed)'] == digits.histogram(
      digits.digits(0, 0.25, longtail_config.get_config().keep)['long_tail'][1]).tolist()
  # SVC on scikit-learn's digits: about 0.97-0.99 in scikit-learn's own example.
  assert results['classifier_accuracy'] > 0.95
  assert f'accuracy on 450 held-out digits: {results["classifier_accuracy"]:.4f}' in out
  assert '| 9 | 4 (0.8%) |' in out  # class 9: 4 of the 471 long-tailed digits
  for name in ('ddpm', 'gan'):
    samples = np.load(tmp_path / f'samples_{name}.npy')
    assert samples.shape == (40, 8, 8, 1) and np.abs(samples).max() <= 1.0 + 1e-6
    grid = np.asarray(Image.open(tmp_path / f'samples_{name}.png'))
    assert grid.shape == (4 * 37, 4 * 37)  # 16 samples in rows of 4, 9 px a cell, 4x
  assert json.loads((tmp_path / 'summary.json').read_text())['histograms'] == histograms
  train = np.array(histograms['training set (long-tailed)']) / 471
  for name in ('DDPM samples', 'GAN samples'):
    expected = 0.5 * np.abs(np.array(histograms[name]) / 40 - train).sum()
    assert results['total_variation_to_training_set'][name] == pytest.approx(expected)
  # The same command again finds both models trained and draws the same samples.
  again = main.run(longtail_config.get_config('smoke'), str(tmp_path))
  assert again['histograms'] == histograms
  assert 'ddpm: trained already (6 steps)' in capsys.readouterr().out


@pytest.mark.parametrize('field, value, message', [
    ('keep', (1.0,) * 9, 'config.keep'),
    ('held_out', 1.0, 'config.held_out'),
    ('num_samples', 0, 'config.num_samples'),
])
def test_config_errors(field, value, message, tmp_path):
  config = longtail_config.get_config('smoke')
  config[field] = value
  with pytest.raises(ConfigError, match=message):
    main.run(config, str(tmp_path))


def test_the_ddpm_trains_with_its_dropout():
  config = longtail_config.get_config('smoke')
  images = jnp.asarray(digits.digits(0, 0.25, config.keep)['long_tail'][0])
  init, step, _, _ = ddpm.make_ddpm(config)
  state = init(jax.random.key(0))
  # The residual blocks' last convolutions start at zero, which would hide any dropout: move
  # every parameter a little.
  leaves, tree = jax.tree.flatten(state['params'])
  noise = [0.05 * jax.random.normal(jax.random.key(i), x.shape) for i, x in enumerate(leaves)]
  state['params'] = jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise)])
  losses_ = []
  for rate in (0.0, 0.5):
    config.ddpm.model.dropout = rate
    _, step, _, _ = ddpm.make_ddpm(config)
    losses_.append(float(jax.jit(step)(state, images, jax.random.key(1))[1]['loss']))
  # The same parameters, batch and noise: only the dropout masks differ.
  assert losses_[0] != pytest.approx(losses_[1], rel=1e-4)


def test_a_non_finite_loss_stops_with_one_error_naming_the_checkpoint(tmp_path):
  config = longtail_config.get_config('smoke')
  init, step, _ = gan.make_gan(config)
  nan = jnp.full((16, 8, 8, 1), jnp.nan)
  with pytest.raises(errors.NonFiniteLossError, match=r'Non-finite loss \(nan\) at step 1, '
                     r'computed with the parameters of step 0. No checkpoint was saved') as e:
    training.train('gan', tmp_path / 'gan', init, step, nan, jax.random.key(0), 4, 2, meta={})
  assert isinstance(e.value, errors.UserError)  # main prints it as one error: line


def test_only_states_whose_next_loss_is_finite_are_saved(tmp_path):
  """The project's good-state rule: the state of step 2 is not saved, as the loss computed with
  its parameters (step 3's) is not finite; step 1's is the last good checkpoint."""
  config = longtail_config.get_config('smoke')
  init, step, _ = gan.make_gan(config)

  def breaks_at_step_3(state, images, key):
    new, metrics = step(state, images, key)
    return new, {k: jnp.where(state['step'] >= 2, jnp.nan, v) for k, v in metrics.items()}

  images = jnp.asarray(digits.digits(0, 0.25, config.keep)['long_tail'][0])
  with pytest.raises(errors.NonFiniteLossError, match=r'at step 3, computed with the parameters '
                     r'of step 2. The last good checkpoint is step 1 in '):
    training.train('gan', tmp_path / 'gan', init, breaks_at_step_3, images, jax.random.key(0),
                   6, 1, meta={})
  assert checkpointing.find(tmp_path / 'gan')[1] == 1


def test_a_rerun_with_another_set_or_model_is_refused_and_more_steps_train_on(tmp_path):
  config = longtail_config.get_config('smoke')
  config.gan.steps = 2
  main.run(config, str(tmp_path))
  changed = longtail_config.get_config('smoke')
  changed.keep = (0.5,) * 10
  with pytest.raises(ConfigError, match=r'keep: \[.*\] before, \[0.5, .*\] now'):
    main.run(changed, str(tmp_path))
  changed = longtail_config.get_config('smoke')
  changed.gan.width = 32
  with pytest.raises(ConfigError, match='gan.width: 16 before, 32 now'):
    main.run(changed, str(tmp_path))
  more = longtail_config.get_config('smoke')  # gan.steps 2 -> the preset's: trains on
  assert main.run(more, str(tmp_path))['num_samples'] == 40
