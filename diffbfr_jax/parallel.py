"""The one module that knows about devices: multi-host set-up, the pmapped train step and the
batch-sharded sampling function.

Everything else is written for one device. The train step is written per device with explicit
`lax.pmean` over `AXIS` and wrapped here with `jax.pmap` in the current Flax-example form: the
state goes in unreplicated (`in_axes=None`) and comes out unreplicated (`out_axes=None`), the
batch is sharded on its leading `[local_devices]` axis. (`jax.pmap` is built on `jit` +
`shard_map` since JAX 0.8; moving to `jit(shard_map(...))` changes only this file.)
"""

import logging
import os

import jax
import numpy as np

from diffbfr_jax import errors

AXIS = 'batch'  # the name of the device axis that train steps reduce over


def initialize(initialize: str = 'auto', coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> None:
  """`initialize(**config.distributed)`: starts `jax.distributed` for multi-host runs.

  'auto' initialises when a coordinator is given or JAX's own cluster detection finds several
  hosts (Cloud TPU pods, SLURM jobs with several tasks); 'never' keeps a single process.
  """
  if initialize == 'never':
    return
  if initialize != 'auto':
    raise errors.ConfigError(f'config.distributed.initialize={initialize!r}; expected '
                             "'auto' or 'never'")
  kwargs = {}
  if coordinator_address:
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes or None,
                  process_id=None if process_id < 0 else process_id)
  elif not _launched_on_several_hosts():
    return
  jax.distributed.initialize(**kwargs)
  logging.info('jax.distributed: process %d of %d', jax.process_index(), jax.process_count())


def _launched_on_several_hosts() -> bool:
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  # Cloud TPU pod slices list every worker's address.
  return len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1


def topology() -> dict:
  """Plain numbers the data pipeline needs; it must not query devices itself."""
  return dict(process_index=jax.process_index(), process_count=jax.process_count(),
              local_devices=jax.local_device_count())


def describe() -> str:
  """This process and its devices, for the log."""
  return (f'JAX process {jax.process_index()} / {jax.process_count()}, local devices: '
          f'{jax.local_devices()}')


def device_label() -> str:
  """'<device kind> x <local devices>', as the benchmarks print it."""
  return f'{jax.local_devices()[0].device_kind} x {jax.local_device_count()}'


def device_info() -> dict:
  """The local devices as the benchmarks record them: kind, count, platform, its runtime's
  version, and the first device's memory limit (0 where the platform reports none, the CPU)."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  return dict(kind=device.device_kind, count=jax.local_device_count(), platform=device.platform,
              platform_version=getattr(device.client, 'platform_version', ''),
              memory_limit_bytes=int(stats.get('bytes_limit', 0)))


def local_device_count() -> int:
  return jax.local_device_count()


def device_memory_stats() -> dict:
  """The first local device's memory statistics ({} where the platform keeps none, the CPU)."""
  return jax.local_devices()[0].memory_stats() or {}


def is_multihost() -> bool:
  return jax.process_count() > 1


def process_index() -> int:
  """This process's index among the processes of the run (0 on one process)."""
  return jax.process_index()


def is_main_process() -> bool:
  """Process 0, the one that writes metrics and prints reports."""
  return jax.process_index() == 0


def process_share(items: list) -> list:
  """This process's share of `items` (every process_count-th, from its index), for jobs whose
  processes work through one list each on their own part (the restore job's files)."""
  return items[jax.process_index()::jax.process_count()]


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for on one process):
  for jobs whose main process gathers what every process wrote."""
  if is_multihost():
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def round_to_local_devices(batch_size: int) -> int:
  """`batch_size` rounded up to a multiple of this process's device count (a batch that
  `jit_over_local_devices` can split)."""
  devices = jax.local_device_count()
  return -(-batch_size // devices) * devices


def replicated_everywhere():
  """The sharding of an array held whole by every device of every process (what a checkpoint
  restores into before `place_state`)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def first_local_device():
  """The sharding of an array on this process's first device (parameters read for sampling,
  placed by `place_state` later)."""
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def pmap_train_step(step_fn):
  """`step_fn(state, batch, rng) -> (state, metrics)`, per device, reducing with `lax.pmean`
  over `AXIS`, becomes a step over all local devices: batch leaves `[local_devices, ...]`, the
  state and the metrics unreplicated (they must be identical on every device)."""
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=(None, 0, None), out_axes=(None, None))


def pmap_batch_fn(fn):
  """`fn(batch) -> batch`, per device, applied to every local device's share of a batch whose
  leaves are `[local_devices, ...]`; the output stays on the devices, sharded the same way."""
  return jax.pmap(fn, axis_name=AXIS)


def _local_sharding(*spec):
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def place_state(state):
  """The state placed where the pmapped step leaves it (replicated over the step's devices), so
  the step compiles once instead of again on its second call. Also places sampling parameters."""
  return jax.device_put(state, _local_sharding())


def jit_over_local_devices(fn):
  """`fn(params, batch) -> outputs`, written for one device, jitted with the parameters
  replicated (place them with `place_state`) and every leaf of `batch` and of the outputs split
  on its leading axis over this process's devices. That axis must be a multiple of
  `jax.local_device_count()`."""
  return jax.jit(fn, in_shardings=(_local_sharding(), _local_sharding(AXIS)),
                 out_shardings=_local_sharding(AXIS))


def device_index():
  """This device's index along `AXIS`, inside a pmapped step (for folding random keys)."""
  return jax.lax.axis_index(AXIS)
