"""Eq. 13 on the accelerator: `degradations` (the TensorFlow reference) written in JAX, to run
inside the jitted step when `config.data.degrade_on = 'device'`.

The host still draws every parameter with `degradations.sample_params` from (seed, example id)
and sends them with the HQ face (`degradations.device_params`); only the noise field is drawn
here, from the example's own key, so runs stay reproducible and resumable, but its values
differ from TensorFlow's. Shapes are static: the down-sampled image, whose size varies per
example, lives in the top-left corner of a fixed `[M, M, 3]` buffer and is edge-replicated
beyond its size (as libjpeg pads a partial block); the resizes are products with TensorFlow's
bilinear interpolation matrices built for that size. The JPEG round trip is libjpeg's baseline
coder as TensorFlow's `encode_jpeg` runs it: libjpeg's integer colour conversion, 4:2:0 chroma
averaging with its alternating rounding bias, the quality-scaled standard tables, quantisation
rounding half away from zero, and the decoder's "fancy" triangle chroma up-sampling and integer
colour conversion; the DCTs are exact (float) where libjpeg's are integer approximations. Images
are float32 RGB `[H, W, 3]` in [0, 1], one example at a time (`jax.vmap` for batches). No
TensorFlow here.
"""

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes in the resizes and the DCT

# The parameters one example needs on the device (`degradations.device_params` makes them).
PARAM_KEYS = ('flip', 'isotropic', 'sigma_x', 'sigma_y', 'theta', 'down_size', 'noise_std',
              'noise_key', 'jpeg_quality', 'jitter', 'jitter_shift', 'gray')


def buffer_size(size: int, min_scale: float) -> int:
  """The side M of the down-sampled image's buffer: room for floor(size / scale) pixels at the
  smallest scale, rounded up to libjpeg's 16-pixel 4:2:0 block."""
  largest = int(np.floor(size / np.float32(min_scale))) + 1
  return max(16, -(-largest // 16) * 16)


def blur_kernel(params, kernel_size: int):
  """`degradations.blur_kernel` in float32: BasicSR's bivariate Gaussian, [k, k], sum 1."""
  isotropic = params['isotropic']
  sx = params['sigma_x'].astype(jnp.float32)
  sy = jnp.where(isotropic, sx, params['sigma_y'])
  theta = jnp.where(isotropic, 0.0, params['theta'])
  half = kernel_size // 2
  axis = jnp.arange(-half, half + 1, dtype=jnp.float32)
  xx, yy = jnp.meshgrid(axis, axis)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  u = cos * xx + sin * yy
  v = -sin * xx + cos * yy
  kernel = jnp.exp(-0.5 * (u ** 2 / sx ** 2 + v ** 2 / sy ** 2))
  return kernel / jnp.sum(kernel)


def blur(image, kernel):
  """cv2.filter2D (correlation, BORDER_REFLECT_101) per channel, with FFTs as the reference."""
  size = kernel.shape[0]
  pad = size // 2
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
  planes = jnp.moveaxis(padded, -1, 0)
  shape = planes.shape[1:]
  flipped = jnp.pad(kernel[::-1, ::-1], ((0, shape[0] - size), (0, shape[1] - size)))
  out = jnp.fft.irfft2(jnp.fft.rfft2(planes) * jnp.fft.rfft2(flipped), s=shape)
  return jnp.moveaxis(out, 0, -1)[2 * pad:, 2 * pad:].astype(jnp.float32)


def bilinear_matrix(out_size, in_size, rows: int, cols: int):
  """W [rows, cols]: `W @ x` is TensorFlow's bilinear resize (half-pixel centres, no antialias)
  of the first `in_size` rows of x to `out_size` rows; rows of W at or past `out_size` repeat
  row out_size - 1 (edge replication). The sizes may be traced."""
  out_size = jnp.asarray(out_size, jnp.int32)
  in_size = jnp.asarray(in_size, jnp.int32)
  scale = in_size.astype(jnp.float32) / out_size.astype(jnp.float32)
  i = jnp.minimum(jnp.arange(rows), out_size - 1).astype(jnp.float32)
  x = (i + 0.5) * scale - 0.5
  floor = jnp.floor(x)
  lerp = x - floor
  lower = jnp.maximum(floor, 0).astype(jnp.int32)
  upper = jnp.minimum(jnp.ceil(x).astype(jnp.int32), in_size - 1)
  j = jnp.arange(cols)
  return ((1.0 - lerp)[:, None] * (j == lower[:, None]) +
          lerp[:, None] * (j == upper[:, None])).astype(jnp.float32)


def resize_bilinear(image, out_size, in_size, rows: int, cols: int):
  """The first in_size = (h, w) pixels of `image` resized to out_size = (h', w') into a
  [rows, cols, C] array, edge-replicated past out_size."""
  wh = bilinear_matrix(out_size[0], in_size[0], rows, image.shape[0])
  ww = bilinear_matrix(out_size[1], in_size[1], cols, image.shape[1])
  return jnp.einsum('ij,jkc,lk->ilc', wh, image, ww, precision=_HIGHEST)


def replicate_edges(image, size):
  """Rows and columns of `image` at or past size = (h, w) replaced by row h-1 and column w-1."""
  rows = jnp.minimum(jnp.arange(image.shape[0]), size[0] - 1)
  cols = jnp.minimum(jnp.arange(image.shape[1]), size[1] - 1)
  return jnp.take(jnp.take(image, rows, axis=0), cols, axis=1)


# libjpeg's standard tables (ITU T.81 Annex K), scaled by the quality as jpeg_set_quality does.
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.int32).reshape(8, 8)
_CHROMA = np.full((8, 8), 99, np.int32)
_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def quant_tables(quality):
  """(luma, chroma) [8, 8] int32 tables of libjpeg's jpeg_set_quality(quality, baseline)."""
  quality = jnp.clip(jnp.asarray(quality, jnp.int32), 1, 100)
  scale = jnp.where(quality < 50, 5000 // quality, 200 - 2 * quality)
  return tuple(jnp.clip((base * scale + 50) // 100, 1, 255) for base in (_LUMA, _CHROMA))


def _dct_matrix():
  k = np.arange(8)
  c = np.where(k == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))
  return (c[:, None] * np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16)).astype(np.float32)


_DCT = _dct_matrix()  # JPEG's 2-D DCT is D f D^T with this orthonormal D


def _code_plane(plane, table):
  """Level shift, 8x8 DCT, quantise, de-quantise, inverse DCT, round and clip: int32 -> int32."""
  h, w = plane.shape
  blocks = (plane - 128).astype(jnp.float32).reshape(h // 8, 8, w // 8, 8)
  coef = jnp.einsum('ux,axby,vy->abuv', _DCT, blocks, _DCT, precision=_HIGHEST)
  q = table.astype(jnp.float32)
  level = jnp.sign(coef) * jnp.floor(jnp.abs(coef) / q + 0.5)  # half away from zero
  out = jnp.einsum('ux,abuv,vy->axby', _DCT, level * q, _DCT, precision=_HIGHEST)
  return jnp.clip(jnp.floor(out + 128.5), 0, 255).astype(jnp.int32).reshape(h, w)


def _upsample_chroma(c, size):
  """libjpeg's h2v2 "fancy" up-sampling (a triangle filter, integer) of a [M/2, M/2] plane whose
  real samples are the first size = (hc, wc); context past them repeats the last real one."""
  hc, wc = size
  n, m = c.shape
  rows, cols = jnp.arange(n), jnp.arange(m)
  above = jnp.take(c, jnp.clip(rows - 1, 0, hc - 1), axis=0)
  below = jnp.take(c, jnp.minimum(rows + 1, hc - 1), axis=0)
  colsum = jnp.stack([3 * c + above, 3 * c + below], axis=1).reshape(2 * n, m)
  left = jnp.take(colsum, jnp.clip(cols - 1, 0, wc - 1), axis=1)
  right = jnp.take(colsum, jnp.minimum(cols + 1, wc - 1), axis=1)
  even = (3 * colsum + left + 8) >> 4
  odd = (3 * colsum + right + 7) >> 4
  return jnp.stack([even, odd], axis=2).reshape(2 * n, 2 * m)


def jpeg(image, quality, size):
  """TensorFlow's `encode_jpeg(quality)` + `decode_jpeg(dct_method='INTEGER_ACCURATE')` of the
  top-left size = (h, w) pixels of `image` [M, M, 3] (M a multiple of 16), as
  `degradations.jpeg` runs it; returns [M, M, 3] float32, valid in the top-left (h, w)."""
  if image.shape[0] % 16 or image.shape[1] % 16:
    raise ValueError(f'jpeg buffer of shape {image.shape}; expected sides that are multiples '
                     'of 16.')
  size = jnp.asarray(size, jnp.int32)
  # libjpeg pads a partial block by repeating the last column and row.
  image = replicate_edges(image, size)
  rgb = jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.int32)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  # jccolor.c: 16-bit fixed point, FIX(x) = round(x * 65536).
  y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
  cb = (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16
  cr = (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16
  # jcsample.c h2v2_downsample: 2x2 sums, bias 1, 2, 1, 2, ... along each output row; the
  # chroma rows past the last real one repeat it (the encoder pads the down-sampled plane).
  chroma_size = (size + 1) // 2
  bias = 1 + jnp.arange(image.shape[1] // 2) % 2

  def down(p):
    s = p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]
    s = (s + bias) >> 2
    return jnp.take(s, jnp.minimum(jnp.arange(s.shape[0]), chroma_size[0] - 1), axis=0)

  luma_table, chroma_table = quant_tables(quality)
  y = _code_plane(y, luma_table)
  cb = _upsample_chroma(_code_plane(down(cb), chroma_table), chroma_size)
  cr = _upsample_chroma(_code_plane(down(cr), chroma_table), chroma_size)
  # jdcolor.c: R = Y + 1.402 Cr', G = Y - 0.34414 Cb' - 0.71414 Cr', B = Y + 1.772 Cb'.
  cb, cr = cb - 128, cr - 128
  r = y + ((91881 * cr + 32768) >> 16)
  g = y + ((-22554 * cb - 46802 * cr + 32768) >> 16)
  b = y + ((116130 * cb + 32768) >> 16)
  rgb = jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)
  return rgb.astype(jnp.float32) / 255.0


def degrade(params, gt, *, kernel_size: int, buffer: int, noise=None):
  """`degradations.apply_params` on the device: (lq, gt) float32 [S, S, 3] from one example's
  `params` (PARAM_KEYS) and its GT face. `noise`, [buffer, buffer, 3] standard normal, replaces
  the field drawn from params['noise_key'] (to compare with TensorFlow's on equal noise)."""
  size = gt.shape[:2]
  gt = jnp.where(params['flip'], gt[:, ::-1], gt)
  lq = blur(gt, blur_kernel(params, kernel_size))
  small = jnp.minimum(jnp.asarray(params['down_size'], jnp.int32), buffer)
  lq = resize_bilinear(lq, small, size, buffer, buffer)
  if noise is None:
    noise = noise_field(params, lq.shape)
  lq = jnp.clip(lq + noise * params['noise_std'], 0.0, 1.0)
  lq = jpeg(lq, params['jpeg_quality'], small)
  lq = resize_bilinear(lq, size, small, size[0], size[1])
  return jitter_gray_round(params, lq), gt


def noise_field(params, shape):
  """Standard normal noise of `shape` from the example's params['noise_key'] (threefry)."""
  key = jax.random.wrap_key_data(jnp.asarray(params['noise_key'], jnp.uint32),
                                 impl='threefry2x32')
  return jax.random.normal(key, shape, jnp.float32)


def jitter_gray_round(params, lq):
  """The last step: colour jitter (params['jitter']), gray (TensorFlow's rgb_to_grayscale
  weights), rounding to 8 bits."""
  jittered = jnp.clip(lq + params['jitter_shift'], 0.0, 1.0)
  lq = jnp.where(params['jitter'], jittered, lq)
  gray = jnp.tensordot(lq, jnp.array([0.2989, 0.5870, 0.1140], jnp.float32), axes=[[-1], [0]],
                       precision=_HIGHEST)
  lq = jnp.where(params['gray'], jnp.repeat(gray[..., None], 3, axis=-1), lq)
  return jnp.clip(jnp.round(lq * 255.0), 0.0, 255.0) / 255.0


def resize(image, size: int):
  """`pipeline._resize`: bicubic (Keys, a = -0.5), antialiased when shrinking, clipped."""
  if image.shape[:2] == (size, size):
    return image
  out = jax.image.resize(image, (size, size, image.shape[2]), method='bicubic', antialias=True,
                         precision=_HIGHEST)
  return jnp.clip(out, 0.0, 1.0)


def make_example(item, *, stage: str, image_size: int, kernel_size: int, buffer: int,
                 condition: str = 'gt_down_up', condition_size: int = 128,
                 irm1_pair: str = 'degrade_then_resize', noise=None):
  """`pipeline.make_example` on the device, for one item of a `degrade_on='device'` batch:
  {'hq': uint8 [S, S, 3], 'degradation': params, 'id'} -> the stage's example in [-1, 1]."""
  hq = item['hq'].astype(jnp.float32) * (1.0 / 255.0)
  params = item['degradation']
  kw = dict(kernel_size=kernel_size, buffer=buffer, noise=noise)
  if stage == 'tem':
    gt = jnp.where(params['flip'], hq[:, ::-1], hq)
    example = {'gt': resize(gt, image_size)}
  elif stage == 'irm1':
    if irm1_pair == 'degrade_then_resize':
      lq, gt = degrade(params, hq, **kw)
      lq, gt = resize(lq, image_size), resize(gt, image_size)
    else:
      lq, gt = degrade(params, resize(hq, image_size), **kw)
    example = {'cond': lq, 'gt': gt}
  elif stage == 'irm2':
    lq, gt = degrade(params, hq, **kw)
    gt = resize(gt, image_size)
    if condition == 'gt_down_up':
      cond = resize(resize(gt, condition_size), image_size)
    else:
      cond = resize(lq, image_size)
    example = {'cond': cond, 'gt': gt}
  else:
    raise ValueError(f'stage={stage!r}; expected irm1, irm2 or tem')
  example = {k: v * 2.0 - 1.0 for k, v in example.items()}
  example['id'] = item['id']
  return example


def make_examples(batch, **options):
  """`make_example` over a batch (the leading axis of every leaf of `batch`)."""
  return jax.vmap(lambda item: make_example(item, **options))(batch)


def options_from_config(config) -> dict:
  """make_example's options for a stage config (`config.data`)."""
  data = config.data
  size = data.source_size
  if config.stage == 'irm1' and data.irm1_pair == 'resize_then_degrade':
    size = data.image_size
  return dict(stage=config.stage, image_size=data.image_size,
              kernel_size=int(data.degradation.kernel_size),
              buffer=buffer_size(size, data.degradation.downsample_range[0]),
              condition=data.condition, condition_size=data.condition_size,
              irm1_pair=data.irm1_pair)
