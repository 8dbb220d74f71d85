"""Alignment and paste-back: the fit against OpenCV's, the warp against OpenCV's, and restored
faces that land where they came from."""

import pathlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from diffbfr_jax.photos import align
from diffbfr_jax.photos import pipeline

IMAGES = pathlib.Path(__file__).parent / 'images'


@pytest.fixture(scope='module')
def front_row():
  rgb = np.asarray(Image.open(IMAGES / 'solvay_1927_front_row.jpg').convert('RGB'))
  return rgb, pipeline.find_faces(rgb, 512)  # crops larger than the faces: nothing lost


def test_the_fit_equals_opencv(rng):
  cv2 = pytest.importorskip('cv2')
  targets = align.template(512)
  for _ in range(5):
    points = rng.uniform(0, 200, (5, 2))
    ours = align.fit_similarity(points, targets)
    # every point an inlier: OpenCV's refined fit is the least-squares similarity
    theirs, inliers = cv2.estimateAffinePartial2D(points, targets, method=cv2.RANSAC,
                                                  ransacReprojThreshold=1e6, refineIters=100)
    assert inliers.all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_the_fit_recovers_a_known_similarity(rng):
  angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
  rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  points = rng.uniform(0, 100, (5, 2))
  fitted = align.fit_similarity(points, points @ rotation.T + shift)
  np.testing.assert_allclose(fitted, np.concatenate([rotation, shift[:, None]], 1), atol=1e-9)


def test_the_warp_equals_opencv(front_row):
  cv2 = pytest.importorskip('cv2')
  rgb, faces = front_row
  for face in faces:  # two of them reach above the photo: the border value counts there
    ours = align.warp(rgb, face.matrix, 512, 512)
    theirs = cv2.warpAffine(rgb.astype(np.float32), face.matrix, (512, 512),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=align.BORDER)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_identity_restorer_gives_the_upsampled_photo_back(front_row):
  rgb, faces = front_row
  pasted, boxes = pipeline.paste_faces(rgb, faces, [f.crop for f in faces], 2)
  upsampled = align.upsample(rgb, 2)
  assert pasted.shape == upsampled.shape == (2 * rgb.shape[0], 2 * rgb.shape[1], 3)
  touched = np.zeros(pasted.shape[:2], bool)
  for x0, y0, x1, y1 in boxes:
    touched[y0:y1, x0:x1] = True
  diff = np.abs(pasted.astype(int) - upsampled.astype(int))
  assert diff[~touched].max() == 0  # away from the faces: the up-sampled photo itself
  # on the faces: the photo resampled twice (crop, then back) against Lanczos once
  assert diff[touched].mean() < 1.0 and np.percentile(diff[touched], 99) <= 6


def test_a_restored_face_lands_where_it_came_from(front_row):
  cv2 = pytest.importorskip('cv2')
  rgb, faces = front_row
  size, factor = 512, 2
  # a restorer that draws the template points and four points towards the crop's corners
  # (the corners themselves fall under the soft mask's fading edge)
  corners = np.array([[0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]]) * (size - 1)
  targets = np.round(np.concatenate([align.template(size), corners]))
  marked = np.zeros((size, size, 3), np.float32)
  for x, y in targets.astype(int):
    marked[y - 2:y + 3, x - 2:x + 3] = 255
  for face in [f for f in faces if f.box[1] > 5][:3]:  # faces whole in the photo
    canvas = np.zeros((factor * rgb.shape[0], factor * rgb.shape[1], 3), np.float32)
    align.paste(canvas, marked, face.matrix, factor)
    labels, count = ndimage.label(canvas[..., 0] > 20)
    assert count == len(targets)
    found = np.array(ndimage.center_of_mass(canvas[..., 0], labels,
                                            range(1, count + 1)))[:, ::-1]
    # where those points come from in the photo (OpenCV's inverse), in the larger photo
    back = cv2.invertAffineTransform(face.matrix)
    expected = (targets @ back[:, :2].T + back[:, 2]) * factor + (factor - 1) / 2
    distance = np.linalg.norm(found[:, None] - expected[None], axis=-1).min(axis=1)
    assert distance.max() < 1.0, distance


def test_only_largest_keeps_the_largest_face(front_row):
  rgb, faces = front_row
  (largest,) = pipeline.find_faces(rgb, 512, only_largest=True)
  np.testing.assert_array_equal(largest.box, max(faces, key=lambda f: f.area).box)


def test_paste_order_puts_larger_faces_last(front_row):
  _, faces = front_row
  areas = [faces[i].area for i in pipeline.paste_order(faces)]
  assert areas == sorted(areas)
