"""NIQE against a literal re-statement of BasicSR's reference code (loops, per block; in float64
on a textured image, in float32 as BasicSR runs it on images with flat regions), MATLAB's imresize
against its definition, exact zeros of the normalised map on flat neighbourhoods, and monotone
under blur and noise."""

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


def _ref_imresize_half(img, dtype=np.float64):
  """BasicSR's matlab_functions.imresize at scale 0.5: weights and indices per output pixel,
  symmetric copies at the borders, then weighted sums along H and then W (explicit loops), each
  pass stored in `dtype` (BasicSR: float32)."""
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
  img = img.tolist()  # Python floats: each sum in float64, in tap order
  tmp = np.array([[sum(wt * img[mirror(i, h)][c] for i, wt in row) for c in range(w)]
                  for row in weights_indices(h)], dtype).tolist()
  return np.array([[sum(wt * tmp[r][mirror(i, w)] for i, wt in row) for row in weights_indices(w)]
                   for r in range(len(tmp))], dtype)


def _ref_normalised(img):
  """BasicSR's normalised map in the dtype of `img` (scipy's convolve keeps it)."""
  window = niqe.pristine_model()[2]
  mu = ndimage.convolve(img, window, mode='nearest')
  sigma = np.sqrt(np.abs(ndimage.convolve(np.square(img), window, mode='nearest') - mu ** 2))
  return (img - mu) / (sigma + 1)


def _ref_niqe(y, dtype=np.float64):
  """BasicSR's `niqe` with the image, the local statistics and the normalised map in `dtype`
  (BasicSR casts to float32; scipy's convolve keeps the input's dtype)."""
  mu_pris, cov_pris, _ = niqe.pristine_model()
  img = np.round(np.asarray(y, dtype))
  h, w = img.shape
  nh, nw = math.floor(h / 96), math.floor(w / 96)
  img = img[0:nh * 96, 0:nw * 96]
  distparam = []
  for scale in (1, 2):
    norm = _ref_normalised(img)
    feat = []
    for iw in range(nw):
      for ih in range(nh):
        feat.append(_ref_feature(norm[ih * 96 // scale:(ih + 1) * 96 // scale,
                                      iw * 96 // scale:(iw + 1) * 96 // scale]))
    distparam.append(np.array(feat))
    if scale == 1:
      img = _ref_imresize_half(img / 255., dtype) * 255.
  distparam = np.concatenate(distparam, axis=1)
  mu_d = np.nanmean(distparam, axis=0)
  cov_d = np.cov(distparam[~np.isnan(distparam).any(axis=1)], rowvar=False)
  inv = np.linalg.pinv((cov_pris + cov_d) / 2)
  return float(np.sqrt((mu_pris - mu_d) @ inv @ (mu_pris - mu_d)))


def test_imresize_is_matlabs_bicubic_half():
  rng = np.random.default_rng(0)
  img = rng.uniform(0, 1, (14, 10))
  np.testing.assert_allclose(niqe.imresize(img, 0.5), _ref_imresize_half(img), atol=1e-12)


def test_niqe_equals_the_reference_code_on_a_textured_image():
  y = np.round(niqe.y_channel(data.chelsea()[:192, :288]))  # 2 x 3 blocks
  # No pixel equals its local mean (BasicSR's float32 map has no exact zero): float64 rounding
  # noise has no zeros to differ on, so the float64 reference must agree to rounding.
  assert np.all(_ref_normalised(y.astype(np.float32)) != 0)
  assert niqe.niqe_y(y) == pytest.approx(_ref_niqe(y), rel=1e-9)


def _face_on_flat_background():
  """Y of the astronaut's face (2 x 3 blocks) on a constant backdrop, with one block wholly flat
  (NaN features, handled as the reference does)."""
  y = np.round(niqe.y_channel(data.astronaut()[:192, 96:384]))
  y[:, :70] = 120.0
  y[:96, 192:] = 235.0
  return y


def test_normalised_map_is_exactly_zero_on_flat_neighbourhoods():
  y = _face_on_flat_background()
  _, _, window = niqe.pristine_model()
  # Every 7x7 neighbourhood inside the backdrop (edge pixels repeated at the image border).
  assert np.all(niqe.normalised_map(y, window)[:, :67] == 0)
  assert np.all(niqe.normalised_map(y, window)[:93, 195:] == 0)
  assert np.all(niqe.normalised_map(y, window)[:, 74:190] != 0)  # the face is untouched
  # The half-size image keeps the backdrop exactly constant, so its map is zero there too.
  half = niqe.imresize(y / 255.0, 0.5) * 255.0
  assert np.unique(half[:, :30]).size == 1
  assert np.all(niqe.normalised_map(half, window)[:, :27] == 0)


def test_niqe_matches_the_float32_reference_on_flat_regions():
  # BasicSR (float32) has exact zeros on the backdrop, as the exact values are; float64 rounding
  # noise there used to be counted by the AGGD fit as samples of both signs (a third off here).
  y = _face_on_flat_background()
  assert niqe.niqe_y(y) == pytest.approx(_ref_niqe(y, np.float32), rel=1e-4)


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
