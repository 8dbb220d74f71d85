"""The demo job (`configs/demo.py`): DiffBFR trained and evaluated end to end on a CPU.

Trains the `:demo` networks of the three stages on the training split of the faces bundled with
scikit-image, degrades the held-out split with the paper's degradation (Eq. 13), restores it
with the cascade (one or more rows of Table 2) and reports PSNR, SSIM and LPIPS of the LQ input
and of every stage's output against the ground truth, all at the final 32x32 size (IRM-1's 16x16
output is resized as the cascade resizes it for IRM-2). With `num_samples` K > 1 each face is
restored K times (keys as the restore job's samples) and the mean of the K restorations, a Monte
Carlo estimate of the posterior mean, is scored too.
"""

import pathlib
import time
import zlib

import jax
import numpy as np
from PIL import Image

from diffbfr_jax import cascade
from diffbfr_jax import faces
from diffbfr_jax import job_outputs
from diffbfr_jax import rounds
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.metrics import full_reference

PROCESSES = 'one'  # a one-process CPU experiment
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


def stage_config(files: rounds.ConfigFiles, name: str, config):
  """The `:demo` training config of a stage (`irm_s`: IRM-2's, conditioned on the LQ face),
  checkpointed at its last step."""
  return rounds.stage_config(files, 'irm2' if name == 'irm_s' else name, seed=config.seed,
                             steps=config.steps[name], condition='lq' if name == 'irm_s' else '',
                             save_only_at_end=True)


def held_out_faces(files: rounds.ConfigFiles, config, root: pathlib.Path):
  """(names, LQ, GT) of the held-out faces as uint8 [N, 32, 32, 3], degraded once with Eq. 13
  (IRM-2's degradation) into <root>/test_set (TensorFlow is imported only then)."""
  irm2 = stage_config(files, 'irm2', config)
  folder = rounds.held_out_set(root / 'test_set', size=irm2.data.image_size,
                               seed=config.test_seed, degradation=irm2.data.degradation)
  return rounds.read_test_set(folder)


def cascade_config(files: rounds.ConfigFiles, row: str, config, root: pathlib.Path):
  """The cascade config of Table 2 row `row` on the demo's stages: the demo's sampling choices
  on top of the stage configs', and with grids='fast' the chains of configs/cascade.py's `fast`."""
  ccfg = files.get('cascade', row)
  folders = {name: root / ('irm_s' if row == 'irm_s' and name == 'irm2' else name)
             for name in cascade.STAGES if ccfg[name].enabled}
  rounds.chain(ccfg, folders, fast=files.get('cascade', 'fast') if config.grids == 'fast' else None,
               params=config.params, sampling=config.sampling)
  return ccfg


def run_row(ccfg, config, names, lq):
  """({stage: float32 [K, N, 32, 32, 3] on [-1, 1]}, stages) of one cascade row on the LQ faces:
  K = config.num_samples restorations per face, sample k from key (seed, face name, k); one
  compile, one batch of all faces per sample."""
  stages, params = cascade.load(ccfg)
  fn = jax.jit(cascade.make_cascade(stages))
  hashes = np.array([zlib.crc32(n.encode()) for n in names], np.uint32)
  size, batch = lq.shape[1], {'lq': lq.astype(np.float32) / 127.5 - 1.0}
  samples = {s.name: [] for s in stages}
  for k in range(config.num_samples):
    keys = faces.face_keys(config.seed, hashes, np.full_like(hashes, k))
    outputs = fn(params, {**batch, 'key': keys})
    for s in stages:
      samples[s.name].append(np.asarray(cascade.resize(outputs[s.name], size), np.float32))
  return {name: np.stack(v) for name, v in samples.items()}, stages


def scores(images, gt, lpips_net: str) -> dict:
  """Mean PSNR, SSIM (RGB) and LPIPS of uint8 faces against their ground truth."""
  values = full_reference.batch_metrics(('psnr', 'ssim', 'lpips'), images, gt, lpips_net=lpips_net)
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
  names, lq, gt = rounds.read_test_set(root / 'test_set')
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
  rows = _rows(config)
  root = job_outputs.workdir_folder(workdir, 'the demo trains and writes into it')
  files = rounds.ConfigFiles(config.config_dir, config.networks)
  names_needed = ['irm1', 'irm2', 'tem'] + (['irm_s'] if 'irm_s' in rows else [])
  start = time.perf_counter()
  for i, name in enumerate(names_needed, 1):
    rounds.train_unless_trained(f'[{i}/{len(names_needed)}] {name}',
                                stage_config(files, name, config), root / name)
  names, lq, gt = held_out_faces(files, config, root)
  print(f'Held-out faces: {len(names)} (LFW 80-99 and the astronaut), degraded with Eq. 13 '
        f'(seed {config.test_seed}) in {root / "test_set"}', flush=True)
  k = config.num_samples
  for row in rows:
    t0 = time.perf_counter()
    samples, stages = run_row(cascade_config(files, row, config, root), config, names, lq)
    steps = ' + '.join(str(cascade.num_steps(s)) for s in stages)
    print(f'{ROWS[row]}: {steps} network evaluations per face, {len(names)} faces x {k} '
          f'sample(s) in {time.perf_counter() - t0:.0f} s (with compilation)', flush=True)
    path = root / f'restored_{row}.npz'
    np.savez_compressed(path, names=np.array(names),
                        **{name: faces.to_uint8(v) for name, v in samples.items()})
    restored = read_restored(root, row, names)
    last = list(restored)[-1]
    grid = root / f'grid_{row}.png'
    write_grid(grid, lq, {s: v[0] for s, v in restored.items()}, gt,
               mean=mean_of_samples(restored[last]) if k > 1 else None)
    print(f'    grid: {grid}; every sample: {path}', flush=True)
  results = report(root, rows, config.lpips_net)
  print(table(results))
  print(f'Total {time.perf_counter() - start:.0f} s. LPIPS-{config.lpips_net}; lower is better.')
  return job_outputs.write_summary(root, {
      'rows': rows, 'grids': config.grids, 'seed': config.seed, 'test_seed': config.test_seed,
      'num_samples': k, 'steps': config.steps.to_dict(), 'sampling': config.sampling.to_dict(),
      'results': results})
