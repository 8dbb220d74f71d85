"""The long-tail experiment's GAN: the standard loss, and its training step and sampler on the
networks of models/gan.py."""

import jax
import jax.numpy as jnp
import optax

from diffbfr_jax.models import gan as gan_models


def gan_losses(real_logits, fake_logits):
  """(discriminator loss, generator loss) from the discriminator's logits: the standard GAN
  loss, and the non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014)."""
  bce = optax.sigmoid_binary_cross_entropy
  d_loss = (bce(real_logits, jnp.ones_like(real_logits)).mean()
            + bce(fake_logits, jnp.zeros_like(fake_logits)).mean())
  g_loss = bce(fake_logits, jnp.ones_like(fake_logits)).mean()
  return d_loss, g_loss


def make_gan(config):
  g = gan_models.Generator(config.gan.width, config.gan.hidden)
  d = gan_models.Discriminator(config.gan.d_width, config.gan.d_hidden)
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
