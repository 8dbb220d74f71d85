"""Image files as the whole package reads them: which files under a folder are images, and each
one decoded to RGB uint8 and cut to a centred square.

Decodable odd files (gray, RGBA, palette, 16-bit, EXIF-rotated JPEGs, the first frame of a GIF)
become RGB uint8 the way OpenCV's `imread(IMREAD_COLOR)` reads them for the PyTorch peers (alpha
dropped, 16 bits shifted to 8, EXIF orientation applied); undecodable ones raise
`errors.DecodeError` naming the file.

A folder is listed once per real directory (a symlink loop or a second link to a listed folder
is not entered again), and every file under it that is not read is named in the log with why.
"""

import collections
import io
import logging
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageOps

from diffbfr_jax import errors

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')


def decode_rgb(data: bytes, name: str) -> np.ndarray:
  """Bytes of an image file -> RGB uint8 [H, W, 3]; `DecodeError` naming `name` if impossible."""
  if not data:
    raise errors.DecodeError(f'{name}: empty file')
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()  # decode fully now, so a truncated file fails here
      img = ImageOps.exif_transpose(img)  # OpenCV's imread applies the EXIF orientation
      if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        # 16-bit gray: keep the high byte, as OpenCV's 8-bit read does.
        arr = (np.asarray(img, np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
      rgb = np.asarray(img.convert('RGB'), np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise errors.DecodeError(f'{name}: cannot decode ({type(e).__name__}: {e})') from None
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise errors.DecodeError(f'{name}: decoded to shape {rgb.shape}')
  return rgb


def center_crop_resize(rgb: np.ndarray, size: int) -> np.ndarray:
  """The largest centred square, resized to size x size (bicubic, antialiased when shrinking)."""
  h, w = rgb.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  square = rgb[top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(square)
  return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))


def list_images(folder) -> list[str]:
  """Image files under `folder`, nested folders included, as sorted relative POSIX paths.

  Symbolic links are followed, but every real directory is listed once, at its own place in the
  tree if it has one there (so a loop such as `loop -> .` adds nothing). A broken link with an
  image suffix is listed: like an empty file, it is an image that cannot be read, which every
  reader skips, names and counts. Every file that is not listed (another suffix, a hidden file,
  another broken link or special file, a folder reached twice) is named in one warning per
  reason.
  """
  root = pathlib.Path(folder)
  if not root.is_dir():
    raise errors.NotFound(f'image folder {str(root)!r} does not exist or is not a folder')
  own_tree = {os.path.realpath(d) for d, _, _ in os.walk(root)}  # real folders, no links taken
  visited = set()
  found = []
  ignored = collections.defaultdict(list)

  def visit(path: str, rel: str, via_link: bool):
    real = os.path.realpath(path)
    if real in visited or (via_link and real in own_tree):
      ignored['a folder already listed at its own path (a symlink to it or a loop)'].append(
          rel + '/')
      return
    visited.add(real)
    try:
      entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
      ignored[f'a folder that cannot be read ({type(e).__name__})'].append(rel + '/')
      return
    for entry in entries:
      name = f'{rel}/{entry.name}' if rel else entry.name
      if entry.is_dir(follow_symlinks=True):
        visit(entry.path, name, via_link or entry.is_symlink())
      elif entry.name.startswith('.'):
        ignored['a hidden file'].append(name)
      elif entry.is_symlink() and not os.path.exists(entry.path) and (
          entry.name.lower().endswith(IMAGE_SUFFIXES)):
        found.append(name)  # an image that cannot be read: skipped and counted where it is read
      elif not entry.is_file(follow_symlinks=True):
        ignored['a broken link or not a regular file'].append(name)
      elif entry.name.lower().endswith(IMAGE_SUFFIXES):
        found.append(name)
      else:
        ignored[f'not an image suffix ({", ".join(IMAGE_SUFFIXES)})'].append(name)

  visit(str(root), '', False)
  for why, names in sorted(ignored.items()):
    logging.warning('%s: %d file(s) not read, %s: %s', root, len(names), why, ', '.join(names))
  if not found:
    raise errors.NotFound(f'image folder {str(root)!r} holds no image files '
                          f'({", ".join(IMAGE_SUFFIXES)}), nested folders included')
  return sorted(found)
