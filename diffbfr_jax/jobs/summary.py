"""The `summary` job: a stage network's parameter overview and count, with nothing allocated.

Prints the overview; its summary (and summary.json, when a --workdir is given) holds the stage,
the network and the parameter count.
"""

import jax
from clu import parameter_overview

from diffbfr_jax import config_checks
from diffbfr_jax import job_outputs
from diffbfr_jax import models

PROCESSES = 'main'  # quick: process 0 prints it, the others wait


def summarize(config, params) -> str:
  """The overview of `params`, the abstract parameter tree of `config`'s network."""
  table = parameter_overview.get_parameter_overview(params, include_stats=False)
  leaves = jax.tree_util.tree_leaves(params)
  return (f'{table}\nstage: {config.stage}  model: {config.model_type}  image size: '
          f'{config.model.image_size}\ntotal parameters: {models.count_params(params):,} '
          f'in {len(leaves)} tensors')


def run(config, workdir) -> dict:
  config_checks.check_stage_config(config)
  params = models.abstract_params(config)  # traced once, for the table and the summary
  print(summarize(config, params))
  summary = {'stage': config.stage, 'model_type': config.model_type,
             'image_size': config.model.image_size, 'parameters': models.count_params(params),
             'tensors': len(jax.tree_util.tree_leaves(params))}
  return job_outputs.write_summary(workdir or None, summary)
