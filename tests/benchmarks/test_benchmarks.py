"""The benchmarks run end to end (their figures are printed, not asserted)."""

from configs import tem
from diffbfr_jax.benchmarks import chain_overhead


def test_measure_runs_on_a_smoke_config():
  per_eval, per_step = chain_overhead.measure(tem.get_config('smoke'), steps=2, batch=1, repeats=1)
  assert per_eval > 0 and per_step > 0


def test_train_step_benchmark_runs_on_a_smoke_config():
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top

  rate, peak, where = train_step.measure(tem.get_config('smoke'), steps=1)
  assert rate > 0 and peak > 0 and where
