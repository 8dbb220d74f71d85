"""The DiffBFR restorer (Algorithm 1) as one jitted function: IRM-1 -> IRM-2 -> TEM.

Every enabled stage, in the order irm1, irm2, tem, takes as its input the previous stage's
output (the LQ face for the first one) resized to its own size. It starts its chain from that
input diffused to its start step (truncated sampling) or from pure noise, and a conditional
stage (IRM-1, IRM-2) is also conditioned on that input. With all three enabled this is
Algorithm 1: IRM-1 from noise conditioned on the LQ face at 128; IRM-2 from resize(IRM-1 output)
diffused to N1 and conditioned on it; TEM from the IRM-2 output diffused to N2. The paper's
ablations (Table 2) are the same function with stages switched off or started from noise: see
configs/cascade.py.

Pure: no devices here (parallel.jit_over_local_devices shards the batch) and no TensorFlow.
"""

import logging
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import models
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules

STAGES = ('irm1', 'irm2', 'tem')  # the order the enabled stages run in
# The sampling fields that make a stage's chain (its grid and sampler), as configs/cascade.py's
# `fast` preset sets them; the others (variance, clipping) are the stage's own choices.
CHAIN_FIELDS = ('respacing', 'start_grid', 'sampler', 'eta')


class Stage(NamedTuple):
  """One stage of the cascade: its network (as a function of parameters) and its chain."""
  name: str  # 'irm1' | 'irm2' | 'tem'
  model: Any  # the Flax network (for initialising or checking its parameters)
  apply: Callable[..., Any]  # apply(params, x_t, time, cond) -> [B, H, W, 3 or 6]
  schedule: schedules.Schedule  # the training schedule
  time_input: str  # 'noise_level' (SR3) | 'step' (ADM)
  image_size: int
  conditional: bool  # takes concat[input, x_t]
  sampling: dict  # keyword arguments of samplers.make_sampler (config.<stage>.sampling)
  prediction: str = 'eps'  # what the network predicts (samplers.PREDICTIONS; its checkpoint's)


def build_stage(name: str, model_type: str, model_config, diffusion_config, sampling,
                prediction: str = 'eps') -> Stage:
  """A Stage from the fields a training run records (checkpoint meta, or a stage config)."""
  model_config = ml_collections.ConfigDict(_tuples(dict(model_config)))
  model = models.create_model(model_type, **model_config)

  def apply(params, x_t, time, cond):
    return model.apply({'params': params}, x_t, time, cond)

  schedule = schedules.make_schedule(**dict(diffusion_config['schedule']))
  sampling = dict(sampling)
  for field, allowed in (('sampler', samplers.SAMPLERS), ('variance', samplers.VARIANCES),
                         ('ddim_eps', samplers.DDIM_EPS)):
    if field in sampling and sampling[field] not in allowed:
      raise ConfigError(f'config.{name}.sampling.{field}={sampling[field]!r}; expected one of '
                        f'{allowed}')
  out = model_config.out_channels
  if (sampling['variance'] == 'learned_range') != (out == 6):
    raise ConfigError(f"config.{name}.sampling.variance={sampling['variance']!r} does not fit "
                      f'the {name} network, which has {out} output channels')
  stage = Stage(name=name, model=model, apply=apply, schedule=schedule, time_input=models.TIME_INPUT[model_type],
                image_size=model_config.image_size, conditional=model_config.in_channels > 3,
                sampling=sampling, prediction=prediction)
  num_steps(stage)  # a start step or respacing that does not fit fails here, by field
  return stage


def _tuples(tree):
  """JSON gives lists where Flax module fields want hashable tuples."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return tuple(_tuples(v) for v in tree)
  return tree


def num_steps(stage: Stage) -> int:
  """The network evaluations `stage`'s chain makes (= its reverse steps)."""
  try:
    return schedules.sampling_grid(stage.schedule, stage.sampling.get('respacing', ''),
                                   stage.sampling['start_step'],
                                   stage.sampling.get('start_grid', 'original'))[1]
  except ValueError as e:
    raise ConfigError(f'config.{stage.name}.sampling: {e}') from None


def resize(images, size: int):
  """[B, H, W, C] in [-1, 1] -> [B, size, size, C]: bicubic, antialiased when shrinking, clipped;
  the training pipeline's resize (TensorFlow's bicubic with antialias) on [-1, 1] images."""
  b, h, w, c = images.shape
  if h == size and w == size:
    return images
  out = jax.image.resize(images, (b, size, size, c), method='bicubic', antialias=True)
  return jnp.clip(out, -1.0, 1.0)


def make_cascade(stages):
  """`restore(params, batch) -> outputs` for the enabled `stages` (Stage objects; any subset
  of irm1, irm2, tem, run in that order).

  params: {stage name: that network's parameters}.
  batch: {'lq': [B, S, S, 3] in [-1, 1], 'key': [B] typed keys, one per (face, sample)}.
  outputs: {stage name: its output at its size, 'output': the last stage's}. Each face's result
  depends on its own key only, not on the rest of the batch.
  """
  stages = sorted(stages, key=lambda s: STAGES.index(s.name))
  if not stages:
    raise ConfigError('the cascade has no stage enabled (config.<stage>.enabled)')

  def restore(params, batch):
    lq, keys = batch['lq'], batch['key']
    outputs, previous = {}, lq
    for stage in stages:
      stage_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys,
                                                                   STAGES.index(stage.name))
      stage_params = params[stage.name]
      sample, _ = samplers.make_sampler(
          lambda x, t, c, p=stage_params, f=stage.apply: f(p, x, t, c), stage.schedule,
          time_input=stage.time_input, prediction=stage.prediction, **stage.sampling)
      start = resize(previous, stage.image_size)
      previous = sample(stage_keys, start, start if stage.conditional else None)
      outputs[stage.name] = previous
    outputs['output'] = previous
    return outputs

  return restore


def check_stage_fields(name: str, stage_config) -> None:
  """The fields of `config.<name>` that every sampling job (restore, sample, clean) reads."""
  if stage_config.params not in ('ema_params', 'params'):
    raise ConfigError(f'config.{name}.params={stage_config.params!r}: expected '
                      "'ema_params' or 'params'")
  if stage_config.dtype not in ('', 'float32', 'bfloat16'):
    raise ConfigError(f'config.{name}.dtype={stage_config.dtype!r}: expected '
                      "'', 'float32' or 'bfloat16'")


def stage_from_checkpoint(name: str, stage_config):
  """(Stage, parameters as host arrays) for `config.<name>`.

  Errors before any compute: a bad params or dtype field, a missing checkpoint, one of another
  stage, or one whose arrays do not have the shapes of the network its own meta describes.
  """
  check_stage_fields(name, stage_config)
  if not stage_config.checkpoint:
    raise ConfigError(f'config.{name}.checkpoint is empty: give the workdir of a trained {name} '
                      f'run (or switch the stage off with config.{name}.enabled=False)')
  folder, step = checkpointing.find_field(f'{name}.checkpoint', stage_config.checkpoint,
                                         stage_config.step)
  meta = checkpointing.read_meta(folder, step)
  if meta['stage'] != name:
    raise errors.CheckpointError(
        f'config.{name}.checkpoint={stage_config.checkpoint!r} holds a {meta["stage"]} '
        f'checkpoint (step {step}), not a {name} one')
  check_segment(name, stage_config, meta)
  model_config = dict(meta['model'])
  if stage_config.dtype:
    model_config['dtype'] = stage_config.dtype
  stage = build_stage(name, meta['model_type'], model_config, meta['diffusion'],
                      stage_config.sampling, checkpointing.prediction_of(meta))
  abstract = jax.eval_shape(stage.model.init, jax.random.key(0),
                            *models.example_inputs(stage.model))['params']
  params = checkpointing.restore_params(folder, step, abstract, item=stage_config.params)
  logging.info('%s: %s of step %d from %s (%d reverse steps)', name, stage_config.params, step,
               folder, num_steps(stage))
  return stage, params


def check_segment(name: str, stage_config, meta: dict) -> None:
  """A distilled stage (its meta has `distill`) is sampled over the segment it was distilled
  on: the same start step and start from noise, or a ConfigError naming both."""
  distilled = meta.get('distill')
  if not distilled:
    return
  for field in ('start_step', 'from_noise'):
    if stage_config.sampling[field] != distilled[field]:
      raise ConfigError(
          f'config.{name}.sampling.{field}={stage_config.sampling[field]!r}, but '
          f'{stage_config.checkpoint} was distilled over the chain with {field}='
          f'{distilled[field]!r} (its {distilled["steps"]} steps cover only that segment)')


def load(config):
  """The enabled stages of a cascade config and their parameters, checked to fit together."""
  stages, params = [], {}
  for name in STAGES:
    if config[name].enabled:
      stage, params[name] = stage_from_checkpoint(name, config[name])
      stages.append(stage)
  check_sizes(stages, config.image_size)
  return stages, params


def check_sizes(stages, image_size: int) -> None:
  if not stages:
    raise ConfigError('the cascade has no stage enabled (config.<stage>.enabled)')
  last = max(stages, key=lambda s: STAGES.index(s.name))
  if last.image_size != image_size:
    raise ConfigError(f'config.image_size={image_size} differs from the size of the last stage '
                      f'({last.name}: {last.image_size}), which the restored faces have')
