"""The chain-overhead benchmark runs end to end (its figures are printed, not asserted)."""

from configs import tem
from diffbfr_jax.benchmarks import chain_overhead


def test_measure_runs_on_a_smoke_config():
  per_eval, per_step = chain_overhead.measure(tem.get_config('smoke'), steps=2, batch=1, repeats=1)
  assert per_eval > 0 and per_step > 0
