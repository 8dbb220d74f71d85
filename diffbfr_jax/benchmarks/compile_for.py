r"""Compile for the accelerator you will rent, from any machine: the real TPU and GPU compilers,
no accelerator, memory fit, FLOPs and a roofline time per step.

  python -m diffbfr_jax.benchmarks.compile_for --targets=v5e:2x4,h100:1x1x8 \
      --out=results/compile.json

needs the `compile` extra (`pip install -c constraints.txt -e ".[compile]"`: libtpu, JAX's
CUDA 12 plugin and CUDA's PTX assembler; nothing that drives a GPU). For every target of
--targets (TPU `v4`, `v5e`, `v5p`, `v6e` with a topology, e.g. `v5e:2x4`, `v4:2x2x1`; NVIDIA
`h100`, `h200`, `a100` as slices x hosts x GPUs per host, e.g. `h100:1x1x8`) and every stage of
--stages (the paper's `irm1`, `irm2`, `tem`) and config file of --configs
(`configs/irm2.py:demo`), it compiles, with ShapeDtypeStructs only (nothing is allocated):

- train: the pmapped train step exactly as the train job builds it (`parallel.pmap_train_step`
  over the target's devices; Adam, EMA, the stage's loss), in --dtype, for each of --remat,
  with the degradation on the device (`config.data.degrade_on='device'`: the job's second
  pmapped program, `train.example_builder`) for the stages whose examples it makes (IRM-1,
  IRM-2; --degrade_on). Per device: argument, output, aliased, temporary and total bytes
  (arguments + outputs - aliased + temporaries, the accelerator benchmark's rule; with the
  degradation, the larger of the step's and the degradation's total plus the state) against the
  device's memory; the largest batch per device that compiles within it (accelerator.py's rule:
  a line through the compiled totals at batch 1 and 2 (2 and 8 where those are equal), aimed at
  --memory_fraction of the limit, then that batch compiled and cut by 10% while it is over the
  limit or the compiler refuses it); XLA's FLOPs and bytes accessed per step; the roofline time (the larger of FLOPs / peak
  and bytes / memory bandwidth, per program, summed), images per second per chip at the largest
  batch, and hours per million steps at the config's own global batch (below); compile seconds.
- chain: the stage's reverse chain as the restore job compiles it (`cascade.make_cascade` of that
  stage under `parallel.jit_over_local_devices`) at --chain_batch faces per device: the same
  memory figures; FLOPs and bytes of one reverse step (XLA's cost analysis counts a loop's body
  once) and the roofline seconds per face for the whole chain.

Where the figures come from: TPU: libtpu's compiler for `jax.experimental.topologies` devices;
its memory analysis and cost analysis; the memory limit is the compiler's own ("available HBM"
in its out-of-memory message, read once per target). GPU: XLA's GPU compiler in the CUDA plugin
for a target description written here from NVIDIA's public figures (GPUS; `gpu_target_config`);
nothing is autotuned (there is no GPU), so kernels are XLA's defaults; the executable gives no
cost analysis, so FLOPs and bytes are XLA's HloCostAnalysis of the optimised module with each
cuDNN convolution and cuBLAS GEMM counted from its shapes as XLA's GPU cost analysis counts it;
the memory limit is the data-sheet memory x --gpu_memory_fraction (JAX's default preallocation,
0.75, or XLA_PYTHON_CLIENT_MEM_FRACTION when set). Peaks and bandwidths: accelerator.PEAK_TFLOPS
and accelerator.HBM_GBPS, each with its source. Nothing here is measured on an accelerator: the
roofline time is a lower bound of the step's time, not a prediction of it.

Hours per million steps: the config's global batch G (`config.train.batch_size`) over n devices,
the largest divisor of G not above the target's devices (the others idle), is G / n images per
device per step; where that is over the largest batch, the step accumulates gradients over m
microbatches (`config.train.microbatches`, the smallest divisor of G / n that fits) and its time
is taken as m roofline steps at G / (n m) (an upper bound: the optimizer is counted m times).
FLOPs and bytes at a batch are read off the line through the compiled batch 1 and 2.

Every row runs in a process of its own and is written to --out as it ends; --resume keeps the
rows already there. Nothing here imports TensorFlow. docs/compile.md has the figures.
"""

import datetime
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

from absl import app
from absl import flags

from diffbfr_jax.benchmarks import accelerator

FLAGS = flags.FLAGS

STAGES = accelerator.STAGES
EXTRA = 'pip install -c constraints.txt -e ".[compile]"'

# TPU families: JAX's device kind and the chip configuration the topology is built with
# ('megacore': one JAX device per chip of two TensorCores, as JAX runs v4 and v5p).
TPUS = {
    'v4': dict(kind='TPU v4', chip_config='megacore'),
    'v5e': dict(kind='TPU v5 lite', chip_config='default'),
    'v5p': dict(kind='TPU v5', chip_config='megacore'),
    'v6e': dict(kind='TPU v6 lite', chip_config='default'),
}

# NVIDIA GPUs as XLA's GPU compiler takes them (a GpuTargetConfigProto in text form; the fields
# below are the ones it needs to compile or that changed its output when left out, found by
# experiment with jaxlib 0.10.2). Sources:
#   [CC]   CUDA C++ Programming Guide, "Compute Capabilities": technical specifications per
#          compute capability (8.0, 9.0): threads, warps, registers, shared memory, grid and
#          block dimensions.
#   [H100] NVIDIA H100 Tensor Core GPU Architecture whitepaper (H100 SXM5: 132 SMs, 128 FP32
#          cores per SM, 50 MB L2; 1024 dense FP16/BF16 FMA per clock per SM on A100, twice that
#          on H100) and NVIDIA H100 datasheet (H100 SXM: 80 GB, 3.35 TB/s, 989.4 dense BF16
#          TFLOPS; the clock is the one that peak implies: 989.4e12 / (132 x 4096) = 1.83 GHz).
#   [H200] NVIDIA H200 datasheet (141 GB, 4.8 TB/s, the same BF16 and FP8 peaks as the H100
#          SXM: the same GH100 GPU, so its SMs, L2 and clock).
#   [A100] NVIDIA A100 Tensor Core GPU Architecture whitepaper (108 SMs, 64 FP32 cores per SM,
#          40 MB L2, boost clock 1410 MHz) and NVIDIA A100 datasheet (A100 80GB SXM: 80 GB,
#          2,039 GB/s).
#   [cuDNN] the cuDNN that `pip install "jax[cuda12]==0.10.2"` installs (nvidia-cudnn-cu12 9.28).
_CC_8_9 = dict(  # [CC], identical for compute capability 8.0 and 9.0 unless overridden
    threads_per_block_limit=1024, threads_per_warp=32, threads_per_core_limit=2048,
    registers_per_core_limit=65536, registers_per_block_limit=65536,
    shared_memory_per_block=48 * 1024, block_dim_limit_x=2**31 - 1, block_dim_limit_y=65535,
    block_dim_limit_z=65535)
GPUS = {
    'h100': dict(_CC_8_9, name='NVIDIA H100 80GB HBM3', compute_capability=(9, 0),  # [H100]
                 core_count=132, fpus_per_core=128, clock_rate_ghz=1.83,  # [H100]
                 device_memory_size=80 * 10**9, memory_bandwidth=3.35e12,  # [H100]
                 l2_cache_size=50 * 2**20,  # [H100]
                 shared_memory_per_core=228 * 1024, shared_memory_per_block_optin=227 * 1024),
    'h200': dict(_CC_8_9, name='NVIDIA H200', compute_capability=(9, 0),  # [H200]
                 core_count=132, fpus_per_core=128, clock_rate_ghz=1.83,  # [H200] via [H100]
                 device_memory_size=141 * 10**9, memory_bandwidth=4.8e12,  # [H200]
                 l2_cache_size=50 * 2**20,  # [H200] via [H100]
                 shared_memory_per_core=228 * 1024, shared_memory_per_block_optin=227 * 1024),
    'a100': dict(_CC_8_9, name='NVIDIA A100-SXM4-80GB', compute_capability=(8, 0),  # [A100]
                 core_count=108, fpus_per_core=64, clock_rate_ghz=1.41,  # [A100]
                 device_memory_size=80 * 10**9, memory_bandwidth=2.039e12,  # [A100]
                 l2_cache_size=40 * 2**20,  # [A100]
                 shared_memory_per_core=164 * 1024, shared_memory_per_block_optin=163 * 1024),
}
CUDNN_VERSION = (9, 28, 0)  # [cuDNN]
GPU_SOURCES = ('CUDA C++ Programming Guide (compute capabilities); NVIDIA H100 / A100 '
               'architecture whitepapers; H100, H200, A100 datasheets (diffbfr_jax/benchmarks/'
               'compile_for.py, GPUS)')


class UserError(Exception):
  """A mistake in the flags or a missing package: one `error:` line, no traceback."""


# --- targets ---------------------------------------------------------------------------------


def parse_target(target: str) -> dict:
  """'v5e:2x4' / 'h100:1x1x8' -> {family, shape, platform}; UserError names what is wrong."""
  family, _, shape = target.partition(':')
  family = family.strip().lower()
  if family not in TPUS and family not in GPUS:
    raise UserError(f'--targets: unknown target {target!r}; expected one of '
                    f'{sorted(TPUS) + sorted(GPUS)} with a shape, e.g. v5e:2x4 or h100:1x1x8')
  if not re.fullmatch(r'\d+(x\d+){1,2}', shape):
    raise UserError(f'--targets: {target!r} has no shape; e.g. v5e:2x4, v4:2x2x1 (a TPU '
                    'topology) or h100:1x1x8 (slices x hosts x GPUs per host)')
  if family in GPUS and shape.count('x') != 2:
    raise UserError(f'--targets: {target!r}: a GPU shape is slices x hosts x GPUs per host, '
                    f'e.g. {family}:1x1x8')
  return dict(family=family, shape=shape, platform='tpu' if family in TPUS else 'cuda')


def missing_packages(platform: str) -> list:
  """The distributions the compile extra brings that `platform`'s compiler needs and are not
  installed (without importing JAX)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  needed = {'tpu': ['libtpu'], 'cuda': ['jax-cuda12-plugin', 'jax-cuda12-pjrt',
                                        'nvidia-cuda-nvcc-cu12']}[platform]
  missing = []
  for name in needed:
    try:
      metadata.version(name)
    except metadata.PackageNotFoundError:
      missing.append(name)
  return missing


def check_targets(targets) -> list:
  """The parsed targets, after checking that their compilers are installed."""
  parsed = [parse_target(t) for t in targets]
  for target, spec in zip(targets, parsed):
    missing = missing_packages(spec['platform'])
    if missing:
      raise UserError(f'--targets={target} needs {", ".join(missing)}, not installed: '
                      f'{EXTRA} (the compile extra)')
  return parsed


def gpu_target_config(family: str) -> str:
  """GPUS[family] as the text-format GpuTargetConfigProto that XLA's GPU compiler takes."""
  spec = dict(GPUS[family])
  major, minor = spec.pop('compute_capability')
  name = spec.pop('name')
  lines = ['gpu_device_info {']
  for field, value in spec.items():
    lines.append(f'  {field}: {value:.0f}' if isinstance(value, float) and field != 'clock_rate_ghz'
                 else f'  {field}: {value}')
  lines += [f'  cuda_compute_capability {{ major: {major} minor: {minor} }}',
            f'  name: "{name}"', '}', 'platform_name: "CUDA"',
            'dnn_version_info {{ major: {} minor: {} patch: {} }}'.format(*CUDNN_VERSION),
            f'device_description_str: "{name}"']
  return '\n'.join(lines) + '\n'


def target_devices(target: str) -> list:
  """The compile-only devices of `target` (no accelerator needed)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  spec = parse_target(target)
  if spec['platform'] == 'tpu':
    topology = topologies.get_topology_desc(
        platform='tpu', topology_name=f"{spec['family']}:{spec['shape']}",
        chip_config_name=TPUS[spec['family']]['chip_config'])
  else:
    try:
      topology = topologies.get_topology_desc(platform='cuda', topology=spec['shape'],
                                              target_config=gpu_target_config(spec['family']))
    except NotImplementedError:
      raise UserError(f"--targets={target}: JAX's CUDA plugin did not start (JAX_PLATFORMS="
                      f"{os.environ.get('JAX_PLATFORMS')!r}); JAX must start with "
                      'JAX_PLATFORMS=cpu on a machine without a GPU') from None
  return list(topology.devices)


_HBM = re.compile(r'available HBM \(([\d.]+)G\)')


def memory_limit(target: str, devices) -> tuple:
  """(bytes one device can hold, where the figure comes from). TPU: the compiler's own, from
  the message with which it refuses a program that needs more; GPU: the data sheet's memory x
  --gpu_memory_fraction."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  spec = parse_target(target)
  if spec['platform'] == 'cuda':
    total = GPUS[spec['family']]['device_memory_size']
    fraction = gpu_memory_fraction()
    return int(total * fraction), (f'data sheet {total / 1e9:.0f} GB x {fraction} (JAX\'s '
                                   'preallocated share; XLA_PYTHON_CLIENT_MEM_FRACTION)')
  sharding = jax.sharding.SingleDeviceSharding(devices[0])
  huge = jax.ShapeDtypeStruct((2**20, 2**18), jnp.float32, sharding=sharding)  # 1 TiB
  try:
    jax.jit(lambda x: jnp.sin(x) * 2).lower(huge).compile()
  except Exception as e:  # pylint: disable=broad-except
    found = _HBM.search(str(e))
    if found:
      return int(float(found.group(1)) * 2**30), 'libtpu: "available HBM" in its refusal'
    raise
  raise RuntimeError(f'{target}: the compiler accepted a 1 TiB program; no memory limit found')


def gpu_memory_fraction() -> float:
  if FLAGS.gpu_memory_fraction:
    return FLAGS.gpu_memory_fraction
  return float(os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.75'))


def bandwidth(device_kind: str):
  """(memory bandwidth in bytes/s, its source) of `device_kind`, or (None, why not)."""
  for key, gbps, source in accelerator.HBM_GBPS:
    if key in device_kind:
      return gbps * 1e9, f'{source} ({key})'
  return None, f'{device_kind!r} is not in accelerator.HBM_GBPS'


# --- what a compiled program costs -----------------------------------------------------------


_DTYPE_BYTES = {'pred': 1, 's4': 1, 'u4': 1, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1,
                's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
                's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_ARRAY = re.compile(r'([a-z][a-z0-9]*)\[([\d,]*)\]')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|[a-z][a-z0-9]*\[[\d,]*\]'
                          r'(?:\{[^}]*\})?)\s+([\w\-]+)\((.*?)\)(.*)$')


def _arrays(shape_text: str) -> list:
  """[(dtype, dims)] of an HLO shape (an array or a tuple of arrays)."""
  return [(t, tuple(int(d) for d in dims.split(',') if d))
          for t, dims in _ARRAY.findall(shape_text)]


def _bytes(array) -> int:
  dtype, dims = array
  return _DTYPE_BYTES.get(dtype, 0) * math.prod(dims)


def _valid_pairs(out_size, in_size, k, stride, low, lhs_dilation, rhs_dilation) -> int:
  """(output position, kernel tap) pairs of one spatial dimension that read the input (not its
  padding): what XLA's HloCostAnalysis counts for a convolution."""
  count = 0
  for o in range(out_size):
    for t in range(k):
      p = o * stride + t * rhs_dilation - low
      if 0 <= p <= (in_size - 1) * lhs_dilation and p % lhs_dilation == 0:
        count += 1
  return count


def _window(text: str, spatial: int) -> dict:
  found = re.search(r'window=\{([^}]*)\}', text)
  fields = dict(f.split('=') for f in found.group(1).split()) if found else {}
  dims = lambda key, default: ([int(v) for v in fields[key].split('x')] if key in fields
                               else [default] * spatial)
  pads = ([tuple(int(v) for v in p.split('_')) for p in fields['pad'].split('x')]
          if 'pad' in fields else [(0, 0)] * spatial)
  return dict(stride=dims('stride', 1), pad=pads, lhs_dilate=dims('lhs_dilate', 1),
              rhs_dilate=dims('rhs_dilate', 1))


def conv_flops(target: str, operands: list, result: list, text: str) -> float:
  """FLOPs of a cuDNN convolution custom call, as XLA's GPU cost analysis counts them: its
  dim_labels and window are the forward convolution's, whose input x, kernel w and output y
  are (x, w) -> y (forward), (y, w) -> x (backward input) or (x, y) -> w (backward filter)."""
  labels = re.search(r'dim_labels=(\w+)_(\w+)->(\w+)', text).groups()
  if 'BackwardInput' in target:
    y, w, x = operands[0][1], operands[1][1], result[0][1]
  elif 'BackwardFilter' in target:
    x, y, w = operands[0][1], operands[1][1], result[0][1]
  else:
    x, w, y = operands[0][1], operands[1][1], result[0][1]
  lhs, rhs, out = labels
  spatial = sum(c.isdigit() for c in lhs)
  window = _window(text, spatial)
  macs = x[lhs.index('b')] * w[rhs.index('o')] * w[rhs.index('i')]
  for d in range(spatial):
    macs *= _valid_pairs(y[out.index(str(d))], x[lhs.index(str(d))], w[rhs.index(str(d))],
                         window['stride'][d], window['pad'][d][0], window['lhs_dilate'][d],
                         window['rhs_dilate'][d])
  return 2.0 * macs


def gemm_flops(operands: list, result: list, text: str) -> float:
  """FLOPs of a cuBLAS GEMM custom call: 2 x output elements x contracted size."""
  config = json.JSONDecoder().raw_decode(text[text.index('backend_config=') + 15:])[0]
  dims = (config.get('gemm_backend_config') or config).get('dot_dimension_numbers', {})
  contracted = math.prod(operands[0][1][int(d)] for d in dims.get('lhs_contracting_dimensions',
                                                                  []))
  return 2.0 * math.prod(result[0][1]) * contracted


def library_calls(hlo_text: str) -> dict:
  """The custom calls of an optimised GPU module, which XLA's generic HloCostAnalysis counts as
  -1 FLOP and -1 byte each: {count, flops, bytes (operands and the real output, not the
  workspace), uncounted: {target: count} (calls whose FLOPs are not known here)}."""
  shapes, calls = {}, []
  for line in hlo_text.splitlines():
    found = _INSTRUCTION.match(line)
    if not found:
      continue
    name, shape, opcode, operands, rest = found.groups()
    shapes[name] = _arrays(shape)
    if opcode == 'custom-call':
      calls.append((shape, operands, rest))
  total = dict(count=0, flops=0.0, bytes=0.0, uncounted={})
  for shape, operands, rest in calls:
    target = re.search(r'custom_call_target="([^"]+)"', rest).group(1)
    ops = [a for o in operands.split(',') if o.strip()
           for a in shapes.get(o.strip().lstrip('%').split(' ')[-1].lstrip('%'), [])]
    result = _arrays(shape)
    if result and shape.startswith('(') and result[-1][0] == 'u8':
      result = result[:-1]  # the workspace of a cuDNN or cuBLAS call
    total['count'] += 1
    total['bytes'] += sum(_bytes(a) for a in ops + result)
    if target.startswith('__cudnn$conv'):
      total['flops'] += conv_flops(target, ops, result, rest)
    elif target.startswith('__cublas$'):
      total['flops'] += gemm_flops(ops, result, rest)
    else:
      total['uncounted'][target] = total['uncounted'].get(target, 0) + 1
  return total


def cost(compiled, platform: str) -> dict:
  """{flops, bytes_accessed, source} of a compiled program for its target."""
  if platform == 'tpu':
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return dict(flops=float(analysis['flops']), bytes_accessed=float(analysis['bytes accessed']),
                source="libtpu's cost analysis of the compiled program")
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top

  module = compiled.runtime_executable().hlo_modules()[0]
  generic = _jax.hlo_module_cost_analysis(parallel.cpu_client(), module)
  calls = library_calls(module.to_string())
  return dict(flops=generic['flops'] + calls['count'] + calls['flops'],
              bytes_accessed=generic['bytes accessed'] + calls['count'] + calls['bytes'],
              library_calls=calls['count'], uncounted_calls=calls['uncounted'],
              source="XLA's HloCostAnalysis of the GPU-optimised module; cuDNN convolutions "
                     'and cuBLAS GEMMs counted from their shapes')


def memory(compiled) -> dict:
  """Per-device bytes of a compiled program (its memory analysis)."""
  m = compiled.memory_analysis()
  figures = dict(argument=int(m.argument_size_in_bytes), output=int(m.output_size_in_bytes),
                 alias=int(m.alias_size_in_bytes), temp=int(m.temp_size_in_bytes),
                 code=int(m.generated_code_size_in_bytes))
  figures['total'] = accelerator.compiled_bytes(compiled)
  return figures


def refused(error: Exception) -> bool:
  """The compiler's 'does not fit' (TPU: "RESOURCE_EXHAUSTED: Ran out of memory on HBM ...
  exceeds available HBM"), not another resource (a GPU kernel's shared memory)."""
  text = str(error)
  return accelerator.out_of_memory(error) and ('HBM' in text or 'memory' in text.lower()
                                               and 'Shared memory' not in text)


# XLA's GPU compiler, with no GPU to autotune on, cannot tile some Triton GEMM fusions (the
# degradation's float32 resizes at some batches: "INTERNAL: Couldn't find output tile sizes");
# such a program is compiled again with Triton's GEMMs off (cuBLAS), and the row says so.
_NO_TILE = "Couldn't find output tile sizes"
_NO_TRITON_GEMM = {'xla_gpu_enable_triton_gemm': False}


def compile_lowered(lowered, notes: list, what: str):
  """`lowered.compile()`, on a GPU target's tiling failure again without Triton's GEMMs (noted
  in `notes`)."""
  try:
    return lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if _NO_TILE not in str(e):
      raise
    notes.append(f'{what}: compiled with {_NO_TRITON_GEMM} after "{str(e).splitlines()[0][:120]}"')
    return lowered.compile(compiler_options=_NO_TRITON_GEMM)


def roofline_seconds(flops: float, bytes_accessed: float, peak: float, bw: float) -> tuple:
  """(seconds, 'compute' or 'memory'): the larger of FLOPs / peak and bytes / bandwidth."""
  compute, traffic = flops / peak, bytes_accessed / bw
  return (compute, 'compute') if compute >= traffic else (traffic, 'memory')


def fitted_line(low: int, bytes_low: int, high: int, bytes_high: int, limit: float,
                max_batch: int) -> int:
  """The largest batch whose straight line through (low, bytes_low) and (high, bytes_high) stays
  under `limit` (at most `max_batch`): accelerator.fitted_batch for any two batches."""
  per_image = (bytes_high - bytes_low) / (high - low)
  if per_image <= 0:
    return max_batch
  return max(1, min(max_batch, int(low + (limit - bytes_low) // per_image)))


def paper_schedule(global_batch: int, devices: int, largest: int):
  """(devices used, images per device, microbatches) of a global batch on `devices` devices
  that hold at most `largest` images each; None when not one image fits."""
  if largest < 1:
    return None
  used = max(d for d in range(1, min(devices, global_batch) + 1) if global_batch % d == 0)
  per_device = global_batch // used
  micro = next(m for m in range(1, per_device + 1)
               if per_device % m == 0 and per_device // m <= largest)
  return used, per_device, micro


# --- the programs ------------------------------------------------------------------------------


def _config(task: dict):
  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top

  name = task['stage']
  if name in STAGES:
    config = config_files.stage_config(FLAGS.config_dir, name)
  else:
    path, _, arg = name.partition(':')
    config = config_files.load(path, arg or None)
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  if 'remat' in task:
    config.model.remat = task['remat']
  if task.get('distilled'):  # configs/cascade.py's distillK presets: K DDIM steps per stage
    config.sampling.update(respacing=f"segment{task['distilled']}", sampler='ddim', eta=0.0,
                           clip_x0=True)
  config.train.microbatches = 1
  config.data.degrade_on = task.get('degrade_on', 'host')
  return config


def _abstract(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def train_programs(config, devices, *, donate: bool = False, notes=None):
  """`compile_at(batch) -> {'step': compiled, 'degrade': compiled or None, 'state_bytes'}`:
  the train job's programs for `config` over `devices`, from abstract values only (`notes`
  collects compile_lowered's)."""
  notes = [] if notes is None else notes
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import train  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import device_degradation  # pylint: disable=g-import-not-at-top

  model, tx, step = train_step.model_and_step(config, devices, donate_state=donate)
  state = jax.eval_shape(lambda: train.create_state(config, model, tx, jax.random.key(0)))
  state_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))
  key = jax.eval_shape(lambda: jax.random.key(1))
  n = len(devices)
  degrade = None
  if config.data.degrade_on == 'device':
    degrade = parallel.pmap_batch_fn(functools.partial(
        device_degradation.make_examples, **device_degradation.options_from_config(config)),
        devices=devices)
    one = _abstract(accelerator.synthetic_items(config, 1, 1))

  def compile_at(batch: int) -> dict:
    if degrade is not None:
      items = jax.tree_util.tree_map(
          lambda s: jax.ShapeDtypeStruct((n, batch) + s.shape[2:], s.dtype), one)
      lowered = degrade.lower(items)
      examples = jax.eval_shape(degrade, items)
      degrade_compiled = compile_lowered(lowered, notes, f'degradation at batch {batch}')
    else:
      size = config.model.image_size
      image = jax.ShapeDtypeStruct((n, batch, size, size, 3), jnp.float32)
      examples = {'gt': image, 'id': jax.ShapeDtypeStruct((n, batch), np.int32)}
      if config.model.in_channels > 3:
        examples['cond'] = image
      degrade_compiled = None
    compiled = compile_lowered(step.lower(state, examples, key), notes, f'step at batch {batch}')
    return dict(step=compiled, degrade=degrade_compiled, state_bytes=state_bytes)

  return compile_at


def chain_program(config, devices, per_device_batch: int, prediction: str = 'eps'):
  """The stage's reverse chain as the restore job compiles it (a one-stage cascade jitted over
  `devices`), compiled from abstract values; (compiled, reverse steps). `prediction`: what the
  network predicts (a distilled IRM-1 predicts v)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import cascade  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import models  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top

  stage = cascade.build_stage(config.stage, config.model_type, config.model, config.diffusion,
                              config.sampling, prediction)
  params = {stage.name: jax.eval_shape(stage.model.init, jax.random.key(0),
                                       *models.example_inputs(stage.model))['params']}
  run = parallel.jit_over_local_devices(cascade.make_cascade([stage]), devices=devices)
  faces = per_device_batch * len(devices)
  size = config.data.source_size  # the restore job's faces (512), resized to the stage's size
  batch = {'lq': jax.ShapeDtypeStruct((faces, size, size, 3), jnp.float32),
           'key': jax.eval_shape(lambda: jax.random.split(jax.random.key(0), faces))}
  return compile_lowered(run.lower(params, batch), [], 'chain'), cascade.num_steps(stage)


# --- one row per process -----------------------------------------------------------------------


def _program_figures(compiled, platform: str) -> dict:
  return dict(memory=memory(compiled), **cost(compiled, platform))


def _figures(programs: dict, platform: str, seconds: float) -> dict:
  step = _program_figures(programs['step'], platform)
  figures = dict(step=step, compile_s=seconds, total_bytes=step['memory']['total'])
  if programs['degrade'] is not None:
    degrade = _program_figures(programs['degrade'], platform)
    figures['degrade'] = degrade
    # The state stays on the device while the degradation runs.
    figures['total_bytes'] = max(step['memory']['total'],
                                 degrade['memory']['total'] + programs['state_bytes'])
  return figures


def _device(target: str):
  devices = target_devices(target)
  if FLAGS.memory_limit_gib:
    limit, source = int(FLAGS.memory_limit_gib * 2**30), '--memory_limit_gib'
  else:
    limit, source = memory_limit(target, devices)
  kind = devices[0].device_kind
  peak, peak_source = accelerator.peak_tflops(kind, 'bfloat16', FLAGS.peak_tflops)
  bw, bw_source = bandwidth(kind)
  info = dict(device_kind=kind, devices=len(devices), hosts=len({d.process_index for d in devices}),
              platform=parse_target(target)['platform'], memory_limit_bytes=limit,
              memory_source=source, peak_tflops=peak, peak_source=peak_source,
              bandwidth_bytes_per_s=bw, bandwidth_source=bw_source)
  if info['platform'] == 'cuda':
    info['description_source'] = GPU_SOURCES
  return devices, info


def _roofline(figures: dict, info: dict, batch: int) -> dict:
  peak, bw = info['peak_tflops'], info['bandwidth_bytes_per_s']
  if not peak or not bw:
    return {}
  seconds, bounds = 0.0, []
  for name in ('step', 'degrade'):
    if name in figures:
      s, bound = roofline_seconds(figures[name]['flops'], figures[name]['bytes_accessed'],
                                  peak * 1e12, bw)
      seconds += s
      bounds.append(f'{name}: {bound}')
  return dict(step_s=seconds, bound=', '.join(bounds), images_per_s_per_chip=batch / seconds)


def _line(at: dict, key: str, program: str, batch: int) -> float:
  one, two = at['1'][program][key], at['2'][program][key]
  return one + (two - one) * (batch - 1)


def _paper_hours(config, info: dict, at: dict, largest: int) -> dict:
  global_batch = int(config.train.batch_size)
  plan = paper_schedule(global_batch, info['devices'], largest)
  if (plan is None or not {'1', '2'} <= set(at) or not info['peak_tflops']
      or not info['bandwidth_bytes_per_s']):
    return dict(global_batch=global_batch, hours_per_1m_steps=None)
  used, per_device, micro = plan
  micro_batch = per_device // micro
  seconds = 0.0
  for program in ('step', 'degrade'):
    if program in at['1']:
      seconds += roofline_seconds(_line(at, 'flops', program, micro_batch),
                                  _line(at, 'bytes_accessed', program, micro_batch),
                                  info['peak_tflops'] * 1e12, info['bandwidth_bytes_per_s'])[0]
  step_s = micro * seconds
  return dict(global_batch=global_batch, devices_used=used, per_device=per_device,
              microbatches=micro, step_s=step_s, hours_per_1m_steps=step_s * 1e6 / 3600)


def _line_roofline(row: dict, batch: int) -> dict:
  """The roofline step at `batch` from the FLOPs and bytes on the line through batch 1 and 2
  (a --noconfirm row, whose batch was not compiled)."""
  peak, bw = row['peak_tflops'], row['bandwidth_bytes_per_s']
  if not peak or not bw:
    return dict(step_s=None, images_per_s_per_chip=None)
  seconds = sum(roofline_seconds(_line(row['at'], 'flops', program, batch),
                                 _line(row['at'], 'bytes_accessed', program, batch),
                                 peak * 1e12, bw)[0]
                for program in ('step', 'degrade') if row['at']['1'].get(program))
  return dict(step_s=seconds, images_per_s_per_chip=batch / seconds)


def _train(task: dict) -> dict:
  from diffbfr_jax.models import layers  # pylint: disable=g-import-not-at-top

  platform = parse_target(task['target'])['platform']
  others = tuple(p for p in layers.ROWS_KERNEL_GRAD_PLATFORMS if p != platform)
  layers.ROWS_KERNEL_GRAD_PLATFORMS = others + ((platform,) if task['conv_grad'] == 'rows'
                                                else ())
  devices, info = _device(task['target'])
  config = _config(task)
  notes = []
  compile_at = train_programs(config, devices, donate=task['donate'], notes=notes)
  at, refusals = {}, []
  limit = info['memory_limit_bytes']

  def fits(batch: int) -> bool:
    """Compiles at `batch` (once); False when the compiler refuses it or it is over the limit."""
    if str(batch) in at:
      return at[str(batch)]['total_bytes'] <= limit
    t0 = time.perf_counter()
    try:
      programs = compile_at(batch)
    except Exception as e:  # pylint: disable=broad-except
      if not refused(e):
        raise
      refusals.append(dict(batch=batch, error=str(e).splitlines()[0][:300]))
      return False
    at[str(batch)] = _figures(programs, info['platform'], time.perf_counter() - t0)
    return at[str(batch)]['total_bytes'] <= limit

  search = dict(rule=f'line through batch 1 and 2 aimed at {FLAGS.memory_fraction} of the '
                     'limit, then compiled; cut by 10% while over the limit or refused',
                tried=[])
  if FLAGS.batch:
    fits(FLAGS.batch)
    largest = FLAGS.batch if str(FLAGS.batch) in at else 0
    search['rule'] = '--batch'
  elif not fits(1):
    largest = 0
  elif not fits(2):
    largest = 1
  else:
    low, high = 1, 2
    if at['2']['total_bytes'] <= at['1']['total_bytes'] and fits(8):
      # Small batches can share one buffer size (XLA rounds them up): slope from 2 to 8.
      low, high = 2, 8
      search['rule'] = search['rule'].replace('batch 1 and 2', 'batch 2 and 8 (1 and 2 were '
                                              'equal)')
    largest = fitted_line(low, at[str(low)]['total_bytes'], high, at[str(high)]['total_bytes'],
                          FLAGS.memory_fraction * limit, FLAGS.max_batch)
    if not FLAGS.confirm:
      search['rule'] += ' (--noconfirm: the line only, not compiled)'
    while FLAGS.confirm and largest > 2 and not fits(largest):
      search['tried'].append(largest)
      largest = max(2, int(largest * 0.9))
  search['confirmed'] = str(largest) in at or largest == 0
  row = dict(task, **info, per_device_batch=largest, batch_search=search, refusals=refusals,
             notes=notes, at=at, dtype=config.model.dtype,
             paper=_paper_hours(config, info, at, largest))
  if str(largest) in at:
    row.update(_roofline(at[str(largest)], info, largest))
  row['compile_s'] = sum(f['compile_s'] for f in at.values())
  return row


def _chain(task: dict) -> dict:
  devices, info = _device(task['target'])
  config = _config(task)
  t0 = time.perf_counter()
  prediction = 'eps'
  if task.get('distilled'):  # what the distill job's student of this stage predicts
    from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
    prediction = config_files.stage_config(FLAGS.config_dir, 'distill',
                                           config.stage).distill.prediction
  compiled, steps = chain_program(config, devices, FLAGS.chain_batch, prediction)
  seconds = time.perf_counter() - t0
  figures = dict(step=_program_figures(compiled, info['platform']))
  row = dict(task, **info, per_device_batch=FLAGS.chain_batch, reverse_steps=steps,
             memory=figures['step']['memory'], flops_per_reverse_step=figures['step']['flops'],
             bytes_per_reverse_step=figures['step']['bytes_accessed'],
             cost_source=figures['step']['source'], dtype=config.model.dtype, compile_s=seconds)
  line = _roofline(figures, info, FLAGS.chain_batch)
  if line:
    row.update(reverse_step_s=line['step_s'], bound=line['bound'],
               seconds_per_face=steps * line['step_s'] / FLAGS.chain_batch)
  return row


def run_task(task: dict) -> dict:
  return {'train': _train, 'chain': _chain}[task['kind']](task)


# --- the run: one process per row --------------------------------------------------------------


def conv_grad_on(platform: str, conv_grad: str) -> str:
  """'rows' or 'xla': the kernel gradient conv3x3 gets on `platform` ('default': the package's
  choice, `layers.ROWS_KERNEL_GRAD_PLATFORMS`)."""
  if conv_grad != 'default':
    return conv_grad
  from diffbfr_jax.models import layers  # pylint: disable=g-import-not-at-top
  return 'rows' if platform in layers.ROWS_KERNEL_GRAD_PLATFORMS else 'xla'


def _stage_of(name: str) -> str:
  """The stage ('irm1', 'irm2', 'tem') of a --stages or --configs entry."""
  if name in STAGES:
    return name
  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
  path, _, arg = name.partition(':')
  return config_files.load(path, arg or None).stage


def tasks(targets, stages, remats, conv_grad: str, donate: bool, degrade_on: str,
          chains: bool, distilled=()) -> list:
  """Every row of a run, target by target, stage by stage; `distilled`: the steps K of the
  distilled chains to compile too (one chain row per stage and K)."""
  out = []
  for target in targets:
    grad = conv_grad_on(parse_target(target)['platform'], conv_grad)
    for stage in stages:
      if degrade_on == 'auto':
        degrade = 'host' if _stage_of(stage) == 'tem' else 'device'
      else:
        degrade = degrade_on
      out += [dict(kind='train', target=target, stage=stage, remat=r, degrade_on=degrade,
                   conv_grad=grad, donate=donate) for r in remats]
      if chains:
        out.append(dict(kind='chain', target=target, stage=stage))
      out += [dict(kind='chain', target=target, stage=stage, distilled=k) for k in distilled]
  return out


def key(task: dict) -> str:
  return json.dumps({k: task[k] for k in ('kind', 'target', 'stage', 'remat', 'degrade_on',
                                          'conv_grad', 'donate', 'distilled') if k in task},
                    sort_keys=True)


def versions() -> dict:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top

  found = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'libtpu', 'jax-cuda12-plugin', 'jax-cuda12-pjrt',
               'nvidia-cuda-nvcc-cu12', 'flax', 'optax'):
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = None
  return found


def _run_worker(task: dict) -> dict:
  passed = ('dtype', 'batch', 'confirm', 'max_batch', 'memory_fraction', 'memory_limit_gib',
            'gpu_memory_fraction',
            'chain_batch', 'peak_tflops', 'config_dir')
  cmd = [sys.executable, '-m', 'diffbfr_jax.benchmarks.compile_for',
         *[f'--{name}={FLAGS[name].value}' for name in passed], '--task=' + json.dumps(task)]
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  # glibc's malloc gives each of the compiler's threads an arena of its own (up to 8 per core),
  # and a TPU compile's host memory grows with them: TPU v4's paper TEM step peaked at 18.1 GB
  # resident with two arenas and was killed at 24.4 GB without (docs/compile.md).
  env.setdefault('MALLOC_ARENA_MAX', '2')
  done = subprocess.run(cmd, capture_output=True, text=True, env=env)
  for line in done.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  tail = [l for l in (done.stderr or done.stdout).strip().splitlines()
          if 'cudart_stub' not in l and 'absl::InitializeLog' not in l][-15:]
  if done.returncode < 0:  # the compile itself was stopped: say so last (the line printed)
    why = ' (SIGKILL: most often the system out of memory; compile fewer rows at once)' if (
        done.returncode == -9) else ''
    tail.append(f'the compiling process was killed by signal {-done.returncode}{why}')
  return dict(task, error='\n'.join(tail) or f'exit status {done.returncode}')


def _run_here(task: dict) -> dict:
  """Runs `task` in this process (--noisolate: small programs, the tests)."""
  try:
    return run_task(task)
  except Exception as e:  # pylint: disable=broad-except
    return dict(task, error=f'{type(e).__name__}: {e}'.strip())


def _gib(value) -> str:
  return '-' if value is None else f'{value / 2**30:.2f}'


def _fmt(value, spec: str, scale: float = 1.0, unit: str = '') -> str:
  return '-' if value is None else f'{value * scale:{spec}}{unit}'


def table(results: dict) -> str:
  """The results as Markdown tables."""
  lines = ['| target | stage | remat | batch / device | arguments | outputs | temporaries | '
           'total | limit (GiB) | TFLOP / step | GB accessed / step | roofline step | '
           'images/s per chip | paper batch: devices x batch | h per 1M steps | compile (s) |',
           '|' + '---|' * 16]
  for r in results['train']:
    b = r['per_device_batch']
    f = r['at'].get(str(b)) if b else None
    shown = str(b) if r['batch_search'].get('confirmed', True) else f'{b} (line)'
    if not f and '2' in r['at']:
      f = r['at']['2']  # --noconfirm: the figures at batch 2
      shown += ', figures at 2'
    elif not f and '1' in r['at']:
      f = r['at']['1']
      shown += ', figures at 1'

    m = f['step']['memory'] if f else {}
    programs = [f[k] for k in ('step', 'degrade') if f and k in f]
    p = r.get('paper', {})
    plan = '-'
    if p.get('hours_per_1m_steps'):
      plan = f"{p['devices_used']} x {p['per_device']}"
      if p['microbatches'] > 1:
        plan += f" ({p['microbatches']} microbatches)"
    default_grad = conv_grad_on(r['platform'], 'default')
    stage = r['stage'] + (f", {r['conv_grad']} kernel grad" if r['conv_grad'] != default_grad
                          else '') + (', state donated' if r['donate'] else '')
    speed = {k: r.get(k) for k in ('step_s', 'images_per_s_per_chip')}
    if speed['step_s'] is None and b and {'1', '2'} <= set(r['at']):
      speed = _line_roofline(r, b)  # the line's batch, not compiled: figures from the line
    lines.append(' | '.join([
        f"| {r['target']}", stage, 'on' if r['remat'] else 'off', shown,
        _gib(m.get('argument')), _gib(m.get('output')), _gib(m.get('temp')),
        _gib(f and f['total_bytes']), _gib(r['memory_limit_bytes']),
        _fmt(sum(x['flops'] for x in programs) if f else None, '.3g', 1e-12),
        _fmt(sum(x['bytes_accessed'] for x in programs) if f else None, '.3g', 1e-9),
        _fmt(speed['step_s'], '.1f', 1e3, ' ms'), _fmt(speed['images_per_s_per_chip'], '.3g'),
        plan, _fmt(p.get('hours_per_1m_steps'), '.3g'), f"{r['compile_s']:.0f} |"]))
  if results['chain']:
    lines += ['', '| target | stage | faces / device | total (GiB) | GFLOP / reverse step | '
              'GB accessed / reverse step | reverse steps | roofline s / face | compile (s) |',
              '|' + '---|' * 9]
    for r in results['chain']:
      lines.append(' | '.join([
          f"| {r['target']}",
          r['stage'] + (f", distilled {r['distilled']}" if r.get('distilled') else ''),
          str(r['per_device_batch']),
          _gib(r['memory']['total']), _fmt(r['flops_per_reverse_step'], '.4g', 1e-9),
          _fmt(r['bytes_per_reverse_step'], '.3g', 1e-9), str(r['reverse_steps']),
          _fmt(r.get('seconds_per_face'), '.3g'), f"{r['compile_s']:.0f} |"]))
  for e in results['errors']:
    lines.append(f"\nfailed: {key(e)}: {e['error'].splitlines()[-1] if e['error'] else ''}")
  return '\n'.join(lines)


def _define_flags():
  # Defined only when run as a program, so importing the module defines no flags.
  flags.DEFINE_list('targets', ['v5e:2x4', 'h100:1x1x8'],
                    'Targets: TPU v4, v5e, v5p, v6e with a topology (v5e:2x4, v4:2x2x1), NVIDIA '
                    'h100, h200, a100 with slices x hosts x GPUs (h100:1x1x8).')
  flags.DEFINE_list('stages', list(STAGES), "The paper's stages to compile ('' for none).")
  flags.DEFINE_list('configs', [], 'Stage config files too, e.g. configs/irm2.py:demo.')
  flags.DEFINE_string('out', None, 'The results file (JSON), written after each row.')
  flags.DEFINE_string('dtype', 'bfloat16', "Compute dtype; '' keeps the config's.")
  flags.DEFINE_list('remat', ['false', 'true'], 'Remat settings of the train step.')
  flags.DEFINE_string('degrade_on', 'auto', "'auto' (on the device for IRM-1 and IRM-2, whose "
                      "examples are degraded; on the host for TEM), 'device' or 'host'.")
  flags.DEFINE_bool('chains', True, "Also compile each stage's reverse chain.")
  flags.DEFINE_string('conv_grad', 'default', "conv3x3's kernel gradient: 'default' (the "
                      "package's per-platform choice), 'rows' (1-D convolutions) or 'xla'.")
  flags.DEFINE_bool('donate', False, 'Donate the train state to the step (measures the memory '
                    'it saves; the train job does not).')
  flags.DEFINE_integer('batch', 0, 'Per-device train batch; 0 = the largest that fits.')
  flags.DEFINE_bool('confirm', True, 'Compile the batch the line finds (--noconfirm: report '
                    'the line only, two compiles a row).')
  flags.DEFINE_integer('max_batch', 256, 'The largest per-device batch the search tries.')
  flags.DEFINE_float('memory_fraction', 0.95, 'Share of the memory limit the search aims at.')
  flags.DEFINE_float('memory_limit_gib', 0, "A device's memory limit for the search; 0 = the "
                     "target's (TPU: the compiler's; GPU: below).")
  flags.DEFINE_float('gpu_memory_fraction', 0, "A GPU's usable share of its memory; 0 = JAX's "
                     'default (XLA_PYTHON_CLIENT_MEM_FRACTION, else 0.75).')
  flags.DEFINE_integer('chain_batch', 1, 'Faces per device in the compiled chain.')
  flags.DEFINE_list('distilled', [], 'Also compile the distilled chains of these steps K per '
                    "stage (configs/cascade.py's distillK presets), e.g. 8,4,2,1.")
  flags.DEFINE_float('peak_tflops', 0, "A peak for the roofline; 0 = accelerator.PEAK_TFLOPS.")
  flags.DEFINE_string('config_dir', 'configs', 'The folder of the stage configs.')
  flags.DEFINE_bool('resume', False, 'Keep the rows already in --out; compile the rest.')
  flags.DEFINE_bool('isolate', True, 'Compile each row in a process of its own (peak memory, '
                    'crashes; started with MALLOC_ARENA_MAX=2 unless set); --noisolate compiles '
                    'them all here, faster for small programs.')
  flags.DEFINE_string('task', '', 'Internal: the one row this process compiles (JSON).')


def _check_flags() -> list:
  """The run's rows, after every flag and the installed compilers are checked."""
  if not FLAGS.out:
    raise UserError('--out=FILE is required (the results, JSON)')
  check_targets(FLAGS.targets)
  bad = [s for s in FLAGS.stages if s and s not in STAGES]
  if bad:
    raise UserError(f'--stages: unknown {bad}; expected some of {list(STAGES)}')
  for config in FLAGS.configs:
    if not pathlib.Path(config.partition(':')[0]).is_file():
      raise UserError(f'--configs: {config!r}: no such config file')
  if FLAGS.stages and any(FLAGS.stages) and not pathlib.Path(FLAGS.config_dir, 'irm1.py').is_file():
    raise UserError(f'--config_dir={FLAGS.config_dir!r} holds no irm1.py (run from the '
                    'repository root or give the configs folder)')
  remats = []
  for r in FLAGS.remat:
    if r.lower() not in ('true', 'false'):
      raise UserError(f'--remat: {r!r}; expected true and/or false')
    remats.append(r.lower() == 'true')
  if FLAGS.degrade_on not in ('auto', 'device', 'host'):
    raise UserError(f"--degrade_on={FLAGS.degrade_on!r}; expected 'auto', 'device' or 'host'")
  if FLAGS.conv_grad not in ('default', 'rows', 'xla'):
    raise UserError(f"--conv_grad={FLAGS.conv_grad!r}; expected 'default', 'rows' or 'xla'")
  stages = [s for s in FLAGS.stages if s] + list(FLAGS.configs)
  distilled = []
  for k in FLAGS.distilled:
    if not k.isdigit() or int(k) < 1:
      raise UserError(f'--distilled: {k!r} is not a whole number of steps >= 1')
    distilled.append(int(k))
  return tasks(FLAGS.targets, stages, remats, FLAGS.conv_grad, FLAGS.donate, FLAGS.degrade_on,
               FLAGS.chains, distilled)


def main(argv):
  del argv
  # libtpu and the CUDA plugin must not be asked for devices this machine does not have: JAX
  # runs on the CPU, the targets are compile-only devices.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # libtpu lets one process at a time load it (a lock file in /tmp) for the TPU it drives; these
  # processes drive none, and several may compile at once (two runs, or a run and the tests).
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  # JAX's persistent cache cannot load a compile-only GPU executable back (it warns); off.
  os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  if FLAGS.task:
    print('RESULT ' + json.dumps(run_task(json.loads(FLAGS.task))), flush=True)
    return
  try:
    todo = _check_flags()
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if FLAGS.resume and out.is_file():
    results = json.loads(out.read_text())
    results['errors'] = []
  else:
    results = dict(command='python -m diffbfr_jax.benchmarks.compile_for ' + ' '.join(sys.argv[1:]),
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                   versions=versions(), train=[], chain=[], errors=[])
  done = {key(r) for kind in ('train', 'chain') for r in results[kind]}
  todo = [t for t in todo if key(t) not in done]
  accelerator.run_tasks(todo, results, out, what='rows to compile',
                        measure=_run_worker if FLAGS.isolate else _run_here, key=key,
                        write=accelerator.write_results, report=table)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
