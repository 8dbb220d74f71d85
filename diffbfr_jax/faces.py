"""Faces as the jobs read and write them: each input read at the cascade's size, keyed by its
name (so its result does not depend on its batch or host), named for its output, and saved as
the 8-bit PNGs the restore, clean, sample and demo jobs write."""

import logging
import pathlib

import jax
import numpy as np
from PIL import Image

from diffbfr_jax.data import sources


def output_names(files, num_samples: int) -> dict:
  """{(input name, sample): relative output path}: `sources.output_names` (the same relative
  name with .png; a.jpg and a.png become a_jpg.png and a_png.png), with `_sample<k>` before the
  suffix when there are several samples."""
  names = {}
  for name, out in sources.output_names(files).items():
    base = out.removesuffix('.png')
    for k in range(num_samples):
      names[name, k] = out if num_samples == 1 else f'{base}_sample{k}.png'
  return names


def read_face(inputs: sources.ImageSet, name: str, size: int):
  """(RGB uint8 [size, size, 3], resized) of input `name` as the cascade reads it: decoded to RGB
  8-bit and, when it is not size x size, resized (bicubic, with a logged note). Raises
  errors.DecodeError or OSError naming it if it cannot be read."""
  return to_size(inputs.decode(name), name, size)


def to_size(rgb, name: str, size: int):
  """(rgb at size x size, resized): `read_face` for an image already decoded."""
  if rgb.shape[:2] == (size, size):
    return rgb, False
  logging.info('%s: %dx%d, resized to %dx%d', name, rgb.shape[1], rgb.shape[0], size, size)
  return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC)), True


def to_uint8(images) -> np.ndarray:
  """Images on [-1, 1] -> uint8 0..255, as the restored PNGs hold them."""
  return np.round((np.clip(np.asarray(images), -1, 1) + 1) * 127.5).astype(np.uint8)


def save_png(path: pathlib.Path, image) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(to_uint8(image)).save(path)


@jax.jit
def face_keys(seed, name_hashes, samples):
  """Each face's key: (seed, CRC32 of its relative name, sample index), whatever its batch."""
  def one(h, k):
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), h), k)
  return jax.vmap(one)(name_hashes, samples)
