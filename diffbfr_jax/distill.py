"""Rounds of progressive distillation of one stage (`diffusion/distillation.py` has the loss).

Round r trains a student of K = start_steps / 2^r steps towards its teacher's chain of 2K steps
over the stage's segment, in `<workdir>/steps_<K>`: a stage training run like any other
(`train.train_and_evaluate`: exact resume, good-state saves, Orbax) whose parameters start as
the teacher's and whose checkpoints' meta adds `prediction` and `distill` (teacher, round,
steps). The first teacher is a trained stage's checkpoint (or a distilled one of start_steps);
each later one is the round before's student. A finished round (its folder holds
steps_per_round steps) is not trained again.
"""

import logging
import pathlib
import time

from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import models
from diffbfr_jax import parallel
from diffbfr_jax import train
from diffbfr_jax.diffusion import distillation
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules
from diffbfr_jax.errors import ConfigError


def student_steps(start_steps: int, end_steps: int) -> list:
  """The students' steps, round by round: start_steps / 2, ..., end_steps."""
  if not (isinstance(end_steps, int) and end_steps >= 1):
    raise ConfigError(f'config.distill.end_steps={end_steps!r}: must be a whole number >= 1')
  ratio = start_steps // end_steps if isinstance(start_steps, int) else 0
  if ratio < 2 or start_steps != ratio * end_steps or ratio & (ratio - 1):
    raise ConfigError(f'config.distill.start_steps={start_steps!r}: must be end_steps '
                      f'({end_steps}) times a power of two of at least 2 (each round halves it)')
  steps, k = [], start_steps // 2
  while k >= end_steps:
    steps.append(k)
    k //= 2
  return steps


def check_config(config) -> None:
  """The distill fields, before anything is read or built (errors name the field)."""
  d = config.distill
  if not d.teacher:
    raise ConfigError(f'config.distill.teacher is empty: give the workdir of a trained '
                      f'{config.stage} run')
  if d.teacher_params not in ('ema_params', 'params'):
    raise ConfigError(f"config.distill.teacher_params={d.teacher_params!r}: expected "
                      "'ema_params' or 'params'")
  if d.prediction not in samplers.PREDICTIONS:
    raise ConfigError(f'config.distill.prediction={d.prediction!r}: expected one of '
                      f'{samplers.PREDICTIONS}')
  if d.weighting not in distillation.WEIGHTINGS:
    raise ConfigError(f'config.distill.weighting={d.weighting!r}: expected one of '
                      f'{distillation.WEIGHTINGS}')
  if not (isinstance(d.steps_per_round, int) and d.steps_per_round >= 1):
    raise ConfigError(f'config.distill.steps_per_round={d.steps_per_round!r}: must be a whole '
                      'number >= 1')
  student_steps(d.start_steps, d.end_steps)
  segment = config.sampling.start_step
  if d.start_steps > segment:
    raise ConfigError(f'config.distill.start_steps={d.start_steps} is more than the steps of '
                      f'the segment the stage runs (config.sampling.start_step={segment})')
  if config.train.preview_every:
    raise ConfigError('config.train.preview_every must be 0 for distillation (the preview '
                      "samples with the stage's own chain)")


def _segment(config) -> dict:
  return {'start_step': config.sampling.start_step, 'from_noise': config.sampling.from_noise}


def student_meta(config, *, teacher: str, teacher_step: int, round_: int, steps: int) -> dict:
  """The meta item of a round's checkpoints."""
  meta = checkpointing.meta_of(config)
  meta['prediction'] = config.distill.prediction
  meta['distill'] = {'teacher': teacher, 'teacher_step': teacher_step, 'round': round_,
                     'steps': steps, 'teacher_steps': 2 * steps, **_segment(config),
                     'weighting': config.distill.weighting, 'clip_x0': config.distill.clip_x0,
                     'ddim_eps': config.sampling.ddim_eps}
  return meta


def first_teacher(config):
  """(folder, step, meta) of the first round's teacher, checked to be this stage's network."""
  d = config.distill
  folder, step = checkpointing.find_field('distill.teacher', d.teacher, d.teacher_step)
  meta = checkpointing.read_meta(folder, step)
  own = checkpointing.meta_of(config)
  differences = checkpointing.meta_differences(
      meta, {**own, 'prediction': meta.get('prediction'), 'distill': meta.get('distill')})
  if differences:
    raise errors.CheckpointError(checkpointing.refusal(f'{folder}/{step}', differences) +
                                 ' The student is the teacher\'s network: distill with the '
                                 'config the teacher was trained with.')
  earlier = meta.get('distill')
  if earlier is not None:
    for field in ('start_step', 'from_noise'):
      if earlier[field] != _segment(config)[field]:
        raise errors.CheckpointError(
            f'{folder}/{step} was distilled over another segment (sampling.{field}='
            f'{earlier[field]}; the config has {_segment(config)[field]})')
    if earlier['steps'] != d.start_steps:
      raise ConfigError(f'config.distill.start_steps={d.start_steps}, but the teacher '
                        f'{folder}/{step} is a distilled student of {earlier["steps"]} steps')
  return folder, step, meta


def objective(config, model, train_schedule, *, teacher_params, teacher_prediction: str,
              steps: int, meta: dict) -> train.Objective:
  """The round whose student runs `steps` over the segment: its loss with the teacher's
  parameters as the step's frozen tree, starting from those parameters."""
  grid = distillation.teacher_grid(train_schedule, config.sampling.start_step, steps)
  time_input = models.TIME_INPUT[config.model_type]

  def apply(params):
    return lambda x, t, c: model.apply({'params': params}, x, t, c)

  def loss_fn(params, batch, key, teacher):
    return distillation.distillation_loss(
        apply(params), apply(teacher), grid, batch['gt'], key, batch.get('cond'),
        time_input=time_input, student_prediction=config.distill.prediction,
        teacher_prediction=teacher_prediction, weighting=config.distill.weighting,
        clip_x0=config.distill.clip_x0, ddim_eps=config.sampling.ddim_eps,
        example_ids=batch['id'])

  return train.Objective(loss_fn=loss_fn, frozen=teacher_params, init_params=teacher_params,
                         meta=meta)


def _say(line: str) -> None:
  if parallel.is_main_process():
    print(line, flush=True)


def run_rounds(config, workdir: pathlib.Path) -> list:
  """Every round in `workdir`, in order; returns one dict per round."""
  check_config(config)
  d = config.distill
  teacher, teacher_step, meta = first_teacher(config)
  teacher_item, teacher_prediction = d.teacher_params, checkpointing.prediction_of(meta)
  model = models.create_model(config.model_type, **config.model)
  abstract = models.abstract_params(config)
  train_schedule = schedules.make_schedule(**config.diffusion.schedule)
  rounds = []
  for round_, steps in enumerate(student_steps(d.start_steps, d.end_steps), start=1):
    folder = workdir / f'steps_{steps}'
    label = f'round {round_}: {2 * steps} -> {steps} steps'
    done = checkpointing.trained_step(folder)
    start = time.perf_counter()
    meta = student_meta(config, teacher=str(teacher), teacher_step=teacher_step,
                        round_=round_, steps=steps)
    if done >= d.steps_per_round:
      finished = checkpointing.Checkpointer(folder)
      try:
        finished.check_meta(meta)  # the train loop's own refusal of another config's checkpoint
      finally:
        finished.close()
      _say(f'{label}: distilled already ({done} steps) in {folder}')
    else:
      _say(f'{label}, training steps {done}..{d.steps_per_round} in {folder} (teacher '
           f'{teacher}, step {teacher_step})')
      params = checkpointing.restore_params(teacher, teacher_step, abstract, item=teacher_item)
      round_config = config.copy_and_resolve_references()
      round_config.train.num_steps = d.steps_per_round
      round_config.train.checkpoint_every = min(config.train.checkpoint_every,
                                                d.steps_per_round)
      train.train_and_evaluate(
          round_config, str(folder), progress=False,
          objective=objective(config, model, train_schedule, teacher_params=params,
                              teacher_prediction=teacher_prediction, steps=steps, meta=meta))
      logging.info('%s done in %.0f s', label, time.perf_counter() - start)
    teacher, teacher_step = checkpointing.find(folder)
    # The student's weights (without an EMA, ema_params equals params) teach the next round.
    teacher_item, teacher_prediction = 'ema_params', d.prediction
    rounds.append({'round': round_, 'steps': steps, 'teacher_steps': 2 * steps,
                   'folder': str(folder), 'optimizer_steps': teacher_step,
                   'seconds': round(time.perf_counter() - start, 1)})
    _say(f'    {label}: done, checkpoint {folder} (step {teacher_step})')
  return rounds

