"""NIQE (Mittal et al., "Making a 'completely blind' image quality analyzer", 2013), computed as
BasicSR's `calculate_niqe` (which reproduces the authors' MATLAB release): on the Y channel of
BT.601 YCbCr rounded to integers, 96x96 blocks without overlap, two scales (the second made by
MATLAB's antialiased bicubic imresize), and the pristine model of the MATLAB release.

NumPy/SciPy in float64, no torch or OpenCV. Local statistics are taken about the centre pixel and
imresize sums its taps in a fixed order, so flat regions give the exact zeros of the reference.
`data/niqe_pris_params.npz` is the pristine model as BasicSR 1.4.2 ships it
(basicsr/metrics/niqe_pris_params.npz, Apache-2.0; sha256 2a7c182a...).
"""

import functools
import math
import pathlib

import numpy as np
from scipy import special

from diffbfr_jax import errors

PRISTINE = pathlib.Path(__file__).parent / 'data' / 'niqe_pris_params.npz'
BLOCK = 96

# The AGGD shape search grid of the MATLAB code: alpha in 0.2, 0.201, ..., 10.
_ALPHAS = np.arange(0.2, 10.001, 0.001)
_R_ALPHA = special.gamma(2 / _ALPHAS) ** 2 / (special.gamma(1 / _ALPHAS) *
                                               special.gamma(3 / _ALPHAS))


@functools.lru_cache(maxsize=1)
def pristine_model():
  """(mu [36], cov [36, 36], 7x7 Gaussian window) of the pristine natural-image model."""
  with np.load(PRISTINE) as data:
    return (data['mu_pris_param'][0], data['cov_pris_param'], data['gaussian_window'])


def y_channel(rgb) -> np.ndarray:
  """RGB on 0..255 -> Y of BT.601 YCbCr (16..235) in float64, as BasicSR's bgr2ycbcr."""
  rgb = np.asarray(rgb, np.float64) / 255.0
  return (rgb @ np.array([65.481, 128.553, 24.966]) + 16.0)


def _cubic(x):
  ax = np.abs(x)
  return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1) +
          (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def imresize_taps(in_length: int, scale: float):
  """MATLAB's bicubic imresize along one axis (antialiased when shrinking) as taps: weights
  [out, taps] and 0-based input indices [out, taps], symmetric copies at the borders.

  Every output is summed over its taps in the same order, so a constant stretch of input gives
  bit-identical outputs (a flat region stays exactly flat, as in the reference); a matrix
  product would fold the mirrored border taps into other weights and round differently."""
  out_length = math.ceil(in_length * scale)
  width = 4.0 / scale if scale < 1 else 4.0
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = math.ceil(width) + 2
  indices = left[:, None] + np.arange(taps)[None, :]
  distance = u[:, None] - indices
  weights = scale * _cubic(distance * scale) if scale < 1 else _cubic(distance)
  weights /= weights.sum(axis=1, keepdims=True)
  # 1-based MATLAB indices -> 0-based, mirrored at the borders (edge pixel repeated).
  index = indices.astype(int) - 1
  period = 2 * in_length
  index = np.mod(index, period)
  index = np.where(index >= in_length, period - 1 - index, index)
  return weights, index


def _resize_axis0(image, scale):
  weights, index = imresize_taps(image.shape[0], scale)
  out = np.zeros((weights.shape[0],) + image.shape[1:])
  for t in range(weights.shape[1]):
    out += weights[:, t, None] * image[index[:, t]]
  return out


def imresize(image, scale: float) -> np.ndarray:
  """MATLAB's `imresize(image, scale)` (bicubic, antialiased) of a 2-D float image: along H,
  then along W, as the reference."""
  image = np.asarray(image, np.float64)
  return _resize_axis0(_resize_axis0(image, scale).T, scale).T


def normalised_map(image, window) -> np.ndarray:
  """The MSCN map (image - mu) / (sigma + 1) of a 2-D image [H, W] -> [H, W], with mu and sigma
  the `window`-weighted local mean and deviation (edge pixels repeated, as the reference).

  The moments are taken about the centre pixel: with d = neighbour - centre, mu = centre + E[d]
  and sigma^2 = E[d^2] - E[d]^2. A constant neighbourhood (or one whose weighted mean is the
  centre exactly) thus gives exactly 0, as the exact value is and as BasicSR's float32 code
  gives; convolving x and x^2 in float64 left rounding noise of ~1e-14 there (the window sums
  to 1 - 1e-16), which the AGGD fit counted as negative and positive samples."""
  kh, kw = window.shape
  ph, pw = kh // 2, kw // 2
  h, w = image.shape
  padded = np.pad(image, ((ph, ph), (pw, pw)), mode='edge')
  window = window[::-1, ::-1]  # a convolution, as the reference (the Gaussian is symmetric)
  m1 = np.zeros_like(image)
  m2 = np.zeros_like(image)
  for i in range(kh):
    for j in range(kw):
      d = padded[i:i + h, j:j + w] - image
      m1 += window[i, j] * d
      m2 += window[i, j] * d * d
  sigma = np.sqrt(np.abs(m2 - m1 * m1))
  return -m1 / (sigma + 1)


def _aggd(blocks):
  """Asymmetric generalised Gaussian fit of each block [N, h, w]: (alpha, beta_l, beta_r)."""
  flat = blocks.reshape(blocks.shape[0], -1)
  neg, pos = flat < 0, flat > 0
  with np.errstate(invalid='ignore', divide='ignore'):
    left = np.sqrt(np.sum(np.where(neg, flat ** 2, 0), 1) / np.sum(neg, 1))
    right = np.sqrt(np.sum(np.where(pos, flat ** 2, 0), 1) / np.sum(pos, 1))
    gammahat = left / right
    rhat = np.mean(np.abs(flat), 1) ** 2 / np.mean(flat ** 2, 1)
    rhatnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat ** 2 + 1) ** 2
  # The nearest grid point. A block without negative or positive values has NaN statistics; its
  # argmin is then 0 (alpha 0.2) and its betas NaN, as in the reference.
  position = np.argmin((_R_ALPHA[None, :] - rhatnorm[:, None]) ** 2, axis=1)
  alpha = _ALPHAS[position]
  ratio = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  return alpha, left * ratio, right * ratio


def _features(blocks):
  """The 18 NIQE features of each block [N, h, w]."""
  alpha, beta_l, beta_r = _aggd(blocks)
  feats = [alpha, (beta_l + beta_r) / 2]
  for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
    alpha, beta_l, beta_r = _aggd(blocks * np.roll(blocks, shift, axis=(1, 2)))
    mean = (beta_r - beta_l) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    feats += [alpha, mean, beta_l, beta_r]
  return np.stack(feats, axis=1)


def niqe_y(y) -> float:
  """NIQE of a 2-D Y (or gray) image on the 0..255 scale (rounded first, as the reference)."""
  mu_pris, cov_pris, window = pristine_model()
  image = np.round(np.asarray(y, np.float64))
  h, w = image.shape
  nh, nw = h // BLOCK, w // BLOCK
  if nh * nw < 2:
    # The feature covariance needs two blocks at least.
    raise errors.ImageError(f'NIQE needs at least two {BLOCK}x{BLOCK} blocks (e.g. {2 * BLOCK}x{BLOCK} '
                     f'pixels), got an image of {w}x{h}')
  image = image[:nh * BLOCK, :nw * BLOCK]
  per_scale = []
  for scale in (1, 2):
    normalised = normalised_map(image, window)
    size = BLOCK // scale
    # Blocks in the reference's order (columns of blocks outer, rows inner).
    blocks = normalised.reshape(nh, size, nw, size).transpose(2, 0, 1, 3).reshape(-1, size, size)
    per_scale.append(_features(blocks))
    if scale == 1:
      image = imresize(image / 255.0, 0.5) * 255.0
  features = np.concatenate(per_scale, axis=1)
  mu = np.nanmean(features, axis=0)
  cov = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
  diff = mu_pris - mu
  return float(np.sqrt(diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff))


def niqe(rgb) -> float:
  """NIQE of one RGB image [H, W, 3] on the 0..255 scale (lower is better), on its Y channel."""
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f'expected one RGB image [H, W, 3], got shape {rgb.shape}')
  return niqe_y(y_channel(rgb))
