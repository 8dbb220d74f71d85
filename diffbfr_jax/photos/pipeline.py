"""The photos job's steps around the restorer: faces found and aligned, restored faces pasted
back into the up-sampled photo."""

import dataclasses

import numpy as np

from diffbfr_jax.photos import align
from diffbfr_jax.photos import detector


@dataclasses.dataclass
class Face:
  box: np.ndarray  # [x1, y1, x2, y2] in photo pixels
  score: float  # ONet's face probability
  landmarks: np.ndarray  # [5, 2] (x, y), detector.LANDMARKS order
  matrix: np.ndarray  # 2 x 3: photo -> aligned crop
  crop: np.ndarray  # the aligned crop, float32 0..255 [size, size, 3]

  @property
  def area(self) -> float:
    return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

  def record(self) -> dict:
    """The face as the photo's JSON holds it."""
    return {'box': [round(float(v), 2) for v in self.box], 'score': round(self.score, 6),
            'landmarks': {k: [round(float(v), 2) for v in p]
                          for k, p in zip(detector.LANDMARKS, self.landmarks)},
            'matrix': [[float(v) for v in row] for row in self.matrix]}


def find_faces(rgb: np.ndarray, size: int, *, min_face_size: float = 20,
               thresholds=(0.6, 0.7, 0.8), only_largest: bool = False) -> list:
  """Every face of an RGB photo, in the detector's score order, each aligned to the FFHQ
  template in a size x size crop (only the largest box's face with `only_largest`, the others
  not warped)."""
  rows = detector.detect(rgb, min_face_size, thresholds)
  if only_largest and len(rows):
    rows = rows[[np.argmax((rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1]))]]
  faces = []
  for row in rows:
    marks = detector.landmarks(row)
    matrix = align.fit_similarity(marks, align.template(size))
    faces.append(Face(box=row[:4], score=float(row[4]), landmarks=marks, matrix=matrix,
                      crop=align.warp(rgb, matrix, size, size)))
  return faces


def paste_order(faces: list) -> list:
  """The order faces are pasted in: increasing box area (ties: detection order), so that a
  larger face is pasted over a smaller one it overlaps."""
  return sorted(range(len(faces)), key=lambda i: (faces[i].area, i))


def paste_faces(rgb: np.ndarray, faces: list, restored: list, factor: int):
  """(The photo up-sampled by `factor` with every restored face (0..255, [S, S, 3]) pasted where
  its crop came from, uint8; each face's pasted box (x0, y0, x1, y1) in it, or None)."""
  canvas = align.upsample(rgb, factor).astype(np.float32)
  boxes = [None] * len(faces)
  for i in paste_order(faces):
    boxes[i] = align.paste(canvas, np.asarray(restored[i], np.float32), faces[i].matrix, factor)
  return np.clip(np.round(canvas), 0, 255).astype(np.uint8), boxes
