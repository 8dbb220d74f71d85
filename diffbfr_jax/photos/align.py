"""A face's crop aligned as FFHQ's are, and its restoration pasted back into the photo.

Coordinates are in pixels with integer values at pixel centres (OpenCV's and PIL's convention).
A transform is a 2 x 3 matrix M taking a photo point (x, y, 1) to a crop point; a crop is
sampled bilinearly at M's inverse of each of its pixels, and a sample that falls outside the
photo takes a constant grey, (135, 133, 132) on 0..255 (facexlib's FaceRestoreHelper, which
GFPGAN, CodeFormer and DifFace use, warps the same way).
"""

import numpy as np
from PIL import Image
from scipy import ndimage

# The five points of an FFHQ-aligned 512 x 512 face (left eye, right eye, nose, mouth left,
# mouth right, the left being the picture's), facexlib's FaceRestoreHelper template.
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]])
BORDER = (135.0, 133.0, 132.0)


def template(size: int) -> np.ndarray:
  """The FFHQ five-point template for a size x size crop."""
  return FFHQ_512 * (size / 512)


def fit_similarity(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """The similarity (rotation, uniform scale, shift) that takes `points` [N, 2] closest to
  `targets` [N, 2] in least squares, as a 2 x 3 matrix [[a, -b, tx], [b, a, ty]].

  facexlib fits with OpenCV's LMEDS (a robust fit that may leave a landmark out); here every
  landmark counts, the closed-form least-squares fit."""
  points, targets = np.asarray(points, np.float64), np.asarray(targets, np.float64)
  x, y = points[:, 0], points[:, 1]
  one, zero = np.ones_like(x), np.zeros_like(x)
  design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
  (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([targets[:, 0], targets[:, 1]]),
                                       rcond=None)
  return np.array([[a, -b, tx], [b, a, ty]])


def invert(matrix: np.ndarray) -> np.ndarray:
  """The inverse of a 2 x 3 affine transform."""
  linear = np.linalg.inv(matrix[:, :2])
  return np.concatenate([linear, -linear @ matrix[:, 2:]], axis=1)


def warp(image: np.ndarray, matrix: np.ndarray, height: int, width: int,
         border=BORDER, origin=(0, 0)) -> np.ndarray:
  """out[y, x] = image at invert(matrix) (x + origin x, y + origin y), bilinear, float32; a
  neighbour outside `image` counts as `border` (a value per channel, or a number)."""
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None]
  inverse = invert(matrix)
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  xs, ys = xs + origin[0], ys + origin[1]
  sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
  sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
  x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
  fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
  h, w = image.shape[:2]
  fill = np.broadcast_to(np.asarray(border, np.float32), (image.shape[2],))

  def at(yi, xi):
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    values = image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return np.where(inside[..., None], values, fill)

  top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
  bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
  return (top * (1 - fy) + bottom * fy).astype(np.float32)


def upsample(rgb: np.ndarray, factor: int) -> np.ndarray:
  """The whole photo `factor` times larger (Lanczos, PIL), uint8."""
  if factor == 1:
    return np.asarray(rgb, np.uint8)
  h, w = rgb.shape[:2]
  return np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).resize(
      (w * factor, h * factor), Image.Resampling.LANCZOS))


def to_upsampled(matrix: np.ndarray, factor: int) -> np.ndarray:
  """A photo -> crop transform as an upsampled photo -> crop transform: a photo pixel centre x
  is the upsampled photo's factor x + (factor - 1) / 2."""
  up = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1]])
  return (np.concatenate([matrix, [[0, 0, 1]]]) @ np.linalg.inv(up))[:2]


def soft_mask(mask: np.ndarray, factor: int) -> np.ndarray:
  """facexlib's paste-back mask from the warped face square (1 inside, 0 outside): eroded by
  2 x factor pixels (the square's resampled border), then by 2 w, then blurred by a Gaussian of
  width 2 w + 1 (OpenCV's sigma for that width), w = sqrt(face area) // 20."""
  inner = ndimage.grey_erosion(mask, size=(2 * factor, 2 * factor), mode='nearest')
  edge = int(np.sum(inner) ** 0.5) // 20
  if edge == 0:
    return inner
  center = ndimage.grey_erosion(inner, size=(2 * edge, 2 * edge), mode='nearest')
  sigma = 0.3 * ((2 * edge + 1 - 1) * 0.5 - 1) + 0.8
  return ndimage.gaussian_filter(center, sigma, mode='nearest', truncate=edge / sigma)


def paste(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray, factor: int):
  """Pastes `face` (a restored crop on 0..255, [S, S, 3]) into `canvas` (the photo upsampled
  by `factor`, float32, changed in place) where `matrix` (photo -> crop) took it from. Returns
  the soft mask's box (x0, y0, x1, y1) in the canvas, or None when the face falls outside."""
  size = face.shape[0]
  to_crop = to_upsampled(matrix, factor)
  corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]])
  back = invert(to_crop)  # crop -> canvas
  spots = corners @ back.T
  h, w = canvas.shape[:2]
  margin = 2
  x0 = max(int(np.floor(spots[:, 0].min())) - margin, 0)
  y0 = max(int(np.floor(spots[:, 1].min())) - margin, 0)
  x1 = min(int(np.ceil(spots[:, 0].max())) + margin + 1, w)
  y1 = min(int(np.ceil(spots[:, 1].max())) + margin + 1, h)
  if x1 <= x0 or y1 <= y0:
    return None
  # The crop's pixels back in the canvas box: `warp` takes the crop -> canvas transform.
  pasted = warp(face, back, y1 - y0, x1 - x0, border=0.0, origin=(x0, y0))
  mask = warp(np.ones((size, size), np.float32), back, y1 - y0, x1 - x0, border=0.0,
              origin=(x0, y0))[..., 0]
  mask = soft_mask(mask, factor)[..., None]
  region = canvas[y0:y1, x0:x1]
  canvas[y0:y1, x0:x1] = mask * pasted + (1 - mask) * region
  return (x0, y0, x1, y1)
