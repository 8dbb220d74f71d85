"""The feeding benchmark runs end to end (its figures are printed, not asserted)."""

import pathlib

import pytest

from diffbfr_jax.data import feeding


def test_feeding_benchmark_times_every_step_and_path():
  config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  result = feeding.measure(['irm1'], images=2, mfu=0.5, peak_tflops=2.0, size='smoke',
                           config_dir=config_dir)
  steps = result['steps']
  assert len(steps) == 2 + 6 + 1 and all(ms > 0 for ms in steps.values())
  irm1 = result['stages']['irm1']
  assert set(irm1['paths']) == {'PNG folder', 'prepared dataset'}
  # One device at 50% of 2 TFLOP/s trains on 1e12 / FLOPs per image images per second.
  assert irm1['device_images_per_s'] == pytest.approx(1e3 / irm1['train_gflop_per_image'])
  for path in irm1['paths'].values():
    assert path['cores_per_device'] == pytest.approx(
        irm1['device_images_per_s'] / path['images_per_s_per_core'])
  text = feeding.table(result, mfu=0.5, peak_tflops=2.0)
  assert '| irm1 |' in text and 'prepared dataset: cores per device' in text
