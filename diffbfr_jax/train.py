"""Training of one DiffBFR stage: `train_and_evaluate(config, workdir)`.

The step is a pure function `train_step(state, batch, key) -> (state, metrics)` written for one
device; `parallel.pmap_train_step` runs it on all local devices. Randomness: the diffusion draws
of each example come from `fold_in(fold_in(key, step), example_id)` with the data pipeline's
global example ids, so they do not depend on how the batch is split over devices or
microbatches; so do the dropout masks, from `fold_in(fold_in(step key, DROPOUT_STREAM), example_id)`.

A checkpoint holds only a state that has proved good: the one due at step s is written after the
loss of step s + 1 (computed with its parameters) came out finite, and after an all-finite check
of its parameters, EMA and optimizer state. SIGTERM (and, on several hosts, Orbax's preemption
sync point) stops the run after the step in flight with that step saved.
"""

import functools
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from diffbfr_jax import errors
from diffbfr_jax import checkpointing
from diffbfr_jax import config_checks
from diffbfr_jax import models
from diffbfr_jax import parallel
from diffbfr_jax.data import device_degradation
from diffbfr_jax.diffusion import losses
from diffbfr_jax.diffusion import samplers
from diffbfr_jax.diffusion import schedules


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  ema_params: Any  # the parameters used for sampling
  opt_state: Any


def make_optimizer(*, optimizer: str, learning_rate: float, warmup_steps: int,
                   weight_decay: float, grad_clip: float, decay_steps: int = 0):
  """Adam or AdamW with linear warm-up to a constant rate inside the transform (then, with
  `decay_steps`, linearly down to 0 over that many steps); global-norm clipping first when
  `grad_clip` > 0. Returns (transform, learning-rate schedule)."""
  schedule = optax.warmup_constant_schedule(0.0, learning_rate, warmup_steps) \
      if warmup_steps else optax.constant_schedule(learning_rate)
  if decay_steps:
    schedule = optax.join_schedules(
        [schedule, optax.linear_schedule(learning_rate, 0.0, decay_steps)], [warmup_steps])
  if optimizer == 'adam':
    opt = optax.adam(schedule)
  elif optimizer == 'adamw':
    opt = optax.adamw(schedule, weight_decay=weight_decay)
  else:
    raise errors.ConfigError(f"config.train.optimizer={optimizer!r}; expected 'adam' or 'adamw'")
  parts = ([optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []) + [opt]
  return optax.chain(*parts), schedule


class Objective(NamedTuple):
  """What a run trains towards and from, when it is not the stage's own diffusion loss from a
  random initialisation (the distill job's student: a teacher's chain, from the teacher)."""
  loss_fn: Callable[..., Any]  # loss_fn(params, batch, key, frozen) -> (loss, metrics)
  frozen: Any  # a tree every step is given and does not train (a teacher's parameters)
  init_params: Any  # the parameters (and EMA) of step 0
  meta: dict  # the checkpoints' meta item (checkpointing.meta_of's fields and more)


DROPOUT_STREAM = 0x64726F70  # folded into the step key for the dropout keys ('drop')


def make_loss_fn(config, model, schedule):
  """`loss_fn(params, batch, key) -> (loss, metrics)` for the stage's network; `key` is the
  step's key. Dropout masks are drawn per example, keyed by its id like the diffusion draws."""
  time_input = models.TIME_INPUT[config.model_type]
  loss = losses.noise_level_loss if time_input == 'noise_level' else losses.timestep_loss

  def loss_fn(params, batch, key):
    dropout_keys = None
    if config.model.get('dropout', 0.0) > 0:
      dropout_keys = losses.example_keys(jax.random.fold_in(key, DROPOUT_STREAM),
                                         batch['gt'].shape[0], batch['id'])

    def model_fn(x_t, time_, cond):
      return model.apply({'params': params}, x_t, time_, cond, train=True,
                         dropout_keys=dropout_keys)
    return loss(model_fn, schedule, batch['gt'], key, batch.get('cond'),
                example_ids=batch['id'], **config.diffusion.loss)

  return loss_fn


def train_step(state: TrainState, batch, key, *frozen, loss_fn, tx, ema_decay: float,
               microbatches: int, lr_schedule):
  """One optimizer step on this device's batch `[B, ...]`, gradients averaged over devices.
  `frozen`: nothing, or one tree passed on to `loss_fn(params, batch, key, frozen)` (an
  Objective's).

  Its metrics include `state_finite` (1.0 when every array of the new state is finite), which
  the loop reads before saving and does not write out."""
  key = jax.random.fold_in(key, state.step)
  size = batch['gt'].shape[0]
  if size % microbatches:  # config_checks.check_topology says so before any compute
    raise ValueError(f'config.train.microbatches={microbatches} does not divide the per-device '
                     f'batch of {size}')
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (loss, aux), grads = grad_fn(state.params, batch, key, *frozen)
  else:
    # Accumulate over slices of the batch: activation memory of one slice, same gradient.
    micro = jax.tree_util.tree_map(
        lambda x: x.reshape((microbatches, size // microbatches) + x.shape[1:]), batch)

    def accumulate(carry, mb):
      (loss, aux), grads = grad_fn(state.params, mb, key, *frozen)
      return jax.tree_util.tree_map(jnp.add, carry, (grads, loss, aux)), None

    (_, first_aux), _ = jax.eval_shape(
        grad_fn, state.params, jax.tree_util.tree_map(lambda x: x[0], micro), key, *frozen)
    zeros = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(lambda: (state.params, jnp.zeros(()), first_aux)))
    (grads, loss, aux), _ = jax.lax.scan(accumulate, zeros, micro)
    grads, loss, aux = jax.tree_util.tree_map(lambda v: v / microbatches, (grads, loss, aux))
  grads = jax.lax.pmean(grads, parallel.AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
  new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params,
                            opt_state=opt_state)
  metrics = {'train/loss': loss, 'train/grad_norm': optax.tree_utils.tree_norm(grads),
             'train/lr': lr_schedule(state.step)}
  metrics.update({f'train/{k}': v for k, v in aux.items()})
  metrics = jax.lax.pmean(metrics, parallel.AXIS)
  finite = checkpointing.all_finite(new_state).astype(jnp.float32)
  metrics['state_finite'] = jax.lax.pmin(finite, parallel.AXIS)
  return new_state, metrics


def decay_steps(tc) -> int:
  """The steps of config.train's linear decay to 0 (`lr_decay='linear'`: from the end of the
  warm-up to num_steps), 0 for a constant rate."""
  if tc.get('lr_decay', 'constant') == 'linear':
    return max(tc.num_steps - tc.warmup_steps, 1)
  return 0


def example_builder(config):
  """What turns the pipeline's batches into the stage's examples: nothing for
  `config.data.degrade_on='host'`; for 'device', the degradation and resizes in JAX
  (`device_degradation.make_examples`), pmapped over the local devices."""
  if config.data.degrade_on != 'device':
    return lambda batch: batch
  options = device_degradation.options_from_config(config)
  return parallel.pmap_batch_fn(functools.partial(device_degradation.make_examples, **options))


def create_state(config, model, tx, key) -> TrainState:
  params = jax.jit(model.init)(key, *models.example_inputs(config.model))['params']
  return state_from_params(params, tx)


def state_from_params(params, tx) -> TrainState:
  """Step 0 of training from `params` (also the EMA) with a fresh optimizer state."""
  params = jax.tree_util.tree_map(jnp.asarray, params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree_util.tree_map(jnp.copy, params),
                    opt_state=tx.init(params))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = False, objective: Objective | None = None) -> TrainState:
  """Trains `config.stage` in `workdir`, resuming from its latest checkpoint if there is one.
  `progress`: print a line every `log_every` steps (the train job; jobs that train several
  stages print their own line per stage). `objective`: another loss, start and meta than the
  stage's own (the distill job's)."""
  # TensorFlow (data and TensorBoard writing) is imported here only, and kept off accelerators.
  from diffbfr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import tensorflow_cpu  # pylint: disable=g-import-not-at-top
  tensorflow_cpu.keep_tensorflow_on_cpu()
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top

  if not workdir:
    raise errors.NotFound('--workdir is required for training (checkpoints and metrics go '
                          'there; an existing one is resumed)')
  workdir = os.path.abspath(workdir)
  topology = parallel.topology()
  config_checks.check_topology(config, **topology)  # before anything is built
  tc = config.train
  meta = checkpointing.meta_of(config) if objective is None else objective.meta
  ckpt = checkpointing.Checkpointer(workdir, keep=tc.keep_checkpoints)
  ckpt.check_meta(meta)  # a checkpoint of another stage, network or diffusion: stop here
  writer = metric_writers.create_default_writer(workdir, just_logging=not parallel.is_main_process())
  model = models.create_model(config.model_type, **config.model)
  schedule = schedules.make_schedule(**config.diffusion.schedule)
  tx, lr_schedule = make_optimizer(optimizer=tc.optimizer, learning_rate=tc.learning_rate,
                                   warmup_steps=tc.warmup_steps, weight_decay=tc.weight_decay,
                                   grad_clip=tc.grad_clip, decay_steps=decay_steps(tc))
  root_key = jax.random.key(config.seed)
  init_key, train_key, preview_key = jax.random.split(root_key, 3)
  if objective is None:
    loss_fn, frozen = make_loss_fn(config, model, schedule), ()
    initial = create_state(config, model, tx, init_key)
  else:
    loss_fn, frozen = objective.loss_fn, (parallel.place_state(objective.frozen),)
    initial = state_from_params(objective.init_params, tx)
  state = parallel.place_state(ckpt.restore(initial))
  start_step = int(state.step)

  dataset, loader = pipeline.from_config(config, start_step=start_step, **topology)
  batches = iter(dataset)
  build = example_builder(config)

  def next_batch():
    return build(jax.tree_util.tree_map(np.asarray, next(batches)))

  pmapped = parallel.pmap_train_step(functools.partial(
      train_step, loss_fn=loss_fn, tx=tx, ema_decay=tc.ema_decay,
      microbatches=tc.microbatches, lr_schedule=lr_schedule), frozen=bool(frozen))
  step_fn = lambda state_, batch_, key_: pmapped(state_, batch_, key_, *frozen)

  if start_step == 0:
    writer.write_hparams(_flatten(config.to_dict()))
    parameter_overview.log_parameter_overview(state.params, msg=f'{config.stage} parameters')
  report = periodic_actions.ReportProgress(num_train_steps=tc.num_steps, writer=writer)
  preview = _make_preview(config, model, schedule) if tc.preview_every else None
  pending, window_start, window_steps = [], time.perf_counter(), 0

  good = checkpointing.GoodStates(ckpt, meta)

  def flush(step):
    """Writes the pending steps' metrics (the last is of `step`); stops on a non-finite loss."""
    nonlocal pending, window_start, window_steps
    if not pending:
      return
    values = jax.device_get(pending)
    for offset, m in enumerate(values):
      good.check_loss(m['train/loss'], step - len(values) + offset + 1)
    summary = {k: float(np.mean([m[k] for m in values])) for k in values[0]
               if k != 'state_finite'}
    seconds = time.perf_counter() - window_start
    summary['train/steps_per_sec'] = window_steps / seconds
    summary['train/images_per_sec'] = window_steps * tc.batch_size / seconds
    summary['train/skipped_files'] = float(len(loader.skipped))
    writer.write_scalars(step, summary)
    if progress and parallel.is_main_process() and (step % tc.log_every == 0
                                                     or step == tc.num_steps):
      print(f'{config.stage} step {step}/{tc.num_steps}: loss {summary["train/loss"]:.4g}, '
            f'{summary["train/steps_per_sec"]:.3g} steps/s', flush=True)
    pending, window_start, window_steps = [], time.perf_counter(), 0

  def verify_and_save(step, good_state, finite):
    """The final (or preempted) state: one more step, compiled already, computes its loss (its
    update is dropped); the state is saved if that loss is finite."""
    _, check = step_fn(good_state, next_batch(), train_key)
    good.verify_and_save(step, good_state, finite, float(jax.device_get(check['train/loss'])))

  stop = _StopSignal(multihost=parallel.is_multihost(), manager=ckpt.manager)
  due = None  # (step, state, finite) of a checkpoint waiting for the next step's loss
  first_traced, last_traced = tc.profile_steps  # (0, 0): no trace
  tracing = False
  try:
    with stop:
      logging.info('Training %s from step %d to %d (compiling the step first)', config.stage,
                   start_step, tc.num_steps)
      if progress and parallel.is_main_process():
        print(f'Training {config.stage} from step {start_step} to {tc.num_steps} in {workdir} '
              '(compiling the step first)', flush=True)
      for step in range(start_step, tc.num_steps):
        done = step + 1
        if done == first_traced:
          parallel.start_trace(workdir)
          tracing = True
        batch = next_batch()
        new_state, metrics = step_fn(state, batch, train_key)
        if tracing and done in (last_traced, tc.num_steps):
          parallel.stop_trace(metrics)
          tracing = False
        pending.append(metrics)
        window_steps += 1
        report(done)
        if due is not None:  # this step's loss used the due state's parameters
          flush(done)
          good.save(*due)
          due = None
        finite = metrics['state_finite']
        state = new_state
        last = done == tc.num_steps
        if done % tc.log_every == 0 or last:
          flush(done)
        if done % tc.checkpoint_every == 0 and not last:
          due = (done, state, finite)
        if preview is not None and (done % tc.preview_every == 0 or last):
          writer.write_images(done, {'preview': preview(state.ema_params, batch,
                                                        jax.random.fold_in(preview_key, done))})
        if last:
          verify_and_save(done, state, finite)
        elif stop.requested(done):
          flush(done)  # a checkpoint due now is this same state, saved here
          verify_and_save(done, state, finite)
          ckpt.wait()
          raise errors.Stopped(
              f'stopped by {stop.name} at step {done} of {tc.num_steps}; its checkpoint is saved '
              f'in {ckpt.directory}. Run the same command to resume.', 128 + stop.signum)
  finally:
    if tracing:  # stopped inside the traced steps: keep what was traced
      parallel.stop_trace()
    # Finish the saves already started (good states) even when the run stops on an error.
    ckpt.wait()
    ckpt.close()
    writer.flush()
  if progress and parallel.is_main_process():
    print(f'Trained {config.stage} to step {int(state.step)}; checkpoints in {ckpt.directory}',
          flush=True)
  return state


class _StopSignal:
  """SIGTERM on one process (a handler that sets a flag, so the step in flight finishes); on
  several hosts Orbax's preemption sync point, at which every process agrees to stop."""
  signum = signal.SIGTERM
  name = 'SIGTERM'

  def __init__(self, *, multihost: bool, manager):
    self.multihost, self.manager = multihost, manager
    self.received, self.previous = False, None

  def __enter__(self):
    if not self.multihost and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(self.signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('%s received: saving after the step in flight', self.name)
    self.received = True

  def requested(self, step: int) -> bool:
    if self.multihost:
      return bool(self.manager.reached_preemption(step))
    return self.received

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(self.signum, self.previous)
    return False


def _make_preview(config, model, schedule):
  """A jitted short chain (config.train.preview_respacing) with the EMA parameters; returns an
  image grid [1, H, n * W, 3] in [0, 1]: LQ/condition | sample | GT rows, or samples for TEM."""
  tc = config.train
  time_input = models.TIME_INPUT[config.model_type]

  @jax.jit
  def run(params, cond, gt, key):
    sample, _ = samplers.make_sampler(
        lambda x, t, c: model.apply({'params': params}, x, t, c), schedule,
        time_input=time_input, start_step=schedule.num_steps, from_noise=True,
        variance=config.sampling.variance, clip_x0=True, respacing=tc.preview_respacing,
        sampler='ddim', ddim_eps=config.sampling.ddim_eps)
    return sample(key, gt, cond)

  def preview(params, batch, key):
    flat = {k: np.asarray(v).reshape((-1,) + v.shape[2:])[:tc.preview_count]
            for k, v in batch.items() if k != 'id'}
    cond = flat.get('cond')
    out = np.asarray(run(params, cond, flat['gt'], key))
    columns = ([cond] if cond is not None else []) + [out] + ([flat['gt']] if cond is not None else [])
    rows = np.concatenate(columns, axis=2)  # [n, H, k * W, 3]
    grid = np.concatenate(list(rows), axis=0)[None]
    return np.clip((grid + 1) / 2, 0, 1)

  return preview


def _flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    name = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flatten(v, f'{name}.'))
    else:
      out[name] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
