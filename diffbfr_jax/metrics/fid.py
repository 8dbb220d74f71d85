"""FID (Heusel et al. 2017) between two sets of images, on the pool3 features of the FID
Inception (metrics/inception.py); feature statistics of a folder cached to .npz so that a
reference set is computed once.

FID = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), in float64.

The cache is keyed by the folder's content: a SHA-256 over every image's relative name and
bytes (`fingerprint`), never by names, sizes or times, which two different folders unpacked from
one archive (or copied with `cp -p`, tar, unzip) can share. Each cache file stores what it was
computed from (format, fingerprint, names, per-file digests) and is used only when all of it
matches the folder now; otherwise a warning names the file and the statistics are recomputed.
"""

import hashlib
import logging
import os
import pathlib
import tempfile
import time
import zipfile

import numpy as np

from diffbfr_jax.data import image_files
from diffbfr_jax.data import sources
from diffbfr_jax.metrics import inception

# Part of every fingerprint and stored in every cache file: a change of the features (the
# network, its preprocessing) or of the file layout bumps it, so no older cache is ever read.
CACHE_FORMAT = 'diffbfr_jax.fid_stats.v2 (inception 2015-12-05 pool3, nv_bilinear 299)'


def statistics(features):
  """(mean [D], covariance [D, D]) in float64 of features [N, D] (N >= 2)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'FID statistics need features [N >= 2, D], got shape {features.shape}')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)), clipped at 0.

  The trace of the square root is computed as tr((A S_2 A)^(1/2)) with A = S_1^(1/2): the same
  number (the two products are similar), from two symmetric eigendecompositions, which are
  stable for the rank-deficient covariances of small sets and several times faster than
  scipy's general `sqrtm` at 2048 dimensions.

  The distance is >= 0 by definition; for equal or nearly equal statistics the rounding of the
  square root leaves a tiny negative (about -1e-12 of tr(S)), returned as 0. NaN stays NaN.
  """
  diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
  w, v = np.linalg.eigh(np.asarray(sigma1, np.float64))
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ np.asarray(sigma2, np.float64) @ root1)
  trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
  return float(np.maximum(value, 0.0))  # np.maximum, not max(): keeps a NaN visible


def fingerprint(files, digests) -> str:
  """SHA-256 (hex) of CACHE_FORMAT and every (relative posix name, digest) pair, in order:
  changes when a file is added, removed, renamed or rewritten, whatever its size and mtime."""
  h = hashlib.sha256(CACHE_FORMAT.encode() + b'\0')
  for name, digest in zip(files, digests, strict=True):
    h.update(name.encode() + b'\0' + digest.encode() + b'\0')
  return h.hexdigest()


def _cache_path(cache_dir, key: str) -> pathlib.Path:
  return pathlib.Path(cache_dir) / f'fid_stats_{key}.npz'


def _load_cache(cache, key, files, digests):
  """(mu, sigma, count) from `cache` if it holds the statistics of exactly these files; else
  None, with a warning naming the file and why it is not used."""
  try:
    with np.load(cache, allow_pickle=False) as data:
      stored = {k: data[k] for k in ('format', 'fingerprint', 'files', 'digests', 'count',
                                     'mu', 'sigma')}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    logging.warning('FID cache %s is unreadable (%s: %s); recomputing it', cache,
                    type(e).__name__, e)
    return None
  mu, sigma = stored['mu'], stored['sigma']
  if str(stored['format']) != CACHE_FORMAT:
    reason = f'format {str(stored["format"])!r}, expected {CACHE_FORMAT!r}'
  elif str(stored['fingerprint']) != key:
    reason = f'fingerprint {str(stored["fingerprint"])[:16]}..., expected {key[:16]}...'
  elif (stored['files'].tolist() != list(files) or stored['digests'].tolist() != list(digests)
        or int(stored['count']) != len(files)):
    reason = 'its file list or digests differ from the folder'
  elif (mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or not np.all(np.isfinite(mu))
        or not np.all(np.isfinite(sigma))):
    reason = f'mu {mu.shape} and sigma {sigma.shape} are not finite statistics of one size'
  else:
    return mu, sigma, len(files)
  logging.warning('FID cache %s was not computed from this folder (%s); recomputing it',
                  cache, reason)
  return None


def _save_cache(cache, **arrays):
  """np.savez to a temporary file beside `cache`, then os.replace: a run killed while writing
  leaves no cache at all, never a half-written one that a later run would read."""
  cache.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f'.{cache.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, cache)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def folder_statistics(folder, *, batch_size: int = 16, cache_dir=None):
  """(mu, sigma, count) of every image under `folder` (any sizes; or of a `sources.ImageSet`,
  such as a prepared dataset's field), from the cache in `cache_dir` when one was computed from
  files of the same names and bytes."""
  images = folder if isinstance(folder, sources.ImageSet) else sources.image_set(folder)
  folder, files = images.label, images.names
  posix = [pathlib.PurePath(n).as_posix() for n in files]  # the same key on every OS
  digests = key = None
  if cache_dir:
    digests = [hashlib.sha256(images.read_bytes(n)).hexdigest() for n in files]
    key = fingerprint(posix, digests)
    cache = _cache_path(cache_dir, key)
    if cache.is_file():
      loaded = _load_cache(cache, key, posix, digests)
      if loaded is not None:
        logging.info('FID statistics of %s from %s', folder, cache)
        return loaded
  params = inception.load_params()
  feats, used, start = [], [], time.perf_counter()
  for b in range(0, len(files), batch_size):
    names = files[b:b + batch_size]
    blobs = [images.read_bytes(n) for n in names]
    used += [hashlib.sha256(blob).hexdigest() for blob in blobs]
    decoded = [image_files.decode_rgb(blob, images.where(n)) for blob, n in zip(blobs, names)]
    for shape in sorted({im.shape for im in decoded}):  # equal sizes batch together
      group = np.stack([im for im in decoded if im.shape == shape]).astype(np.float32)
      padded = np.concatenate([group, np.repeat(group[-1:], batch_size - len(group), 0)])
      feats.append(np.asarray(inception.features(params, padded))[:len(group)])
    done = min(b + batch_size, len(files))
    elapsed = time.perf_counter() - start
    logging.info('FID features of %s: %d/%d, ETA %.0f s', folder, done, len(files),
                 elapsed / done * (len(files) - done))
  mu, sigma = statistics(np.concatenate(feats))
  if cache_dir:
    if used != digests:  # a file changed while it was read: key what was actually read
      logging.warning('files under %s changed while FID read them; caching the bytes read',
                      folder)
      key = fingerprint(posix, used)
    cache = _cache_path(cache_dir, key)
    try:
      _save_cache(cache, mu=mu, sigma=sigma, count=len(files), folder=str(folder),
                  format=CACHE_FORMAT, fingerprint=key,
                  files=np.array(posix, dtype=str),
                  digests=np.array(used, dtype=str))
    except OSError as e:  # the statistics are right; only the reuse is lost
      logging.warning('FID cache %s not written (%s: %s)', cache, type(e).__name__, e)
  return mu, sigma, len(files)


def fid_between_folders(folder_a, folder_b, *, batch_size: int = 16, cache_dir=None) -> float:
  mu_a, sigma_a, _ = folder_statistics(folder_a, batch_size=batch_size, cache_dir=cache_dir)
  mu_b, sigma_b, _ = folder_statistics(folder_b, batch_size=batch_size, cache_dir=cache_dir)
  return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
