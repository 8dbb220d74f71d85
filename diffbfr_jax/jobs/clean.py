"""The clean job: a training set restored by trained stages into a new set (IDM's extrinsic
enhancement: restore the training set with the model, train again on what it made).

  python -m diffbfr_jax.main --config=configs/clean.py[:preset] --workdir=DIR \
      --config.input_dir=FACES --config.tem.checkpoint=... (see configs/clean.py)

Writes DIR/images/<relative name>.png (the restore job's names) for every readable input, and
DIR/grid.png (the first grid_count cleaned faces: as read above, cleaned below) and
DIR/manifest.json: the settings (source, seed, image size, selection, every stage's checkpoint,
step, weights and chain) and per image its source file, the SHA-256 of its stored bytes,
whether it was cleaned, its NIQE (with select='niqe') and the LPIPS between the original (as the
cascade read it) and the cleaned face. Image i's result is the restore job's for the same seed
and name. The originals are only read.

Resumable and sharded: each process cleans its share of the names (`parallel.process_share`)
and appends one line per image to DIR/records/process_<index>.jsonl as it goes; a second run
with the same settings skips what is recorded there, one with other settings stops and names
the differences (or starts over with overwrite=True). The main process gathers every record
into manifest.json at the end.
"""

import hashlib
import json
import logging
import pathlib
import shutil
import time
import zlib

import jax
import numpy as np
from PIL import Image

from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import faces
from diffbfr_jax import job_outputs
from diffbfr_jax import parallel
from diffbfr_jax import resume
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import image_files
from diffbfr_jax.data import sources

SELECT = ('all', 'niqe')


def check_config(config) -> None:
  for field in ('batch_size', 'image_size'):
    if config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r}: must be at least 1')
  if not config.input_dir:
    raise ConfigError('config.input_dir is empty: give the folder of faces to clean (or a '
                      'prepared dataset field, tfds:face_folder/512:image:train)')
  if config.select not in SELECT:
    raise ConfigError(f'config.select={config.select!r}: expected one of {SELECT}')
  from diffbfr_jax.metrics import lpips  # pylint: disable=g-import-not-at-top
  if config.lpips_net not in lpips.NETS:
    raise ConfigError(f'config.lpips_net={config.lpips_net!r}: expected one of '
                      f'{sorted(lpips.NETS)}')
  for name in cascade.STAGES:
    if config[name].params not in ('ema_params', 'params'):
      raise ConfigError(f'config.{name}.params={config[name].params!r}: expected '
                        "'ema_params' or 'params'")


def _check_not_inside(images_dir: pathlib.Path, input_dir: str) -> None:
  """The originals are never written: the output folder may not be, hold or lie in the input."""
  if str(input_dir).startswith(sources.TFDS_PREFIX):
    return
  out, source = images_dir.resolve(), pathlib.Path(input_dir).resolve()
  if out == source or source in out.parents or out in source.parents:
    raise ConfigError(f'config.output_dir: {images_dir} and config.input_dir={input_dir!r} '
                      'overlap; the cleaned set goes to a folder of its own (the originals are '
                      'only read)')


def settings_of(config, inputs: sources.ImageSet, stages) -> dict:
  """What fixes the cleaned set, recorded in the manifest and compared on resume."""
  recorded = []
  for stage in stages:
    c = config[stage.name]
    _, step = checkpointing.find(c.checkpoint, c.step)
    recorded.append({'stage': stage.name, 'checkpoint': str(c.checkpoint), 'step': step,
                     'params': c.params, 'dtype': c.dtype, 'sampling': dict(stage.sampling),
                     'network_evaluations': cascade.num_steps(stage)})
  return {'source': inputs.label, 'data_dir': str(config.data_dir),
          'seed': config.seed, 'image_size': config.image_size,
          'selection': ({'rule': 'all'} if config.select == 'all' else
                        {'rule': 'niqe', 'above': config.niqe_threshold}),
          'lpips_net': config.lpips_net, 'stages': recorded}


def read_records(out_dir: pathlib.Path) -> dict:
  """{source name: record} of every image recorded under out_dir/records (any process); a
  record whose output is gone is dropped, so its image is cleaned again."""
  records = {}
  for path in sorted((out_dir / 'records').glob('process_*.jsonl')):
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a stop mid-write
        continue
      if 'skipped' in record or (out_dir / 'images' / record['output']).exists():
        records[record['name']] = record
  return records


def _prepare_output(config, out_dir: pathlib.Path, settings: dict) -> dict:
  """The records of an earlier run with the same settings (after checking them), or {}. Every
  process checks before any writes (a barrier), then each records the settings."""
  settings_file = out_dir / 'settings.json'
  if config.overwrite:
    parallel.barrier('clean: before starting over')
    for path in (out_dir / 'records', out_dir / 'images', settings_file):
      if parallel.is_main_process() and path.is_dir():
        shutil.rmtree(path)
      elif parallel.is_main_process() and path.exists():
        path.unlink()
  elif settings_file.exists():
    differences = resume.differences(json.loads(settings_file.read_text()), settings)
    if differences:
      raise ConfigError(f'{out_dir} holds a cleaned set made with other settings ('
                        f'{resume.listed(differences)}): choose another folder, or set '
                        '--config.overwrite=True to start over')
  elif (out_dir / 'images').exists() or (out_dir / 'records').exists():
    raise ConfigError(f'{out_dir} holds images/ or records/ of an unknown run (no '
                      'settings.json): choose another folder, or set --config.overwrite=True')
  parallel.barrier('clean: output checked')
  out_dir.mkdir(parents=True, exist_ok=True)
  settings_file.write_text(json.dumps(settings, indent=1))  # the same text from every process
  return read_records(out_dir)


def run(config, workdir) -> dict:
  check_config(config)
  out_dir = job_outputs.folder(config.output_dir, workdir, field='output_dir',
                               what='the cleaned set')
  _check_not_inside(out_dir / 'images', config.input_dir)
  inputs = sources.image_set(config.input_dir, data_dir=config.data_dir)
  output_of = sources.output_names(inputs.names)  # over all names: host-independent
  stages, params = cascade.load(config)  # every checkpoint error comes before compute
  settings = settings_of(config, inputs, stages)
  done = _prepare_output(config, out_dir, settings)
  todo = [n for n in parallel.process_share(inputs.names) if n not in done]
  logging.info('Cleaning %d images on this process (%d of the %d recorded already)',
               len(todo), len(done), len(inputs.names))

  from diffbfr_jax.metrics import lpips  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.metrics import niqe  # pylint: disable=g-import-not-at-top
  restore_fn = parallel.jit_over_local_devices(cascade.make_cascade(stages))
  params = parallel.place_state(params)
  batch_size = parallel.round_to_local_devices(config.batch_size)
  size = config.image_size
  records_file = out_dir / 'records' / f'process_{parallel.process_index():05d}.jsonl'
  records_file.parent.mkdir(parents=True, exist_ok=True)
  (out_dir / 'images').mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()

  with open(records_file, 'a') as log:
    if records_file.stat().st_size and not records_file.read_bytes().endswith(b'\n'):
      log.write('\n')  # a line cut by a stop stays a line of its own (and is ignored)
    for b in range(0, len(todo), batch_size):
      t0 = time.perf_counter()
      records, written, read = [], [], []  # every record; those of images read, their faces
      for name in todo[b:b + batch_size]:
        record = {'name': name, 'output': output_of[name], 'where': inputs.where(name)}
        try:
          data = inputs.read_bytes(name)
          original = image_files.decode_rgb(data, inputs.where(name))
        except (errors.DecodeError, OSError) as e:
          logging.warning('Skipping %s', e)
          records.append({**record, 'skipped': str(e)})
          continue
        rgb, resized = faces.to_size(original, name, size)
        record.update(sha256=hashlib.sha256(data).hexdigest(), height=original.shape[0],
                      width=original.shape[1], resized=resized)
        if config.select == 'niqe':
          try:
            record['niqe'] = niqe.niqe(original)
          except errors.ImageError as e:
            raise errors.ImageError(f'{inputs.where(name)}: {e} (config.select=niqe)') from None
          record['cleaned'] = record['niqe'] > config.niqe_threshold
        else:
          record['cleaned'] = True
        records.append(record)
        written.append(record)
        read.append(rgb)
      picked = [i for i, r in enumerate(written) if r['cleaned']]
      outputs = list(read)
      if picked:
        lq = np.zeros((batch_size, size, size, 3), np.float32)
        hashes = np.zeros((batch_size,), np.uint32)
        for j, i in enumerate(picked):
          lq[j] = read[i].astype(np.float32) / 127.5 - 1.0
          hashes[j] = zlib.crc32(written[i]['name'].encode())
        keys = faces.face_keys(config.seed, hashes, np.zeros_like(hashes))
        result = faces.to_uint8(jax.device_get(
            restore_fn(params, {'lq': lq, 'key': keys})['output']))
        # LPIPS of the whole padded batch: one compile, whatever the count picked.
        distances = np.asarray(lpips.lpips(faces.to_uint8(lq), result, net=config.lpips_net))
        for j, i in enumerate(picked):
          outputs[i] = result[j]
          written[i]['lpips'] = float(distances[j])
      for record, image in zip(written, outputs):
        path = out_dir / 'images' / record['output']
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
      for record in records:  # after its image: a recorded image is on disk
        log.write(json.dumps(record) + '\n')
      log.flush()
      elapsed = time.perf_counter() - start
      finished = min(b + batch_size, len(todo))
      logging.info('%d/%d images (batch in %.1f s), ETA %.0f s', finished, len(todo),
                   time.perf_counter() - t0, elapsed / finished * (len(todo) - finished))

  parallel.barrier('clean: every share written')

  def gather():
    manifest = write_manifest(out_dir, settings, inputs.names, time.perf_counter() - start)
    if config.grid_count:
      write_grid(out_dir, inputs, manifest['images'], config.grid_count, size)
    return manifest

  manifest = parallel.on_main_process('clean: manifest written', gather)
  manifest = manifest or json.loads((out_dir / 'manifest.json').read_text())
  summary = {k: v for k, v in manifest.items() if k != 'images'}
  return job_outputs.write_summary(out_dir, {**summary, 'manifest': 'manifest.json'})


def write_grid(out_dir: pathlib.Path, inputs: sources.ImageSet, records, count: int,
               size: int) -> None:
  """out_dir/grid.png: the first `count` cleaned faces as read (top row) and cleaned (below)."""
  shown = [r for r in records if r.get('cleaned')][:count]
  if not shown:
    return
  top = [faces.read_face(inputs, r['name'], size)[0] for r in shown]
  bottom = [np.asarray(Image.open(out_dir / 'images' / r['output']).convert('RGB'))
            for r in shown]
  Image.fromarray(np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)).save(
      out_dir / 'grid.png')


def write_manifest(out_dir: pathlib.Path, settings: dict, names: list, seconds: float) -> dict:
  """manifest.json from every process's records, in the source's name order; prints a line."""
  records = read_records(out_dir)
  missing = [n for n in names if n not in records]
  if missing:
    raise RuntimeError(f'{len(missing)} images have no record in {out_dir / "records"} '
                       f'(first: {missing[0]})')
  images = [records[n] for n in names]
  kept = [r for r in images if 'skipped' not in r]
  cleaned = [r for r in kept if r['cleaned']]
  distances = [r['lpips'] for r in cleaned]
  counts = {'images': len(names), 'cleaned': len(cleaned),
            'kept_as_read': len(kept) - len(cleaned), 'skipped': len(images) - len(kept)}
  manifest = {**settings, 'counts': counts,
              'lpips_mean': float(np.mean(distances)) if distances else None,
              'images': images}
  (out_dir / 'manifest.json').write_text(json.dumps(manifest, indent=1))
  lpips_text = (f'; LPIPS-{settings["lpips_net"]} original -> cleaned: mean '
                f'{np.mean(distances):.4f}, min {np.min(distances):.4f}, max '
                f'{np.max(distances):.4f}' if distances else '')
  print(f'Cleaned {len(cleaned)} of {len(names)} images into {out_dir / "images"} in '
        f'{seconds:.1f} s ({counts["kept_as_read"]} kept as read, {counts["skipped"]} '
        f'unreadable){lpips_text}. Manifest: {out_dir / "manifest.json"}')
  for record in images:
    if 'skipped' in record:
      print(f'  skipped {record["skipped"]}')
  return manifest
