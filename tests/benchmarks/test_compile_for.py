"""Compiling for a TPU and an NVIDIA GPU on this CPU (diffbfr_jax/benchmarks/compile_for.py):
the smoke stages' train step and chain with the real compilers, so a TPU- or GPU-only failure
shows here. Needs the compile extra (libtpu, the CUDA plugin), which `make test` installs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from diffbfr_jax.benchmarks import compile_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
TPU, GPU = 'v5e:2x2', 'h100:1x1x2'

needs_extra = pytest.mark.skipif(
    bool(compile_for.missing_packages('tpu') + compile_for.missing_packages('cuda')),
    reason='the compile extra is not installed (pip install -e ".[compile]")')


def _run(*args, check=True):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-m', 'diffbfr_jax.benchmarks.compile_for', *args],
                        capture_output=True, text=True, cwd=ROOT, env=env)
  if check:
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
  return done


def test_a_bad_target_is_one_error_line(tmp_path):
  done = _run('--targets=x100:1x1x8', f'--out={tmp_path}/r.json', check=False)
  assert done.returncode == 2 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(
      "error: --targets: unknown target 'x100:1x1x8'")
  done = _run('--targets=h100:8', f'--out={tmp_path}/r.json', check=False)
  assert done.stderr.strip().splitlines()[-1].startswith("error: --targets: 'h100:8'")


def test_a_missing_compiler_names_the_extra(monkeypatch):
  monkeypatch.setattr(compile_for, 'missing_packages',
                      lambda platform: ['libtpu'] if platform == 'tpu' else [])
  compile_for.check_targets(['h100:1x1x8'])
  with pytest.raises(compile_for.UserError) as e:
    compile_for.check_targets(['h100:1x1x8', 'v5e:2x4'])
  assert str(e.value) == ('--targets=v5e:2x4 needs libtpu, not installed: pip install -c '
                          'constraints.txt -e ".[compile]" (the compile extra)')


def test_the_paper_batch_is_split_over_devices_and_microbatches():
  assert compile_for.paper_schedule(64, 8, 3) == (8, 8, 4)  # 8 per device in 4 slices of 2
  assert compile_for.paper_schedule(64, 8, 8) == (8, 8, 1)
  assert compile_for.paper_schedule(2, 8, 4) == (2, 1, 1)  # IRM-2's 2 images: 2 devices busy
  assert compile_for.paper_schedule(4, 3, 4) == (2, 2, 1)  # the largest divisor of 4 up to 3
  assert compile_for.paper_schedule(4, 8, 0) is None


@needs_extra
def test_gpu_flops_count_the_library_calls_as_the_cpu_does():
  """The GPU executable has no cost analysis; ours adds cuDNN's convolutions (forward, input and
  kernel gradients, strided) and GEMMs to XLA's generic count. Checked against XLA's own count
  of the same program compiled for the CPU, and a closed form for the stride-1 convolution."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def loss(w1, w2, m, x):
    y = jax.lax.conv_general_dilated(x, w1, (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = jax.lax.conv_general_dilated(y, w2, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(y.reshape(4, -1, 64) @ m)

  def flops(fn, devices, shapes):
    sharding = jax.sharding.SingleDeviceSharding(devices[0])
    args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding) for s in shapes]
    compiled = jax.jit(fn).lower(*args).compile()
    if devices[0].platform == 'cpu':
      return compiled.cost_analysis()['flops']
    figures = compile_for.cost(compiled, 'cuda')
    assert figures['library_calls'] > 0 and not figures['uncounted_calls']
    return figures['flops']

  gpu = compile_for.target_devices('h100:1x1x1')
  shapes = [(3, 3, 32, 64), (3, 3, 64, 64), (64, 128), (4, 32, 32, 32)]
  grads = jax.grad(loss, argnums=(0, 1, 2, 3))
  on_cpu, on_gpu = flops(grads, jax.devices('cpu'), shapes), flops(grads, gpu, shapes)
  assert abs(on_gpu - on_cpu) <= 1e-3 * on_cpu, (on_gpu, on_cpu)
  # A 3x3, stride 1, pad 1 conv of [4, 16, 16, 64] to 64 channels: per spatial axis 3 * 16 - 2
  # (output, tap) pairs read the input, not its padding.
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert flops(conv, gpu, [(4, 16, 16, 64), (3, 3, 64, 64)]) == 2 * 4 * 64 * 64 * (3 * 16 - 2) ** 2


@needs_extra
def test_the_smoke_stages_compile_for_a_tpu_and_a_gpu(tmp_path):
  """Each smoke stage's train step (with the degradation in it for IRM-1 and IRM-2), chain and
  distilled chain of 2 steps, compiled by libtpu for TPU v5e and by XLA's GPU compiler for H100,
  at one image per device."""
  out = tmp_path / 'compile.json'
  configs = ','.join(f'configs/{s}.py:smoke' for s in ('irm1', 'irm2', 'tem'))
  _run(f'--targets={TPU},{GPU}', '--stages=', f'--configs={configs}', '--remat=false',
       '--batch=1', '--distilled=2', '--noisolate', f'--out={out}')
  results = json.loads(out.read_text())
  assert not results['errors']
  assert {(r['target'], r['stage']) for r in results['train']} == {
      (t, c) for t in (TPU, GPU) for c in configs.split(',')}
  for row in results['train']:
    assert row['device_kind'] == {TPU: 'TPU v5 lite', GPU: 'NVIDIA H100 80GB HBM3'}[row['target']]
    assert row['devices'] == {TPU: 4, GPU: 2}[row['target']]
    figures = row['at']['1']
    assert ('degrade' in figures) == ('tem' not in row['stage'])
    for program in [figures['step']] + ([figures['degrade']] if 'degrade' in figures else []):
      m = program['memory']
      assert m['total'] == m['argument'] + m['output'] - m['alias'] + m['temp'] > 0
      assert program['flops'] > 0 and program['bytes_accessed'] > 0
    assert figures['step']['memory']['argument'] > 0 and figures['step']['memory']['temp'] > 0
    assert 0 < row['step_s'] and row['images_per_s_per_chip'] > 0
  for row in results['chain']:
    assert row['reverse_steps'] == (row.get('distilled') or {'irm1': 2000, 'irm2': 1000, 'tem': 100}[
        row['stage'].split('/')[1].split('.')[0]])
    assert row['memory']['total'] > 0 and row['flops_per_reverse_step'] > 0
  assert len(results['chain']) == 12
  # A distilled chain's step is the same network's: the same FLOPs per reverse step, within the
  # sampler's few elementwise operations.
  per_step = {(r['target'], r['stage'], bool(r.get('distilled'))): r['flops_per_reverse_step']
              for r in results['chain']}
  for (target, stage, distilled), flops in per_step.items():
    if distilled:
      assert abs(flops / per_step[target, stage, False] - 1) < 0.02
  # The same network's step at one image costs the same on both targets, within what each
  # compiler adds (TPU: padding to its tiles).
  flops = {(r['target'], r['stage']): r['at']['1']['step']['flops'] for r in results['train']}
  for config in configs.split(','):
    assert 0.5 < flops[TPU, config] / flops[GPU, config] < 3


@needs_extra
def test_the_largest_batch_is_compiled_and_fits(tmp_path):
  """The fit rule under a small memory limit (the smoke TEM step takes about 12.6 MB per GPU at
  one image and 6.8 MB more per image, so the line says 3 images): the batch found is compiled
  and fits, and the line through batch 1 and 2 says the next one would not."""
  out = tmp_path / 'fit.json'
  _run(f'--targets={GPU}', '--stages=', '--configs=configs/tem.py:smoke', '--remat=false',
       '--chains=false', '--memory_limit_gib=0.028', '--memory_fraction=1', '--noisolate',
       f'--out={out}')
  row = json.loads(out.read_text())['train'][0]
  at, largest, limit = row['at'], row['per_device_batch'], row['memory_limit_bytes']
  assert limit == int(0.028 * 2**30) and largest > 2 and not row['refusals']
  assert at[str(largest)]['total_bytes'] <= limit  # compiled at that batch, and it fits
  one, two = at['1']['total_bytes'], at['2']['total_bytes']
  assert one + (two - one) * largest > limit
  # The paper schedule of its own global batch (2 on 2 devices: one image each), in hours.
  assert row['paper']['devices_used'] == 2 and row['paper']['per_device'] == 1
  assert row['paper']['hours_per_1m_steps'] > 0
