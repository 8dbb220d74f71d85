"""The sample job: faces drawn from noise by an unconditional stage (TEM), written as PNGs, with
a grid and, against a reference set of real faces, the evaluate job's FID.

  python -m diffbfr_jax.main --config=configs/sample.py[:preset] --workdir=DIR \
      --config.tem.checkpoint=runs/tem [--config.reference_dir=FACES]

Sample i depends only on (seed, i): the same seed gives the same faces whatever the batch size,
the devices or the processes (each process draws its share of the indices). Writes
OUT/samples/sample_<i>.png, OUT/grid.png (the first grid_count samples) and OUT/summary.json
(the checkpoint and step, the chain, the seed, the count, the FID and its reference).
"""

import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import faces
from diffbfr_jax import job_outputs
from diffbfr_jax import parallel
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import sources
from diffbfr_jax.diffusion import samplers


def check_config(config) -> None:
  for field in ('num_samples', 'batch_size'):
    if config[field] < 1:
      raise ConfigError(f'config.{field}={config[field]!r}: must be at least 1')
  if config.grid_count < 0:
    raise ConfigError(f'config.grid_count={config.grid_count!r}: must be 0 or more')
  if not config.tem.enabled:
    raise ConfigError('config.tem.enabled=False: the sample job draws its faces with TEM, the '
                      'only unconditional stage; it cannot be switched off here')
  if not config.tem.sampling.from_noise:
    raise ConfigError('config.tem.sampling.from_noise=False: the sample job draws from noise '
                      '(a truncated start needs an input face: the restore job)')


def sample_name(index: int) -> str:
  return f'samples/sample_{index:05d}.png'


@jax.jit
def sample_keys(seed, indices):
  """Sample i's key: (seed, i), whatever its batch."""
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(indices)


def make_sampler(stage: cascade.Stage):
  """`draw(params, batch) -> [B, S, S, 3]` in [-1, 1]: the (unconditional) stage's chain from
  N(0, I); batch {'key': [B] keys}. `cascade.stage_from_checkpoint('tem', ...)` refuses the
  checkpoint of any other stage."""

  def draw(params, batch):
    keys = batch['key']
    shape = (keys.shape[0], stage.image_size, stage.image_size, 3)
    sample, _ = samplers.make_sampler(lambda x, t, c: stage.apply(params, x, t, c),
                                      stage.schedule, time_input=stage.time_input,
                                      **stage.sampling)
    return sample(keys, jnp.zeros(shape, jnp.float32), None)

  return draw


def grid(images) -> np.ndarray:
  """uint8 images [N, S, S, 3] as a near-square grid (rows of ceil(sqrt(N)); blanks black)."""
  n, size = len(images), images.shape[1]
  columns = int(np.ceil(np.sqrt(n)))
  rows = -(-n // columns)
  canvas = np.zeros((rows * size, columns * size, 3), np.uint8)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    canvas[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
  return canvas


def run(config, workdir) -> dict:
  check_config(config)
  out_dir = job_outputs.folder(config.output_dir, workdir, field='output_dir', what='the samples')
  indices = parallel.process_share(list(range(config.num_samples)))
  existing = [out_dir / sample_name(i) for i in indices if (out_dir / sample_name(i)).exists()]
  if existing and not config.overwrite:
    raise errors.Exists(f'{len(existing)} samples already exist (first: {existing[0]}); set '
                        '--config.overwrite=True to replace them, or choose another folder')
  parallel.barrier('sample: outputs checked')  # a process that refused stops them all here
  reference = None
  if config.reference_dir:  # a missing or empty reference stops the job before any compute
    reference = sources.image_set(config.reference_dir, data_dir=config.data_dir)

  stage, params = cascade.stage_from_checkpoint('tem', config.tem)
  _, step = checkpointing.find(config.tem.checkpoint, config.tem.step)  # the step loaded
  draw = parallel.jit_over_local_devices(make_sampler(stage))
  params = parallel.place_state(params)
  batch_size = parallel.round_to_local_devices(config.batch_size)
  logging.info('Drawing %d samples (%d on this process), %d network evaluations each',
               config.num_samples, len(indices), cascade.num_steps(stage))
  start = time.perf_counter()
  for b in range(0, len(indices), batch_size):
    t0 = time.perf_counter()
    chunk = indices[b:b + batch_size]
    padded = np.array(chunk + [chunk[-1]] * (batch_size - len(chunk)), np.uint32)
    images = faces.to_uint8(jax.device_get(draw(params, {'key': sample_keys(config.seed, padded)})))
    for i, image in zip(chunk, images):
      path = out_dir / sample_name(i)
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(path)
    done = min(b + batch_size, len(indices))
    logging.info('%d/%d samples, batch in %.1f s', done, len(indices), time.perf_counter() - t0)
  seconds = time.perf_counter() - start

  summary = {'count': config.num_samples, 'seed': config.seed,
             'checkpoint': str(config.tem.checkpoint), 'step': step,
             'params': config.tem.params, 'sampling': dict(config.tem.sampling),
             'network_evaluations': cascade.num_steps(stage),
             'seconds': seconds}
  parallel.barrier('sample: every share written')  # the grid and the FID read every share
  parallel.on_main_process('sample: summary written', write_outputs, config, out_dir, summary,
                           reference)
  if not parallel.is_main_process():
    summary = json.loads((out_dir / job_outputs.SUMMARY).read_text())
  return summary


def write_outputs(config, out_dir, summary: dict, reference) -> None:
  """grid.png, the FID against `reference` (None: none) and summary.json, from the samples of
  every process; prints the job's line."""
  if config.grid_count:
    shown = [i for i in range(min(config.grid_count, config.num_samples))
             if (out_dir / sample_name(i)).exists()]
    images = np.stack([np.asarray(Image.open(out_dir / sample_name(i))) for i in shown])
    Image.fromarray(grid(images)).save(out_dir / 'grid.png')
  if reference is not None:
    from diffbfr_jax.metrics import fid  # pylint: disable=g-import-not-at-top
    cache = config.fid_cache_dir or out_dir / 'fid_cache'
    # This run's samples only: the folder may hold more, from an earlier run with a larger count.
    drawn = sources.image_set(out_dir / 'samples').subset(
        [sample_name(i).partition('/')[2] for i in range(config.num_samples)])
    summary['fid'] = fid.fid_between_folders(drawn, reference, batch_size=config.batch_size,
                                             cache_dir=cache)
    summary['reference'] = reference.label
  job_outputs.write_summary(out_dir, summary)
  fid_text = f", FID {summary['fid']:.3f} against {summary['reference']}" if 'fid' in summary else ''
  print(f'Drew {config.num_samples} samples into {out_dir / "samples"} in '
        f'{summary["seconds"]:.1f} s ({summary["network_evaluations"]} network evaluations '
        f'each){fid_text}.')

