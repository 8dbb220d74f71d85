r"""One command for an accelerator: the three paper stages' training speed, memory and MFU, the
chain's overhead and the cascade's seconds per face, in one results file.

  python -m diffbfr_jax.benchmarks.accelerator --out=results/accelerator.json

Measures, at the paper's network sizes (--size) in bfloat16 (--dtype):
- train: for each stage of --stages, with remat off and on (--remat), the pmapped train step
  (Adam, EMA, the stage's loss) on synthetic batches at the largest per-device batch that fits
  (below), its images per second (median of --steps steps after one untimed step), the device's
  peak memory, XLA's FLOPs of the compiled step (cost analysis) and from them MFU and HFU;
- chain: for each stage, one reverse step inside the jitted chain against one bare network
  evaluation (--chain_steps steps at --chain_batch images; benchmarks/chain_overhead.py);
- degrade: for each stage, the degradation and resizes in the step (`config.data.degrade_on=
  'device'`, data/device_degradation.py) on --degrade_batch synthetic faces per device with
  parameters drawn in the paper's ranges, images per second per device (median of --steps);
- cascade: for each of --cascades ('paper' = configs/cascade.py's full chain, 3100 network
  evaluations per face; 'fast' = 100 + 50 + 25), seconds per face of the jitted cascade at
  --cascade_batch faces (benchmarks/cascade.py).

The largest batch: XLA's memory analysis of the compiled step (arguments + outputs - donated +
temporaries) at per-device batch 1 and 2 gives bytes per image; the largest batch whose line stays
under --memory_fraction of the device's memory limit (capped at --max_batch) is compiled; if its
own analysis is over the limit, or running it runs out of memory, the batch is cut by 10% and
tried again. It is the largest batch that fitted by this rule, not proven maximal. --batch=N
fixes it instead. Devices that report no memory limit (the CPU) need --batch or
--memory_limit_gib.

MFU = model FLOPs per image (from the remat-off step of the same stage, so recomputation is not
counted) x images per second per device / the device's peak; HFU counts the compiled step's own
FLOPs (recomputation included). The peak is --peak_tflops, or for bfloat16 the vendor's dense
figure of known devices (PEAK_TFLOPS); otherwise MFU is left out.

Every measurement runs in a process of its own (clean peak memory, no state left by an
out-of-memory batch) and is written to --out as it ends; --resume keeps the measurements already
there and runs the rest, so a long run can be finished in parts; it refuses a file made with
other flags or on another device (one table, one setting). A batch search that went past an
out-of-memory batch is measured again, at the batch it found, in a new process (the first
process's peak memory would be the failed batch's). Nothing here imports TensorFlow.
The file's format is in docs/benchmarks.md (Accelerator benchmark).
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

STAGES = ('irm1', 'irm2', 'tem')

# Dense (no sparsity) bfloat16 peak of one device, TFLOP/s, from the vendors' data sheets; the
# first entry whose key is in JAX's device_kind is used.
PEAK_TFLOPS = (
    ('H100 PCIe', 756.0),
    ('H100 NVL', 835.0),
    ('H100', 989.4),
    ('H200', 989.4),
    ('A100', 312.0),
    ('TPU v4', 275.0),
    ('TPU v5 lite', 197.0),
    ('TPU v5', 459.0),
    ('TPU v6 lite', 918.0),
)

# Memory bandwidth of one device, GB/s (10^9 bytes per second), with its source; the first entry
# whose key is in JAX's device_kind is used (compile_for.py's roofline).
HBM_GBPS = (
    ('H100 PCIe', 2000.0, 'NVIDIA H100 datasheet (H100 PCIe: 2 TB/s)'),
    ('H100 NVL', 3900.0, 'NVIDIA H100 datasheet (H100 NVL: 3.9 TB/s)'),
    ('H100', 3350.0, 'NVIDIA H100 datasheet (H100 SXM: 3.35 TB/s)'),
    ('H200', 4800.0, 'NVIDIA H200 datasheet (4.8 TB/s)'),
    ('A100-SXM4-80GB', 2039.0, 'NVIDIA A100 datasheet (A100 80GB SXM: 2,039 GB/s)'),
    ('A100 80GB PCIe', 1935.0, 'NVIDIA A100 datasheet (A100 80GB PCIe: 1,935 GB/s)'),
    ('A100', 1555.0, 'NVIDIA A100 datasheet (A100 40GB: 1,555 GB/s)'),
    ('TPU v4', 1200.0, 'Google Cloud TPU documentation, TPU v4 (HBM bandwidth 1,200 GBps)'),
    ('TPU v5 lite', 819.0, 'Google Cloud TPU documentation, TPU v5e (HBM bandwidth 819 GBps)'),
    ('TPU v5', 2765.0, 'Google Cloud TPU documentation, TPU v5p (HBM bandwidth 2,765 GBps)'),
    ('TPU v6 lite', 1640.0, 'Google Cloud TPU documentation, TPU v6e (HBM bandwidth 1,640 '
     'GBps)'),
)


def _define_flags():
  # Defined only when run as a program, so importing the module defines no flags.
  flags.DEFINE_string('out', None, 'The results file (JSON), written after each measurement.')
  flags.DEFINE_string('size', '', "Network size: '' (the paper's), 'demo' or 'smoke'.")
  flags.DEFINE_string('dtype', 'bfloat16', "Compute dtype: 'bfloat16' or 'float32'.")
  flags.DEFINE_list('stages', list(STAGES), 'Stages to measure (train and chain).')
  flags.DEFINE_list('remat', ['false', 'true'], 'Remat settings of the train step.')
  flags.DEFINE_integer('batch', 0, 'Per-device train batch; 0 = the largest that fits.')
  flags.DEFINE_integer('max_batch', 256, 'The largest per-device batch the search tries.')
  flags.DEFINE_float('memory_fraction', 0.95, 'Share of the memory limit the search aims at.')
  flags.DEFINE_float('memory_limit_gib', 0, "Memory limit for the search; 0 = the device's.")
  flags.DEFINE_integer('steps', 5, 'Timed train steps.')
  flags.DEFINE_integer('chain_steps', 50, 'Reverse steps in the timed chain.')
  flags.DEFINE_integer('chain_batch', 8, 'Images per chain batch.')
  flags.DEFINE_integer('degrade_batch', 32, 'Faces per device for the device-side degradation.')
  flags.DEFINE_list('cascades', ['paper', 'fast'], "Cascades: 'paper', 'fast', 'irm_c_t', "
                    "'irm_c' or 'irm_s'.")
  flags.DEFINE_integer('cascade_batch', 8, 'Faces per cascade batch (a multiple of the devices).')
  flags.DEFINE_integer('cascade_repeats', 1, 'Timed cascade runs; the median is reported.')
  flags.DEFINE_float('peak_tflops', 0, "The device's peak for MFU; 0 = PEAK_TFLOPS.")
  flags.DEFINE_string('config_dir', 'configs', 'The folder of the stage and cascade configs.')
  flags.DEFINE_bool('resume', False, 'Keep the measurements already in --out; run the rest.')
  flags.DEFINE_string('task', '', 'Internal: the one measurement this process makes (JSON).')


def tasks(stages, remats, cascades) -> list:
  """Every measurement of a run, in the order they run."""
  return ([dict(kind='train', stage=s, remat=r) for s in stages for r in remats]
          + [dict(kind='chain', stage=s) for s in stages]
          + [dict(kind='degrade', stage=s) for s in stages]
          + [dict(kind='cascade', cascade=c) for c in cascades])


def peak_tflops(device_kind: str, dtype: str, given: float):
  """(peak TFLOP/s, where it comes from), or (None, why not)."""
  if given > 0:
    return given, '--peak_tflops'
  if dtype != 'bfloat16':
    return None, f'no table entry for {dtype}; give --peak_tflops'
  for key, value in PEAK_TFLOPS:
    if key in device_kind:
      return value, f'vendor data sheet, dense bfloat16 ({key})'
  return None, f'{device_kind!r} is not in PEAK_TFLOPS; give --peak_tflops'


def fitted_batch(bytes_at_1: int, bytes_at_2: int, limit: float, max_batch: int) -> int:
  """The largest batch whose straight line through the two compiled sizes stays under `limit`
  (at most `max_batch`; 0 when not even one image fits)."""
  per_image = bytes_at_2 - bytes_at_1
  if bytes_at_1 > limit:
    return 0
  if per_image <= 0:
    return max_batch
  return max(1, min(max_batch, int((limit - (bytes_at_1 - per_image)) // per_image)))


def add_utilisation(results: dict) -> None:
  """MFU and HFU of every train row, from its FLOPs, its speed and the results' peak."""
  peak = results['settings'].get('peak_tflops')
  model_flops = {r['stage']: r['flops_per_step'] / r['per_device_batch']
                 for r in results['train'] if not r['remat']}
  for row in results['train']:
    row['model_flops_per_image'] = model_flops.get(row['stage'])
    per_device = row['images_per_s_per_device']
    if peak and row['model_flops_per_image']:
      row['mfu'] = row['model_flops_per_image'] * per_device / (peak * 1e12)
    else:
      row['mfu'] = None
    row['hfu'] = (row['flops_per_step'] / row['per_device_batch'] * per_device / (peak * 1e12)
                  if peak else None)


# --- one measurement per process -------------------------------------------------------------


def _stage_config(stage: str):
  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top

  config = config_files.stage_config(FLAGS.config_dir, stage, FLAGS.size or None)
  config.model.dtype = FLAGS.dtype
  return config


def compiled_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


def out_of_memory(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'Out of memory' in text or 'out of memory' in text


def _train(task: dict, info: dict) -> dict:
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top

  config = _stage_config(task['stage'])
  config.model.remat = task['remat']
  config.train.microbatches = 1

  step_fn, state, key = train_step.build(config)
  compiled = {}

  def compiled_at(batch):
    if batch not in compiled:
      data = train_step.synthetic_batch(config, batch)
      compiled[batch] = step_fn.lower(state, data, key).compile(), data
    return compiled[batch]

  limit = FLAGS.memory_limit_gib * 2**30 or info['memory_limit_bytes']
  search = {}
  fixed = task.get('batch') or FLAGS.batch
  if fixed:
    batch, search['rule'] = fixed, '--batch' if FLAGS.batch else 'the batch the search found'
  else:
    if not limit:
      raise ValueError(f'{info["kind"]} reports no memory limit; give --batch or '
                       '--memory_limit_gib')
    target = FLAGS.memory_fraction * limit
    search['bytes_at_1'] = compiled_bytes(compiled_at(1)[0])
    search['bytes_at_2'] = compiled_bytes(compiled_at(2)[0])
    batch = fitted_batch(search['bytes_at_1'], search['bytes_at_2'], target, FLAGS.max_batch)
    if not batch:
      raise ValueError(f'{task["stage"]}: one image per device needs '
                       f'{search["bytes_at_1"] / 2**30:.2f} GiB, over the '
                       f'{target / 2**30:.2f} GiB aimed at')
    search['rule'] = 'linear fit of the compiled memory at batch 1 and 2'
    search['tried'] = []
  while True:
    try:
      step, data = compiled_at(batch)
      step_bytes = compiled_bytes(step)
      if limit and not fixed and step_bytes > limit:
        raise MemoryError(f'compiled step needs {step_bytes} bytes')
      seconds = train_step.median_step_seconds(step, state, data, key, FLAGS.steps)
      break
    except Exception as e:  # pylint: disable=broad-except
      if fixed or not (isinstance(e, MemoryError) or out_of_memory(e)) or batch == 1:
        raise
      search['tried'].append(batch)
      compiled.pop(batch, None)
      batch = max(1, int(batch * 0.9))
  peak, where = train_step.peak_memory()
  devices = info['count']
  return dict(per_device_batch=batch, batch_search=search, step_s=seconds,
              images_per_s=devices * batch / seconds, images_per_s_per_device=batch / seconds,
              peak_memory_bytes=int(peak), peak_memory_source=where,
              compiled_memory_bytes=step_bytes,
              flops_per_step=train_step.flops(step.cost_analysis()))


def _chain(task: dict, info: dict) -> dict:
  del info
  from diffbfr_jax.benchmarks import chain_overhead  # pylint: disable=g-import-not-at-top

  per_eval, per_step = chain_overhead.measure(_stage_config(task['stage']),
                                              steps=FLAGS.chain_steps, batch=FLAGS.chain_batch,
                                              repeats=3)
  return dict(batch=FLAGS.chain_batch, steps=FLAGS.chain_steps, bare_evaluation_ms=per_eval * 1e3,
              chain_step_ms=per_step * 1e3, overhead_percent=100 * (per_step / per_eval - 1))


def synthetic_items(config, per_device: int, devices: int) -> dict:
  """A `degrade_on='device'` batch `[devices, per_device, ...]` of random faces at the source
  size with parameters drawn uniformly in the config's ranges (numpy; no TensorFlow)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  options = dict(config.data.degradation)
  size = config.data.source_size
  shape = lambda *s: (devices, per_device) + s
  uniform = lambda name: rng.uniform(*options[name], shape()).astype(np.float32)
  scale = uniform('downsample_range')
  small = np.maximum(np.floor(size / scale.astype(np.float64)), 1).astype(np.int32)
  low, high = options['jpeg_range']
  shift = options['color_jitter_shift']
  params = dict(
      flip=rng.random(shape()) < 0.5, isotropic=rng.random(shape()) < options['iso_prob'],
      sigma_x=uniform('blur_sigma'), sigma_y=uniform('blur_sigma'), theta=uniform('rotation'),
      down_size=np.stack([small, small], -1), noise_std=uniform('noise_range') / 255.0,
      noise_key=rng.integers(0, 2**32, shape(2), dtype=np.uint32),
      jpeg_quality=rng.integers(low, high + 1, shape()).astype(np.int32),
      jitter=rng.random(shape()) < options['color_jitter_prob'],
      jitter_shift=rng.uniform(-shift, shift, shape(3)).astype(np.float32),
      gray=rng.random(shape()) < options['gray_prob'])
  return dict(hq=rng.integers(0, 256, shape(size, size, 3), dtype=np.uint8), degradation=params,
              id=np.arange(devices * per_device).reshape(devices, per_device))


def _degrade(task: dict, info: dict) -> dict:
  import functools  # pylint: disable=g-import-not-at-top
  import statistics  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import device_degradation  # pylint: disable=g-import-not-at-top

  config = _stage_config(task['stage'])
  build = parallel.pmap_batch_fn(functools.partial(
      device_degradation.make_examples, **device_degradation.options_from_config(config)))
  items = synthetic_items(config, FLAGS.degrade_batch, info['count'])
  jax.block_until_ready(build(items))
  times = []
  for _ in range(FLAGS.steps):
    t0 = time.perf_counter()
    jax.block_until_ready(build(items))
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  return dict(per_device_batch=FLAGS.degrade_batch, batch_s=seconds,
              images_per_s_per_device=FLAGS.degrade_batch / seconds)


def _cascade(task: dict, info: dict) -> dict:
  del info
  from diffbfr_jax import cascade  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import cascade as cascade_benchmark  # pylint: disable=g-import-not-at-top

  name = '' if task['cascade'] == 'paper' else task['cascade']
  config = config_files.stage_config(FLAGS.config_dir, 'cascade', f'{name},{FLAGS.size}')
  for stage in cascade.STAGES:
    config[stage].dtype = FLAGS.dtype
  evaluations, per_face = cascade_benchmark.measure(
      config, size=FLAGS.size, batch=FLAGS.cascade_batch, repeats=FLAGS.cascade_repeats,
      config_dir=FLAGS.config_dir)
  return dict(batch=FLAGS.cascade_batch, evaluations=evaluations,
              evaluations_per_face=sum(evaluations.values()), seconds_per_face=per_face)


def run_task(task: dict) -> dict:
  """Makes one measurement in this process; returns the task with its figures and the device."""
  from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top

  info = parallel.device_info()
  t0 = time.perf_counter()
  figures = {'train': _train, 'chain': _chain, 'degrade': _degrade,
             'cascade': _cascade}[task['kind']](task, info)
  return dict(task, **figures, wall_s=time.perf_counter() - t0, device=info)


# --- the run: one process per measurement ----------------------------------------------------


def _key(task: dict) -> str:
  return json.dumps({k: task[k] for k in ('kind', 'stage', 'remat', 'cascade') if k in task},
                    sort_keys=True)


def _versions() -> dict:
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  versions = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'ml-collections', 'numpy'):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  plugins = sorted(d.metadata['Name'] for d in metadata.distributions()
                   if (d.metadata['Name'] or '').startswith(('jax-cuda', 'jax_cuda', 'libtpu')))
  for name in plugins:
    versions[name] = metadata.version(name)
  return versions


def write_results(path: pathlib.Path, results: dict) -> None:
  """`results` as JSON into `path`, replaced whole (a crash never leaves half a file)."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(results, indent=1) + '\n')
  os.replace(tmp, path)


def _write(path: pathlib.Path, results: dict) -> None:
  add_utilisation(results)
  write_results(path, results)


def _measure(task: dict) -> dict:
  """One measurement in processes of its own. A train search that went past an out-of-memory
  batch is measured again at the batch it found, in a new process: the first process's peak
  memory is the failed batch's."""
  row = _run_worker(task)
  if 'error' in row or task['kind'] != 'train' or not row['batch_search'].get('tried'):
    return row
  again = _run_worker(dict(task, batch=row['per_device_batch']))
  if 'error' in again:
    return again
  again.pop('batch')
  again['batch_search'] = dict(row['batch_search'], measured_again=True)
  return again


# Settings that may differ between the parts of one --resume'd run: filled in by the first row.
RESUMABLE_SETTINGS = ('peak_tflops', 'peak_source')


def resume_conflicts(results: dict, settings: dict) -> list:
  """[(field, before, now)] of the settings in which an --out file differs from this run."""
  from diffbfr_jax import resume  # pylint: disable=g-import-not-at-top
  return resume.differences(results.get('settings', {}), settings, ignore=RESUMABLE_SETTINGS)


def device_conflict(before, now) -> str:
  """Why rows measured on device `before` and `now` cannot share one table ('' if they can)."""
  if before is None or (before['kind'], before['count']) == (now['kind'], now['count']):
    return ''
  return (f"its rows were measured on {before['count']} x {before['kind']}, this run has "
          f"{now['count']} x {now['kind']}")


def run_tasks(todo: list, results: dict, out: pathlib.Path, *, what: str, measure, key, write,
              report, accept=None) -> None:
  """The runs of this benchmark and compile_for: `measure(task)` for each task of `todo`, with a
  progress line each (`key(task)` names it). A row with an 'error' goes to results['errors'],
  any other, after `accept(row)`, to results[row['kind']]; `write(out, results)` after each.
  Then prints `report(results)` and exits with status 1 when a task failed."""
  print(f'{len(todo)} {what}, each in its own process; results in {out}', flush=True)
  for i, task in enumerate(todo, 1):
    t0 = time.perf_counter()
    row = measure(task)
    if 'error' in row:
      results['errors'].append(row)
      print(f'[{i}/{len(todo)}] {key(task)}: FAILED after {time.perf_counter() - t0:.0f} s: '
            f"{row['error'].splitlines()[-1] if row['error'] else ''}", flush=True)
    else:
      if accept is not None:
        accept(row)
      results[row['kind']].append(row)
      print(f'[{i}/{len(todo)}] {key(task)}: done in {time.perf_counter() - t0:.0f} s',
            flush=True)
    write(out, results)
  write(out, results)
  print(report(results))
  if results['errors']:
    sys.exit(1)


def _fresh(settings: dict) -> dict:
  return dict(command='python -m diffbfr_jax.benchmarks.accelerator ' + ' '.join(sys.argv[1:]),
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              device=None, versions=_versions(), settings=settings,
              train=[], chain=[], degrade=[], cascade=[], errors=[])


def _run_worker(task: dict) -> dict:
  """Runs `task` in a new process with this run's flags; its figures, or its error."""
  passed = ('size', 'dtype', 'batch', 'max_batch', 'memory_fraction', 'memory_limit_gib', 'steps',
            'chain_steps', 'chain_batch', 'degrade_batch', 'cascade_batch', 'cascade_repeats',
            'config_dir')
  cmd = [sys.executable, '-m', 'diffbfr_jax.benchmarks.accelerator',
         *[f'--{name}={FLAGS[name].value}' for name in passed], '--task=' + json.dumps(task)]
  done = subprocess.run(cmd, capture_output=True, text=True)
  for line in done.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
  return dict(task, error='\n'.join(tail) or f'exit status {done.returncode}')


def table(results: dict) -> str:
  """The results as Markdown tables."""
  lines = ['| stage | remat | batch / device | images/s | step (s) | peak memory (GiB) | '
           'GFLOP / image | MFU | HFU |', '|---|---|---|---|---|---|---|---|---|']
  pct = lambda v: '-' if v is None else f'{100 * v:.1f}%'
  for r in results['train']:
    gflop = r.get('model_flops_per_image')
    lines.append(f"| {r['stage']} | {'on' if r['remat'] else 'off'} | {r['per_device_batch']} | "
                 f"{r['images_per_s']:.3g} | {r['step_s']:.3g} | "
                 f"{r['peak_memory_bytes'] / 2**30:.1f} | "
                 f"{'-' if gflop is None else f'{gflop / 1e9:.4g}'} | {pct(r.get('mfu'))} | "
                 f"{pct(r.get('hfu'))} |")
  lines += ['', '| stage | bare evaluation (ms) | chain step (ms) | overhead |', '|---|---|---|---|']
  for r in results['chain']:
    lines.append(f"| {r['stage']} | {r['bare_evaluation_ms']:.2f} | {r['chain_step_ms']:.2f} | "
                 f"{r['overhead_percent']:+.1f}% |")
  lines += ['', '| stage | degradation on the device: faces / device | images/s per device |',
            '|---|---|---|']
  for r in results.get('degrade', []):
    lines.append(f"| {r['stage']} | {r['per_device_batch']} | "
                 f"{r['images_per_s_per_device']:.4g} |")
  lines += ['', '| cascade | evaluations / face | s / face |', '|---|---|---|']
  for r in results['cascade']:
    lines.append(f"| {r['cascade']} | {r['evaluations_per_face']} | "
                 f"{r['seconds_per_face']:.3g} |")
  for e in results['errors']:
    lines.append(f"\nfailed: {_key(e)}: {e['error'].splitlines()[-1] if e['error'] else ''}")
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.task:
    print('RESULT ' + json.dumps(run_task(json.loads(FLAGS.task))), flush=True)
    return
  if not FLAGS.out:
    raise app.UsageError('--out=FILE is required')
  bad = [s for s in FLAGS.stages if s not in STAGES]
  if bad:
    raise app.UsageError(f'--stages: unknown {bad}; expected some of {list(STAGES)}')
  remats = []
  for r in FLAGS.remat:
    if r.lower() not in ('true', 'false'):
      raise app.UsageError(f'--remat: {r!r}; expected true and/or false')
    remats.append(r.lower() == 'true')
  bad = [c for c in FLAGS.cascades if c not in ('paper', 'fast', 'irm_c_t', 'irm_c', 'irm_s')]
  if bad:
    raise app.UsageError(f'--cascades: unknown {bad}')
  if not pathlib.Path(FLAGS.config_dir, 'cascade.py').is_file():
    raise app.UsageError(f'--config_dir={FLAGS.config_dir!r} holds no cascade.py (run from the '
                         'repository root or give the configs folder)')
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  settings = dict(size=FLAGS.size or 'paper', dtype=FLAGS.dtype, batch=FLAGS.batch or 'largest',
                  max_batch=FLAGS.max_batch, memory_fraction=FLAGS.memory_fraction,
                  memory_limit_gib=FLAGS.memory_limit_gib or 'device', steps=FLAGS.steps,
                  chain_steps=FLAGS.chain_steps, chain_batch=FLAGS.chain_batch,
                  degrade_batch=FLAGS.degrade_batch,
                  cascade_batch=FLAGS.cascade_batch, cascade_repeats=FLAGS.cascade_repeats,
                  peak_tflops=None, peak_source=None,
                  xla_flags=os.environ.get('XLA_FLAGS', ''),
                  xla_python_client_mem_fraction=os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION',
                                                                ''))
  if FLAGS.resume and out.is_file():
    results = json.loads(out.read_text())
    results['errors'] = []
    conflicts = resume_conflicts(results, settings)
    if conflicts:
      from diffbfr_jax import resume  # pylint: disable=g-import-not-at-top
      print(f'error: --out={out} --resume: its rows were made with other flags '
            f'({resume.listed(conflicts)}); run with those flags, or give another --out',
            file=sys.stderr)
      sys.exit(2)
  else:
    results = _fresh(settings)
  results.setdefault('degrade', [])  # a file from before the degrade measurement
  done = {_key(r) for kind in ('train', 'chain', 'degrade', 'cascade') for r in results[kind]}
  todo = [t for t in tasks(FLAGS.stages, remats, FLAGS.cascades) if _key(t) not in done]

  def accept(row):  # every row from one device; the first names it and its peak
    conflict = device_conflict(results['device'], row['device'])
    if conflict:
      print(f'error: --out={out} --resume: {conflict}; give another --out', file=sys.stderr)
      sys.exit(2)
    device = row.pop('device')
    if results['device'] is None:
      results['device'] = device
      peak, source = peak_tflops(device['kind'], FLAGS.dtype, FLAGS.peak_tflops)
      results['settings'].update(peak_tflops=peak, peak_source=source)

  def report(finished):
    device, settings = finished['device'] or {}, finished['settings']
    return (f"\ndevice: {device.get('kind')} x {device.get('count')}  dtype: {FLAGS.dtype}  "
            f"size: {FLAGS.size or 'paper'}  peak: {settings['peak_tflops']} TFLOP/s "
            f"({settings['peak_source']})\n\n{table(finished)}")

  run_tasks(todo, results, out, what='measurements to make', measure=_measure, key=_key,
            write=_write, report=report, accept=accept)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
