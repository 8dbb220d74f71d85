"""Faces and their five landmarks in a photo: MTCNN (Zhang et al. 2016) in JAX and numpy, with
the P-, R- and O-net weights that ship inside the `mtcnn` wheel (1.0.0, MIT), read without
TensorFlow and without a download.

The detection steps are those of that package's `MTCNN.detect_faces` (its stages and
utils/bboxes.py), so that its output is the reference: an image pyramid (TensorFlow's area
resize), PNet on every level, its non-maximum suppression, RNet and ONet on crops resampled as
`tf.image.crop_and_resize` does, and the package's own suppression rule (a box goes when it
overlaps any higher-scoring box, kept or not). Boxes are clipped to the photo; landmarks are not.
"""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax import errors

# The landmark order of every row: left eye, right eye, nose, mouth left, mouth right (the
# package's 'left' is the left of the picture).
LANDMARKS = ('left_eye', 'right_eye', 'nose', 'mouth_left', 'mouth_right')


def _weights_folder() -> pathlib.Path:
  spec = importlib.util.find_spec('mtcnn')  # finds the package without importing it (no TF)
  if spec is None or not spec.submodule_search_locations:
    raise errors.MissingExtra(
        "the face detector's weights come from the `mtcnn` package, which is not installed: "
        "pip install 'diffbfr_jax[photos]' (or `make demo`, which installs that extra)")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / 'assets' / 'weights'


@functools.cache
def load_weights() -> dict:
  """{'pnet' | 'rnet' | 'onet': [arrays in Keras' get_weights order]} from the installed wheel."""
  try:
    import joblib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.MissingExtra(f"reading mtcnn's weights needs {e.name}: pip install "
                              "'diffbfr_jax[photos]'") from e
  folder = _weights_folder()
  weights = {}
  for name, count in (('pnet', 13), ('rnet', 16), ('onet', 21)):
    path = folder / f'{name}.lz4'
    try:
      arrays = joblib.load(path)
    except ImportError as e:  # joblib reads .lz4 files through the lz4 package
      raise errors.MissingExtra(f"reading {path} needs the lz4 package: pip install "
                                "'diffbfr_jax[photos]'") from e
    except (OSError, ValueError, EOFError) as e:
      raise errors.NotFound(f'{path}: cannot read the detector weights ({e})') from e
    if len(arrays) != count:
      raise errors.FormatError(f'{path}: {len(arrays)} arrays, expected {count} (mtcnn 1.0.0)')
    weights[name] = [jnp.asarray(a, jnp.float32) for a in arrays]
  return weights


# --- the three networks (Keras layers: VALID convolutions, PReLU, max pooling) -----------------

def _conv(x, kernel, bias):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   precision=jax.lax.Precision.HIGHEST)
  return y + bias


def _prelu(x, alpha):
  return jnp.where(x >= 0, x, alpha * x)


def _pool(x, size, padding):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, 2, 2, 1),
                               padding)


def _dense(x, kernel, bias):
  return jnp.dot(x, kernel, precision=jax.lax.Precision.HIGHEST) + bias


def _flatten(x):
  # Keras' Permute((2, 1, 3)) then Flatten: width-major order.
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


@jax.jit
def pnet(w, x):
  """[1, H, W, 3] on [-1, 1] -> (box offsets [1, h, w, 4], face probability [1, h, w])."""
  x = _pool(_prelu(_conv(x, w[0], w[1]), w[2]), 2, 'SAME')
  x = _prelu(_conv(x, w[3], w[4]), w[5])
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  return _conv(x, w[9], w[10]), jax.nn.softmax(_conv(x, w[11], w[12]), axis=-1)[..., 1]


@jax.jit
def rnet(w, x):
  """[N, 24, 24, 3] -> (box offsets [N, 4], face probability [N])."""
  x = _pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, 'SAME')
  x = _pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, 'VALID')
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  x = _prelu(_dense(_flatten(x), w[9], w[10]), w[11])
  return _dense(x, w[12], w[13]), jax.nn.softmax(_dense(x, w[14], w[15]), axis=-1)[:, 1]


@jax.jit
def onet(w, x):
  """[N, 48, 48, 3] -> (box offsets [N, 4], landmarks [N, 10] (5 x then 5 y, on the crop's
  unit square), face probability [N])."""
  x = _pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, 'SAME')
  x = _pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, 'VALID')
  x = _pool(_prelu(_conv(x, w[6], w[7]), w[8]), 2, 'SAME')
  x = _prelu(_conv(x, w[9], w[10]), w[11])
  x = _prelu(_dense(_flatten(x), w[12], w[13]), w[14])
  return (_dense(x, w[15], w[16]), _dense(x, w[17], w[18]),
          jax.nn.softmax(_dense(x, w[19], w[20]), axis=-1)[:, 1])


def _batched(net, weights, crops):
  """`net` over crops padded to a power of two (a few compiles for any number of crops)."""
  n = crops.shape[0]
  size = 1 << max(n - 1, 0).bit_length()
  padded = np.zeros((size,) + crops.shape[1:], np.float32)
  padded[:n] = crops
  return [np.asarray(o)[:n] for o in net(weights, jnp.asarray(padded))]


# --- image resampling as TensorFlow does it ------------------------------------------------------

def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """TensorFlow's ResizeArea along one axis: output i averages input [i s, (i + 1) s), s =
  n_in / n_out, each input pixel weighted by its overlap."""
  s = n_in / n_out
  m = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    lo, hi = i * s, (i + 1) * s
    for j in range(int(np.floor(lo)), int(np.ceil(hi))):
      m[i, min(j, n_in - 1)] += min(j + 1, hi) - max(j, lo)
  return m / s


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[H, W, C] -> [height, width, C], as tf.image.resize(..., method='area')."""
  rows = _area_matrix(image.shape[0], height)
  cols = _area_matrix(image.shape[1], width)
  h, w, c = image.shape
  tall = (rows @ image.reshape(h, w * c)).reshape(height, w, c)
  return (cols @ tall).astype(np.float32)


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """tf.image.crop_and_resize of boxes [N, 4] (y1, x1, y2, x2 as fractions of the image) to
  size x size, bilinear, 0 outside the image."""
  h, w = image.shape[:2]
  t = np.arange(size) / (size - 1)
  ys = boxes[:, 0:1] * (h - 1) + t * (boxes[:, 2:3] - boxes[:, 0:1]) * (h - 1)  # [N, size]
  xs = boxes[:, 1:2] * (w - 1) + t * (boxes[:, 3:4] - boxes[:, 1:2]) * (w - 1)
  y0, x0 = np.floor(ys), np.floor(xs)
  fy, fx = (ys - y0)[:, :, None, None], (xs - x0)[:, None, :, None]
  y0i, y1i = np.clip(y0, 0, h - 1).astype(int), np.clip(np.ceil(ys), 0, h - 1).astype(int)
  x0i, x1i = np.clip(x0, 0, w - 1).astype(int), np.clip(np.ceil(xs), 0, w - 1).astype(int)

  def at(yi, xi):
    return image[yi[:, :, None], xi[:, None, :]]

  top = at(y0i, x0i) * (1 - fx) + at(y0i, x1i) * fx
  bottom = at(y1i, x0i) * (1 - fx) + at(y1i, x1i) * fx
  out = top * (1 - fy) + bottom * fy
  inside = ((ys >= 0) & (ys <= h - 1))[:, :, None] & ((xs >= 0) & (xs <= w - 1))[:, None, :]
  return np.where(inside[..., None], out, 0.0).astype(np.float32)


# --- boxes: rows [x1, y1, x2, y2, score, (10 landmarks)] ------------------------------------------

def _overlap(boxes: np.ndarray, method: str) -> np.ndarray:
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  lo = np.maximum(boxes[None, :, :2], boxes[:, None, :2])
  hi = np.minimum(boxes[None, :, 2:4], boxes[:, None, 2:4])
  inter = np.prod(np.maximum(0, hi - lo), axis=-1)
  if method == 'union':
    return inter / (area[:, None] + area[None, :] - inter)
  return inter / np.minimum(area[:, None], area[None, :])


def _by_score(rows: np.ndarray) -> np.ndarray:
  return rows[np.argsort(rows[:, 4])[::-1]]


def suppress(rows: np.ndarray, threshold: float, method: str = 'union',
             sort: bool = True) -> np.ndarray:
  """The package's suppression: in score order, a row is dropped when it overlaps any row before
  it by more than `threshold` (whether or not that row was kept)."""
  if len(rows) == 0:
    return rows
  if sort:
    rows = _by_score(rows)
  over = np.triu(_overlap(rows[:, :4], method) > threshold, k=1)
  return rows[~over.any(axis=0)]


def _square(rows: np.ndarray) -> np.ndarray:
  rows = rows.copy()
  w, h = rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]
  side = np.maximum(w, h)
  rows[:, 0] += w * 0.5 - side * 0.5
  rows[:, 1] += h * 0.5 - side * 0.5
  rows[:, 2], rows[:, 3] = rows[:, 0] + side, rows[:, 1] + side
  return rows


def _refine(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  rows = rows.copy()
  w, h = rows[:, 2] - rows[:, 0] + 1, rows[:, 3] - rows[:, 1] + 1
  rows[:, :4] += offsets * np.stack([w, h, w, h], axis=-1)
  return rows


def _crops(image, rows, size):
  h, w = image.shape[:2]
  boxes = rows[:, [1, 0, 3, 2]] / np.array([h, w, h, w])
  return crop_and_resize(image, boxes, size)


def scales(height: int, width: int, min_face_size: float, factor: float = 0.709) -> np.ndarray:
  """The pyramid's scales (the package's build_scale_pyramid, min_size 12)."""
  count = round(-((np.log(min(height, width) / 12) / np.log(factor)) + 1))
  return 12 / min_face_size * factor ** np.arange(max(count, 0))


def detect(rgb: np.ndarray, min_face_size: float = 20, thresholds=(0.6, 0.7, 0.8),
           weights=None) -> np.ndarray:
  """Faces in an RGB photo [H, W, 3] (uint8 or 0..255): rows [x1, y1, x2, y2, score, then the
  five landmarks' x, then their y] in pixels, in ONet's score order (highest first)."""
  weights = weights or load_weights()
  image = (np.asarray(rgb, np.float32) - 127.5) / 128
  h, w = image.shape[:2]
  found = []
  for scale in scales(h, w, min_face_size):
    level = resize_area(image, int(h * scale), int(w * scale))
    if min(level.shape[:2]) < 11:  # PNet's output would be empty (TensorFlow: an error)
      continue
    offsets, prob = pnet(weights['pnet'], jnp.asarray(level[None]))
    offsets, prob = np.asarray(offsets[0]), np.asarray(prob[0])
    ys, xs = np.nonzero(prob > thresholds[0])
    if len(ys) == 0:
      continue
    x1, y1 = xs * 2 + 1.0, ys * 2 + 1.0
    x2, y2 = xs * 2 + 12.0, ys * 2 + 12.0
    reg = offsets[ys, xs]
    rows = np.stack([x1 + reg[:, 0] * 11, y1 + reg[:, 1] * 11, x2 + reg[:, 2] * 11,
                     y2 + reg[:, 3] * 11, prob[ys, xs]], axis=1)
    rows = _by_score(rows)
    rows[:, :4] /= scale
    found.append(suppress(rows, 0.5, sort=False))
  rows = np.concatenate(found) if found else np.zeros((0, 5))
  if len(rows) == 0:
    return np.zeros((0, 15))
  rows = _square(suppress(rows, 0.7))

  offsets, prob = _batched(rnet, weights['rnet'], _crops(image, rows, 24))
  rows = _refine(np.concatenate([rows[:, :4], prob[:, None]], axis=1), offsets)
  rows = rows[rows[:, 4] > thresholds[1]]
  if len(rows) == 0:
    return np.zeros((0, 15))
  rows = _square(suppress(rows, 0.7))

  offsets, marks, prob = _batched(onet, weights['onet'], _crops(image, rows, 48))
  bw, bh = rows[:, 2:3] - rows[:, 0:1] + 1, rows[:, 3:4] - rows[:, 1:2] + 1
  marks = np.concatenate([bw * marks[:, :5] + rows[:, 0:1] - 1,
                          bh * marks[:, 5:] + rows[:, 1:2] - 1], axis=1)
  rows = _refine(np.concatenate([rows[:, :4], prob[:, None]], axis=1), offsets)
  rows = np.concatenate([rows, marks], axis=1)
  rows = rows[rows[:, 4] > thresholds[2]]
  rows = suppress(rows, 0.7, method='min')
  rows[:, [0, 2]] = np.clip(rows[:, [0, 2]], 0, w - 1)
  rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, h - 1)
  return rows


def landmarks(row: np.ndarray) -> np.ndarray:
  """A detection row's five landmarks as [5, 2] (x, y), in LANDMARKS order."""
  return np.stack([row[5:10], row[10:15]], axis=1)
