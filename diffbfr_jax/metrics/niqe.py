"""NIQE (Mittal et al., "Making a 'completely blind' image quality analyzer", 2013), computed as
BasicSR's `calculate_niqe` (which reproduces the authors' MATLAB release): on the Y channel of
BT.601 YCbCr rounded to integers, 96x96 blocks without overlap, two scales (the second made by
MATLAB's antialiased bicubic imresize), and the pristine model of the MATLAB release.

NumPy/SciPy in float64, no torch or OpenCV. `data/niqe_pris_params.npz` is the pristine model as
BasicSR 1.4.2 ships it (basicsr/metrics/niqe_pris_params.npz, Apache-2.0; sha256 2a7c182a...).
"""

import functools
import math
import pathlib

import numpy as np
from scipy import ndimage
from scipy import special

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


def imresize_matrix(in_length: int, scale: float) -> np.ndarray:
  """[out, in] matrix of MATLAB's bicubic imresize along one axis (antialiased when shrinking,
  symmetric padding at the borders)."""
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
  matrix = np.zeros((out_length, in_length))
  np.add.at(matrix, (np.repeat(np.arange(out_length), taps), index.ravel()), weights.ravel())
  return matrix


def imresize(image, scale: float) -> np.ndarray:
  """MATLAB's `imresize(image, scale)` (bicubic, antialiased) of a 2-D float image."""
  h, w = image.shape
  return imresize_matrix(h, scale) @ image @ imresize_matrix(w, scale).T


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
    raise ValueError(f'NIQE needs at least two {BLOCK}x{BLOCK} blocks (e.g. {2 * BLOCK}x{BLOCK} '
                     f'pixels), got an image of {w}x{h}')
  image = image[:nh * BLOCK, :nw * BLOCK]
  per_scale = []
  for scale in (1, 2):
    mu = ndimage.convolve(image, window, mode='nearest')
    sigma = np.sqrt(np.abs(ndimage.convolve(image ** 2, window, mode='nearest') - mu ** 2))
    normalised = (image - mu) / (sigma + 1)
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
