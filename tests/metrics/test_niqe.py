"""NIQE against a literal re-statement of BasicSR's reference code (loops, per block), MATLAB's
imresize against its definition, and monotone under blur and noise."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import gamma
from skimage import data
from skimage import filters

from diffbfr_jax.metrics import niqe


def _ref_aggd(block):
  block = block.flatten()
  gam = np.arange(0.2, 10.001, 0.001)
  r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
  with np.errstate(invalid='ignore', divide='ignore'):
    left_std = np.sqrt(np.mean(block[block < 0] ** 2)) if np.any(block < 0) else np.nan
    right_std = np.sqrt(np.mean(block[block > 0] ** 2)) if np.any(block > 0) else np.nan
    gammahat = left_std / right_std
    rhat = (np.mean(np.abs(block))) ** 2 / np.mean(block ** 2)
    rhatnorm = (rhat * (gammahat ** 3 + 1) * (gammahat + 1)) / ((gammahat ** 2 + 1) ** 2)
  alpha = gam[np.argmin((r_gam - rhatnorm) ** 2)]
  return (alpha, left_std * np.sqrt(gamma(1 / alpha) / gamma(3 / alpha)),
          right_std * np.sqrt(gamma(1 / alpha) / gamma(3 / alpha)))


def _ref_feature(block):
  alpha, bl, br = _ref_aggd(block)
  feat = [alpha, (bl + br) / 2]
  for shift in [[0, 1], [1, 0], [1, 1], [1, -1]]:
    alpha, bl, br = _ref_aggd(block * np.roll(block, shift, axis=(0, 1)))
    feat += [alpha, (br - bl) * (gamma(2 / alpha) / gamma(1 / alpha)), bl, br]
  return feat


def _ref_imresize_half(img):
  """BasicSR's matlab_functions.imresize at scale 0.5: weights and indices per output pixel,
  symmetric copies at the borders, then weighted sums along H and then W (explicit loops)."""
  def weights_indices(n):
    out, scale, width = math.ceil(n * 0.5), 0.5, 4 / 0.5
    rows = []
    for x in range(1, out + 1):
      u = x / scale + 0.5 * (1 - 1 / scale)
      left = math.floor(u - width / 2)
      idx = [left + k for k in range(math.ceil(width) + 2)]
      w = []
      for i in idx:
        d = abs((u - i) * scale)
        c = (1.5 * d ** 3 - 2.5 * d ** 2 + 1) if d <= 1 else (
            (-0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2) if d <= 2 else 0.0)
        w.append(scale * c)
      total = sum(w)
      rows.append([(i, wi / total) for i, wi in zip(idx, w)])
    return rows

  def mirror(i, n):  # 1-based index, edge repeated
    while i < 1 or i > n:
      i = 1 - i if i < 1 else 2 * n + 1 - i
    return i - 1

  h, w = img.shape
  tmp = np.array([[sum(wt * img[mirror(i, h), c] for i, wt in row) for c in range(w)]
                  for row in weights_indices(h)])
  return np.array([[sum(wt * tmp[r, mirror(i, w)] for i, wt in row) for row in weights_indices(w)]
                   for r in range(tmp.shape[0])])


def _ref_niqe(y):
  mu_pris, cov_pris, window = niqe.pristine_model()
  img = np.round(y)
  h, w = img.shape
  nh, nw = math.floor(h / 96), math.floor(w / 96)
  img = img[0:nh * 96, 0:nw * 96]
  distparam = []
  for scale in (1, 2):
    mu = ndimage.convolve(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(ndimage.convolve(np.square(img), window, mode='nearest') - mu ** 2))
    norm = (img - mu) / (sigma + 1)
    feat = []
    for iw in range(nw):
      for ih in range(nh):
        feat.append(_ref_feature(norm[ih * 96 // scale:(ih + 1) * 96 // scale,
                                      iw * 96 // scale:(iw + 1) * 96 // scale]))
    distparam.append(np.array(feat))
    if scale == 1:
      img = _ref_imresize_half(img / 255.) * 255.
  distparam = np.concatenate(distparam, axis=1)
  mu_d = np.nanmean(distparam, axis=0)
  cov_d = np.cov(distparam[~np.isnan(distparam).any(axis=1)], rowvar=False)
  inv = np.linalg.pinv((cov_pris + cov_d) / 2)
  return float(np.sqrt((mu_pris - mu_d) @ inv @ (mu_pris - mu_d)))


def test_imresize_is_matlabs_bicubic_half():
  rng = np.random.default_rng(0)
  img = rng.uniform(0, 1, (14, 10))
  np.testing.assert_allclose(niqe.imresize(img, 0.5), _ref_imresize_half(img), atol=1e-12)


def test_niqe_equals_the_reference_code_including_flat_blocks():
  face = data.astronaut()[:192, 96:384]  # 2 x 3 blocks
  y = niqe.y_channel(face)
  y[:96, :96] = 120.0  # a flat block: NaN features, handled as the reference does
  assert niqe.niqe_y(y) == pytest.approx(_ref_niqe(y), rel=1e-9)


def test_niqe_grows_with_blur_and_with_noise():
  face = data.astronaut().astype(np.float64)
  rng = np.random.default_rng(0)
  blurred = [niqe.niqe(filters.gaussian(face, sigma=s, channel_axis=-1, preserve_range=True))
             for s in (1, 2, 4)]
  noisy = [niqe.niqe(np.clip(face + rng.normal(0, s, face.shape), 0, 255)) for s in (5, 15, 30)]
  clean = niqe.niqe(face)
  assert clean < blurred[0] < blurred[1] < blurred[2]
  assert clean < noisy[0] < noisy[1] < noisy[2]


def test_small_images_are_refused_by_name():
  with pytest.raises(ValueError, match=r'at least two 96x96 blocks .* got an image of 200x64'):
    niqe.niqe(np.zeros((64, 200, 3)))
  with pytest.raises(ValueError, match='at least two 96x96 blocks'):
    niqe.niqe(np.zeros((100, 100, 3)))
