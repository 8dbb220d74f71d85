r"""Images per second of each metric at 512x512 (one restored/ground-truth pair = one image; for
FID, the Inception features of one image, the part that grows with the set).

  python -m diffbfr_jax.benchmarks.metrics --batch=8 --repeats=3

Uses a face from scikit-image and a noisy copy of it; prints the median of --repeats timed runs
after a warm-up (compile) run, per metric.
"""

import functools
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from diffbfr_jax import parallel
from diffbfr_jax.metrics import inception
from diffbfr_jax.metrics import lpips
from diffbfr_jax.metrics import niqe
from diffbfr_jax.metrics import psnr_ssim

FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_integer('batch', 8, 'Pairs per call.')
  flags.DEFINE_integer('repeats', 3, 'Timed runs; the median is reported.')
  flags.DEFINE_integer('size', 512, 'Pixels per side.')


def measure(*, batch: int, repeats: int, size: int = 512) -> dict:
  """{metric: images per second}."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  face = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)), np.float32)
  rng = np.random.default_rng(0)
  gt = np.repeat(face[None], batch, axis=0)
  restored = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.float32)
  runs = {
      'psnr': lambda: psnr_ssim.psnr(restored, gt),
      'ssim': lambda: psnr_ssim.ssim(restored, gt),
      'lpips (vgg)': lambda: lpips.lpips(restored, gt, net='vgg'),
      'lpips (alex)': lambda: lpips.lpips(restored, gt, net='alex'),
      'niqe': lambda: [niqe.niqe(x) for x in restored],
      'fid (inception features)': functools.partial(inception.features,
                                                    inception.load_params(), restored),
  }
  rates = {}
  for name, fn in runs.items():
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - t0)
    rates[name] = batch / statistics.median(times)
  return rates


def main(argv):
  del argv
  rates = measure(batch=FLAGS.batch, repeats=FLAGS.repeats, size=FLAGS.size)
  print(f'device: {parallel.device_label()}  image: '
        f'{FLAGS.size}  batch: {FLAGS.batch}')
  for name, rate in rates.items():
    print(f'{name}: {rate:.2f} images/s')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
