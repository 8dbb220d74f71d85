"""The long-tail experiment's DDPM: this project's ADM UNet with the diffusion module's schedule,
loss (with the config's dropout in training) and sampler, and an EMA of its weights."""

import jax
import jax.numpy as jnp
import optax

from diffbfr_jax import models
from diffbfr_jax.diffusion import losses
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules


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
