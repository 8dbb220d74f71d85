"""The long-tail job (the paper's Sec. 4.2, Fig. 2): a DDPM and a GAN of about the same size,
trained on long-tailed digits; a classifier counts the classes of their samples.

Data: scikit-learn's 8x8 digits, split per class into a training part and `held_out`; the
training part is thinned per class (`keep`) into the long-tailed set the two models learn; the
classifier (scikit-learn's SVC) learns the whole training part and is scored on the held-out
digits. Images are on [-1, 1] (the digits' 0..16 scaled), one channel.

The DDPM is this project's ADM UNet with the diffusion module's schedule, loss and sampler; the
GAN a DCGAN-style pair in Flax. Each trains in `checkpoint_every` steps between Orbax
checkpoints under <workdir>/ddpm and <workdir>/gan; the draws of step s come from (seed, s), so a
resumed run equals an uninterrupted one.
"""

import functools
import json
import logging
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image

from diffbfr_jax import errors
from diffbfr_jax import models
from diffbfr_jax import resume
from diffbfr_jax.config_checks import ConfigError
from diffbfr_jax.diffusion import losses
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules

CLASSES = 10


def check_config(config, workdir) -> None:
  if not workdir:
    raise ConfigError('--workdir is required: the models and results are written into it')
  if len(config.keep) != CLASSES or not all(0 < k <= 1 for k in config.keep):
    raise ConfigError(f'config.keep={tuple(config.keep)!r}: expected {CLASSES} fractions in '
                      '(0, 1], one per class 0..9')
  if not 0 < config.held_out < 1:
    raise ConfigError(f'config.held_out={config.held_out!r}: expected a fraction in (0, 1)')
  for field in ('num_samples', 'checkpoint_every', 'ddpm.steps', 'ddpm.batch_size', 'gan.steps',
                'gan.batch_size'):
    node, *rest = field.split('.')
    value = config[node][rest[0]] if rest else config[node]
    if value < 1:
      raise ConfigError(f'config.{field}={value!r}: must be at least 1')


# The data.


def digits(seed: int, held_out: float, keep):
  """{'train', 'held_out', 'long_tail'}: (images [N, 8, 8, 1] on [-1, 1], labels [N]).

  Per class: a seeded permutation, its first round(held_out * n) digits held out, and of the rest
  the first round(keep[c] * n_train) (at least one) in the long-tailed set."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  data = datasets.load_digits()
  images = (data.images.astype(np.float32) / 8.0 - 1.0)[..., None]
  labels = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  parts = {'train': [], 'held_out': [], 'long_tail': []}
  for c in range(CLASSES):
    index = rng.permutation(np.flatnonzero(labels == c))
    n_held = int(round(held_out * len(index)))
    train = index[n_held:]
    parts['held_out'].append(index[:n_held])
    parts['train'].append(train)
    parts['long_tail'].append(train[:max(1, int(round(keep[c] * len(train))))])
  return {name: (images[np.concatenate(i)], labels[np.concatenate(i)])
          for name, i in parts.items()}


def histogram(labels) -> np.ndarray:
  return np.bincount(np.asarray(labels), minlength=CLASSES)


def total_variation(counts, reference) -> float:
  """Total variation distance between two class histograms' frequencies (0: the same, 1: no
  class in common)."""
  p, q = np.asarray(counts, float), np.asarray(reference, float)
  return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def train_classifier(images, labels):
  """scikit-learn's SVC (RBF kernel, its defaults) on the flattened digits."""
  from sklearn import svm  # pylint: disable=g-import-not-at-top

  return svm.SVC().fit(images.reshape(len(images), -1), labels)


def classify(classifier, images) -> np.ndarray:
  return classifier.predict(np.asarray(images, np.float32).reshape(len(images), -1))


# The GAN.


class Generator(nn.Module):
  """z [B, latent] -> [B, 8, 8, 1] on [-1, 1]: two dense layers to 4x4 features (most of the
  parameters, where they cost least), a transposed convolution to 8x8 and a convolution; batch
  norm and ReLU between them, as DCGAN's generator."""
  width: int  # channels of the 4x4 features; the 8x8 ones have a quarter
  hidden: int  # width of the first dense layer

  @nn.compact
  def __call__(self, z, train: bool = False):
    norm = lambda h: nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    h = norm(nn.Dense(self.hidden)(z))
    h = norm(nn.Dense(4 * 4 * self.width)(h)).reshape(z.shape[0], 4, 4, self.width)
    h = norm(nn.ConvTranspose(self.width // 4, (4, 4), strides=(2, 2))(h))
    return jnp.tanh(nn.Conv(1, (3, 3))(h))


class Discriminator(nn.Module):
  """[B, 8, 8, 1] -> [B] logits: two strided convolutions (8 -> 4 -> 2) and two dense layers,
  with leaky ReLU (0.2), as DCGAN's discriminator."""
  width: int  # channels of the 2x2 features; the 4x4 ones have half
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(nn.Conv(self.width // 2, (4, 4), strides=(2, 2))(x), 0.2)
    h = nn.leaky_relu(nn.Conv(self.width, (4, 4), strides=(2, 2))(h), 0.2)
    h = nn.leaky_relu(nn.Dense(self.hidden)(h.reshape(x.shape[0], -1)), 0.2)
    return nn.Dense(1)(h)[:, 0]


def gan_losses(real_logits, fake_logits):
  """(discriminator loss, generator loss) from the discriminator's logits: the standard GAN
  loss, and the non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014)."""
  bce = optax.sigmoid_binary_cross_entropy
  d_loss = (bce(real_logits, jnp.ones_like(real_logits)).mean()
            + bce(fake_logits, jnp.zeros_like(fake_logits)).mean())
  g_loss = bce(fake_logits, jnp.ones_like(fake_logits)).mean()
  return d_loss, g_loss


def make_gan(config):
  g = Generator(config.gan.width, config.gan.hidden)
  d = Discriminator(config.gan.d_width, config.gan.d_hidden)
  tx = optax.adam(config.gan.learning_rate, b1=config.gan.beta1)

  def init(key):
    kg, kd = jax.random.split(key)
    g_vars = g.init(kg, jnp.zeros((2, config.gan.latent)))
    d_params = d.init(kd, jnp.zeros((1, 8, 8, 1)))['params']
    return {'step': jnp.zeros((), jnp.int32), 'g': g_vars['params'],
            'g_stats': g_vars['batch_stats'], 'd': d_params,
            'g_opt': tx.init(g_vars['params']), 'd_opt': tx.init(d_params)}

  def generate(params, stats, z):
    """G(z) in training mode (batch statistics) and the updated running statistics."""
    fake, updated = g.apply({'params': params, 'batch_stats': stats}, z, train=True,
                            mutable=['batch_stats'])
    return fake, updated['batch_stats']

  def logits(params, images):
    return d.apply({'params': params}, images)

  def step(state, images, key):
    """One discriminator update, then one generator update, on a batch drawn from (key, step)."""
    key = jax.random.fold_in(key, state['step'])
    k_batch, k_z = jax.random.split(key)
    real = images[jax.random.randint(k_batch, (config.gan.batch_size,), 0, images.shape[0])]
    z = jax.random.normal(k_z, (config.gan.batch_size, config.gan.latent))
    fake, _ = generate(state['g'], state['g_stats'], z)
    fake = jax.lax.stop_gradient(fake)
    d_loss, d_grad = jax.value_and_grad(
        lambda p: gan_losses(logits(p, real), logits(p, fake))[0])(state['d'])
    updates, d_opt = tx.update(d_grad, state['d_opt'], state['d'])
    d_params = optax.apply_updates(state['d'], updates)

    def g_objective(params):
      fake, stats = generate(params, state['g_stats'], z)
      return gan_losses(jnp.zeros((1,)), logits(d_params, fake))[1], stats

    (g_loss, stats), g_grad = jax.value_and_grad(g_objective, has_aux=True)(state['g'])
    updates, g_opt = tx.update(g_grad, state['g_opt'], state['g'])
    new = {'step': state['step'] + 1, 'g': optax.apply_updates(state['g'], updates),
           'g_stats': stats, 'd': d_params, 'g_opt': g_opt, 'd_opt': d_opt}
    return new, {'d_loss': d_loss, 'g_loss': g_loss}

  def sample(state, key, n):
    """n samples, the generator's batch norm with its running statistics."""
    z = jax.random.normal(key, (n, config.gan.latent))
    return g.apply({'params': state['g'], 'batch_stats': state['g_stats']}, z)

  return init, step, sample


# The DDPM.


def make_ddpm(config):
  model = models.create_model('adm', **config.ddpm.model)
  schedule = schedules.make_schedule(**config.ddpm.schedule)
  tx = optax.adam(config.ddpm.learning_rate)

  def model_fn(params):
    return lambda x, t, c: model.apply({'params': params}, x, t, c)

  def init(key):
    size, channels = config.ddpm.model.image_size, config.ddpm.model.in_channels
    params = model.init(key, jnp.zeros((1, size, size, channels)), jnp.zeros((1,)))['params']
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'ema': params,
            'opt': tx.init(params)}

  def step(state, images, key):
    key = jax.random.fold_in(key, state['step'])
    k_batch, k_loss, k_drop = jax.random.split(key, 3)
    x0 = images[jax.random.randint(k_batch, (config.ddpm.batch_size,), 0, images.shape[0])]
    dropout_keys = (losses.example_keys(k_drop, config.ddpm.batch_size)
                    if config.ddpm.model.dropout > 0 else None)

    def loss_fn(params):
      def train_fn(x, t, c):  # in training mode: the config's dropout applies
        return model.apply({'params': params}, x, t, c, train=True, dropout_keys=dropout_keys)
      return losses.timestep_loss(train_fn, schedule, x0, k_loss, kind='l2')

    (loss, _), grad = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    updates, opt = tx.update(grad, state['opt'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    decay = config.ddpm.ema_decay
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state['ema'], params)
    return {'step': state['step'] + 1, 'params': params, 'ema': ema, 'opt': opt}, {'loss': loss}

  sampling = dict(start_step=config.ddpm.schedule.num_timesteps, from_noise=True,
                  **config.ddpm.sampling)

  def sample(state, key, n):
    draw, _ = samplers.make_sampler(model_fn(state['ema']), schedule, time_input='step',
                                    **sampling)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return draw(keys, jnp.zeros((n, 8, 8, 1), jnp.float32))

  return init, step, sample, model


def parameter_count(tree) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def train(name: str, folder: pathlib.Path, init, step, images, key, num_steps: int,
          every: int):
  """Trains `step` to `num_steps` from the latest checkpoint in `folder` (or from `init`),
  saving every `every` steps and at the end; returns the state."""
  manager = ocp.CheckpointManager(folder.absolute(), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True))
  state = init(jax.random.fold_in(key, 0))
  latest = manager.latest_step()
  if latest is not None:
    state = manager.restore(latest, args=ocp.args.StandardRestore(state))
    logging.info('%s: resumed from step %d in %s', name, latest, folder)
  done = int(state['step'])
  if done >= num_steps:
    print(f'{name}: trained already ({done} steps) in {folder}', flush=True)
    manager.close()
    return state
  step = jax.jit(step)
  train_key, start = jax.random.fold_in(key, 1), time.perf_counter()
  print(f'{name}: training steps {done}..{num_steps}, {parameter_count(_params(state)):,} '
        'parameters', flush=True)
  while done < num_steps:
    for _ in range(min(every, num_steps - done)):
      state, metrics = step(state, images, train_key)
    done = int(state['step'])
    values = {k: float(v) for k, v in metrics.items()}
    if not all(np.isfinite(list(values.values()))):
      raise errors.NonFiniteLossError(
          f'{name}: non-finite loss at step {done} ({values}); the last good checkpoint is step '
          f'{manager.latest_step()} in {folder}')
    manager.save(done, args=ocp.args.StandardSave(state))
    logging.info('%s: step %d, %s, %.0f s', name, done, values, time.perf_counter() - start)
  manager.wait_until_finished()
  manager.close()
  print(f'    {name}: done in {time.perf_counter() - start:.0f} s', flush=True)
  return state


def _params(state):
  return {k: v for k, v in state.items() if k in ('params', 'g', 'd')}


def grid(images, count: int, scale: int = 4) -> np.ndarray:
  """uint8 gray grid of the first `count` images ([N, 8, 8, 1] on [-1, 1]), rows of sqrt(count)."""
  images = np.asarray(images[:count])[..., 0]
  columns = int(np.ceil(np.sqrt(len(images))))
  rows = -(-len(images) // columns)
  canvas = np.full((rows * 9 + 1, columns * 9 + 1), -1.0, np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    canvas[r * 9 + 1:r * 9 + 9, c * 9 + 1:c * 9 + 9] = image
  pixels = np.round((np.clip(canvas, -1, 1) + 1) * 127.5).astype(np.uint8)
  return np.repeat(np.repeat(pixels, scale, 0), scale, 1)


def table(histograms: dict) -> str:
  names = list(histograms)
  lines = ['| class | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
  for c in range(CLASSES):
    cells = [f'{h[c]} ({100 * h[c] / max(1, h.sum()):.1f}%)' for h in histograms.values()]
    lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
  totals = [str(int(h.sum())) for h in histograms.values()]
  lines.append('| all | ' + ' | '.join(totals) + ' |')
  return '\n'.join(lines)


def run(config, workdir) -> dict:
  check_config(config, workdir)
  root = pathlib.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  data = digits(config.seed, config.held_out, config.keep)
  train_images, train_labels = data['train']
  long_tail, long_tail_labels = data['long_tail']
  classifier = train_classifier(train_images, train_labels)
  accuracy = float(np.mean(classify(classifier, data['held_out'][0]) == data['held_out'][1]))
  print(f'Digits: {len(train_images)} training ({len(long_tail)} in the long-tailed set), '
        f'{len(data["held_out"][0])} held out; classifier accuracy on the held-out digits '
        f'{accuracy:.4f}', flush=True)

  key = jax.random.key(config.seed)
  ddpm_init, ddpm_step, ddpm_sample, _ = make_ddpm(config)
  gan_init, gan_step, gan_sample = make_gan(config)
  images = jnp.asarray(long_tail)
  data_settings = {'keep': list(config.keep), 'held_out': config.held_out, 'seed': config.seed}
  for name in ('ddpm', 'gan'):  # a model is trained on, never retrained: the same settings only
    resume.check_unchanged(
        root / name, {**data_settings, name: {k: v for k, v in config[name].to_dict().items()
                                              if k not in ('steps', 'sampling')}},
        f'the {name} trained on', 'Train these settings in another --workdir (or delete that '
        'folder to train it again).')
  ddpm = train('ddpm', root / 'ddpm', ddpm_init, ddpm_step, images, jax.random.fold_in(key, 1),
               config.ddpm.steps, config.checkpoint_every)
  gan = train('gan', root / 'gan', gan_init, gan_step, images, jax.random.fold_in(key, 2),
              config.gan.steps, config.checkpoint_every)

  t0 = time.perf_counter()
  n = config.num_samples
  samples = {'ddpm': np.asarray(jax.jit(ddpm_sample, static_argnums=2)(
                 ddpm, jax.random.fold_in(key, 3), n)),
             'gan': np.asarray(jax.jit(gan_sample, static_argnums=2)(
                 gan, jax.random.fold_in(key, 4), n))}
  print(f'Drew {n} samples of each model in {time.perf_counter() - t0:.0f} s', flush=True)
  histograms = {'training set (long-tailed)': histogram(long_tail_labels),
                'DDPM samples': histogram(classify(classifier, samples['ddpm'])),
                'GAN samples': histogram(classify(classifier, samples['gan']))}
  for name, images_ in samples.items():
    Image.fromarray(grid(images_, config.grid_count)).save(root / f'samples_{name}.png')
    np.save(root / f'samples_{name}.npy', images_)
  Image.fromarray(grid(long_tail[np.random.default_rng(0).permutation(len(long_tail))],
                       config.grid_count)).save(root / 'training_set.png')
  parameters = {'ddpm': parameter_count(ddpm['params']),
                'gan': parameter_count(gan['g']) + parameter_count(gan['d']),
                'gan_generator': parameter_count(gan['g'])}
  reference = histograms['training set (long-tailed)']
  distances = {name: total_variation(h, reference) for name, h in histograms.items()
               if name != 'training set (long-tailed)'}
  results = {'classifier_accuracy': accuracy, 'parameters': parameters,
             'total_variation_to_training_set': distances,
             'histograms': {k: v.tolist() for k, v in histograms.items()},
             'keep': list(config.keep), 'seed': config.seed, 'num_samples': n,
             'seconds': time.perf_counter() - start}
  (root / 'results.json').write_text(json.dumps(results, indent=1))
  print(table(histograms))
  print('Total variation distance to the training set\'s class frequencies: ' + ', '.join(
      f'{name} {value:.3f}' for name, value in distances.items()))
  print(f'Classifier (SVC on the full training split) accuracy on {len(data["held_out"][0])} '
        f'held-out digits: {accuracy:.4f}. Parameters: DDPM {parameters["ddpm"]:,}, GAN '
        f'{parameters["gan"]:,} (generator {parameters["gan_generator"]:,}). Total '
        f'{results["seconds"]:.0f} s. Grids: {root}/samples_ddpm.png, samples_gan.png')
  return results
