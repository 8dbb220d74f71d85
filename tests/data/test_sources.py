"""Image sources: odd files decode the way OpenCV reads them, bad ones fail by name."""

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from diffbfr_jax import errors
from diffbfr_jax.data import image_files
from diffbfr_jax.data import sources

BAD = ['a/b/text.jpeg', 'a/truncated.png', 'corrupt.png', 'empty.jpg']


def test_folder_listing_is_nested_sorted_and_ignores_other_files(face_folder):
  assert image_files.list_images(face_folder) == sorted(
      ['a/b/deep.png', 'a/b/palette.png', 'a/gray.png', 'a/rgba.png', 'photo.jpg', 'rgb.png'] + BAD)


def test_missing_and_empty_folders_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    image_files.list_images(tmp_path / 'nowhere')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='empty.*holds no image files'):
    image_files.list_images(tmp_path / 'empty')


def test_odd_files_become_rgb_uint8(face_folder):
  rgb = np.asarray(Image.open(face_folder / 'rgb.png'))
  decode = lambda name: image_files.decode_rgb((face_folder / name).read_bytes(), name)
  np.testing.assert_array_equal(decode('rgb.png'), rgb)
  np.testing.assert_array_equal(decode('a/gray.png'), np.repeat(rgb[..., :1], 3, -1))
  np.testing.assert_array_equal(decode('a/rgba.png'), rgb)  # alpha dropped, as OpenCV does
  assert decode('a/b/palette.png').shape == (40, 30, 3)
  # 16-bit gray: value * 257 stored; OpenCV's 8-bit read keeps the high byte = value.
  np.testing.assert_array_equal(decode('a/b/deep.png'), np.repeat(rgb[..., :1], 3, -1))
  jpg = decode('photo.jpg')
  assert jpg.dtype == np.uint8 and np.abs(jpg.astype(int) - rgb).mean() < 12


@pytest.mark.parametrize('name', BAD)
def test_undecodable_files_raise_decode_error_naming_them(face_folder, name):
  with pytest.raises(errors.DecodeError, match=name.split('/')[-1]):
    sources.FolderSource(face_folder, 16).load(image_files.list_images(face_folder).index(name))


def test_center_crop_and_resize():
  wide = np.zeros((20, 40, 3), np.uint8)
  wide[:, 10:30] = 255  # the centred 20x20 square is all white
  out = image_files.center_crop_resize(wide, 8)
  assert out.shape == (8, 8, 3) and out.min() == 255
  same = image_files.center_crop_resize(wide[:, 10:30], 20)
  np.testing.assert_array_equal(same, wide[:, 10:30])


def test_bundled_faces_have_a_fixed_disjoint_split():
  train, test = sources.bundled_faces('train', 32), sources.bundled_faces('test', 32)
  assert (len(train), len(test)) == (80, 21)
  assert not set(train.names) & set(test.names)
  assert 'astronaut' in test.names
  face = train.load(0)
  assert face.shape == (32, 32, 3) and face.dtype == np.uint8
  np.testing.assert_array_equal(face[..., 0], face[..., 2])  # gray faces on 3 channels
  assert test.load(len(test) - 1).std(axis=-1).mean() > 1  # the astronaut is in colour


def test_make_source_explains_a_missing_choice(face_folder):
  with pytest.raises(ValueError, match=r"kind=''; expected 'folder' \(with --config.data"):
    sources.make_source('', 32)
  with pytest.raises(ValueError, match='source.path is empty'):
    sources.make_source('folder', 32)
  assert len(sources.make_source('folder', 32, path=str(face_folder))) == 10


class TinyFaces(tfds.core.GeneratorBasedBuilder):
  """A TFDS builder made here, so the TFDS source is tested without a download."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'image': tfds.features.Image(shape=(None, None, 3))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      yield i, {'image': np.full((20, 24, 3), 40 * i, np.uint8)}


def test_tfds_source_prepares_and_reads_a_dataset_by_name(tmp_path):
  source = sources.make_source('tfds', 16, tfds_name='tiny_faces', data_dir=str(tmp_path))
  assert len(source) == 5 and source.name(2) == 'tiny_faces[2]'
  faces = [source.load(i) for i in range(5)]
  assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in faces)
  assert sorted(int(f.mean()) for f in faces) == [0, 40, 80, 120, 160]  # TFDS's own order
  with pytest.raises(FileNotFoundError, match="'no_such_dataset'"):
    sources.make_source('tfds', 16, tfds_name='no_such_dataset', data_dir=str(tmp_path))


def test_image_sets_name_a_bad_dataset_spec_field_or_dataset(tmp_path):
  from diffbfr_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  for spec in ('tfds:face_pairs', 'tfds:face_pairs::test', 'tfds:a:b:c:d'):
    with pytest.raises(ConfigError, match='expected tfds:NAME:FIELD'):
      sources.image_set(spec)
  with pytest.raises(FileNotFoundError, match="'no_such_dataset'"):
    sources.image_set('tfds:no_such_dataset:lq', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="split 'test' of 'face_pairs'"):
    sources.image_set('tfds:face_pairs:lq', data_dir=str(tmp_path))  # not prepared there


def _save(path, seed=0, shape=(12, 12, 3)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, np.uint8)).save(path)


def test_a_symlink_loop_or_a_second_link_adds_no_file_and_is_logged(tmp_path, caplog):
  root = tmp_path / 'faces'
  _save(root / 'a.png')
  (root / 'loop').symlink_to('.')  # a loop: os.walk(followlinks=True) went 40 levels deep
  _save(tmp_path / 'outside' / 'b.png', 1)
  (root / 'ext').symlink_to(tmp_path / 'outside')  # outside the tree: listed, once
  (root / 'ext2').symlink_to(tmp_path / 'outside')
  (root / 'sub').mkdir()
  _save(root / 'sub' / 'c.png', 2)
  (root / 'a_link_to_sub').symlink_to(root / 'sub')  # listed where it really is
  (root / 'sub' / 'up').symlink_to('..')
  caplog.set_level('WARNING')
  assert image_files.list_images(root) == ['a.png', 'ext/b.png', 'sub/c.png']
  for name in ('loop/', 'ext2/', 'a_link_to_sub/', 'sub/up/'):
    assert name in caplog.text, caplog.text


def test_every_file_that_is_not_read_is_named_in_the_log(tmp_path, caplog):
  root = tmp_path / 'faces'
  _save(root / 'face.png')
  (root / 'notes.txt').write_text('x')
  (root / 'raw.ppm').write_bytes(b'P6 1 1 255 \x00\x00\x00')
  (root / '.hidden.png').write_bytes(b'')
  (root / 'dangling.txt').symlink_to(tmp_path / 'gone.txt')
  caplog.set_level('WARNING')
  assert image_files.list_images(root) == ['face.png']
  for name in ('notes.txt', 'raw.ppm', '.hidden.png', 'dangling.txt'):
    assert name in caplog.text, caplog.text


def test_a_broken_link_to_an_image_is_skipped_and_counted_as_undecodable(tmp_path):
  from diffbfr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import testset  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'faces'
  _save(root / 'face.png', shape=(32, 32, 3))
  (root / 'corrupt.png').write_bytes(b'not a png')
  (root / 'dangling.png').symlink_to(tmp_path / 'gone.png')
  assert image_files.list_images(root) == ['corrupt.png', 'dangling.png', 'face.png']
  manifest = testset.write_test_set(str(root), str(tmp_path / 'set'), size=32, seed=0)
  assert sorted(s['name'] for s in manifest['skipped']) == ['corrupt.png', 'dangling.png']
  assert [e['name'] for e in manifest['images']] == ['face.png']
  loader = pipeline.ExampleLoader(sources.FolderSource(root, 32), seed=0, shuffle=False)
  for i in range(3):
    loader.load(i)
  assert sorted(loader.source.name(i) for i in loader.skipped) == ['corrupt.png', 'dangling.png']


def test_a_gif_face_is_read_as_its_first_frame(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3), np.uint8)
  frame = Image.fromarray(rgb).quantize(256)  # GIF holds a palette; the palette image is exact
  frame.save(tmp_path / 'face.gif')
  assert image_files.list_images(tmp_path) == ['face.gif']
  decoded = image_files.decode_rgb((tmp_path / 'face.gif').read_bytes(), 'face.gif')
  np.testing.assert_array_equal(decoded, np.asarray(frame.convert('RGB')))


@pytest.mark.parametrize('orientation, turn', [(3, lambda a: a[::-1, ::-1]),  # 180 degrees
                                               (6, lambda a: np.rot90(a, -1)),  # 90 clockwise
                                               (8, lambda a: np.rot90(a, 1))])  # 90 counter-cw
def test_the_exif_orientation_of_a_jpeg_is_applied_as_opencv_does(tmp_path, orientation, turn):
  """EXIF orientation o (TIFF 6.0): 3 = rotate 180, 6 = rotate 90 clockwise to display,
  8 = rotate 90 counter-clockwise; OpenCV's imread applies it."""
  y, x = np.mgrid[0:40, 0:24]
  rgb = np.stack([6 * y, 10 * x, np.full_like(x, 128)], -1).clip(0, 255).astype(np.uint8)
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(rgb).save(tmp_path / 'face.jpg', quality=100, exif=exif.tobytes())
  decoded = image_files.decode_rgb((tmp_path / 'face.jpg').read_bytes(), 'face.jpg')
  with Image.open(tmp_path / 'face.jpg') as img:
    stored = np.asarray(img)  # PIL alone does not apply the orientation: the pixels as stored
  assert stored.shape == rgb.shape and np.abs(stored.astype(int) - rgb).mean() < 2
  np.testing.assert_array_equal(decoded, turn(stored))


def test_output_names_keep_every_input_apart():
  names = sources.output_names(['a.jpg', 'a.png', 'b.bmp', 'b.tif', 'b.webp', 'c.png',
                                'd/e.JPG'])
  assert names == {'a.jpg': 'a_jpg.png', 'a.png': 'a_png.png', 'b.bmp': 'b_bmp.png',
                   'b.tif': 'b_tif.png', 'b.webp': 'b_webp.png', 'c.png': 'c.png',
                   'd/e.JPG': 'd/e.png'}
  with pytest.raises(sources.errors.UserError, match="'a_jpg.png'"):
    sources.output_names(['a.jpg', 'a.png', 'a_jpg.png'])
