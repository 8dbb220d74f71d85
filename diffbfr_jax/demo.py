"""The demo job (`configs/demo.py`): DiffBFR trained and evaluated end to end on a CPU.

Trains the `:demo` networks of the three stages on the training split of the faces bundled with
scikit-image, degrades the held-out split with the paper's degradation (Eq. 13), restores it
with the cascade (one or more rows of Table 2) and reports PSNR, SSIM and LPIPS of the LQ input
and of every stage's output against the ground truth, all at the final 32x32 size (IRM-1's 16x16
output is resized as the cascade resizes it for IRM-2). With `num_samples` K > 1 each face is
restored K times (keys as the restore job's samples) and the mean of the K restorations, a Monte
Carlo estimate of the posterior mean, is scored too.
"""

import json
import logging
import pathlib
import time
import zlib

import jax
import numpy as np
from PIL import Image

from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import config_files
from diffbfr_jax import evaluate
from diffbfr_jax import restore
from diffbfr_jax.config_checks import ConfigError

ROWS = {'tem_w': 'TEM-w (DiffBFR)', 'irm_c_t': 'IRM-c-t', 'irm_c': 'IRM-c', 'irm_s': 'IRM-s'}


def _rows(config) -> list:
  rows = [r.strip() for r in config.rows.split(',') if r.strip()]
  unknown = [r for r in rows if r not in ROWS]
  if not rows or unknown:
    raise ConfigError(f'config.rows={config.rows!r}: expected a comma-separated list of '
                      f'{sorted(ROWS)}')
  if config.networks not in ('demo', 'smoke'):
    raise ConfigError(f"config.networks={config.networks!r}: expected 'demo' or 'smoke'")
  if config.grids not in ('fast', 'full'):
    raise ConfigError(f"config.grids={config.grids!r}: expected 'fast' or 'full'")
  if not isinstance(config.num_samples, int) or config.num_samples < 1:
    raise ConfigError(f'config.num_samples={config.num_samples!r}: expected an integer >= 1')
  return rows


def stage_config(name: str, config):
  """The `:demo` training config of a stage (`irm_s`: IRM-2's, conditioned on the LQ face)."""
  stage = config_files.stage_config(config.config_dir, 'irm2' if name == 'irm_s' else name,
                                   config.networks)
  if name == 'irm_s':
    stage.data.condition = 'lq'
  stage.seed = config.seed
  stage.train.num_steps = config.steps[name]
  stage.train.checkpoint_every = config.steps[name]
  return stage



def train_stages(names, config, root: pathlib.Path) -> None:
  from diffbfr_jax import train  # pylint: disable=g-import-not-at-top (TensorFlow for data)

  for i, name in enumerate(names, 1):
    stage, folder = stage_config(name, config), root / name
    steps = stage.train.num_steps
    done = checkpointing.trained_step(folder)
    if done >= steps:
      print(f'[{i}/{len(names)}] {name}: already trained ({done} steps) in {folder}', flush=True)
      continue
    print(f'[{i}/{len(names)}] {name}: training {steps - done} steps of batch '
          f'{stage.train.batch_size} at {stage.model.image_size}x{stage.model.image_size} '
          f'(progress in the log file) ...', flush=True)
    start = time.perf_counter()
    train.train_and_evaluate(stage, str(folder))
    print(f'    {name}: done in {time.perf_counter() - start:.0f} s', flush=True)


def held_out_faces(config, root: pathlib.Path):
  """(names, LQ, GT) of the held-out faces as uint8 [N, 32, 32, 3], degraded once with Eq. 13
  into <root>/test_set the first time (TensorFlow is imported only then)."""
  stage = stage_config('irm2', config)
  size, folder = stage.data.image_size, root / 'test_set'
  if not (folder / 'manifest.json').exists():
    from diffbfr_jax.data import tensorflow_cpu  # pylint: disable=g-import-not-at-top (TensorFlow)
    from diffbfr_jax.data import sources  # pylint: disable=g-import-not-at-top
    from diffbfr_jax.data import testset  # pylint: disable=g-import-not-at-top

    tensorflow_cpu.keep_tensorflow_on_cpu()
    sources.write_bundled_faces('test', size, folder / 'hq')
    testset.write_test_set(str(folder / 'hq'), str(folder), size=size, seed=config.test_seed,
                           degradation=dict(stage.data.degradation))
  return read_test_set(root)


def cascade_config(row: str, config, root: pathlib.Path):
  """The cascade config of Table 2 row `row` on the demo's stages: the demo's sampling choices
  on top of the stage configs', and with grids='fast' the chains of configs/cascade.py's `fast`."""
  ccfg = config_files.stage_config(config.config_dir, 'cascade', f'{row},{config.networks}')
  fast = (config_files.stage_config(config.config_dir, 'cascade', f'fast,{config.networks}')
          if config.grids == 'fast' else None)
  for name in cascade.STAGES:
    ccfg[name].checkpoint = str(root / name)
    ccfg[name].params = config.params
    ccfg[name].sampling.update(config.sampling[name])
    if fast is not None:
      ccfg[name].sampling.update({f: fast[name].sampling[f]
                                  for f in cascade.CHAIN_FIELDS})
  if row == 'irm_s':
    ccfg.irm2.checkpoint = str(root / 'irm_s')
  return ccfg


def run_row(row: str, config, root: pathlib.Path, names, lq):
  """({stage: float32 [K, N, 32, 32, 3] on [-1, 1]}, stages) of one cascade row on the LQ faces:
  K = config.num_samples restorations per face, sample k from key (seed, face name, k); one
  compile, one batch of all faces per sample."""
  ccfg = cascade_config(row, config, root)
  stages, params = cascade.load(ccfg)
  fn = jax.jit(cascade.make_cascade(stages))
  hashes = np.array([zlib.crc32(n.encode()) for n in names], np.uint32)
  size, batch = lq.shape[1], {'lq': lq.astype(np.float32) / 127.5 - 1.0}
  samples = {s.name: [] for s in stages}
  for k in range(config.num_samples):
    keys = restore.face_keys(config.seed, hashes, np.full_like(hashes, k))
    outputs = fn(params, {**batch, 'key': keys})
    for s in stages:
      samples[s.name].append(np.asarray(cascade.resize(outputs[s.name], size), np.float32))
  return {name: np.stack(v) for name, v in samples.items()}, stages


def scores(images, gt, lpips_net: str) -> dict:
  """Mean PSNR, SSIM (RGB) and LPIPS of uint8 faces against their ground truth."""
  values = evaluate.batch_metrics(('psnr', 'ssim', 'lpips'), images, gt, lpips_net=lpips_net)
  return {k: float(np.mean(v)) for k, v in values.items()}


def write_grid(path, lq, outputs, gt, mean=None, scale: int = 4) -> None:
  """One face per line: LQ | IRM-1 | IRM-2 | TEM (the stages that ran) | [mean] | GT, enlarged
  `scale`x by pixel repetition (IRM-1's column is its output resized to 32 as the cascade does;
  `mean`, when given, is the last stage's mean of samples)."""
  columns = ([lq] + [outputs[s] for s in cascade.STAGES if s in outputs]
             + ([] if mean is None else [mean]) + [gt])
  grid = np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)
  Image.fromarray(np.repeat(np.repeat(grid, scale, 0), scale, 1)).save(path)


def table(results: dict) -> str:
  lines = ['| held-out faces (32x32) | PSNR (dB) | SSIM | LPIPS |', '|---|---|---|---|']
  for label, m in results.items():
    lines.append(f'| {label} | {m["psnr"]:.2f} | {m["ssim"]:.4f} | {m["lpips"]:.4f} |')
  return '\n'.join(lines)


def read_test_set(root: pathlib.Path):
  """(names, LQ, GT) of the held-out faces as written in <root>/test_set: uint8 [N, S, S, 3]."""
  folder = root / 'test_set'
  manifest = json.loads((folder / 'manifest.json').read_text())
  names = [entry['name'] for entry in manifest['images']]

  def read(kind):
    return np.stack([np.asarray(Image.open(folder / entry[kind]))
                     for entry in manifest['images']])

  return names, read('lq'), read('gt')


def read_restored(root: pathlib.Path, row: str, names):
  """{stage: uint8 [K, N, S, S, 3]} of <root>/restored_<row>.npz, in cascade order, checked to
  hold the faces `names` in that order."""
  path = root / f'restored_{row}.npz'
  with np.load(path) as saved:
    if list(saved['names']) != list(names):
      raise ValueError(f'{path}: its faces are not those of {root / "test_set"}')
    return {name: saved[name] for name in cascade.STAGES if name in saved.files}


def mean_of_samples(samples) -> np.ndarray:
  """uint8 [K, N, S, S, 3] -> the mean over the K samples, rounded to uint8 [N, S, S, 3]."""
  return np.round(samples.astype(np.float64).mean(axis=0)).astype(np.uint8)


def report(root: pathlib.Path, rows, lpips_net: str) -> dict:
  """{row label: {psnr, ssim, lpips}}, computed only from the files the demo wrote: the pairs
  in <root>/test_set and the samples in <root>/restored_<row>.npz. One row per stage for the
  first sample and, with K > 1 samples, one per stage for the mean of the K."""
  names, lq, gt = read_test_set(root)
  results = {'LQ input': scores(lq, gt, lpips_net)}
  for row in rows:
    restored = read_restored(root, row, names)
    stages = list(restored)
    k = len(restored[stages[-1]])
    images = [('', {s: v[0] for s, v in restored.items()})]
    if k > 1:
      images.append((f', mean of {k}', {s: mean_of_samples(v) for s, v in restored.items()}))
    for suffix, outputs in images:
      for stage in stages:
        last = ' = output' if stage == stages[-1] else ''
        results[f'{ROWS[row]}: {stage}{last}{suffix}'] = scores(outputs[stage], gt, lpips_net)
  return results


def run(config, workdir) -> dict:
  if not workdir:
    raise ConfigError('--workdir is required: the demo trains and writes into it')
  rows = _rows(config)
  root = pathlib.Path(workdir)
  names_needed = ['irm1', 'irm2', 'tem'] + (['irm_s'] if 'irm_s' in rows else [])
  start = time.perf_counter()
  train_stages(names_needed, config, root)
  names, lq, gt = held_out_faces(config, root)
  print(f'Held-out faces: {len(names)} (LFW 80-99 and the astronaut), degraded with Eq. 13 '
        f'(seed {config.test_seed}) in {root / "test_set"}', flush=True)
  k = config.num_samples
  for row in rows:
    t0 = time.perf_counter()
    samples, stages = run_row(row, config, root, names, lq)
    steps = ' + '.join(str(cascade.num_steps(s)) for s in stages)
    print(f'{ROWS[row]}: {steps} network evaluations per face, {len(names)} faces x {k} '
          f'sample(s) in {time.perf_counter() - t0:.0f} s (with compilation)', flush=True)
    path = root / f'restored_{row}.npz'
    np.savez_compressed(path, names=np.array(names),
                        **{name: restore.to_uint8(v) for name, v in samples.items()})
    restored = read_restored(root, row, names)
    last = list(restored)[-1]
    grid = root / f'grid_{row}.png'
    write_grid(grid, lq, {s: v[0] for s, v in restored.items()}, gt,
               mean=mean_of_samples(restored[last]) if k > 1 else None)
    print(f'    grid: {grid}; every sample: {path}', flush=True)
  results = report(root, rows, config.lpips_net)
  print(table(results))
  print(f'Total {time.perf_counter() - start:.0f} s. LPIPS-{config.lpips_net}; lower is better.')
  (root / 'results.json').write_text(json.dumps(
      {'rows': rows, 'grids': config.grids, 'seed': config.seed, 'test_seed': config.test_seed,
       'num_samples': k, 'steps': config.steps.to_dict(),
       'sampling': config.sampling.to_dict(), 'results': results}, indent=1))
  logging.info('Wrote %s', root / 'results.json')
  return results
