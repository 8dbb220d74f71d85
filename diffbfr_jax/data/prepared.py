"""TFDS builders for face datasets kept as local files (FFHQ, CelebA-Test, any folder of faces),
which TFDS cannot download: prepared once from a folder, then read by name.

- `face_folder/512`: every image under the folder (nested folders, any size, PNG/JPEG/...),
  centre-cropped and resized to 512 as the training pipeline reads faces, stored as PNG with its
  relative path; split `train`. FFHQ's 70,000 PNGs, or any folder of HQ faces.
  `face_folder/512_raw`: the same faces stored as uncompressed uint8 (FFHQ: 70,000 x 768 KiB,
  about 55 GB), for the stages whose host would otherwise spend its time decoding PNGs.
- `face_pairs`: LQ/GT pairs, the folder holding `lq/` and `gt/` with the same relative names
  (the make_test_set job writes this layout; CelebA-Test's `celeba_512_validation_lq` and
  `celeba_512_validation` folders linked as `lq` and `gt`); both stored as they are; split `test`.

An undecodable file is left out and named in the log, as the folder source does. Prepare with
the `prepare` job (`configs/prepare.py`), or let the first training run prepare it
(`--config.data.source.manual_dir`). Importing this module registers the builders.
"""

import dataclasses
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from diffbfr_jax import errors
from diffbfr_jax.data import image_files

_HOW = ('Give the folder as the manual_dir (the prepare job\'s --config.prepare.manual_dir, or '
        '--config.data.source.manual_dir for training).')


@dataclasses.dataclass
class FaceFolderConfig(tfds.core.BuilderConfig):
  size: int = 512
  raw: bool = False  # store uncompressed uint8 pixels instead of PNG


class FaceFolder(tfds.core.GeneratorBasedBuilder):
  """HQ faces from a local folder, square, at the config's size."""
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = _HOW
  BUILDER_CONFIGS = [
      FaceFolderConfig(name='512', size=512,
                       description='centre-cropped and resized to 512x512, stored as PNG'),
      FaceFolderConfig(name='512_raw', size=512, raw=True,
                       description='centre-cropped and resized to 512x512, stored as '
                       'uncompressed uint8 (768 KiB a face; read about 10x faster than PNG)'),
  ]

  def _info(self):
    size = self.builder_config.size
    if self.builder_config.raw:
      image = tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8,
                                   encoding=tfds.features.Encoding.BYTES)
    else:
      image = tfds.features.Image(shape=(size, size, 3), encoding_format='png')
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': image,
            'name': tfds.features.Text(),  # the file's path relative to the folder
        }))

  def _split_generators(self, dl_manager):
    folder = pathlib.Path(dl_manager.manual_dir)
    return {'train': self._generate_examples(folder, image_files.list_images(folder))}

  def _generate_examples(self, folder, files):
    skipped = []
    for name in files:
      try:
        rgb = image_files.decode_rgb((folder / name).read_bytes(), str(folder / name))
      except errors.DecodeError as e:
        skipped.append(str(e))
        continue
      yield name, {'image': image_files.center_crop_resize(rgb, self.builder_config.size),
                   'name': name}
    if skipped:
      logging.warning('%s: %d file(s) left out: %s', folder, len(skipped), '; '.join(skipped))


class FacePairs(tfds.core.GeneratorBasedBuilder):
  """LQ/GT face pairs from a local folder holding `lq/` and `gt/` with the same names."""
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = _HOW

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            'lq': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
            'gt': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
            'name': tfds.features.Text(),  # the pair's path relative to lq/ and gt/
        }))

  def _split_generators(self, dl_manager):
    folder = pathlib.Path(dl_manager.manual_dir)
    lq, gt = image_files.list_images(folder / 'lq'), image_files.list_images(folder / 'gt')
    stem = lambda name: str(pathlib.PurePosixPath(name).with_suffix(''))
    gt_by_stem = {stem(n): n for n in gt}
    unpaired = [n for n in lq if stem(n) not in gt_by_stem]
    if unpaired or len(lq) != len(gt):
      missing = unpaired or sorted(set(gt_by_stem) - {stem(n) for n in lq})
      raise errors.NotFound(
          f'{folder}: lq/ has {len(lq)} images and gt/ {len(gt)}; not in both: '
          f'{", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}')
    pairs = [(n, gt_by_stem[stem(n)]) for n in lq]
    return {'test': self._generate_examples(folder, pairs)}

  def _generate_examples(self, folder, pairs):
    skipped = []
    for lq_name, gt_name in pairs:
      try:
        lq = image_files.decode_rgb((folder / 'lq' / lq_name).read_bytes(),
                                str(folder / 'lq' / lq_name))
        gt = image_files.decode_rgb((folder / 'gt' / gt_name).read_bytes(),
                                str(folder / 'gt' / gt_name))
      except errors.DecodeError as e:  # the pair is left out, as face_folder leaves a file out
        skipped.append(str(e))
        continue
      yield lq_name, {'lq': lq, 'gt': gt, 'name': lq_name}
    if skipped:
      logging.warning('%s: %d pair(s) left out: %s', folder, len(skipped), '; '.join(skipped))


def prepare(name: str, *, manual_dir: str, data_dir: str = ''):
  """Builds the dataset `name` (e.g. 'face_folder/512') from `manual_dir` in the array_record
  format under `data_dir` ('' = TFDS's default); returns its builder."""
  if not manual_dir or not pathlib.Path(manual_dir).is_dir():
    raise errors.NotFound(f'manual_dir {manual_dir!r} is not a folder: {_HOW}')
  # Relative folders are taken from where the command runs (TFDS would not always do so).
  manual_dir, data_dir = os.path.abspath(manual_dir), data_dir and os.path.abspath(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.NotFound(f'TFDS dataset {name!r}: {e}') from e
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder

