"""The one module that knows about devices: multi-host set-up, the pmapped train step and the
batch-sharded sampling function.

Everything else is written for one device. The train step is written per device with explicit
`lax.pmean` over `AXIS` and wrapped here with `jax.pmap` in the current Flax-example form: the
state goes in unreplicated (`in_axes=None`) and comes out unreplicated (`out_axes=None`), the
batch is sharded on its leading `[local_devices]` axis. (`jax.pmap` is built on `jit` +
`shard_map` since JAX 0.8; moving to `jit(shard_map(...))` changes only this file.)
"""

import itertools
import logging
import os
import sys
import threading
import time

import jax
import numpy as np

from diffbfr_jax import errors

AXIS = 'batch'  # the name of the device axis that train steps reduce over


def initialize(initialize: str = 'auto', coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> None:
  """`initialize(**config.distributed)`: starts `jax.distributed` for multi-host runs, once.

  'auto' initialises when a coordinator is given or JAX's own cluster detection finds several
  hosts (Cloud TPU pods, SLURM jobs with several tasks); 'never' keeps a single process. `main`
  calls it before anything asks for a device; a second call (a job that runs other jobs, a test
  that runs several) does nothing.
  """
  if initialize not in ('auto', 'never'):
    raise errors.ConfigError(f'config.distributed.initialize={initialize!r}; expected '
                             "'auto' or 'never'")
  if initialize == 'never' or jax.distributed.is_initialized():
    return
  kwargs = {}
  if coordinator_address:
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes or None,
                  process_id=None if process_id < 0 else process_id)
  elif not _launched_on_several_hosts():
    return
  jax.distributed.initialize(**kwargs)
  logging.info('jax.distributed: process %d of %d', jax.process_index(), jax.process_count())
  if is_multihost():
    threading.Thread(target=_watch_for_failures, name='diffbfr_jax failure watch',
                     daemon=True).start()


def use_compilation_cache(folder: str) -> None:
  """Keeps compiled programs in `folder` (JAX's persistent compilation cache), so the next run
  of the same program on the same kind of device loads it instead of compiling it again."""
  if jax.config.jax_compilation_cache_dir != folder:
    jax.config.update('jax_compilation_cache_dir', folder)
    logging.info('Compilation cache: %s', folder)


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


def start_trace(folder) -> None:
  """Starts a profiler trace of this process's devices into folder/plugins/profile/<run>/,
  which TensorBoard's profile tab reads (`tensorboard --logdir=folder`)."""
  jax.profiler.start_trace(str(folder))
  logging.info('Profiler trace started into %s', folder)


def stop_trace(outputs=None) -> None:
  """Waits for `outputs` (the traced work's results) and stops the trace."""
  jax.block_until_ready(outputs)
  jax.profiler.stop_trace()
  logging.info('Profiler trace written')


def is_multihost() -> bool:
  return jax.process_count() > 1


def process_count() -> int:
  return jax.process_count()


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


# --- several processes: barriers, and a failure on one that stops them all -----------------
#
# A process that fails tells the others through the key-value store of jax.distributed's
# coordination service (`fail`). Each of the others learns it at its next `barrier`, or, if it
# is stuck where no barrier comes (a collective of the train step waiting for the failed
# process), from a watch thread within a few seconds; every process then prints one line and
# ends without JAX's shutdown barrier, which would wait minutes for the failed process.

_BARRIER_KEY = 'diffbfr_jax/barrier/{count}/'
_FAILED_KEY = 'diffbfr_jax/failed/'
_SEEN_KEY = 'diffbfr_jax/seen/'  # processes that learnt of a failure
_ENDING_KEY = 'diffbfr_jax/ending/'  # processes about to end after a failure
_barriers_passed = itertools.count()
_WATCH_SECONDS = 1.0  # how often the watch thread looks for another process's failure
_GRACE_SECONDS = 10.0  # time left to the job to stop at a barrier before the watch ends it
_LINGER_SECONDS = 30.0  # how long a failed process waits for the others to read its message


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for on one process):
  for jobs whose processes read what another wrote. Every process passes the same barriers in
  the same order. If another process has failed (`fail`), raises `errors.OtherProcessFailed`
  with its message instead of waiting for it."""
  if not is_multihost():
    return
  client = _client()
  prefix = _BARRIER_KEY.format(count=next(_barriers_passed))
  client.key_value_set(f'{prefix}{jax.process_index()}', name)
  delay = 0.005
  while True:
    failure = _other_failure(client)
    if failure:
      raise errors.OtherProcessFailed(f'{failure} (this process stopped at {name!r})')
    arrived = client.key_value_dir_get(prefix)
    if len(arrived) == jax.process_count():
      names = sorted({value for _, value in arrived})
      if len(names) > 1:  # a bug: the processes took different paths through the job
        raise RuntimeError(f'the processes met at different barriers: {names}')
      return
    time.sleep(delay)
    delay = min(2 * delay, 0.25)


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top (no public API yet)
  return distributed.global_state.client


def _other_failure(client) -> str:
  """'process K of N failed: MESSAGE' for the first other process that failed, else ''; marks
  this process as having seen it."""
  failed = [(key, message) for key, message in client.key_value_dir_get(_FAILED_KEY)
            if int(key.rsplit('/', 1)[-1]) != jax.process_index()]
  if not failed:
    return ''
  key, message = min(failed, key=lambda item: int(item[0].rsplit('/', 1)[-1]))
  client.key_value_set(f'{_SEEN_KEY}{jax.process_index()}', '1', allow_overwrite=True)
  return f'process {key.rsplit("/", 1)[-1]} of {jax.process_count()} failed: {message}'


def _watch_for_failures() -> None:
  """The watch thread: ends this process when another one has failed and the job has not
  stopped by itself within _GRACE_SECONDS (it waits in a collective that will never finish)."""
  try:
    client = _client()
    while True:
      time.sleep(_WATCH_SECONDS)
      failure = _other_failure(client)
      if failure:
        time.sleep(_GRACE_SECONDS)
        _end(f'error: {failure} (this process was stopped while it waited for it)', 1)
  except Exception:  # pylint: disable=broad-except (the service is gone: the run is ending)
    return


def fail(message: str, exit_code: int = 1, details: str = ''):
  """Ends this process with `details` (a traceback) and `message` on stderr and `exit_code`. On
  several processes, first tells the others (they stop at their next barrier, or within seconds
  if stuck) and waits up to _LINGER_SECONDS for them to read it; if another process failed
  first (this one failing because of it, say a collective cut short), says that instead."""
  if not (jax.distributed.is_initialized() and is_multihost()):
    print(details, end='', file=sys.stderr)
    sys.exit(message)  # prints the message to stderr, exit status 1
  try:
    client = _client()
    first = _other_failure(client)
    if first:
      _end(f'error: {first} (then this process failed too: {message.splitlines()[0]})', 1)
    print(details, end='', file=sys.stderr)
    client.key_value_set(f'{_FAILED_KEY}{jax.process_index()}', message[-2000:],
                         allow_overwrite=True)
    deadline = time.monotonic() + _LINGER_SECONDS
    while time.monotonic() < deadline:
      seen = {key.rsplit('/', 1)[-1] for key, _ in client.key_value_dir_get(_SEEN_KEY)}
      if len(seen - {str(jax.process_index())}) >= jax.process_count() - 1:
        break
      time.sleep(0.1)
  except Exception:  # pylint: disable=broad-except (the service is gone: nobody to tell)
    pass
  _end(message, exit_code)


def stop_after_other_failure(error: errors.OtherProcessFailed):
  """Ends this process after `barrier` found another one failed."""
  if not is_multihost():
    sys.exit(f'error: {error}')
  _end(f'error: {error}', 1)


def _end(message: str, exit_code: int):
  """Prints `message` and ends the process without JAX's shutdown barrier, which would wait
  minutes for a process that has failed. Process 0 holds the coordination service, whose end
  makes JAX abort the processes still running, so it ends last (waiting up to _LINGER_SECONDS
  for the others)."""
  print(message, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  try:
    client = _client()
    client.key_value_set(f'{_ENDING_KEY}{jax.process_index()}', '1', allow_overwrite=True)
    if jax.process_index() == 0:
      deadline = time.monotonic() + _LINGER_SECONDS
      while (len(client.key_value_dir_get(_ENDING_KEY)) < jax.process_count()
             and time.monotonic() < deadline):
        time.sleep(0.05)
      time.sleep(0.5)  # for the last one to be gone
  except Exception:  # pylint: disable=broad-except (the service is gone already)
    pass
  os._exit(exit_code)  # pylint: disable=protected-access


def on_main_process(name: str, fn, *args, **kwargs):
  """`fn(*args, **kwargs)` on process 0 only, the others waiting at the barrier `name` until it
  is done (for work done once whose files every process may then read). Returns its result on
  process 0, None on the others."""
  result = fn(*args, **kwargs) if is_main_process() else None
  barrier(name)
  return result


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


def pmap_train_step(step_fn, devices=None, donate_state: bool = False, frozen: bool = False):
  """`step_fn(state, batch, rng) -> (state, metrics)`, per device, reducing with `lax.pmean`
  over `AXIS`, becomes a step over all local devices: batch leaves `[local_devices, ...]`, the
  state and the metrics unreplicated (they must be identical on every device).

  `devices`: others than this process's (the compile benchmark's compile-only devices of a
  TPU or GPU target). `donate_state`: the step may write the new state over the old one's
  buffers, which the caller must not use afterwards (the compile benchmark measures it).
  `frozen`: the step takes a fourth argument, replicated like the state (a teacher's
  parameters)."""
  in_axes = (None, 0, None) + ((None,) if frozen else ())
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=in_axes, out_axes=(None, None),
                  devices=devices, donate_argnums=(0,) if donate_state else ())


def pmap_batch_fn(fn, devices=None):
  """`fn(batch) -> batch`, per device, applied to every local device's share of a batch whose
  leaves are `[local_devices, ...]`; the output stays on the devices, sharded the same way.
  `devices`: as `pmap_train_step`'s."""
  return jax.pmap(fn, axis_name=AXIS, devices=devices)


def _local_sharding(*spec, devices=None):
  mesh = jax.sharding.Mesh(np.array(jax.local_devices() if devices is None else devices), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def place_state(state):
  """The state placed where the pmapped step leaves it (replicated over the step's devices), so
  the step compiles once instead of again on its second call. Also places sampling parameters."""
  return jax.device_put(state, _local_sharding())


def jit_over_local_devices(fn, devices=None):
  """`fn(params, batch) -> outputs`, written for one device, jitted with the parameters
  replicated (place them with `place_state`) and every leaf of `batch` and of the outputs split
  on its leading axis over this process's devices. That axis must be a multiple of
  `jax.local_device_count()`. `devices`: as `pmap_train_step`'s (then a multiple of their
  number)."""
  return jax.jit(fn, in_shardings=(_local_sharding(devices=devices),
                                   _local_sharding(AXIS, devices=devices)),
                 out_shardings=_local_sharding(AXIS, devices=devices))


def device_index():
  """This device's index along `AXIS`, inside a pmapped step (for folding random keys)."""
  return jax.lax.axis_index(AXIS)


def cpu_client():
  """The CPU backend's client: the compile benchmark runs XLA's generic cost analysis of a GPU
  target's compiled module there."""
  return jax.devices('cpu')[0].client
