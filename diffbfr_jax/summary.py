"""The `summary` job: a stage network's parameter overview and count, with nothing allocated."""

import jax
from clu import parameter_overview

from diffbfr_jax import config_checks
from diffbfr_jax import models


def abstract_params(config, batch_size: int = 1):
  """The parameter tree of `config`'s network as ShapeDtypeStructs (jax.eval_shape: no memory)."""
  model = models.create_model(config.model_type, **config.model)
  inputs = models.example_inputs(config.model, batch_size)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
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


def run(config, workdir) -> str:
  """`--config.job=summary`: prints (and returns) the overview; `workdir` is not used."""
  del workdir
  config_checks.check_stage_config(config)
  text = summarize(config)
  print(text)
  return text
