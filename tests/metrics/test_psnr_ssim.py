"""PSNR and SSIM against scikit-image with the settings of the face-restoration papers."""

import numpy as np
import pytest
from skimage import color
from skimage import data
from skimage import metrics as skm

from diffbfr_jax.metrics import psnr_ssim


@pytest.fixture(scope='module')
def pairs():
  rng = np.random.default_rng(0)
  gt = np.stack([data.astronaut()[100:164, 200:264], data.chelsea()[:64, :64]])
  noisy = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).round().astype(np.uint8)
  return gt, noisy


def test_psnr_is_scikit_images(pairs):
  gt, noisy = pairs
  ours = psnr_ssim.psnr(gt, noisy)
  theirs = [skm.peak_signal_noise_ratio(g, n, data_range=255) for g, n in zip(gt, noisy)]
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  assert np.isinf(psnr_ssim.psnr(gt, gt)).all()


def test_ssim_is_scikit_images_with_the_papers_settings(pairs):
  gt, noisy = pairs
  ours = psnr_ssim.ssim(gt, noisy)
  theirs = [skm.structural_similarity(g, n, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255,
                                      channel_axis=-1) for g, n in zip(gt, noisy)]
  np.testing.assert_allclose(ours, theirs, atol=2e-5)
  # skimage's defaults (a 7x7 uniform window, sample covariance) are another number.
  default = skm.structural_similarity(gt[0], noisy[0], data_range=255, channel_axis=-1)
  assert abs(default - float(ours[0])) > 1e-3
  np.testing.assert_allclose(psnr_ssim.ssim(gt, gt), 1.0, atol=1e-6)


def test_y_channel_metrics_use_bt601_luma(pairs):
  gt, noisy = pairs
  # skimage's rgb2ycbcr is an independent statement of the BT.601 (16..235) luma.
  y = lambda x: color.rgb2ycbcr(x)[..., 0]
  theirs_psnr = [skm.peak_signal_noise_ratio(y(g), y(n), data_range=255) for g, n in zip(gt, noisy)]
  theirs_ssim = [skm.structural_similarity(y(g), y(n), gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255)
                 for g, n in zip(gt, noisy)]
  np.testing.assert_allclose(psnr_ssim.psnr(gt, noisy, y=True), theirs_psnr, rtol=1e-5)
  np.testing.assert_allclose(psnr_ssim.ssim(gt, noisy, y=True), theirs_ssim, atol=2e-5)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r'\(1, 16, 16, 3\) and \(1, 16, 17, 3\)'):
    psnr_ssim.psnr(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 17, 3)))
  with pytest.raises(ValueError, match='at least 11x11'):
    psnr_ssim.ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
