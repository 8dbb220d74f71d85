"""The benchmarks run end to end (their figures are printed, not asserted)."""

import pathlib
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
