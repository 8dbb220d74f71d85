"""PSNR and SSIM on batches of RGB images on the 0..255 scale (the face-restoration convention:
RGB uint8, no border crop), or on the Y channel of BT.601 YCbCr as BasicSR computes it.

SSIM is Wang et al.'s: an 11x11 Gaussian window with sigma 1.5, population (co)variances,
K1 = 0.01, K2 = 0.03, averaged over the positions where the window lies inside the image and over
channels; the same number as `skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax import errors

DATA_RANGE = 255.0


def y_channel(images):
  """[..., 3] RGB on 0..255 -> [..., 1] Y of BT.601 YCbCr (16..235), as BasicSR's bgr2ycbcr."""
  weights = jnp.asarray([65.481, 128.553, 24.966], jnp.float32) / 255.0
  return (images @ weights + 16.0)[..., None]


def _prepare(a, b, y: bool):
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f'expected two batches [B, H, W, C] of one shape, got {a.shape} and {b.shape}')
  if y:
    a, b = y_channel(a), y_channel(b)
  return a, b


@jax.jit
def _psnr(a, b):
  mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(DATA_RANGE ** 2 / mse)  # inf for identical images


def psnr(a, b, *, y: bool = False):
  """[B] PSNR in dB of two batches [B, H, W, 3] on the 0..255 scale."""
  return _psnr(*_prepare(a, b, y))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """The normalised 1-D Gaussian of scipy's gaussian_filter (truncate 3.5 gives 11 taps)."""
  x = np.arange(size) - (size - 1) / 2
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def _filter(x, window):
  """Separable 'valid' filtering of [B, H, W, C] with the 1-D window along H and W: a weighted
  sum of shifted slices (fast on every backend, unlike depthwise convolutions on CPU)."""
  taps = len(window)
  h, w = x.shape[1] - taps + 1, x.shape[2] - taps + 1
  x = sum(float(window[k]) * x[:, k:k + h] for k in range(taps))
  return sum(float(window[k]) * x[:, :, k:k + w] for k in range(taps))


@jax.jit
def _ssim(a, b):
  window = gaussian_window()
  # Statistics of the images shifted to mid-grey: the same (co)variances with less float32
  # cancellation in E[x^2] - E[x]^2; the means are shifted back for the luminance term.
  a, b = a - 127.5, b - 127.5
  mu_a, mu_b = _filter(a, window), _filter(b, window)
  var_a = _filter(a * a, window) - mu_a ** 2
  var_b = _filter(b * b, window) - mu_b ** 2
  cov = _filter(a * b, window) - mu_a * mu_b
  mu_a, mu_b = mu_a + 127.5, mu_b + 127.5
  c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
      (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return jnp.mean(ssim_map, axis=(1, 2, 3))


def ssim(a, b, *, y: bool = False):
  """[B] SSIM of two batches [B, H, W, 3] on the 0..255 scale (at least 11x11 pixels)."""
  a, b = _prepare(a, b, y)
  if min(a.shape[1:3]) < 11:
    raise errors.ImageError(f'SSIM needs images of at least 11x11 pixels, got {a.shape[1:3]}')
  return _ssim(a, b)
