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
from diffbfr_jax.config_checks import ConfigError


def test_demo_runs_end_to_end_on_smoke_networks(smoke_runs, tmp_path, capsys):
  for name in ('irm1', 'irm2', 'tem'):
    shutil.copytree(smoke_runs[name], tmp_path / name)  # trained 4 steps each
  config = demo_config.get_config()
  config.networks = 'smoke'
  config.steps.update(irm1=5, irm2=4, tem=4)  # IRM-1 trains one more step, the others are done
  results = main.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert '[1/3] irm1: training 1 steps of batch 2' in out
  assert '[2/3] irm2: already trained (4 steps)' in out
  assert 'TEM-w (DiffBFR): 100 + 50 + 25 network evaluations per face, 21 faces' in out
  assert '| held-out faces (32x32) | PSNR (dB) | SSIM | LPIPS |' in out

  assert list(results) == ['LQ input', 'TEM-w (DiffBFR): irm1', 'TEM-w (DiffBFR): irm2',
                           'TEM-w (DiffBFR): tem = output']
  manifest = json.loads((tmp_path / 'test_set' / 'manifest.json').read_text())
  assert len(manifest['images']) == 21 and manifest['size'] == 32
  lq = np.stack([np.asarray(Image.open(tmp_path / 'test_set' / e['lq'])) for e in
                 manifest['images']]).astype(np.float64)
  gt = np.stack([np.asarray(Image.open(tmp_path / 'test_set' / e['gt'])) for e in
                 manifest['images']]).astype(np.float64)
  expected = np.mean([skmetrics.peak_signal_noise_ratio(g, q, data_range=255)
                      for g, q in zip(gt, lq)])
  assert results['LQ input']['psnr'] == pytest.approx(expected, abs=1e-3)
  for values in results.values():
    assert 0 <= values['lpips'] and -1 <= values['ssim'] <= 1 and np.isfinite(values['psnr'])

  grid = np.asarray(Image.open(tmp_path / 'grid_tem_w.png'))
  assert grid.shape == (21 * 32 * 4, 5 * 32 * 4, 3)  # LQ | IRM-1 | IRM-2 | TEM | GT
  np.testing.assert_array_equal(grid[:128:4, -128::4], gt[0].astype(np.uint8))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['results'] == results and saved['rows'] == ['tem_w']


def test_bad_rows_are_a_config_error(tmp_path):
  config = demo_config.get_config()
  config.rows = 'tem_w,irm_x'
  with pytest.raises(ConfigError, match=r"config.rows='tem_w,irm_x'"):
    main.run(config, str(tmp_path))


def test_training_without_faces_stops_at_once_and_points_to_the_demo(tmp_path):
  config = tem.get_config()  # the paper config names no dataset
  with pytest.raises(ConfigError, match=r"config.data.source.kind='': give the HQ faces[\s\S]*"
                     r"configs/demo.py"):
    main.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # nothing was built or written
