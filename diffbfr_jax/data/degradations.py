"""The synthetic degradation of Eq. 13, x = JPEG_q(downsample_r(y * k_sigma) + n_delta).

This is GFPGAN's degradation model (FFHQDegradationDataset, BasicSR's kernels) with the paper's
ranges, in GFPGAN's order: flip the GT (the pair flips together); blur with an isotropic or
anisotropic Gaussian kernel; bilinear down-sampling by r; Gaussian noise, then clip; JPEG at an
integer quality; bilinear resize back to the GT size; colour jitter (off by default); gray; round
the LQ to 8 bits. Images are float32 RGB [H, W, 3] in [0, 1]. `sample_params` draws every random
choice from a stateless seed and `apply_params` is a pure function of those parameters, so each
degraded face can be reproduced and logged. All ops run eagerly and inside `tf.data.Dataset.map`.
"""

import math

import numpy as np
import tensorflow as tf

# GFPGAN's options with the paper's ranges; `config.data.degradation` overrides them by name.
DEFAULTS = {
    'kernel_size': 41,
    'blur_sigma': (0.1, 10.0),
    'iso_prob': 0.5,
    'rotation': (-math.pi, math.pi),
    'downsample_range': (0.8, 8.0),
    'noise_range': (0.0, 20.0),
    'jpeg_range': (60, 100),
    'gray_prob': 0.01,
    'flip_prob': 0.5,
    'color_jitter_prob': 0.0,
    'color_jitter_shift': 20.0 / 255.0,
}

# The dtype of each parameter; `apply_params` casts to these so JSON round trips work.
PARAM_DTYPES = {
    'flip': tf.bool,
    'isotropic': tf.bool,
    'sigma_x': tf.float32,
    'sigma_y': tf.float32,
    'theta': tf.float32,
    'scale': tf.float32,
    'noise_std': tf.float32,
    'noise_seed': tf.int64,
    'jpeg_quality': tf.int32,
    'jitter': tf.bool,
    'jitter_shift': tf.float32,
    'gray': tf.bool,
}

_PARAM_SHAPES = {'noise_seed': [2], 'jitter_shift': [3]}  # the others are scalars

# Fixed fold-in index per draw: adding a draw later must not change the others.
_STREAMS = {
    'flip': 0, 'isotropic': 1, 'sigma_x': 2, 'sigma_y': 3, 'theta': 4, 'scale': 5,
    'noise_std': 6, 'noise_seed': 7, 'jpeg_quality': 8, 'jitter': 9, 'jitter_shift': 10,
    'gray': 11,
}


def _pair(name, value):
  try:
    low, high = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={value!r}; expected a (low, high) pair of numbers.') from None
  if not low <= high:
    raise ValueError(f'{name}={value!r}; expected low <= high.')
  return low, high


def _probability(name, value):
  try:
    p = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={value!r}; expected a probability in [0, 1].') from None
  if not 0.0 <= p <= 1.0:
    raise ValueError(f'{name}={value!r}; expected a probability in [0, 1].')
  return p


def _check_kernel_size(kernel_size):
  if (isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer))
      or kernel_size < 1 or kernel_size % 2 == 0):
    raise ValueError(f'kernel_size={kernel_size!r}; expected an odd positive integer.')
  return int(kernel_size)


def resolve_options(**options) -> dict:
  """DEFAULTS updated by `options`, checked; raises ValueError naming a bad option."""
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'unknown degradation option(s) {unknown}; '
                     f'expected some of {sorted(DEFAULTS)}.')
  opts = {**DEFAULTS, **options}
  out = {'kernel_size': _check_kernel_size(opts['kernel_size'])}
  for name in ('blur_sigma', 'rotation', 'downsample_range', 'noise_range'):
    out[name] = _pair(name, opts[name])
  if out['blur_sigma'][0] <= 0:
    raise ValueError(f"blur_sigma={opts['blur_sigma']!r}; sigmas must be > 0.")
  if out['downsample_range'][0] <= 0:
    raise ValueError(f"downsample_range={opts['downsample_range']!r}; factors must be > 0.")
  if out['noise_range'][0] < 0:
    raise ValueError(f"noise_range={opts['noise_range']!r}; noise stds must be >= 0.")
  low, high = _pair('jpeg_range', opts['jpeg_range'])
  if low != int(low) or high != int(high) or not 1 <= low <= high <= 100:
    raise ValueError(f"jpeg_range={opts['jpeg_range']!r}; "
                     'expected integers 1 <= low <= high <= 100.')
  out['jpeg_range'] = (int(low), int(high))
  for name in ('iso_prob', 'gray_prob', 'flip_prob', 'color_jitter_prob'):
    out[name] = _probability(name, opts[name])
  try:
    shift = float(opts['color_jitter_shift'])
  except (TypeError, ValueError):
    shift = -1.0
  if not shift >= 0:
    raise ValueError(f"color_jitter_shift={opts['color_jitter_shift']!r}; expected a number >= 0.")
  out['color_jitter_shift'] = shift
  return out


def sample_params(seed, **options) -> dict:
  """All random choices of one degradation from a stateless seed (int32/int64 [2])."""
  opts = resolve_options(**options)
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    seed = tf.cast(seed, tf.int64)

  def stream(name):
    return tf.random.experimental.stateless_fold_in(seed, _STREAMS[name])

  def uniform(name, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, stream(name), minval=low, maxval=high,
                                       dtype=tf.float32)

  # BasicSR's random_bivariate_Gaussian: isotropic kernels have sigma_y = sigma_x and no rotation.
  isotropic = uniform('isotropic') < opts['iso_prob']
  sigma_x = uniform('sigma_x', *opts['blur_sigma'])
  sigma_y = tf.where(isotropic, sigma_x, uniform('sigma_y', *opts['blur_sigma']))
  theta = tf.where(isotropic, 0.0, uniform('theta', *opts['rotation']))
  low, high = opts['jpeg_range']
  shift = opts['color_jitter_shift']
  return {
      'flip': uniform('flip') < opts['flip_prob'],
      'isotropic': isotropic,
      'sigma_x': sigma_x,
      'sigma_y': sigma_y,
      'theta': theta,
      'scale': uniform('scale', *opts['downsample_range']),
      'noise_std': uniform('noise_std', *opts['noise_range']) / 255.0,
      'noise_seed': tf.cast(stream('noise_seed'), tf.int64),
      # maxval is exclusive: U{low..high} inclusive, as the paper's integer quality.
      'jpeg_quality': tf.random.stateless_uniform([], stream('jpeg_quality'), minval=low,
                                                  maxval=high + 1, dtype=tf.int32),
      'jitter': uniform('jitter') < opts['color_jitter_prob'],
      'jitter_shift': uniform('jitter_shift', -shift, shift, shape=(3,)),
      'gray': uniform('gray') < opts['gray_prob'],
  }


def _cast_params(params):
  missing = sorted(set(PARAM_DTYPES) - set(params))
  if missing:
    raise ValueError(f'degradation params lack {missing}.')
  # The reshape gives static shapes even when the params arrive with unknown shapes.
  return {k: tf.reshape(tf.cast(tf.convert_to_tensor(params[k]), dtype), _PARAM_SHAPES.get(k, []))
          for k, dtype in PARAM_DTYPES.items()}


def blur_kernel(params, kernel_size=41):
  """BasicSR's bivariate Gaussian for `params`: [k, k] float32, summing to 1.

  k(p) = exp(-0.5 p^T Sigma^-1 p) with Sigma = R diag(sx^2, sy^2) R^T on the integer grid
  -(k // 2)..k // 2; p = (x, y) with x along the columns (width) and y along the rows. With
  params['isotropic'] true, Sigma = sx^2 I (sigma_y and theta are not read), as BasicSR.
  """
  kernel_size = _check_kernel_size(kernel_size)
  params = _cast_params(params)
  sx = tf.cast(params['sigma_x'], tf.float64)
  # BasicSR's bivariate_Gaussian(isotropic=True) uses sigma_x on both axes and no rotation,
  # whatever sigma_y and theta say.
  sy = tf.where(params['isotropic'], sx, tf.cast(params['sigma_y'], tf.float64))
  theta = tf.where(params['isotropic'], tf.zeros_like(sx), tf.cast(params['theta'], tf.float64))
  half = kernel_size // 2
  axis = tf.range(-half, half + 1, dtype=tf.float64)
  xx, yy = tf.meshgrid(axis, axis)  # xx varies along columns, as np.meshgrid in BasicSR
  # p^T R D^-1 R^T p = u^2 / sx^2 + v^2 / sy^2 with (u, v) = R^T p.
  cos, sin = tf.cos(theta), tf.sin(theta)
  u = cos * xx + sin * yy
  v = -sin * xx + cos * yy
  kernel = tf.exp(-0.5 * (u ** 2 / sx ** 2 + v ** 2 / sy ** 2))
  return tf.cast(kernel / tf.reduce_sum(kernel), tf.float32)


def blur(image, kernel):
  """cv2.filter2D(image, -1, kernel) (correlation, BORDER_REFLECT_101) per channel of [H, W, C].

  Computed with FFTs on the reflect-padded image: 41x41 kernels make a direct depthwise
  convolution ~15x slower on CPU (OpenCV also switches to a DFT for large kernels). Needs
  H, W > kernel_size // 2 (reflection padding).
  """
  image = tf.convert_to_tensor(image, tf.float32)
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  size = kernel.shape[0]
  if size is None or kernel.shape[1] != size or size % 2 == 0:
    raise ValueError(f'blur kernel of shape {kernel.shape}; expected a static odd square.')
  pad = size // 2
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  planes = tf.transpose(padded, [2, 0, 1])
  fft_size = tf.shape(planes)[1:]
  # Circular convolution with the flipped kernel is a correlation; the wrap-around only touches
  # the padding, which is cropped away.
  flipped = tf.pad(kernel[::-1, ::-1], [[0, fft_size[0] - size], [0, fft_size[1] - size]])
  spectrum = tf.signal.rfft2d(planes, fft_length=fft_size) * tf.signal.rfft2d(
      flipped, fft_length=fft_size)
  out = tf.signal.irfft2d(spectrum, fft_length=fft_size)
  out = tf.transpose(out, [1, 2, 0])[2 * pad:, 2 * pad:]
  return tf.ensure_shape(out, image.shape)


def jpeg(image, quality):
  """OpenCV's JPEG round trip: round and clip to uint8, encode at integer `quality`, decode."""
  pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
  data = tf.raw_ops.EncodeJpegVariableQuality(images=pixels,
                                              quality=tf.cast(quality, tf.int32))
  # libjpeg's accurate integer DCT is OpenCV's default; TF's default is the fast one.
  decoded = tf.io.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE')
  return tf.cast(decoded, tf.float32) / 255.0


def down_size(params, size):
  """GFPGAN's down-sampled size: cv2.resize(img, (int(w // scale), int(h // scale))), the floor
  taken in float64, at least 1. `size` is (height, width); returns int32 [2]."""
  scale = tf.cast(params['scale'], tf.float64)
  return tf.stack([tf.maximum(tf.cast(tf.floor(tf.cast(n, tf.float64) / scale), tf.int32), 1)
                   for n in size])


def device_params(params, size) -> dict:
  """What `device_degradation.degrade` needs of `params` for a face of size (height, width):
  the down-sampled size instead of the scale (computed here in float64 as GFPGAN does) and the
  noise seed as a threefry key (uint32 [2]; the device draws the noise from it)."""
  params = _cast_params(params)
  out = {k: params[k] for k in ('flip', 'isotropic', 'sigma_x', 'sigma_y', 'theta', 'noise_std',
                                'jpeg_quality', 'jitter', 'jitter_shift', 'gray')}
  out['down_size'] = down_size(params, size)
  out['noise_key'] = tf.cast(tf.bitwise.bitwise_and(params['noise_seed'], 0xFFFFFFFF), tf.uint32)
  return out


def _down_sample(params, lq, size, kernel_size):
  del kernel_size
  return tf.image.resize(lq, down_size(params, size), method='bilinear', antialias=False)


def noise_for_device(params, size, buffer: int) -> np.ndarray:
  """The standard normal noise `apply_params` adds to a face of size (height, width), drawn as
  `_noise` draws it at the down-sampled size, in the top-left of a zero [buffer, buffer, 3]
  array: the `noise` with which `device_degradation.degrade` reproduces this pipeline's."""
  params = _cast_params(params)
  small = down_size(params, size).numpy()
  field = np.zeros((buffer, buffer, 3), np.float32)
  field[:small[0], :small[1]] = tf.random.stateless_normal(
      [small[0], small[1], 3], params['noise_seed'], dtype=tf.float32).numpy()
  return field


def _noise(params, lq, size, kernel_size):
  del size, kernel_size
  noise = tf.random.stateless_normal(tf.shape(lq), params['noise_seed'], dtype=tf.float32)
  return tf.clip_by_value(lq + noise * params['noise_std'], 0.0, 1.0)


def _jitter_gray_round(params, lq, size, kernel_size):
  del size, kernel_size
  jittered = tf.clip_by_value(lq + params['jitter_shift'], 0.0, 1.0)
  lq = tf.where(params['jitter'], jittered, lq)
  gray = tf.tile(tf.image.rgb_to_grayscale(lq), [1, 1, 3])
  lq = tf.where(params['gray'], gray, lq)
  return tf.clip_by_value(tf.round(lq * 255.0), 0.0, 255.0) / 255.0


# Steps 2-9 of the degradation in order, each `step(params, lq, (height, width), kernel_size)`;
# named for the feeding benchmark, which times them one by one.
STEPS = (
    ('blur (kernel and 41x41 FFT blur)',
     lambda params, lq, size, kernel_size: blur(lq, blur_kernel(params, kernel_size))),
    ('down-sampling (bilinear)', _down_sample),
    ('noise', _noise),
    ('JPEG (encode and decode)', lambda params, lq, size, kernel_size: jpeg(
        lq, params['jpeg_quality'])),
    ('resize back (bilinear)', lambda params, lq, size, kernel_size: tf.image.resize(
        lq, size, method='bilinear', antialias=False)),
    ('colour jitter, gray, 8-bit rounding', _jitter_gray_round),
)


def apply_params(params, gt, *, kernel_size=41):
  """Steps 1-9 with fixed parameters: (lq, gt), both float32 [H, W, 3] in [0, 1] at gt's size.

  `gt` may be flipped (params['flip']). Deterministic: same params and gt give the same bits.
  """
  params = _cast_params(params)
  gt = tf.convert_to_tensor(gt)
  if not gt.dtype.is_floating:
    raise TypeError(f'gt has dtype {gt.dtype.name}; expected float RGB in [0, 1].')
  gt = tf.cast(gt, tf.float32)
  static_shape = gt.shape
  gt = tf.where(params['flip'], tf.reverse(gt, axis=[1]), gt)
  height, width = tf.shape(gt)[0], tf.shape(gt)[1]

  lq = gt
  for _, step in STEPS:
    lq = step(params, lq, (height, width), kernel_size)
  return tf.ensure_shape(lq, static_shape), tf.ensure_shape(gt, static_shape)


def degrade(seed, gt, **options):
  """`sample_params(seed, **options)` then `apply_params`: (lq, gt, params)."""
  params = sample_params(seed, **options)
  kernel_size = options.get('kernel_size', DEFAULTS['kernel_size'])
  lq, gt = apply_params(params, gt, kernel_size=kernel_size)
  return lq, gt, params


def params_to_json(params) -> dict:
  """Plain Python values of `params` (tensors or numpy arrays), e.g. for a manifest file."""
  out = {}
  for key, value in params.items():
    array = np.asarray(value.numpy() if hasattr(value, 'numpy') else value)
    out[key] = array.item() if array.ndim == 0 else array.tolist()
  return out
