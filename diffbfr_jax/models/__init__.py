"""The DiffBFR networks: SR3's UNet for IRM-1 and IRM-2, guided-diffusion's ADM UNet for TEM."""

from diffbfr_jax.models.adm_unet import ADMUNet
from diffbfr_jax.models.sr3_unet import SR3UNet

# `config.model_type` picks the class; `config.model` holds exactly its constructor arguments.
MODELS = {'sr3': SR3UNet, 'adm': ADMUNet}
# What each network takes as time: SR3 the continuous noise level sqrt(gamma), ADM the step.
TIME_INPUT = {'sr3': 'noise_level', 'adm': 'step'}


def create_model(model_type: str, **model_config):
  """`create_model(config.model_type, **config.model)`; unknown fields fail here, by name."""
  if model_type not in MODELS:
    raise ValueError(f'config.model_type={model_type!r}; expected one of {sorted(MODELS)}.')
  return MODELS[model_type](**model_config)


def example_inputs(model_config, batch_size: int = 1):
  """Zero inputs `(x_t, time, cond)` of the right shapes for `model_config` (a config or the
  network itself: anything with `image_size` and `in_channels`; cond is None for an
  unconditional network): for `init`, `jax.eval_shape` and benchmarks."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  size = model_config.image_size
  x_t = jnp.zeros((batch_size, size, size, 3), jnp.float32)
  cond_channels = model_config.in_channels - 3
  cond = jnp.zeros((batch_size, size, size, cond_channels), jnp.float32) if cond_channels else None
  return x_t, jnp.zeros((batch_size,), jnp.float32), cond


def abstract_params(config, batch_size: int = 1):
  """The parameter tree of a stage config's network (`config.model_type`, `config.model`) as
  ShapeDtypeStructs (jax.eval_shape: nothing allocated)."""
  import jax  # pylint: disable=g-import-not-at-top

  model = create_model(config.model_type, **config.model)
  inputs = example_inputs(config.model, batch_size)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))['params']


def count_params(params) -> int:
  """The number of scalars in a parameter tree (of arrays or ShapeDtypeStructs)."""
  import jax  # pylint: disable=g-import-not-at-top

  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
