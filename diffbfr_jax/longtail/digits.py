"""The data of the long-tail experiment and how its samples are counted: scikit-learn's 8x8
digits, split per class into a training part and a held-out part, the training part thinned
per class (`keep`) into the long-tailed set the two models learn; a classifier (scikit-learn's
SVC) learns the whole training part. Images are on [-1, 1] (the digits' 0..16 scaled), one
channel."""

import numpy as np

CLASSES = 10


def digits(seed: int, held_out: float, keep):
  """{'train', 'held_out', 'long_tail'}: (images [N, 8, 8, 1] on [-1, 1], labels [N]).

  Per class: a seeded permutation, its first round(held_out * n) digits held out, and of the rest
  the first round(keep[c] * n_train) (at least one) in the long-tailed set."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  data = datasets.load_digits()
  images = (data.images.astype(np.float32) / 8.0 - 1.0)[..., None]
  labels = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  parts = {'train': [], 'held_out': [], 'long_tail': []}
  for c in range(CLASSES):
    index = rng.permutation(np.flatnonzero(labels == c))
    n_held = int(round(held_out * len(index)))
    train = index[n_held:]
    parts['held_out'].append(index[:n_held])
    parts['train'].append(train)
    parts['long_tail'].append(train[:max(1, int(round(keep[c] * len(train))))])
  return {name: (images[np.concatenate(i)], labels[np.concatenate(i)])
          for name, i in parts.items()}


def histogram(labels) -> np.ndarray:
  return np.bincount(np.asarray(labels), minlength=CLASSES)


def total_variation(counts, reference) -> float:
  """Total variation distance between two class histograms' frequencies (0: the same, 1: no
  class in common)."""
  p, q = np.asarray(counts, float), np.asarray(reference, float)
  return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def train_classifier(images, labels):
  """scikit-learn's SVC (RBF kernel, its defaults) on the flattened digits."""
  from sklearn import svm  # pylint: disable=g-import-not-at-top

  return svm.SVC().fit(images.reshape(len(images), -1), labels)


def classify(classifier, images) -> np.ndarray:
  return classifier.predict(np.asarray(images, np.float32).reshape(len(images), -1))


def grid(images, count: int, scale: int = 4) -> np.ndarray:
  """uint8 gray grid of the first `count` images ([N, 8, 8, 1] on [-1, 1]), rows of sqrt(count)."""
  images = np.asarray(images[:count])[..., 0]
  columns = int(np.ceil(np.sqrt(len(images))))
  rows = -(-len(images) // columns)
  canvas = np.full((rows * 9 + 1, columns * 9 + 1), -1.0, np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    canvas[r * 9 + 1:r * 9 + 9, c * 9 + 1:c * 9 + 9] = image
  pixels = np.round((np.clip(canvas, -1, 1) + 1) * 127.5).astype(np.uint8)
  return np.repeat(np.repeat(pixels, scale, 0), scale, 1)


def table(histograms: dict) -> str:
  names = list(histograms)
  lines = ['| class | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
  for c in range(CLASSES):
    cells = [f'{h[c]} ({100 * h[c] / max(1, h.sum()):.1f}%)' for h in histograms.values()]
    lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
  totals = [str(int(h.sum())) for h in histograms.values()]
  lines.append('| all | ' + ' | '.join(totals) + ' |')
  return '\n'.join(lines)
