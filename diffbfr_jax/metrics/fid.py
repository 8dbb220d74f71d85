"""FID (Heusel et al. 2017) between two sets of images, on the pool3 features of the FID
Inception (metrics/inception.py); feature statistics of a folder cached to .npz so that a
reference set is computed once.

FID = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), in float64.
"""

import hashlib
import logging
import pathlib
import time

import numpy as np

from diffbfr_jax.data import sources
from diffbfr_jax.metrics import inception


def statistics(features):
  """(mean [D], covariance [D, D]) in float64 of features [N, D] (N >= 2)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'FID statistics need features [N >= 2, D], got shape {features.shape}')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).

  The trace of the square root is computed as tr((A S_2 A)^(1/2)) with A = S_1^(1/2): the same
  number (the two products are similar), from two symmetric eigendecompositions, which are
  stable for the rank-deficient covariances of small sets and several times faster than
  scipy's general `sqrtm` at 2048 dimensions.
  """
  diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
  w, v = np.linalg.eigh(np.asarray(sigma1, np.float64))
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ np.asarray(sigma2, np.float64) @ root1)
  trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def _fingerprint(folder, files) -> str:
  """Changes when a file is added, removed, renamed, resized or rewritten."""
  h = hashlib.sha256()
  for name in files:
    st = (pathlib.Path(folder) / name).stat()
    h.update(f'{name}\0{st.st_size}\0{st.st_mtime_ns}\0'.encode())
  return h.hexdigest()[:16]


def folder_statistics(folder, *, batch_size: int = 16, cache_dir=None):
  """(mu, sigma, count) of every image under `folder` (any sizes), from the cache in
  `cache_dir` when the folder has not changed since it was written."""
  files = sources.list_images(folder)
  cache = None
  if cache_dir:
    cache = pathlib.Path(cache_dir) / f'fid_stats_{_fingerprint(folder, files)}.npz'
    if cache.is_file():
      with np.load(cache) as data:
        logging.info('FID statistics of %s from %s', folder, cache)
        return data['mu'], data['sigma'], int(data['count'])
  params = inception.load_params()
  feats, start = [], time.perf_counter()
  for b in range(0, len(files), batch_size):
    names = files[b:b + batch_size]
    images = [sources.decode_rgb((pathlib.Path(folder) / n).read_bytes(),
                                 str(pathlib.Path(folder) / n)) for n in names]
    for shape in sorted({im.shape for im in images}):  # equal sizes batch together
      group = np.stack([im for im in images if im.shape == shape]).astype(np.float32)
      padded = np.concatenate([group, np.repeat(group[-1:], batch_size - len(group), 0)])
      feats.append(np.asarray(inception.features(params, padded))[:len(group)])
    done = min(b + batch_size, len(files))
    elapsed = time.perf_counter() - start
    logging.info('FID features of %s: %d/%d, ETA %.0f s', folder, done, len(files),
                 elapsed / done * (len(files) - done))
  mu, sigma = statistics(np.concatenate(feats))
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, mu=mu, sigma=sigma, count=len(files), folder=str(folder))
  return mu, sigma, len(files)


def fid_between_folders(folder_a, folder_b, *, batch_size: int = 16, cache_dir=None) -> float:
  mu_a, sigma_a, _ = folder_statistics(folder_a, batch_size=batch_size, cache_dir=cache_dir)
  mu_b, sigma_b, _ = folder_statistics(folder_b, batch_size=batch_size, cache_dir=cache_dir)
  return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
