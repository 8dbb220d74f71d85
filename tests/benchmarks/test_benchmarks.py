"""The benchmarks run end to end (their figures are printed, not asserted)."""

import pathlib

import pytest
from configs import tem
from diffbfr_jax.benchmarks import chain_overhead


def test_measure_runs_on_a_smoke_config():
  per_eval, per_step = chain_overhead.measure(tem.get_config('smoke'), steps=2, batch=1, repeats=1)
  assert per_eval > 0 and per_step > 0


def test_train_step_benchmark_runs_on_a_smoke_config():
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top

  rate, peak, where = train_step.measure(tem.get_config('smoke'), steps=1)
  assert rate > 0 and peak > 0 and where


def test_cascade_benchmark_runs_on_smoke_networks():
  from configs import cascade as cascade_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import cascade  # pylint: disable=g-import-not-at-top

  config = cascade_config.get_config('irm_s,smoke')  # one stage keeps the compile short
  config.irm2.sampling.respacing = '4'
  config_dir = pathlib.Path(__file__).resolve().parents[2] / 'configs'
  evaluations, per_face = cascade.measure(config, size='smoke', batch=1, repeats=1,
                                          config_dir=str(config_dir))
  assert evaluations == {'irm2': 4} and per_face > 0


def test_metrics_benchmark_runs_on_small_images():
  from diffbfr_jax.benchmarks import metrics  # pylint: disable=g-import-not-at-top

  rates = metrics.measure(batch=1, repeats=1, size=192)
  assert set(rates) == {'psnr', 'ssim', 'lpips (vgg)', 'lpips (alex)', 'niqe',
                        'fid (inception features)'}
  assert all(rate > 0 for rate in rates.values())


def test_frontier_runs_its_chains_on_smoke_stages(smoke_runs, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import demo  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import frontier  # pylint: disable=g-import-not-at-top

  for name in ('irm1', 'irm2', 'tem'):
    shutil.copytree(smoke_runs[name], tmp_path / name)
  config = demo_config.get_config()
  config.networks = 'smoke'
  config.config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  names, lq, gt = demo.held_out_faces(config, tmp_path)
  result = frontier.measure('ddim10', config, tmp_path, names, lq, gt, seeds=2)
  # DDIM grids of 6 (IRM-1, all of it), 4 (IRM-2: the 2 at or below N1 = 1000 of 2000) and
  # 20 (TEM: the 2 at or below N2 = 100 of 1000) steps.
  assert result['stages'] == {'irm1': 6, 'irm2': 2, 'tem': 2} and result['evaluations'] == 10
  assert result['seconds_per_face'] > 0
  assert result['psnr'][1] > 0  # two seeds, two different restorations
  assert 0 < result['lpips'][0] and -1 <= result['ssim'][0] <= 1
  only = frontier.measure('tem_only', config, tmp_path, names, lq, gt, seeds=1)
  assert only['stages'] == {'tem': 100}


def test_peer_benchmark_times_each_kind_of_case_with_our_code(monkeypatch):
  from diffbfr_jax.benchmarks import peer  # pylint: disable=g-import-not-at-top

  tiny = dict(peer.SMALL, inner_channel=8, norm_groups=4, channel_mults=(1, 2), attn_res=(8,),
              res_blocks=1, image_size=16)
  monkeypatch.setattr(peer, 'CHAIN_STEPS', 3)
  monkeypatch.setattr(peer, 'CASES', {
      'train': ('t', 'train', tiny, 2, 'img/s', 1), 'chain': ('c', 'chain', tiny, 1, 'ms/step', 1),
      'forward': ('f', 'forward', tiny, 1, 's', 1)})
  config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  figures = {name: peer.ours(name, config_dir) for name in peer.CASES}
  assert all(f > 0 for f in figures.values())
  results = {name: {'peer': [2 * f, 4 * f], 'ours': [f]} for name, f in figures.items()}
  rows = peer.table(results, list(peer.CASES)).splitlines()[2:]
  # The peer's mean is 3x ours: a third of its rate (train) or three times as fast (times).
  assert [row.split('|')[-2].strip() for row in rows] == ['0.33', '3.00', '3.00']


def test_peer_benchmark_names_a_checkout_without_sr3s_files(tmp_path):
  from diffbfr_jax.benchmarks import peer  # pylint: disable=g-import-not-at-top

  with pytest.raises(FileNotFoundError, match=r'sr3_modules/unet\.py not found'):
    peer.peer_modules(tmp_path)
