"""The evaluate job: pairing, refusal of mismatched sets, the files it writes and the numbers."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage import metrics as skm

from configs import evaluate as evaluate_config
from diffbfr_jax import main
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.metrics import niqe


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """GT faces (PNG) and restorations of them (noisier for each next face; nested, JPEG names)."""
  root = tmp_path_factory.mktemp('eval')
  rng = np.random.default_rng(0)
  face = data.astronaut()[:192, 160:352]
  for i, sigma in enumerate((4, 12, 24)):
    gt = np.roll(face, 8 * i, axis=1)
    restored = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).round().astype(np.uint8)
    sub = 'nested/' if i == 2 else ''
    (root / 'gt' / sub).mkdir(parents=True, exist_ok=True)
    (root / 'restored' / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(gt).save(root / 'gt' / f'{sub}face{i}.jpg', quality=100)
    Image.fromarray(restored).save(root / 'restored' / f'{sub}face{i}.png')
  return root


def _config(root, **fields):
  config = evaluate_config.get_config()
  config.update(restored_dir=str(root / 'restored'), gt_dir=str(root / 'gt'), batch_size=2,
                **fields)
  return config


def test_evaluate_writes_the_table_row_csv_and_summary(folders, tmp_path, capsys):
  summary = main.run(_config(folders), str(tmp_path))
  assert summary['count'] == 3
  rows = list(csv.DictReader(open(tmp_path / 'per_image.csv')))
  assert [r['name'] for r in rows] == ['face0', 'face1', 'nested/face2']
  for r in rows:  # independent recomputation of the per-image numbers
    x = np.asarray(Image.open(folders / 'restored' / r['restored']))
    y = np.asarray(Image.open(folders / 'gt' / r['gt']))
    assert float(r['psnr']) == pytest.approx(skm.peak_signal_noise_ratio(y, x, data_range=255),
                                             rel=1e-5)
    assert float(r['ssim']) == pytest.approx(skm.structural_similarity(
        y, x, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=-1), abs=2e-5)
    assert float(r['niqe']) == pytest.approx(niqe.niqe(x), rel=1e-9)
  lp = [float(r['lpips']) for r in rows]
  assert 0 < lp[0] < lp[1] < lp[2]  # more noise, larger distance
  saved = json.loads((tmp_path / 'summary.json').read_text())
  assert saved['means']['psnr'] == pytest.approx(np.mean([float(r['psnr']) for r in rows]))
  assert saved['fid'] > 0  # restorations are noisier than their ground truth
  assert list((tmp_path / 'fid_cache').glob('fid_stats_*.npz'))
  printed = capsys.readouterr().out
  assert '| | SSIM | PSNR | FID | NIQE | LPIPS |' in printed
  assert (f"{saved['means']['ssim']:.4f} | {saved['means']['psnr']:.3f} | {saved['fid']:.3f} | "
          f"{saved['means']['niqe']:.4f} | {saved['means']['lpips']:.4f} |") in printed


def test_mismatched_sets_are_refused_with_what_is_missing(folders, tmp_path):
  extra = tmp_path / 'restored'
  extra.mkdir()
  for f in (folders / 'restored').rglob('*.png'):
    (extra / f.relative_to(folders / 'restored')).parent.mkdir(parents=True, exist_ok=True)
    (extra / f.relative_to(folders / 'restored')).write_bytes(f.read_bytes())
  (extra / 'face1.png').unlink()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(extra / 'stranger.png')
  config = _config(folders)
  config.restored_dir = str(extra)
  with pytest.raises(ConfigError, match=r'1 faces have no restoration \(face1\); 1 restorations '
                                        r'have no ground truth \(stranger\)'):
    main.run(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_unknown_metrics_are_named(folders, tmp_path):
  with pytest.raises(ConfigError, match=r"unknown \['is'\]"):
    main.run(_config(folders, metrics=('psnr', 'is')), str(tmp_path))


def test_files_that_share_a_stem_are_paired_each_with_its_own(tmp_path):
  """x.jpg and x.png on both sides are two faces (x_jpg, x_png), as the other jobs name them;
  pairing by stem alone kept one of them and dropped the other without a word."""
  from diffbfr_jax.jobs import evaluate  # pylint: disable=g-import-not-at-top
  for side in ('restored', 'gt'):
    (tmp_path / side).mkdir()
    for suffix in ('jpg', 'png'):
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / side / f'x.{suffix}')
  pairs = evaluate.pair_files(tmp_path / 'restored', tmp_path / 'gt')
  assert pairs == [('x_jpg', 'x.jpg', 'x.jpg'), ('x_png', 'x.png', 'x.png')]
