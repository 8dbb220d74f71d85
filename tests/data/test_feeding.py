"""The feeding benchmark runs end to end (its figures are printed, not asserted)."""

import pathlib

import pytest

from diffbfr_jax.data import feeding


def test_feeding_benchmark_times_every_step_and_path():
  config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  result = feeding.measure(['irm1'], images=2, mfu=0.5, peak_tflops=2.0, size='smoke',
                           config_dir=config_dir)
  steps = result['steps']
  assert len(steps) == 3 + 6 + 2 and all(ms > 0 for ms in steps.values())
  irm1 = result['stages']['irm1']
  assert set(irm1['paths']) == {f'{read}, degraded on the {where}' for where in ('host', 'device')
                                for read in ('PNG folder', 'face_folder/512',
                                             'face_folder/512_raw')}
  assert irm1['degradation_gflop_per_image'] > 0
  assert irm1['device_vs_host_psnr'] > 35  # the device's LQ is the host's, up to JPEG rounding
  for name, path in irm1['paths'].items():
    # One device at 50% of 2 TFLOP/s trains on 1e12 / FLOPs per image images per second.
    flops = irm1['train_gflop_per_image'] + (
        irm1['degradation_gflop_per_image'] if name.endswith('device') else 0)
    assert path['device_gflop_per_image'] == pytest.approx(flops)
    assert path['device_images_per_s'] == pytest.approx(1e3 / flops)
    assert path['cores_per_device'] == pytest.approx(
        path['device_images_per_s'] / path['images_per_s_per_core'])
    assert path['images_per_s_per_core'] == pytest.approx(1e3 / path['host_ms'])
  text = feeding.table(result, mfu=0.5, peak_tflops=2.0)
  assert '| irm1 | face_folder/512_raw, degraded on the device |' in text
