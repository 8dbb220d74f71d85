"""The `summary` job: a stage network's parameter overview and count, with nothing allocated."""

import jax
import jax.numpy as jnp
from clu import parameter_overview

from diffbfr_jax import models


def abstract_params(config, batch_size: int = 1):
  """The parameter tree of `config`'s network as ShapeDtypeStructs (jax.eval_shape: no memory)."""
  model = models.create_model(config.model_type, **config.model)
  size = config.model.image_size
  x_t = jnp.zeros((batch_size, size, size, 3), jnp.float32)
  cond_channels = config.model.in_channels - 3
  cond = jnp.zeros((batch_size, size, size, cond_channels), jnp.float32) if cond_channels else None
  time = jnp.zeros((batch_size,), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x_t, time, cond))
  return variables['params']


def count_params(params) -> int:
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


def summarize(config) -> str:
  params = abstract_params(config)
  table = parameter_overview.get_parameter_overview(params, include_stats=False)
  leaves = jax.tree_util.tree_leaves(params)
  return (f'{table}\nstage: {config.stage}  model: {config.model_type}  image size: '
          f'{config.model.image_size}\ntotal parameters: {count_params(params):,} '
          f'in {len(leaves)} tensors')
