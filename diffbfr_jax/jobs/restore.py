"""The restore job: every image of a folder (or of a prepared dataset's field, such as
`tfds:face_pairs:lq`) through the cascade, written as PNGs.

  python -m diffbfr_jax.main --config=configs/cascade.py[:preset] --workdir=DIR \
      --config.input_dir=LQ_FACES --config.irm1.checkpoint=... (see configs/cascade.py)

Reads images of any size and kind (gray, RGBA and 16-bit are converted to RGB 8-bit; other sizes
and non-square images are resized to config.image_size with a logged note), skips undecodable
files and lists them at the end, restores in fixed-size batches split over this process's
devices (one compile for the whole folder), and writes OUT/<relative name>.png. A face's result
depends only on the seed, its relative name and the sample index.
"""

import dataclasses
import logging
import time
import zlib

import jax
import numpy as np

from diffbfr_jax import cascade
from diffbfr_jax import errors
from diffbfr_jax import faces
from diffbfr_jax import job_outputs
from diffbfr_jax import parallel
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import sources


@dataclasses.dataclass
class Report:
  written: list  # paths of the restored faces (the main outputs; relative in the summary)
  skipped: list  # 'name: why' of every input that could not be read
  resized: list  # names of inputs that were not image_size x image_size
  batches: int
  compiles: int  # traces of the cascade (1: one compile for every batch)
  seconds_per_face: float  # after the first (compiling) batch, when there was more than one


def check_config(config) -> None:
  for field in ('batch_size', 'num_samples', 'image_size'):
    if config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r}: must be at least 1')
  if config.profile_batch < 0:
    raise ConfigError(f'config.profile_batch={config.profile_batch!r}: must be 0 (no trace) or '
                      'the number of the batch to trace')
  if not config.input_dir:
    raise ConfigError('config.input_dir is empty: give the folder of faces to restore (or '
                      'a prepared dataset field, tfds:face_pairs:lq)')
  for name in cascade.STAGES:
    cascade.check_stage_fields(name, config[name])


def _grid(lq, outputs, index, size):
  """LQ | every stage's output, each shown at `size` (nearest-neighbour, so pixels stay as made)."""
  columns = [lq[index]]
  for name in cascade.STAGES:
    if name in outputs:
      image = outputs[name][index]
      factor = size // image.shape[0]
      columns.append(np.repeat(np.repeat(image, factor, 0), factor, 1))
  return np.concatenate(columns, axis=1)


def run(config, workdir) -> dict:
  """Restores config.input_dir into the output folder; returns (and writes as summary.json) the
  `Report` as a dict, paths relative to the output folder."""
  check_config(config)
  out_dir = job_outputs.folder(config.output_dir, workdir, field='output_dir',
                               what='the restored faces')
  inputs = sources.image_set(config.input_dir, data_dir=config.data_dir)
  files = inputs.names
  names = faces.output_names(files, config.num_samples)  # over all files: host-independent
  files = parallel.process_share(files)  # each host restores its share
  mine = set(files)
  names = {key: rel for key, rel in names.items() if key[0] in mine}
  final = [out_dir / rel for rel in names.values()]
  existing = [p for p in final if p.exists()]
  if existing and not config.overwrite:
    raise errors.Exists(f'{len(existing)} outputs already exist (first: {existing[0]}); set '
                          '--config.overwrite=True to replace them, or choose another folder')
  parallel.barrier('restore: outputs checked')  # a process that refused stops them all here

  stages, params = cascade.load(config)  # every checkpoint error comes before compute
  for stage in stages:
    logging.info('%s: %d network evaluations per face', stage.name, cascade.num_steps(stage))
  cascade_fn, traces = cascade.make_cascade(stages), []

  def traced(params, batch):
    traces.append(1)  # runs once per trace, i.e. per compile
    return cascade_fn(params, batch)

  restore_fn = parallel.jit_over_local_devices(traced)
  params = parallel.place_state(params)
  batch_size = parallel.round_to_local_devices(config.batch_size)
  if batch_size != config.batch_size:
    logging.info('Batch of %d rounded up to %d, a multiple of the local devices',
                 config.batch_size, batch_size)

  size = config.image_size
  items = [(name, k) for name in files for k in range(config.num_samples)]
  num_batches = -(-len(items) // batch_size)
  report = Report(written=[], skipped=[], resized=[], batches=0, compiles=0,
                  seconds_per_face=float('nan'))
  cache = {}
  timed_faces, timed_seconds = 0, 0.0

  def read(name):
    if name not in cache:
      cache.clear()
      try:
        rgb, resized = faces.read_face(inputs, name, size)
      except (errors.DecodeError, OSError) as e:
        logging.warning('Skipping %s', e)
        report.skipped.append(str(e))
        cache[name] = None
        return None
      if resized:
        report.resized.append(name)
      cache[name] = rgb.astype(np.float32) / 127.5 - 1.0
    return cache[name]

  start_time = time.perf_counter()
  for b in range(num_batches):
    t0 = time.perf_counter()
    chunk = [(name, k, read(name)) for name, k in items[b * batch_size:(b + 1) * batch_size]]
    chunk = [c for c in chunk if c[2] is not None]
    if not chunk:
      continue
    lq = np.zeros((batch_size, size, size, 3), np.float32)
    hashes = np.zeros((batch_size,), np.uint32)
    samples = np.zeros((batch_size,), np.uint32)
    for i, (name, k, image) in enumerate(chunk):
      lq[i] = image
      hashes[i] = zlib.crc32(name.encode())
      samples[i] = k
    profiled = b + 1 == config.profile_batch
    if profiled:
      parallel.start_trace(out_dir / 'profile')
    outputs = restore_fn(params, {'lq': lq, 'key': faces.face_keys(config.seed, hashes, samples)})
    if profiled:
      parallel.stop_trace(outputs)
    outputs = jax.device_get(outputs)
    for i, (name, k, _) in enumerate(chunk):
      rel = names[name, k]
      faces.save_png(out_dir / rel, outputs['output'][i])
      report.written.append(out_dir / rel)
      if config.save_stages:
        for stage in stages[:-1]:
          faces.save_png(out_dir / 'stages' / stage.name / rel, outputs[stage.name][i])
      if config.save_grid:
        faces.save_png(out_dir / 'grids' / rel, _grid(lq, outputs, i, size))
    report.batches += 1
    seconds = time.perf_counter() - t0
    if b > 0:
      timed_faces, timed_seconds = timed_faces + len(chunk), timed_seconds + seconds
    per_face = timed_seconds / timed_faces if timed_faces else seconds / len(chunk)
    remaining = len(items) - (b + 1) * batch_size
    logging.info('batch %d/%d: %d faces in %.1f s%s; ETA %.0f s', b + 1, num_batches, len(chunk),
                 seconds, ' (with compilation)' if b == 0 else '', max(remaining, 0) * per_face)
  report.compiles = len(traces)
  parallel.barrier('restore: every share written')  # a caller may read every process's faces
  if timed_faces:
    report.seconds_per_face = timed_seconds / timed_faces
  total = time.perf_counter() - start_time
  print(f'Restored {len(report.written)} images of {len(files)} files into {out_dir} in '
        f'{total:.1f} s ({len(report.resized)} resized to {size}x{size}).')
  if report.skipped:
    print(f'Skipped {len(report.skipped)} unreadable files:')
    for line in report.skipped:
      print(f'  {line}')
  summary = dataclasses.asdict(report)
  summary['written'] = [str(p.relative_to(out_dir)) for p in report.written]
  return job_outputs.write_summary(out_dir, summary)
