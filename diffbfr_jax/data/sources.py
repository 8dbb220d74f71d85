"""Where HQ faces come from: a folder of images, a TFDS dataset, or the faces bundled with
scikit-image. Every source hands out RGB uint8 images of one square size by index.

Decodable odd files (gray, RGBA, palette, 16-bit, EXIF-rotated JPEGs, the first frame of a GIF)
become RGB uint8 the way OpenCV's `imread(IMREAD_COLOR)` reads them for the PyTorch peers (alpha
dropped, 16 bits shifted to 8, EXIF orientation applied); undecodable ones raise `errors.DecodeError`
naming the file, and the pipeline skips them.

A folder is listed once per real directory (a symlink loop or a second link to a listed folder
is not entered again), and every file under it that is not read is named in the log with why.
"""

import collections
import json
import logging
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from diffbfr_jax import errors
from diffbfr_jax.data import image_files
from diffbfr_jax.errors import ConfigError




class ImageSource:
  """Indexable HQ faces at `size` x `size`. Subclasses define `__len__`, `name` and `_read`."""
  size: int

  def __len__(self) -> int:
    raise NotImplementedError

  def name(self, index: int) -> str:
    raise NotImplementedError

  def _read(self, index: int) -> np.ndarray:
    raise NotImplementedError

  def load(self, index: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]; raises `errors.DecodeError` for an undecodable item."""
    return image_files.center_crop_resize(self._read(index), self.size)


def output_names(files, suffix: str = '.png') -> dict:
  """{relative input name: relative output name}: the same name with `suffix`; inputs that would
  share one (a.jpg and a.png) each keep their own suffix in it (a_jpg.png, a_png.png). Every job
  that writes one file per input names it so. Raises a UserError naming the inputs if two would
  still share an output (a.jpg, a.png and a_jpg.png)."""
  by_stem = collections.defaultdict(list)
  for name in files:
    by_stem[str(pathlib.PurePosixPath(name).with_suffix(''))].append(name)
  names, owners = {}, {}
  for stem, group in by_stem.items():
    for name in group:
      base = stem if len(group) == 1 else f'{stem}_{pathlib.PurePosixPath(name).suffix[1:]}'
      out = base + suffix
      if out in owners:
        raise errors.UserError(
            f'{owners[out]!r} and {name!r} would both be written to {out!r}; rename one of them')
      names[name], owners[out] = out, name
  return names


class ImageSet:
  """Named image files read whole, as bytes: what the restore and evaluate jobs read. Made by
  `image_set` from a folder, or from one image field of a prepared TFDS dataset."""

  def __init__(self, label: str, names: list, read, where):
    self.label, self.names = label, names  # names: sorted relative paths
    self._read, self._where = read, where

  def read_bytes(self, name: str) -> bytes:
    return self._read(name)

  def where(self, name: str) -> str:
    """Where `name` is, for messages: its path, or the dataset and field."""
    return self._where(name)

  def decode(self, name: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] of `name`; `errors.DecodeError` (or OSError) naming it if impossible."""
    return image_files.decode_rgb(self.read_bytes(name), self.where(name))

  def subset(self, names) -> 'ImageSet':
    """The same set restricted to `names` (each must be in it): e.g. the files one run wrote
    into a folder that may hold others."""
    missing = sorted(set(names) - set(self.names))
    if missing:
      raise errors.NotFound(f'{self.label}: {len(missing)} expected images missing (first: '
                            f'{missing[0]!r})')
    return ImageSet(self.label, sorted(names), self._read, self._where)


TFDS_PREFIX = 'tfds:'


def image_set(spec, *, data_dir: str = '') -> ImageSet:
  """A folder (nested folders, every image suffix), or `tfds:NAME:FIELD[:SPLIT]`: the images in
  FIELD of a prepared TFDS dataset under `data_dir`, named by its records' `name` (e.g.
  `tfds:face_pairs:lq`, split `test` unless given), read as the PNG bytes the dataset stores."""
  spec = str(spec)
  if not spec.startswith(TFDS_PREFIX):
    root = pathlib.Path(spec)
    return ImageSet(spec, image_files.list_images(root), lambda n: (root / n).read_bytes(),
                    lambda n: str(root / n))
  parts = spec[len(TFDS_PREFIX):].split(':')
  if len(parts) not in (2, 3) or not all(parts):
    raise ConfigError(f'{spec!r}: expected tfds:NAME:FIELD or tfds:NAME:FIELD:SPLIT, e.g. '
                      'tfds:face_pairs:lq')
  name, field, split = parts[0], parts[1], parts[2] if len(parts) == 3 else 'test'
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import prepared  # pylint: disable=g-import-not-at-top,unused-import

  data_dir = data_dir and os.path.abspath(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
    features = builder.info.features
  except Exception as e:  # TFDS raises many kinds; all mean the same to a user
    raise errors.NotFound(f'{spec!r}: TFDS dataset {name!r} (data_dir {data_dir!r}) cannot be '
                          f'opened: {e}') from e
  images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  if field not in images or 'name' not in features:
    raise ConfigError(f'{spec!r}: {name!r} has image fields {images}' +
                      ('' if 'name' in features else ' and no name field'))
  try:
    records = builder.as_data_source(split=split, decoders={k: tfds.decode.SkipDecoding()
                                                            for k in images})
  except Exception as e:  # pylint: disable=broad-except
    raise errors.NotFound(f'{spec!r}: split {split!r} of {name!r} under '
                          f'{builder.data_dir} cannot be read: {e}') from e
  index = {n: i for i, n in enumerate(record_names(builder, split, records))}
  if not index:
    raise errors.NotFound(f'{spec!r}: split {split!r} of {name!r} is empty')
  return ImageSet(spec, sorted(index), lambda n: records[index[n]][field],
                  lambda n: f'{name} {split} {field} {n}')


def record_names(builder, split: str, records) -> list:
  """Every record's `name`, in record order, from the index kept beside the prepared dataset
  (`names-SPLIT.json`); the first use reads every record once (image bytes included: a record is
  read whole) and writes the index, so later runs read only it."""
  from etils import epath  # pylint: disable=g-import-not-at-top (TFDS's own path library)

  path = epath.Path(builder.data_dir) / f'names-{split}.json'
  info = builder.info.splits[split]
  stamp = {'num_examples': int(info.num_examples), 'num_bytes': int(info.num_bytes)}
  try:
    saved = json.loads(path.read_text())
    if saved['stamp'] == stamp and len(saved['names']) == len(records):
      return saved['names']
  except (OSError, ValueError, KeyError, TypeError):
    pass
  names = []
  for i in range(len(records)):
    n = records[i]['name']
    names.append(n.decode() if isinstance(n, bytes) else str(n))
  try:
    tmp = path.parent / f'.{path.name}.tmp'
    tmp.write_text(json.dumps({'stamp': stamp, 'names': names}))
    tmp.rename(path)
  except OSError as e:  # a read-only dataset: right, only slower next time
    logging.warning('%s: the names index is not written (%s); the next run reads every record '
                    'again', path, e)
  return names


class ImageSetSource(ImageSource):
  """The images of an `ImageSet` (a folder or a prepared dataset's field), centre-cropped and
  resized to `size`, by index."""

  def __init__(self, images: ImageSet, size: int):
    self.images, self.files, self.size = images, images.names, size

  def __len__(self):
    return len(self.files)

  def name(self, index):
    return self.files[index]

  def _read(self, index):
    name = self.files[index]
    try:
      return self.images.decode(name)
    except OSError as e:
      raise errors.DecodeError(f'{self.images.where(name)}: cannot read ({e})') from None


class FolderSource(ImageSetSource):
  """Every image under a folder (PNG, JPEG, ...; nested folders; any size)."""

  def __init__(self, folder, size: int):
    super().__init__(image_set(folder), size)


class ArraySource(ImageSource):
  """Images already in memory (uint8 [N, H, W, 3] or a list of such arrays)."""

  def __init__(self, images: Sequence[np.ndarray], names: Sequence[str], size: int):
    if len(images) != len(names) or not len(images):
      raise ValueError(f'ArraySource needs as many names as images, and at least one; got '
                       f'{len(images)} images and {len(names)} names')
    self.images, self.names, self.size = images, list(names), size

  def __len__(self):
    return len(self.images)

  def name(self, index):
    return self.names[index]

  def _read(self, index):
    return np.asarray(self.images[index], np.uint8)


# The bundled faces: skimage's LFW subset (the first 100 of its 200 images are 25x25 gray faces)
# and the astronaut portrait. A fixed split: LFW faces 0-79 train; 80-99 and the astronaut test.
BUNDLED_TRAIN = range(0, 80)
BUNDLED_TEST = range(80, 100)


def bundled_faces(split: str, size: int) -> ArraySource:
  """The faces that ship with scikit-image, for demos and tests (no download)."""
  from skimage import data  # pylint: disable=g-import-not-at-top

  faces = (np.asarray(data.lfw_subset()[:100]) * 255).round().astype(np.uint8)
  rgb = np.repeat(faces[..., None], 3, axis=-1)
  if split == 'train':
    return ArraySource([rgb[i] for i in BUNDLED_TRAIN], [f'lfw_{i:03d}' for i in BUNDLED_TRAIN],
                       size)
  if split == 'test':
    images = [rgb[i] for i in BUNDLED_TEST] + [data.astronaut()]
    return ArraySource(images, [f'lfw_{i:03d}' for i in BUNDLED_TEST] + ['astronaut'], size)
  raise ValueError(f"bundled faces: split={split!r}; expected 'train' or 'test'")


def write_bundled_faces(split: str, size: int, folder) -> pathlib.Path:
  """The bundled faces of `split` at `size`, written as <folder>/<name>.png (once; a folder
  that has them already is kept). A folder of them reads as the bundled source does."""
  folder = pathlib.Path(folder)
  faces = bundled_faces(split, size)
  for index in range(len(faces)):
    path = folder / f'{faces.name(index)}.png'
    if not path.exists():
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(faces.load(index)).save(path)
  return folder


class TFDSSource(ImageSource):
  """A TFDS dataset with random access (prepared in the array_record format).

  For datasets that need a manual download (e.g. `celeb_a_hq`), `manual_dir` is where the
  downloaded files are; the first use prepares the dataset under `data_dir`.
  """

  def __init__(self, name: str, split: str, size: int, *, data_dir: str = '',
               manual_dir: str = '', image_key: str = 'image'):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from diffbfr_jax.data import prepared  # pylint: disable=g-import-not-at-top,unused-import

    # Relative folders are taken from where the command runs (TFDS would not always do so).
    manual_dir, data_dir = manual_dir and os.path.abspath(manual_dir), data_dir and \
        os.path.abspath(data_dir)
    prepare = {}
    if manual_dir:
      prepare['download_config'] = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
      self.records = tfds.data_source(
          name, split=split, data_dir=data_dir or None,
          builder_kwargs={'file_format': 'array_record'}, download_and_prepare_kwargs=prepare)
    except Exception as e:  # TFDS raises many kinds; all mean the same to a user
      raise errors.NotFound(f'TFDS dataset {name!r} (split {split!r}, data_dir {data_dir!r}, '
                              f'manual_dir {manual_dir!r}) cannot be opened: {e}') from e
    if not len(self.records):
      raise errors.NotFound(f'TFDS dataset {name!r} split {split!r} is empty')
    self.dataset_name, self.image_key, self.size = name, image_key, size

  def __len__(self):
    return len(self.records)

  def name(self, index):
    name = self.records[index].get('name')  # the prepared datasets keep each file's path
    label = f'{self.dataset_name}[{index}]'
    return f'{label} {name.decode() if isinstance(name, bytes) else name}' if name else label

  def _read(self, index):
    image = np.asarray(self.records[index][self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def make_source(kind: str, size: int, *, path: str = '', split: str = 'train',
                tfds_name: str = '', data_dir: str = '', manual_dir: str = '') -> ImageSource:
  """`make_source(size=..., **config.data.source)`."""
  if kind == 'folder':
    if not path:
      raise ConfigError("config.data.source.path is empty: give the folder of HQ faces "
                       "(kind='folder')")
    return FolderSource(path, size)
  if kind == 'tfds':
    if not tfds_name:
      raise ConfigError("config.data.source.tfds_name is empty (kind='tfds'), e.g. "
                        "'celeb_a_hq/512'")
    return TFDSSource(tfds_name, split, size, data_dir=data_dir, manual_dir=manual_dir)
  if kind == 'bundled':
    return bundled_faces(split, size)
  raise ConfigError(
      f"config.data.source.kind={kind!r}; expected 'folder' (with --config.data.source.path), "
      "'tfds' (with --config.data.source.tfds_name) or 'bundled' (scikit-image's faces, as the "
      ":demo presets use)")
