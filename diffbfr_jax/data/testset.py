"""A reproducible LQ/GT test set from a folder of HQ faces (the make_test_set job).

The CelebA-Test protocol: every HQ face (centre-cropped, resized to `size`) is degraded by the
training degradation model with a seed fixed by (`seed`, the file's relative path), so the same
folder and seed always give the same set, and adding a file changes no other. Writes
`OUT/gt/<name>.png`, `OUT/lq/<name>.png` and `OUT/manifest.json` with every image's parameters;
<name> is the relative path with .png (`sources.output_names`: a.jpg and a.png become a_jpg.png
and a_png.png), so every input has its own pair of files.
"""

import json
import logging
import pathlib
import zlib

import numpy as np
from PIL import Image
import tensorflow as tf

from diffbfr_jax import errors
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.data import degradations
from diffbfr_jax.data import sources


def image_seed(seed: int, name: str) -> list[int]:
  """The stateless seed of one test image: (seed, CRC32 of its relative path)."""
  return [int(seed), zlib.crc32(name.encode('utf-8'))]


def write_test_set(input_dir: str, output_dir: str, *, size: int = 512, seed: int = 0,
                   overwrite: bool = False, degradation=None, data_dir: str = '') -> dict:
  """Writes the test set and returns the manifest (also written as manifest.json)."""
  if not input_dir or not output_dir:
    raise ConfigError('config.test_set.input_dir and config.test_set.output_dir must both be set '
                     f'(got {input_dir!r} and {output_dir!r})')
  source = sources.ImageSetSource(sources.image_set(input_dir, data_dir=data_dir), size)
  out = pathlib.Path(output_dir)
  manifest_path = out / 'manifest.json'
  if manifest_path.exists() and not overwrite:
    raise errors.Exists(f'{manifest_path} exists: a test set is already there. Choose another '
                          'output_dir or set config.test_set.overwrite=True.')
  degradation = dict(degradation or {})
  outputs = sources.output_names(source.files)
  entries, skipped = [], []
  for index in range(len(source)):
    name = source.name(index)
    try:
      face = source.load(index)
    except errors.DecodeError as e:
      logging.warning('Skipping an undecodable image: %s', e)
      skipped.append({'name': name, 'error': str(e)})
      continue
    key = tf.constant(image_seed(seed, name), tf.int64)
    lq, gt, params = degradations.degrade(key, tf.image.convert_image_dtype(face, tf.float32),
                                          **degradation)
    stem = outputs[name]
    for folder, image in (('lq', lq), ('gt', gt)):
      path = out / folder / stem
      path.parent.mkdir(parents=True, exist_ok=True)
      pixels = np.clip(np.round(image.numpy() * 255.0), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(path)
    entries.append({'name': name, 'lq': f'lq/{stem}', 'gt': f'gt/{stem}',
                    'seed': image_seed(seed, name), 'params': degradations.params_to_json(params)})
    if (index + 1) % 100 == 0:
      logging.info('Test set: %d / %d images', index + 1, len(source))
  manifest = {'input_dir': str(input_dir), 'size': size, 'seed': seed,
              'degradation': degradation, 'images': entries, 'skipped': skipped}
  out.mkdir(parents=True, exist_ok=True)
  manifest_path.write_text(json.dumps(manifest, indent=1))
  logging.info('Wrote %d LQ/GT pairs to %s (%d undecodable files skipped)', len(entries), out,
               len(skipped))
  return manifest

