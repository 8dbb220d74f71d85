"""The long-tail job (configs/longtail.py; the paper's Sec. 4.2, Fig. 2): a DDPM and a GAN of
about the same size trained on long-tailed digits, their samples' classes counted by a classifier
(diffbfr_jax/longtail/). Each model trains in `checkpoint_every` steps between checkpoints under
<workdir>/ddpm and <workdir>/gan; a model is trained on, never retrained with other settings.
Writes the sample grids and arrays, the training set's grid and summary.json.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from diffbfr_jax import job_outputs
from diffbfr_jax import resume
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.longtail import ddpm
from diffbfr_jax.longtail import digits
from diffbfr_jax.longtail import gan
from diffbfr_jax.longtail import training

PROCESSES = 'one'  # a one-process CPU experiment


def check_config(config) -> None:
  if len(config.keep) != digits.CLASSES or not all(0 < k <= 1 for k in config.keep):
    raise ConfigError(f'config.keep={tuple(config.keep)!r}: expected {digits.CLASSES} fractions '
                      'in (0, 1], one per class 0..9')
  if not 0 < config.held_out < 1:
    raise ConfigError(f'config.held_out={config.held_out!r}: expected a fraction in (0, 1)')
  for field in ('num_samples', 'checkpoint_every', 'ddpm.steps', 'ddpm.batch_size', 'gan.steps',
                'gan.batch_size'):
    node, *rest = field.split('.')
    value = config[node][rest[0]] if rest else config[node]
    if value < 1:
      raise ConfigError(f'config.{field}={value!r}: must be at least 1')


def run(config, workdir) -> dict:
  check_config(config)
  root = job_outputs.workdir_folder(workdir, 'the models and results')
  root.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  data = digits.digits(config.seed, config.held_out, config.keep)
  train_images, train_labels = data['train']
  long_tail, long_tail_labels = data['long_tail']
  classifier = digits.train_classifier(train_images, train_labels)
  held_out, held_out_labels = data['held_out']
  accuracy = float(np.mean(digits.classify(classifier, held_out) == held_out_labels))
  print(f'Digits: {len(train_images)} training ({len(long_tail)} in the long-tailed set), '
        f'{len(data["held_out"][0])} held out; classifier accuracy on the held-out digits '
        f'{accuracy:.4f}', flush=True)

  key = jax.random.key(config.seed)
  ddpm_init, ddpm_step, ddpm_sample, _ = ddpm.make_ddpm(config)
  gan_init, gan_step, gan_sample = gan.make_gan(config)
  images = jnp.asarray(long_tail)
  data_settings = {'keep': list(config.keep), 'held_out': config.held_out, 'seed': config.seed}
  for name in ('ddpm', 'gan'):  # a model is trained on, never retrained: the same settings only
    resume.check_unchanged(
        root / name, {**data_settings, name: {k: v for k, v in config[name].to_dict().items()
                                              if k not in ('steps', 'sampling')}},
        f'the {name} trained on', 'Train these settings in another --workdir (or delete that '
        'folder to train it again).')
  trained = {}
  for i, (name, init, step) in enumerate((('ddpm', ddpm_init, ddpm_step),
                                          ('gan', gan_init, gan_step)), 1):
    trained[name] = training.train(
        name, root / name, init, step, images, jax.random.fold_in(key, i), config[name].steps,
        config.checkpoint_every, meta={'stage': f'longtail {name}', **data_settings,
                                       name: config[name].to_dict()})
  ddpm_state, gan_state = trained['ddpm'], trained['gan']

  t0 = time.perf_counter()
  n = config.num_samples
  samples = {'ddpm': np.asarray(jax.jit(ddpm_sample, static_argnums=2)(
                 ddpm_state, jax.random.fold_in(key, 3), n)),
             'gan': np.asarray(jax.jit(gan_sample, static_argnums=2)(
                 gan_state, jax.random.fold_in(key, 4), n))}
  print(f'Drew {n} samples of each model in {time.perf_counter() - t0:.0f} s', flush=True)
  histograms = {'training set (long-tailed)': digits.histogram(long_tail_labels),
                'DDPM samples': digits.histogram(digits.classify(classifier, samples['ddpm'])),
                'GAN samples': digits.histogram(digits.classify(classifier, samples['gan']))}
  for name, images_ in samples.items():
    Image.fromarray(digits.grid(images_, config.grid_count)).save(root / f'samples_{name}.png')
    np.save(root / f'samples_{name}.npy', images_)
  shuffled = long_tail[np.random.default_rng(0).permutation(len(long_tail))]
  Image.fromarray(digits.grid(shuffled, config.grid_count)).save(root / 'training_set.png')
  count = training.parameter_count
  parameters = {'ddpm': count(ddpm_state['params']),
                'gan': count(gan_state['g']) + count(gan_state['d']),
                'gan_generator': count(gan_state['g'])}
  reference = histograms['training set (long-tailed)']
  distances = {name: digits.total_variation(h, reference) for name, h in histograms.items()
               if name != 'training set (long-tailed)'}
  results = {'classifier_accuracy': accuracy, 'parameters': parameters,
             'total_variation_to_training_set': distances,
             'histograms': {k: v.tolist() for k, v in histograms.items()},
             'keep': list(config.keep), 'seed': config.seed, 'num_samples': n,
             'seconds': time.perf_counter() - start}
  job_outputs.write_summary(root, results)
  print(digits.table(histograms))
  print('Total variation distance to the training set\'s class frequencies: ' + ', '.join(
      f'{name} {value:.3f}' for name, value in distances.items()))
  print(f'Classifier (SVC on the full training split) accuracy on {len(data["held_out"][0])} '
        f'held-out digits: {accuracy:.4f}. Parameters: DDPM {parameters["ddpm"]:,}, GAN '
        f'{parameters["gan"]:,} (generator {parameters["gan_generator"]:,}). Total '
        f'{results["seconds"]:.0f} s. Grids: {root}/samples_ddpm.png, samples_gan.png')
  return results
