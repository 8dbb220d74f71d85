"""Orbax checkpoints of a stage's training state, one `CheckpointManager` per workdir.

Each checkpoint holds `state` (step, parameters, EMA parameters, optimizer state; the step is
all the data pipeline needs to continue) and `meta` (the stage, the network and its config), so
a later reader can refuse a checkpoint of the wrong stage before any compute. Orbax writes into
a temporary folder and renames it when complete: a run killed mid-save leaves no step folder,
and the restart resumes from the last complete checkpoint.
"""

import logging

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves every `save_every` steps (and when asked), keeps the last `keep`, restores latest."""

  def __init__(self, workdir, *, keep: int = 3):
    self.directory = epath.Path(workdir) / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, state):
    """The latest checkpoint restored into `state`'s structure (as host NumPy arrays, to be
    placed by the caller), or `state` itself if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return state
    # Every process restores the whole (replicated) state.
    replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ('x',)),
                                            jax.sharding.PartitionSpec())
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    logging.info('Resumed from the checkpoint of step %d in %s', step, self.directory)
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), restored.state)

  def save(self, step: int, state, meta: dict) -> None:
    """Saves `state` (replicated on this process's devices, as the pmapped step leaves it)."""
    if jax.process_count() > 1:
      # Orbax writes global arrays; the step's output is host-local on every process.
      state = jax.tree_util.tree_map(ocp.utils.fully_replicated_host_local_array_to_global_array,
                                     state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
