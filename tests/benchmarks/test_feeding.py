"""The feeding benchmark runs end to end (its figures are printed, not asserted)."""

import pathlib

import jax
import jax.extend
import numpy as np
import pytest

from diffbfr_jax import config_files
from diffbfr_jax import models
from diffbfr_jax.benchmarks import feeding


def _matmul_flops(jaxpr) -> float:
  """2 x multiply-adds of every convolution and matrix product in a jaxpr (nested ones too),
  from the shapes: a convolution's output size x its kernel's size per output feature."""
  total = 0.0
  for eqn in jaxpr.eqns:
    for param in eqn.params.values():
      if isinstance(param, jax.extend.core.ClosedJaxpr):
        total += _matmul_flops(param.jaxpr)
      elif isinstance(param, jax.extend.core.Jaxpr):
        total += _matmul_flops(param)
    out = np.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval.shape
      features = kernel[eqn.params['dimension_numbers'].rhs_spec[0]]
      total += 2.0 * out * np.prod(kernel) / features
    elif eqn.primitive.name == 'dot_general':
      (contracted, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * out * np.prod([lhs[i] for i in contracted])
  return total


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
  # The train step's FLOPs against the network's forward counted from its shapes: a backward
  # pass costs two forwards (the input and the weight gradients), the rest (norms, activations,
  # Adam, the EMA) a few percent at this size.
  config = config_files.stage_config(config_dir, 'irm1', 'smoke')
  model = models.create_model(config.model_type, **config.model)
  inputs = models.example_inputs(model, 1)
  params = jax.eval_shape(model.init, jax.random.key(0), *inputs)
  forward = _matmul_flops(jax.make_jaxpr(model.apply)(params, *inputs).jaxpr)
  assert 2.9 < irm1['train_gflop_per_image'] * 1e9 / forward < 3.3
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
