"""The degradation model against independent numpy / scipy references."""

import io
import json
import math

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage
import skimage.data
import skimage.transform
import tensorflow as tf

from diffbfr_jax.data import degradations

try:
  tf.config.set_visible_devices([], 'GPU')  # the data pipeline runs on the host
except RuntimeError:
  pass  # TF already initialised by another test module; it is CPU-only there too

MILD = dict(flip=False, isotropic=True, sigma_x=0.1, sigma_y=0.1, theta=0.0, scale=1.0,
            noise_std=0.0, noise_seed=[0, 0], jpeg_quality=100, jitter=False,
            jitter_shift=[0.0, 0.0, 0.0], gray=False)
STRONG = dict(MILD, isotropic=False, sigma_x=8.0, sigma_y=5.0, theta=0.7, scale=6.0,
              noise_std=15.0 / 255.0, noise_seed=[3, 4], jpeg_quality=60)


def random_image(height=64, width=64, seed=0):
  return np.random.default_rng(seed).uniform(size=(height, width, 3)).astype(np.float32)


def smooth_image(size=128):
  """A natural image (skimage's astronaut), float32 in [0, 1]."""
  image = skimage.transform.resize(skimage.data.astronaut(), (size, size), anti_aliasing=True)
  return image.astype(np.float32)


def seed_of(i):
  return tf.constant([7, i], tf.int64)


def check_pair(lq, gt, shape):
  for image in (lq, gt):
    assert image.shape == shape
    assert image.dtype == tf.float32
    image = np.asarray(image)
    assert np.all(np.isfinite(image)) and image.min() >= 0.0 and image.max() <= 1.0


def reference_kernel(sx, sy, theta, size):
  """exp(-0.5 p^T Sigma^-1 p) on the integer grid, p = (column offset, row offset), float64."""
  rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  inverse = np.linalg.inv(rot @ np.diag([sx ** 2, sy ** 2]) @ rot.T)
  half = size // 2
  kernel = np.zeros((size, size))
  for row in range(size):
    for col in range(size):
      p = np.array([col - half, row - half], dtype=np.float64)
      kernel[row, col] = math.exp(-0.5 * p @ inverse @ p)
  return kernel / kernel.sum()


def resize_bilinear(image, height, width):
  """OpenCV's INTER_LINEAR (half-pixel centres, no antialiasing, edge clamp) in numpy float64."""
  def taps(out_size, in_size):
    x = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(x).astype(int), in_size - 1)
    return low, np.minimum(low + 1, in_size - 1), (x - low)
  r0, r1, fr = taps(height, image.shape[0])
  c0, c1, fc = taps(width, image.shape[1])
  rows = image[r0] * (1 - fr)[:, None, None] + image[r1] * fr[:, None, None]
  return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def pil_jpeg(image, quality):
  """uint8 round trip through libjpeg via PIL (4:2:0, accurate integer DCT, as OpenCV)."""
  pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=quality)
  return np.asarray(Image.open(buffer).convert('RGB'), np.float64) / 255.0


def psnr(a, b):
  return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.mark.parametrize('shape', [(64, 64, 3), (48, 80, 3)])
def test_degrade_eager(shape):
  gt = random_image(*shape[:2])
  for i in range(4):
    lq, out_gt, params = degradations.degrade(seed_of(i), gt)
    check_pair(lq, out_gt, shape)
    expected = gt[:, ::-1] if bool(params['flip']) else gt
    np.testing.assert_array_equal(out_gt, expected)


def test_degrade_in_dataset():
  gt = random_image(64, 64)
  dataset = tf.data.Dataset.range(6).map(
      lambda i: degradations.degrade(tf.stack([tf.constant(7, tf.int64), i]), gt),
      num_parallel_calls=2, deterministic=True)
  assert dataset.element_spec[0].shape == (64, 64, 3)
  assert dataset.element_spec[1].shape == (64, 64, 3)
  for i, (lq, out_gt, params) in enumerate(dataset):
    check_pair(lq, out_gt, (64, 64, 3))
    eager_lq, _, eager_params = degradations.degrade(seed_of(i), gt)
    assert degradations.params_to_json(params) == degradations.params_to_json(eager_params)
    np.testing.assert_array_equal(lq, eager_lq)


def test_apply_params_dynamic_shape():
  apply = tf.function(
      lambda params, gt: degradations.apply_params(params, gt),
      input_signature=[{k: tf.TensorSpec(None, d) for k, d in degradations.PARAM_DTYPES.items()},
                       tf.TensorSpec([None, None, 3], tf.float32)])
  params = degradations.sample_params(seed_of(0))
  lq, gt = apply(params, random_image(40, 56))
  check_pair(lq, gt, (40, 56, 3))


def test_sample_params_types():
  params = degradations.sample_params(tf.constant([1, 2], tf.int32))
  assert set(params) == set(degradations.PARAM_DTYPES)
  for key, value in params.items():
    assert value.dtype == degradations.PARAM_DTYPES[key], key
    assert value.shape == ((2,) if key == 'noise_seed' else (3,) if key == 'jitter_shift' else ())
  assert degradations.params_to_json(params) == degradations.params_to_json(
      degradations.sample_params(tf.constant([1, 2], tf.int32)))


@pytest.mark.parametrize('sx, sy, theta', [(2.5, 2.5, 0.0), (6.0, 1.5, 0.6), (0.7, 9.0, -2.8)])
def test_blur_kernel_closed_form(sx, sy, theta):
  params = dict(MILD, isotropic=False, sigma_x=sx, sigma_y=sy, theta=theta)
  kernel = degradations.blur_kernel(params, kernel_size=41)
  assert kernel.shape == (41, 41) and kernel.dtype == tf.float32
  assert abs(float(tf.reduce_sum(kernel)) - 1.0) < 1e-6
  np.testing.assert_allclose(kernel, reference_kernel(sx, sy, theta, 41), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('sx, sy, theta', [(2.0, 5.0, 1.0), (6.0, 1.5, -0.6)])
def test_an_isotropic_kernel_ignores_sigma_y_and_theta(sx, sy, theta):
  """isotropic=True means Sigma = sigma_x^2 I (BasicSR), whatever sigma_y and theta hold; the
  same params through apply_params blur with that kernel."""
  params = dict(MILD, isotropic=True, sigma_x=sx, sigma_y=sy, theta=theta)
  kernel = degradations.blur_kernel(params, kernel_size=21)
  np.testing.assert_allclose(kernel, reference_kernel(sx, sx, 0.0, 21), rtol=1e-5, atol=1e-9)
  image = random_image(40, 40)
  lq, _ = degradations.apply_params(params, image, kernel_size=21)
  isotropic = dict(params, sigma_y=sx, theta=0.0)
  np.testing.assert_array_equal(lq, degradations.apply_params(isotropic, image, kernel_size=21)[0])


def test_blur_matches_scipy():
  image = random_image(45, 52)
  kernel = np.asarray(degradations.blur_kernel(dict(MILD, isotropic=False, sigma_x=4.0,
                                                    sigma_y=1.5, theta=0.9)))
  out = np.asarray(degradations.blur(image, kernel))
  assert out.shape == image.shape
  for c in range(3):
    ref = ndimage.convolve(image[..., c].astype(np.float64), kernel.astype(np.float64),
                           mode='mirror')  # scipy's 'mirror' is OpenCV's BORDER_REFLECT_101
    np.testing.assert_allclose(out[..., c], ref, atol=2e-6)


def test_blur_is_correlation_like_filter2d():
  # cv2.filter2D correlates (no kernel flip): check with a kernel that is not point-symmetric.
  image = random_image(30, 33)
  kernel = np.random.default_rng(1).uniform(size=(5, 5)).astype(np.float32)
  out = np.asarray(degradations.blur(image, kernel))
  for c in range(3):
    ref = ndimage.correlate(image[..., c].astype(np.float64), kernel.astype(np.float64),
                            mode='mirror')
    np.testing.assert_allclose(out[..., c], ref, atol=1e-5)


@pytest.mark.parametrize('quality', [60, 83, 100])
def test_jpeg_matches_libjpeg(quality):
  image = smooth_image(72)[:, :60]
  ours = np.round(np.asarray(degradations.jpeg(image, quality)) * 255.0)
  np.testing.assert_array_equal(ours, np.round(pil_jpeg(image, quality) * 255.0))


def test_apply_params_matches_reference_chain():
  """Steps 1-9 rebuilt from scipy, numpy and PIL, in GFPGAN's order and with its size rule."""
  gt = smooth_image(128)[:64, 30:80]  # 64 x 50
  params = dict(STRONG, flip=True, scale=3.3, noise_std=4.0 / 255.0, jpeg_quality=90,
                jitter=True, jitter_shift=[0.03, -0.02, 0.01])
  lq, _ = degradations.apply_params(params, gt)
  ref = gt[:, ::-1].astype(np.float64)
  kernel = reference_kernel(params['sigma_x'], params['sigma_y'], params['theta'], 41)
  ref = np.stack([ndimage.correlate(ref[..., c], kernel, mode='mirror') for c in range(3)], -1)
  ref = resize_bilinear(ref, 19, 15)  # int(64 // 3.3), int(50 // 3.3)
  noise = tf.random.stateless_normal((19, 15, 3), tf.constant(params['noise_seed'], tf.int64))
  ref = np.clip(ref + np.asarray(noise, np.float64) * params['noise_std'], 0.0, 1.0)
  ref = resize_bilinear(pil_jpeg(ref, params['jpeg_quality']), 64, 50)
  ref = np.clip(ref + np.asarray(params['jitter_shift']), 0.0, 1.0)
  ref = np.clip(np.round(ref * 255.0), 0, 255) / 255.0
  diff = np.abs(np.asarray(lq, np.float64) - ref)
  # float32 vs float64 can move a pixel across a rounding boundary before the JPEG.
  assert diff.max() <= 1.5 / 255.0 and diff.mean() < 0.02 / 255.0


def test_apply_params_bit_identical():
  gt = random_image(64, 64)
  params = dict(STRONG, flip=True, gray=False, jitter=True, jitter_shift=[0.02, -0.03, 0.01])
  first, first_gt = degradations.apply_params(params, gt)
  second, second_gt = degradations.apply_params(params, gt)
  np.testing.assert_array_equal(first, second)
  np.testing.assert_array_equal(first_gt, second_gt)
  dataset = tf.data.Dataset.from_tensors(gt).repeat(2).map(
      lambda x: degradations.apply_params(params, x))
  for lq, out_gt in dataset:
    np.testing.assert_array_equal(lq, first)
    np.testing.assert_array_equal(out_gt, first_gt)


def test_params_json_round_trip():
  gt = random_image(64, 64)
  lq, _, params = degradations.degrade(seed_of(3), gt)
  plain = json.loads(json.dumps(degradations.params_to_json(params)))
  again, _ = degradations.apply_params(plain, gt)
  np.testing.assert_array_equal(again, lq)


def test_flip_makes_lq_from_flipped_gt():
  gt = random_image(64, 64)
  lq, out_gt = degradations.apply_params(dict(STRONG, flip=True), gt)
  np.testing.assert_array_equal(out_gt, gt[:, ::-1])
  unflipped_lq, _ = degradations.apply_params(dict(STRONG, flip=False), gt[:, ::-1].copy())
  np.testing.assert_array_equal(lq, unflipped_lq)


def sample_many(count=500, **options):
  dataset = tf.data.Dataset.range(count).map(
      lambda i: degradations.sample_params(tf.stack([tf.constant(11, tf.int64), i]), **options))
  return {k: np.asarray(v) for k, v in next(iter(dataset.batch(count))).items()}


def test_sampled_params_in_range():
  p = sample_many()
  iso = p['isotropic']
  assert 0.3 < iso.mean() < 0.7
  for key in ('sigma_x', 'sigma_y'):
    assert p[key].min() >= 0.1 and p[key].max() <= 10.0
  np.testing.assert_array_equal(p['sigma_y'][iso], p['sigma_x'][iso])
  np.testing.assert_array_equal(p['theta'][iso], 0.0)
  assert np.all(p['sigma_y'][~iso] != p['sigma_x'][~iso])
  assert p['theta'].min() >= -math.pi and p['theta'].max() <= math.pi
  assert p['theta'][~iso].min() < -2.5 and p['theta'][~iso].max() > 2.5
  assert p['scale'].min() >= 0.8 and p['scale'].max() <= 8.0
  assert p['noise_std'].min() >= 0.0 and p['noise_std'].max() <= 20.0 / 255.0 + 1e-7
  assert p['jpeg_quality'].dtype == np.int32
  assert p['jpeg_quality'].min() == 60 and p['jpeg_quality'].max() == 100
  assert 0.43 < p['flip'].mean() < 0.57
  assert not p['jitter'].any()  # colour jitter is off by default
  assert np.abs(p['jitter_shift']).max() <= 20.0 / 255.0
  assert p['gray'].mean() < 0.05
  assert len({tuple(s) for s in p['noise_seed']}) == 500


def test_gray_probability_extremes():
  assert not sample_many(200, gray_prob=0.0)['gray'].any()
  assert sample_many(200, gray_prob=1.0)['gray'].all()
  assert sample_many(200, color_jitter_prob=1.0)['jitter'].all()
  assert not sample_many(200, flip_prob=0.0)['flip'].any()


def test_gray_has_equal_channels():
  lq, _, params = degradations.degrade(seed_of(0), random_image(), gray_prob=1.0)
  assert bool(params['gray'])
  lq = np.asarray(lq)
  np.testing.assert_array_equal(lq[..., 0], lq[..., 1])
  np.testing.assert_array_equal(lq[..., 0], lq[..., 2])


def test_color_jitter_shifts_channels():
  gt = np.full((64, 64, 3), 0.5, np.float32)
  shift = np.array([0.05, -0.06, 0.02], np.float32)
  plain, _ = degradations.apply_params(MILD, gt)
  jittered, _ = degradations.apply_params(dict(MILD, jitter=True, jitter_shift=shift), gt)
  np.testing.assert_allclose(np.mean(np.asarray(jittered) - np.asarray(plain), axis=(0, 1)),
                             shift, atol=1.0 / 255.0)


def test_lq_is_8_bit():
  for i in range(3):
    lq, _, _ = degradations.degrade(seed_of(i), random_image())
    scaled = np.asarray(lq, np.float64) * 255.0
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-4)


def test_strong_degrades_more_than_mild():
  gt = smooth_image(128)
  mild, _ = degradations.apply_params(MILD, gt)
  strong, _ = degradations.apply_params(STRONG, gt)
  assert psnr(mild, gt) > 35.0  # near-identity: 8-bit rounding and JPEG at quality 100
  assert psnr(strong, gt) < psnr(mild, gt) - 10.0


@pytest.mark.parametrize('name, value', [
    ('blur_sigma', (10.0, 0.1)), ('blur_sigma', (0.0, 1.0)), ('rotation', (1.0, -1.0)),
    ('downsample_range', (8.0, 0.8)), ('downsample_range', (0.0, 4.0)),
    ('noise_range', (-1.0, 20.0)), ('noise_range', 5.0), ('jpeg_range', (0, 100)),
    ('jpeg_range', (60, 101)), ('jpeg_range', (90, 60)), ('jpeg_range', (60.5, 90)),
    ('kernel_size', 40), ('kernel_size', 0), ('kernel_size', 41.0), ('iso_prob', 1.5),
    ('gray_prob', -0.1), ('flip_prob', 2), ('color_jitter_prob', 'often'),
    ('color_jitter_shift', -0.1), ('blur_sigmas', (0.1, 10.0)),
])
def test_bad_options_raise(name, value):
  with pytest.raises(ValueError, match=name):
    degradations.sample_params(seed_of(0), **{name: value})
  with pytest.raises(ValueError, match=name):
    degradations.degrade(seed_of(0), random_image(), **{name: value})


def test_options_accept_config_lists():
  # ml_collections may hand back lists; the defaults' values must be accepted as they are.
  options = {k: list(v) if isinstance(v, tuple) else v for k, v in degradations.DEFAULTS.items()}
  params = degradations.sample_params(seed_of(0), **options)
  assert degradations.params_to_json(params) == degradations.params_to_json(
      degradations.sample_params(seed_of(0)))


def test_config_degradation_fields_are_the_module_defaults():
  from configs import common  # pylint: disable=g-import-not-at-top

  fields = dict(common.data().degradation)
  assert set(fields) == set(degradations.DEFAULTS)
  for name, value in degradations.DEFAULTS.items():
    assert np.allclose(fields[name], value), name
