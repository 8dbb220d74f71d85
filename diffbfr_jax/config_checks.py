"""Checks that a stage config fits together, with errors that name the field and the value.

Run at the end of every `get_config` and again by `main` after command-line overrides.
"""

from typing import Sequence

from diffbfr_jax import errors
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules


def _fail(field: str, value, why: str):
  raise errors.ConfigError(f'config.{field}={value!r}: {why}')


def _check_common_unet(model, *, mults_field: str, attn_field: str, width_field: str):
  mults: Sequence[int] = tuple(model[mults_field])
  size, width, groups = model.image_size, model[width_field], model.norm_groups
  factor = 2 ** (len(mults) - 1)
  if size % factor:
    _fail('model.image_size', size, f'must be divisible by 2**(levels - 1) = {factor} for '
          f'{len(mults)} levels ({mults_field}={mults}).')
  reachable = [size // 2 ** k for k in range(len(mults))]
  for res in model[attn_field]:
    if res not in reachable:
      _fail(f'model.{attn_field}', tuple(model[attn_field]),
            f'resolution {res} is never reached; the levels run at {reachable}.')
  for mult in mults:
    if (width * mult) % groups:
      _fail('model.norm_groups', groups, f'must divide every level width; {width} * {mult} = '
            f'{width * mult} is not a multiple of it.')
  if width % 2:
    _fail(f'model.{width_field}', width, 'the sinusoidal embedding needs an even width.')


def check_model_config(model_type: str, model) -> None:
  if model_type == 'sr3':
    _check_common_unet(model, mults_field='channel_mults', attn_field='attn_res',
                       width_field='inner_channels')
    if model.in_channels <= 3:
      _fail('model.in_channels', model.in_channels,
            'the SR3 UNet is conditional: in_channels counts concat[condition, x_t] (6 for RGB).')
  elif model_type == 'adm':
    _check_common_unet(model, mults_field='channel_mult', attn_field='attention_resolutions',
                       width_field='model_channels')
    if len(model.num_res_blocks) != len(model.channel_mult):
      _fail('model.num_res_blocks', tuple(model.num_res_blocks),
            f'needs one count per level ({len(model.channel_mult)} levels).')
    size = model.image_size
    for level, mult in enumerate(model.channel_mult):
      if size // 2 ** level in model.attention_resolutions:
        if (model.model_channels * mult) % model.num_head_channels:
          _fail('model.num_head_channels', model.num_head_channels,
                f'must divide the width {model.model_channels * mult} of attention level {level}.')
  else:
    _fail('model_type', model_type, "expected 'sr3' or 'adm'.")
  if model.dtype not in ('float32', 'bfloat16'):
    _fail('model.dtype', model.dtype, "expected 'float32' or 'bfloat16'.")


def check_stage_config(config) -> None:
  """Every check a stage config must pass before anything is built."""
  if config.job not in ('train', 'summary', 'convert', 'distill'):
    _fail('job', config.job, "expected 'train', 'summary', 'convert' or 'distill'.")
  check_model_config(config.model_type, config.model)
  check_train_fields(config.train)
  learned_variance = config.sampling.variance == 'learned_range'
  expected_out = 6 if learned_variance else 3
  if config.model.out_channels != expected_out:
    _fail('model.out_channels', config.model.out_channels,
          f'sampling.variance={config.sampling.variance!r} needs {expected_out} output channels.')
  if config.data.image_size != config.model.image_size:
    _fail('data.image_size', config.data.image_size,
          f'differs from model.image_size={config.model.image_size}.')
  data = config.data
  if config.stage != 'tem' and data.source_size <= data.degradation.kernel_size // 2:
    _fail('data.source_size', data.source_size,
          f'the {data.degradation.kernel_size}-pixel blur kernel needs faces larger than '
          f'{data.degradation.kernel_size // 2} pixels (reflect padding).')
  if data.irm1_pair not in ('degrade_then_resize', 'resize_then_degrade'):
    _fail('data.irm1_pair', data.irm1_pair, "expected 'degrade_then_resize' or "
          "'resize_then_degrade'.")
  if data.condition not in ('gt_down_up', 'lq'):
    _fail('data.condition', data.condition, "expected 'gt_down_up' or 'lq'.")
  if data.degrade_on not in ('host', 'device'):
    _fail('data.degrade_on', data.degrade_on, "expected 'host' (the tf.data pipeline) or "
          "'device' (in the train step).")
  sampling = config.sampling
  if sampling.variance not in samplers.VARIANCES:
    _fail('sampling.variance', sampling.variance, f'expected one of {samplers.VARIANCES}.')
  if sampling.sampler not in samplers.SAMPLERS:
    _fail('sampling.sampler', sampling.sampler, f'expected one of {samplers.SAMPLERS}.')
  if sampling.ddim_eps not in samplers.DDIM_EPS:
    _fail('sampling.ddim_eps', sampling.ddim_eps,
          f"expected one of {samplers.DDIM_EPS} ('from_x0': guided-diffusion, 'model': DifFace).")
  sched = config.diffusion.schedule
  if not 0 < sched.beta_start < sched.beta_end < 1:
    _fail('diffusion.schedule', (sched.beta_start, sched.beta_end),
          'needs 0 < beta_start < beta_end < 1.')
  try:
    _, steps = schedules.sampling_grid(schedules.make_schedule(**sched), sampling.respacing,
                                       sampling.start_step, sampling.start_grid)
  except ValueError as e:  # their messages name the value (respacing=..., start_step=...)
    raise errors.ConfigError(f'config.sampling: {e}') from None
  if steps == 0:
    _fail('sampling.start_step', sampling.start_step,
          f'no step of the respaced grid (respacing={sampling.respacing!r}) lies at or below it.')


def check_train_fields(train) -> None:
  """Counts and periods of config.train that must be positive (0 would divide by zero)."""
  for field in ('batch_size', 'microbatches', 'log_every', 'checkpoint_every',
                'keep_checkpoints'):
    value = train[field]
    if not isinstance(value, int) or value < 1:
      _fail(f'train.{field}', value, 'must be a whole number of at least 1.')
  for field in ('num_steps', 'preview_every'):
    if not isinstance(train[field], int) or train[field] < 0:
      _fail(f'train.{field}', train[field], 'must be a whole number of at least 0.')
  if train.preview_every and train.preview_count < 1:
    _fail('train.preview_count', train.preview_count, 'must be at least 1 with preview_every.')
  if train.get('lr_decay', 'constant') not in ('constant', 'linear'):
    _fail('train.lr_decay', train.lr_decay, "expected 'constant' or 'linear'.")
  profile = tuple(train.profile_steps)
  if len(profile) != 2 or profile != (0, 0) and not 1 <= profile[0] <= profile[1]:
    _fail('train.profile_steps', profile, 'expected (first, last) steps with 1 <= first <= last, '
          'or (0, 0) for no trace.')
  if not 0 <= train.ema_decay < 1:
    _fail('train.ema_decay', train.ema_decay, 'must lie in [0, 1).')
  if train.optimizer not in ('adam', 'adamw'):
    _fail('train.optimizer', train.optimizer, "expected 'adam' or 'adamw'.")


def check_topology(config, *, process_count: int, local_devices: int, process_index: int = 0
                   ) -> None:
  """The global batch must split evenly over processes and their devices, and each device's
  share over config.train.microbatches; checked before anything is built."""
  del process_index
  train = config.train
  devices = process_count * local_devices
  if train.batch_size % devices:
    _fail('train.batch_size', train.batch_size,
          f'the global batch must split evenly over {devices} devices ({process_count} '
          f'process(es) x {local_devices} local device(s)); use a multiple of {devices}.')
  per_device = train.batch_size // devices
  if per_device % train.microbatches:
    _fail('train.microbatches', train.microbatches,
          f'must divide the per-device batch of {per_device} (batch_size={train.batch_size} over '
          f'{devices} devices).')


DEMO_COMMAND = 'python -m diffbfr_jax.main --config=configs/demo.py --workdir=runs/demo'


def check_data_source(config) -> None:
  """Training needs faces: stop before building anything when none are configured."""
  source = config.data.source
  if source.kind not in ('folder', 'tfds', 'bundled'):
    _fail('data.source.kind', source.kind,
          "give the HQ faces to train on: 'folder' (--config.data.source.kind=folder "
          "--config.data.source.path=FFHQ_512), 'tfds' (--config.data.source.tfds_name=...) or "
          "'bundled' (scikit-image's small faces, which the :demo presets use; see Data in "
          f'docs/training.md). To see DiffBFR work end to end on a CPU first: {DEMO_COMMAND}')
  if source.kind == 'folder' and not source.path:
    _fail('data.source.path', source.path, "kind='folder' needs the folder of HQ faces.")
  if source.kind == 'tfds' and not source.tfds_name:
    _fail('data.source.tfds_name', source.tfds_name, "kind='tfds' needs a dataset name, e.g. "
          "'celeb_a_hq/512'.")

