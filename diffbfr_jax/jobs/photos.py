"""The photos job: every face of every photo in a folder found (MTCNN), aligned to FFHQ's
five-point template at the cascade's size, restored by the cascade, and pasted back with a soft
mask into the photo up-sampled `upscale` times. configs/photos.py lists the outputs and
docs/photos.md shows the steps.

Faces of consecutive photos fill the cascade's batches together (a photo is written once all its
faces are restored); a face's result depends only on the seed, the photo's relative name and the
face's index in the detector's order (the restore job's rule), not on the other faces or the
batch.
"""

import json
import logging
import time
import zlib

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw

from diffbfr_jax import cascade
from diffbfr_jax import errors
from diffbfr_jax import faces as face_files
from diffbfr_jax import job_outputs
from diffbfr_jax import parallel
from diffbfr_jax.data import sources
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.photos import align
from diffbfr_jax.photos import detector
from diffbfr_jax.photos import pipeline

PROCESSES = 'one'  # photo by photo on one host's devices


def check_config(config) -> None:
  for field in ('batch_size', 'image_size', 'upscale'):
    if not isinstance(config[field], int) or config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r}: must be a whole number, at least 1')
  if not config.min_face_size >= 12:
    raise ConfigError(f'config.min_face_size={config.min_face_size!r}: must be at least 12 '
                      "(the detector's smallest window, in pixels)")
  thresholds = tuple(config.thresholds)
  if len(thresholds) != 3 or not all(0 < t < 1 for t in thresholds):
    raise ConfigError(f'config.thresholds={thresholds!r}: expected three scores between 0 and 1 '
                      '(P-, R- and O-net)')
  if not config.input_dir:
    raise ConfigError('config.input_dir is empty: give the folder of photos')
  for name in cascade.STAGES:
    cascade.check_stage_fields(name, config[name])


class _Restorer:
  """The cascade over fixed-size batches of aligned crops (one compile), each face keyed by its
  photo's name and its index, whatever else is in its batch."""

  def __init__(self, config):
    stages, params = cascade.load(config)  # every checkpoint error comes before compute
    self.traces = []
    restore = cascade.make_cascade(stages)

    def traced(params, batch):
      self.traces.append(1)
      return restore(params, batch)

    self._fn = parallel.jit_over_local_devices(traced)
    self._params = parallel.place_state(params)
    self.batch_size = parallel.round_to_local_devices(config.batch_size)
    self._seed = config.seed
    self.seconds, self.faces = 0.0, 0  # after the first (compiling) call

  def __call__(self, items: list) -> list:
    """Restored crops (0..255) of items [(photo name, face index, crop)], at most a batch."""
    size = items[0][2].shape[0]
    lq = np.zeros((self.batch_size, size, size, 3), np.float32)
    lq[:len(items)] = np.stack([crop for _, _, crop in items]) / 127.5 - 1.0
    hashes = np.zeros((self.batch_size,), np.uint32)
    hashes[:len(items)] = [zlib.crc32(f'{name}#face{i}'.encode()) for name, i, _ in items]
    keys = face_files.face_keys(self._seed, hashes, np.zeros((self.batch_size,), np.uint32))
    t0, first = time.perf_counter(), not self.traces
    out = jax.device_get(self._fn(self._params, {'lq': lq, 'key': keys})['output'])
    if not first:
      self.seconds, self.faces = self.seconds + time.perf_counter() - t0, self.faces + len(items)
    return list((np.clip(out[:len(items)], -1, 1) + 1) * 127.5)


def _grid(rgb: np.ndarray, found: list, factor: int, photo: np.ndarray) -> np.ndarray:
  """The photo up-sampled with every face's box and landmarks drawn | the restored photo."""
  before = Image.fromarray(align.upsample(rgb, factor))
  draw = ImageDraw.Draw(before)
  width = max(1, factor)
  for face in found:
    box = (np.asarray(face.box) * factor + (factor - 1) / 2).tolist()
    draw.rectangle(box, outline=(0, 255, 0), width=width)
    for x, y in face.landmarks * factor + (factor - 1) / 2:
      draw.ellipse((x - 2 * width, y - 2 * width, x + 2 * width, y + 2 * width), fill=(255, 0, 0))
  gap = np.full((photo.shape[0], 8, 3), 255, np.uint8)
  return np.concatenate([np.asarray(before), gap, photo], axis=1)


def run(config, workdir) -> dict:
  """Restores the faces of the photos in config.input_dir into the output folder; returns (and
  writes as summary.json) what was done, paths relative to the output folder."""
  check_config(config)
  detector.load_weights()  # a missing `photos` extra is reported before anything else
  out_dir = job_outputs.folder(config.output_dir, workdir, field='output_dir',
                               what='the restored photos')
  inputs = sources.image_set(config.input_dir)
  names = sources.output_names(inputs.names)
  existing = [out_dir / rel for rel in names.values() if (out_dir / rel).exists()]
  if existing and not config.overwrite:
    raise errors.Exists(f'{len(existing)} outputs already exist (first: {existing[0]}); set '
                        '--config.overwrite=True to replace them, or choose another folder')
  restorer = _Restorer(config)
  size, factor = config.image_size, config.upscale
  summary = {'photos': [], 'faces': 0, 'without_faces': [], 'skipped': []}
  seconds = {'detect': 0.0, 'align_and_paste': 0.0}
  waiting = []  # photos whose faces are not all restored yet, in input order

  def finish(photo):
    name, rel, rgb, found, restored = photo
    stem = rel.removesuffix('.png')
    t0 = time.perf_counter()
    pasted, boxes = pipeline.paste_faces(rgb, found, restored, factor)
    seconds['align_and_paste'] += time.perf_counter() - t0
    face_files.save_png(out_dir / rel, pasted / 127.5 - 1)
    record = {'photo': name, 'width': rgb.shape[1], 'height': rgb.shape[0], 'upscale': factor,
              'crop_size': size, 'paste_order': pipeline.paste_order(found), 'faces': []}
    for i, (face, box) in enumerate(zip(found, boxes)):
      record['faces'].append(dict(face.record(), index=i, pasted_box=box and list(box)))
      if config.save_faces:
        face_files.save_png(out_dir / 'faces' / stem / f'face{i}_crop.png', face.crop / 127.5 - 1)
        face_files.save_png(out_dir / 'faces' / stem / f'face{i}_restored.png',
                            restored[i] / 127.5 - 1)
    (out_dir / f'{stem}.json').write_text(json.dumps(record, indent=1))
    if config.save_grid:
      face_files.save_png(out_dir / 'grids' / rel, _grid(rgb, found, factor, pasted) / 127.5 - 1)
    summary['photos'].append(rel)
    summary['faces'] += len(found)
    logging.info('%s: %d faces', name, len(found))

  def restore_waiting(everything: bool):
    """Restores full batches of the waiting faces (all of them when `everything`) and finishes
    every photo whose faces are then all restored."""
    items = [(p, i) for p in waiting for i in range(len(p[3])) if p[4][i] is None]
    while items and (everything or len(items) >= restorer.batch_size):
      chunk, items = items[:restorer.batch_size], items[restorer.batch_size:]
      for (p, i), face in zip(chunk, restorer([(p[0], i, p[3][i].crop) for p, i in chunk])):
        p[4][i] = face
    while waiting and all(face is not None for face in waiting[0][4]):
      finish(waiting.pop(0))

  start_time = time.perf_counter()
  for name in inputs.names:
    try:
      rgb = inputs.decode(name)
    except (errors.DecodeError, OSError) as e:
      logging.warning('Skipping %s', e)
      summary['skipped'].append(str(e))
      continue
    t0 = time.perf_counter()
    found = pipeline.find_faces(rgb, size, min_face_size=config.min_face_size,
                                thresholds=tuple(config.thresholds),
                                only_largest=config.only_largest)
    seconds['detect'] += time.perf_counter() - t0
    if not found:
      logging.info('%s: no face found; written up-sampled only', name)
      summary['without_faces'].append(name)
    waiting.append((name, names[name], rgb, found, [None] * len(found)))
    restore_waiting(everything=False)
  restore_waiting(everything=True)
  total = time.perf_counter() - start_time
  photos = max(len(summary['photos']), 1)
  summary.update(
      compiles=len(restorer.traces),
      seconds_detect_per_photo=seconds['detect'] / photos,
      seconds_align_and_paste_per_face=seconds['align_and_paste'] / max(summary['faces'], 1),
      seconds_restore_per_face=(restorer.seconds / restorer.faces if restorer.faces
                                else float('nan')))
  print(f"Restored {summary['faces']} faces in {len(summary['photos'])} photos into {out_dir} "
        f"in {total:.1f} s ({len(summary['without_faces'])} without a face).")
  if summary['skipped']:
    print(f"Skipped {len(summary['skipped'])} unreadable files:")
    for line in summary['skipped']:
      print(f'  {line}')
  return job_outputs.write_summary(out_dir, summary)
