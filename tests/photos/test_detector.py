"""The MTCNN port against the `mtcnn` package itself (TensorFlow) on public photos with faces of
different sizes, and its resampling against TensorFlow's own ops."""

import importlib.util
import pathlib

import numpy as np
import pytest
from PIL import Image

from diffbfr_jax import errors
from diffbfr_jax.photos import detector

IMAGES = pathlib.Path(__file__).parent / 'images'


def _photo(name):
  if name == 'astronaut':
    from skimage import data  # pylint: disable=g-import-not-at-top
    return data.astronaut()
  return np.asarray(Image.open(IMAGES / name).convert('RGB'))


@pytest.mark.parametrize('name', ['solvay_1927.jpg', 'solvay_1927_front_row.jpg', 'astronaut'])
def test_faces_and_landmarks_equal_the_mtcnn_package(name):
  mtcnn = pytest.importorskip('mtcnn')
  rgb = _photo(name)
  ours = detector.detect(rgb)
  theirs = mtcnn.MTCNN().detect_faces(rgb, output_type='numpy', box_format='xyxy')[:, 1:]
  assert len(ours) == len(theirs) > 0
  ours, theirs = ours[np.argsort(ours[:, 0])], theirs[np.argsort(theirs[:, 0])]
  np.testing.assert_allclose(ours[:, :4], theirs[:, :4], atol=0.01)  # boxes, pixels
  np.testing.assert_allclose(ours[:, 4], theirs[:, 4], atol=1e-4)  # scores
  np.testing.assert_allclose(ours[:, 5:], theirs[:, 5:], atol=0.01)  # landmarks, pixels


def test_the_photos_have_faces_of_different_sizes():
  # what the comparison above covers: about 25-pixel faces in one photo, 70-120 in another,
  # and one of about 200 (the sizes are the package's own boxes, as compared above)
  sides = {n: np.ptp(detector.detect(_photo(n))[:, [0, 2]], axis=1)
           for n in ('solvay_1927.jpg', 'solvay_1927_front_row.jpg')}
  assert sides['solvay_1927.jpg'].max() < 40 and sides['solvay_1927_front_row.jpg'].min() > 60
  assert len(sides['solvay_1927.jpg']) >= 25  # of the 29 people in the photograph


def test_resampling_equals_tensorflow(rng):
  tf = pytest.importorskip('tensorflow')
  image = rng.normal(size=(37, 53, 3)).astype(np.float32)
  for h, w in ((22, 31), (9, 13), (37, 53)):
    np.testing.assert_allclose(detector.resize_area(image, h, w),
                               tf.image.resize(image[None], (h, w), method='area')[0],
                               atol=1e-5)
  boxes = np.array([[0.1, 0.2, 0.6, 0.9], [-0.2, -0.1, 0.5, 0.4], [0.5, 0.7, 1.3, 1.2]],
                   np.float32)  # the last two reach outside the image
  np.testing.assert_allclose(
      detector.crop_and_resize(image, boxes, 24),
      tf.image.crop_and_resize(image[None], boxes, np.zeros(3, np.int32), (24, 24)),
      atol=1e-5)


def test_suppression_equals_a_direct_reading_of_the_rule(rng):
  # a row goes when it overlaps ANY earlier row (in score order) by more than the threshold
  xy = rng.uniform(0, 50, (40, 2))
  rows = np.concatenate([xy, xy + rng.uniform(5, 30, (40, 2)), rng.uniform(size=(40, 1))], 1)
  kept = detector.suppress(rows, 0.3)
  ordered = rows[np.argsort(-rows[:, 4])]

  def iou(a, b):
    inter = (max(0, min(a[2], b[2]) - max(a[0], b[0])) *
             max(0, min(a[3], b[3]) - max(a[1], b[1])))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union

  expected = [r for i, r in enumerate(ordered)
              if not any(iou(ordered[j], r) > 0.3 for j in range(i))]
  np.testing.assert_array_equal(kept, np.array(expected))


def test_a_missing_extra_is_one_error_naming_it(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'mtcnn' else real(name, *a))
  with pytest.raises(errors.MissingExtra, match=r"diffbfr_jax\[photos\]"):
    detector._weights_folder()  # pylint: disable=protected-access
