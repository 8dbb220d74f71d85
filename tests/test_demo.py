"""The demo job on the smoke networks: stages reused or trained, held-out faces degraded once,
the cascade's rows scored, the grid written; and training without faces stopping at once."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from skimage import metrics as skmetrics

from configs import demo as demo_config
from configs import tem
from diffbfr_jax import main
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.metrics import lpips


def _printed_table(out: str) -> dict:
  """{label: (PSNR, SSIM, LPIPS)} of the markdown table the demo printed."""
  rows = {}
  for line in out.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if line.startswith('| ') and len(cells) == 4 and cells[1] not in ('PSNR (dB)', '---'):
      rows[cells[0]] = tuple(float(c) for c in cells[1:])
  return rows


def _ssim(x, y):  # the paper's SSIM settings (tests/metrics/test_psnr_ssim.py)
  return skmetrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255,
                                         channel_axis=-1)


def test_demo_runs_end_to_end_on_smoke_networks(smoke_runs, tmp_path, capsys):
  for name in ('irm1', 'irm2', 'tem'):
    shutil.copytree(smoke_runs[name], tmp_path / name)  # trained 4 steps each
  config = demo_config.get_config()
  config.networks = 'smoke'
  config.steps.update(irm1=5, irm2=4, tem=4)  # IRM-1 trains one more step, the others are done
  config.num_samples = 2
  summary = main.run(config, str(tmp_path))
  results = summary['results']
  out = capsys.readouterr().out
  assert '[1/3] irm1: training steps 4..5, batch 2 at 16x16, on bundled' in out
  assert '[2/3] irm2: trained already (4 steps)' in out
  assert 'TEM-w (DiffBFR): 100 + 50 + 25 network evaluations per face, 21 faces x 2' in out
  assert '| held-out faces (32x32) | PSNR (dB) | SSIM | LPIPS |' in out

  row = 'TEM-w (DiffBFR): '
  assert list(results) == ['LQ input', row + 'irm1', row + 'irm2', row + 'tem = output',
                           row + 'irm1, mean of 2', row + 'irm2, mean of 2',
                           row + 'tem = output, mean of 2']
  manifest = json.loads((tmp_path / 'test_set' / 'manifest.json').read_text())
  assert len(manifest['images']) == 21 and manifest['size'] == 32
  lq, gt = (np.stack([np.asarray(Image.open(tmp_path / 'test_set' / e[kind]))
                      for e in manifest['images']]) for kind in ('lq', 'gt'))

  # Every sample is kept; the first one is what the single-sample rows score.
  restored = np.load(tmp_path / 'restored_tem_w.npz')
  assert list(restored['names']) == [e['name'] for e in manifest['images']]
  tem = restored['tem']
  assert tem.shape == (2, 21, 32, 32, 3) and restored['irm1'].shape == (2, 21, 32, 32, 3)
  assert np.abs(tem[0].astype(int) - tem[1]).max() > 0  # each sample has its own key

  # Every number of the printed table is recomputed here from the files alone (PSNR and SSIM
  # by scikit-image): the test set's PNGs and the saved samples, their mean rounded to 8 bits.
  expected = {'LQ input': lq}
  for suffix, pick in (('', lambda v: v[0]),
                       (', mean of 2', lambda v: np.round(v.mean(axis=0)).astype(np.uint8))):
    for stage in ('irm1', 'irm2', 'tem'):
      label = row + stage + (' = output' if stage == 'tem' else '') + suffix
      expected[label] = pick(restored[stage].astype(np.float64)).astype(np.uint8)
  printed = _printed_table(out)
  assert list(printed) == list(expected)
  for label, images in expected.items():
    psnr = np.mean([skmetrics.peak_signal_noise_ratio(g, o, data_range=255)
                    for g, o in zip(gt, images)])
    ssim = np.mean([_ssim(g, o) for g, o in zip(gt, images)])
    lpips_value = float(np.mean(lpips.lpips(images, gt, net='vgg')))
    assert printed[label][0] == pytest.approx(psnr, abs=0.0051), label
    assert printed[label][1] == pytest.approx(ssim, abs=6e-5), label
    assert printed[label][2] == pytest.approx(lpips_value, abs=6e-5), label

  grid = np.asarray(Image.open(tmp_path / 'grid_tem_w.png'))
  assert grid.shape == (21 * 32 * 4, 6 * 32 * 4, 3)  # LQ | IRM-1 | IRM-2 | TEM | mean | GT
  np.testing.assert_array_equal(grid[:128:4, -128::4], gt[0])
  # The mean column is exactly the image the mean row scores.
  mean = np.stack([grid[128 * i:128 * (i + 1):4, -256:-128:4] for i in range(21)])
  np.testing.assert_array_equal(mean, expected[row + 'tem = output, mean of 2'])
  saved = json.loads((tmp_path / 'summary.json').read_text())
  assert saved == summary and saved['rows'] == ['tem_w'] and saved['num_samples'] == 2


@pytest.mark.parametrize('field, value, message', [
    ('rows', 'tem_w,irm_x', r"config.rows='tem_w,irm_x'"),
    ('num_samples', 0, r'config.num_samples=0: expected an integer >= 1'),
])
def test_bad_fields_are_a_config_error(tmp_path, field, value, message):
  config = demo_config.get_config()
  config[field] = value
  with pytest.raises(ConfigError, match=message):
    main.run(config, str(tmp_path))
  assert not tmp_path.joinpath('irm1').exists()  # stopped before training


def test_training_without_faces_stops_at_once_and_points_to_the_demo(tmp_path):
  config = tem.get_config()  # the paper config names no dataset
  with pytest.raises(ConfigError, match=r"config.data.source.kind='': give the HQ faces[\s\S]*"
                     r"configs/demo.py"):
    main.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # nothing was built or written
