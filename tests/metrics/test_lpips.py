"""LPIPS: zero for equal images, growing with blur and with noise, for both backbones."""

import numpy as np
import pytest
from skimage import data
from skimage import filters

from diffbfr_jax.metrics import lpips


@pytest.mark.parametrize('net', ['vgg', 'alex'])
def test_lpips_is_zero_for_equal_images_and_grows_with_blur_and_noise(net):
  face = data.astronaut()[:128, 160:288].astype(np.float32)
  blurred = [filters.gaussian(face, sigma=s, channel_axis=-1, preserve_range=True)
             for s in (0.8, 1.6, 3.2)]
  rng = np.random.default_rng(0)
  noisy = [np.clip(face + rng.normal(0, s, face.shape), 0, 255) for s in (8, 16, 32)]
  reference = np.repeat(face[None], 7, axis=0)
  d = np.asarray(lpips.lpips(reference, np.stack([face] + blurred + noisy), net=net))
  assert abs(d[0]) < 1e-6
  assert 0 < d[1] < d[2] < d[3], d
  assert 0 < d[4] < d[5] < d[6], d


def test_lpips_is_symmetric_and_takes_the_0_255_scale():
  rng = np.random.default_rng(1)
  a = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.float32)
  np.testing.assert_allclose(lpips.lpips(a, b), lpips.lpips(b, a), rtol=1e-5)
  with pytest.raises(ValueError, match="net='squeeze'"):
    lpips.lpips(a, b, net='squeeze')
  with pytest.raises(ValueError, match=r'\(2, 64, 64, 3\) and \(2, 64, 64, 1\)'):
    lpips.lpips(a, b[..., :1])
