"""Orbax checkpoints of a stage's training state, one `CheckpointManager` per workdir.

Each checkpoint holds `state` (step, parameters, EMA parameters, optimizer state; the step is
all the data pipeline needs to continue) and `meta` (the stage, the network and its config), so
a later reader can refuse a checkpoint of the wrong stage before any compute. Orbax writes into
a temporary folder and renames it when complete: a run killed mid-save leaves no step folder,
and the restart resumes from the last complete checkpoint.
"""

import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from diffbfr_jax import errors
from diffbfr_jax import parallel
from diffbfr_jax import resume


class Checkpointer:
  """Saves every `save_every` steps (and when asked), keeps the last `keep`, restores latest."""

  def __init__(self, workdir, *, keep: int = 3):
    # Orbax needs absolute paths; a relative --workdir is taken from the current folder.
    self.directory = epath.Path(os.path.abspath(workdir)) / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def check_meta(self, meta: dict) -> None:
    """Stops with a CheckpointError listing every field in which the latest checkpoint's meta
    (stage, network, diffusion) differs from `meta` (of the config about to resume it).
    Fields that do not change what the network is (compute dtype, remat, dropout) may differ."""
    step = self.manager.latest_step()
    if step is None:
      return
    stored = read_meta(self.directory, step)
    differences = meta_differences(stored, meta)
    if differences:
      raise errors.CheckpointError(refusal(f'{self.directory}/{step}', differences) + ' Resume with '
                            'the config it was trained with, or give a new --workdir to train '
                            'this one.')

  def restore(self, state):
    """The latest checkpoint restored into `state`'s structure (as host NumPy arrays, to be
    placed by the caller), or `state` itself if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return state
    # Every process restores the whole (replicated) state.
    replicated = parallel.replicated_everywhere()
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    logging.info('Resumed from the checkpoint of step %d in %s', step, self.directory)
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), restored.state)

  def save(self, step: int, state, meta: dict) -> None:
    """Saves `state` (replicated on this process's devices, as the pmapped step leaves it)."""
    if parallel.is_multihost():
      # Orbax writes global arrays; the step's output is host-local on every process.
      state = jax.tree_util.tree_map(ocp.utils.fully_replicated_host_local_array_to_global_array,
                                     state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class GoodStates:
  """The good-state rule of every training loop here: a checkpoint holds only a state that has
  proved good, i.e. the loss computed with its parameters (the next step's, or one more step's
  at the end) came out finite and every array of it (parameters, EMA, optimizer moments) is
  finite. A non-finite loss or state stops the run with a NonFiniteLossError that names the last
  good checkpoint; nothing later is saved."""

  def __init__(self, ckpt: Checkpointer, meta: dict):
    self.ckpt, self.meta = ckpt, meta

  def last_good(self) -> str:
    step = self.ckpt.latest_step()
    return (f'The last good checkpoint is step {step} in {self.ckpt.directory}'
            if step is not None else f'No checkpoint was saved in {self.ckpt.directory}')

  def check_loss(self, loss: float, step: int) -> None:
    """Stops on a non-finite loss of `step` (computed with the parameters of step - 1)."""
    if not np.isfinite(loss):
      raise errors.NonFiniteLossError(
          f'Non-finite loss ({loss}) at step {step}, computed with the parameters of step '
          f'{step - 1}. {self.last_good()}; no later state was saved.')

  def save(self, step: int, state, finite) -> None:
    """Saves `state` (of `step`), whose loss has been checked finite, if its arrays are all
    finite (`finite`: a flag computed on the device)."""
    if not float(jax.device_get(finite)):
      raise errors.NonFiniteLossError(
          f'The state of step {step} holds non-finite parameters, EMA or optimizer moments '
          f'(its loss was finite). {self.last_good()}; no later state was saved.')
    self.ckpt.save(step, state, self.meta)

  def verify_and_save(self, step: int, state, finite, loss: float) -> None:
    """The final (or preempted) state: saved if `loss`, computed with its parameters by one
    more step whose update is dropped, is finite."""
    if not np.isfinite(loss):
      raise errors.NonFiniteLossError(
          f'Non-finite loss ({loss}) computed with the parameters of step {step}. '
          f'{self.last_good()}; no later state was saved.')
    self.save(step, state, finite)


def all_finite(tree):
  """True (a device scalar) when every floating-point array of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def meta_of(config) -> dict:
  """The `meta` item of a stage config's checkpoints: what a reader needs to rebuild the network.
  A distilled student's also has 'prediction' (what its output predicts) and 'distill' (its
  teacher, round and steps; jobs/distill.py)."""
  return {'stage': config.stage, 'model_type': config.model_type,
          'model': config.model.to_dict(), 'diffusion': config.diffusion.to_dict()}


def prediction_of(meta: dict) -> str:
  """What a checkpoint's network predicts: 'eps' (every trained stage) unless its meta says."""
  return meta.get('prediction', 'eps')


def refusal(where: str, differences) -> str:
  """Why the checkpoint `where` does not fit a config, most useful first: another stage, then
  another network, then the number of fields that differ and each of them."""
  first = {f: (a, b) for f, a, b in differences}
  if 'stage' in first:
    head = (f'{where} is a {first["stage"][0]} checkpoint and the config trains '
            f'{first["stage"][1]}: another stage.')
  elif 'model_type' in first:
    head = (f'{where} holds a {first["model_type"][0]} network and the config a '
            f'{first["model_type"][1]} one.')
  else:
    head = f'{where} was trained with another config.'
  listed = '; '.join(f'config.{f}: {a} in the checkpoint, {b} in the config'
                     for f, a, b in differences)
  count = (f'{len(differences)} fields differ' if len(differences) > 1 else '1 field differs')
  return f'{head} {count}: {listed}.'



# Fields of meta['model'] that a run may change when it resumes: how the same network computes.
RESUMABLE_MODEL_FIELDS = ('dtype', 'remat', 'dropout')


# The fields a refusal names first: what a user most needs to know (another stage, another
# network, another size), then the rest in order.
FIRST_FIELDS = ('stage', 'model_type', 'model.image_size', 'model.in_channels',
                'model.out_channels', 'model.inner_channels', 'model.model_channels')


def meta_differences(stored: dict, wanted: dict):
  """[(field, stored value, wanted value)] over stage, model_type, model, diffusion and (for
  distilled students) prediction and distill, with JSON's lists and tuples alike, FIRST_FIELDS
  first; RESUMABLE_MODEL_FIELDS are ignored."""
  fields = ('stage', 'model_type', 'model', 'diffusion', 'prediction', 'distill')
  diffs = resume.differences({f: stored.get(f) for f in fields},
                             {f: wanted.get(f) for f in fields},
                             ignore=[f'model.{r}' for r in RESUMABLE_MODEL_FIELDS])
  rank = lambda d: FIRST_FIELDS.index(d[0]) if d[0] in FIRST_FIELDS else len(FIRST_FIELDS)
  return sorted(diffs, key=rank)  # stable: the others keep their order


def _manager(path):
  return ocp.CheckpointManager(epath.Path(os.path.abspath(path)), item_handlers={
      'state': ocp.PyTreeCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})


def find(path, step: int = -1):
  """(checkpoints folder, step) for a training workdir or its `checkpoints` folder; `step` -1
  picks the latest complete checkpoint. FileNotFoundError naming the path when there is none."""
  root = pathlib.Path(path) if path else None
  if root is None or not root.is_dir():
    raise errors.NotFound(f'checkpoint {str(path)!r} does not exist or is not a folder (give a '
                            "stage's training workdir or its 'checkpoints' folder)")
  folder = root / 'checkpoints' if (root / 'checkpoints').is_dir() else root
  manager = _manager(folder)
  steps = manager.all_steps()
  manager.close()
  if not steps:
    raise errors.NotFound(f'{folder} holds no complete checkpoint')
  if step < 0:
    return folder, max(steps)
  if step not in steps:
    raise errors.NotFound(f'{folder} has no checkpoint of step {step}; it has {sorted(steps)}')
  return folder, step


def find_field(field: str, path, step: int = -1):
  """`find` for the config field `field` that names the checkpoint (and its `step` field): the
  NotFound names the field and its value."""
  try:
    return find(path, step)
  except errors.NotFound as e:
    raise errors.NotFound(f'config.{field}={path!r} (step={step}): {e}') from None


def trained_step(path) -> int:
  """The latest complete checkpoint's step in a training workdir; 0 when it has none yet."""
  try:
    return find(path)[1]
  except errors.NotFound:
    return 0


def read_meta(folder, step: int) -> dict:
  """The `meta` item (stage, network type and config, diffusion config) of one checkpoint."""
  manager = _manager(folder)
  try:
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # Orbax raises several kinds for a missing or corrupt item
    raise errors.CheckpointError(f'{folder}/{step}: cannot read its meta item ({e})') from e
  finally:
    manager.close()
  for field in ('stage', 'model_type', 'model', 'diffusion'):
    if field not in meta:
      raise errors.CheckpointError(f'{folder}/{step}: its meta item has no {field!r} field')
  return meta


def restore_params(folder, step: int, abstract_params, *, item: str = 'ema_params'):
  """One parameter tree of the training state (`ema_params` or `params`) as host NumPy arrays.

  Every stored array must have the name and shape `abstract_params` expects (Orbax itself would
  silently return the stored shapes); a mismatch is a CheckpointError naming the parameter.
  """
  if item not in ('ema_params', 'params'):
    raise ValueError(f"params={item!r}; expected 'ema_params' or 'params'")
  manager = _manager(folder)
  try:
    stored = manager.item_metadata(step)['state']
    if stored is None or item not in stored:
      raise errors.CheckpointError(f'{folder}/{step}: the state holds no {item!r}')
    stored_shapes = {_name(p): tuple(m.shape) for p, m in
                     jax.tree_util.tree_flatten_with_path(stored[item])[0]}
    wanted = {_name(p): tuple(a.shape) for p, a in
              jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    for name in sorted(wanted.keys() | stored_shapes.keys()):
      if wanted.get(name) != stored_shapes.get(name):
        raise errors.CheckpointError(
            f'{folder}/{step}: parameter {item}/{name} has shape {stored_shapes.get(name)} in the '
            f'checkpoint but the network needs {wanted.get(name)} '
            f'({len(stored_shapes)} stored arrays, {len(wanted)} expected)')
    here = parallel.first_local_device()
    abstract = {item: jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), abstract_params)}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True))).state
  finally:
    manager.close()
  return jax.tree_util.tree_map(np.asarray, restored[item])


def _name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
