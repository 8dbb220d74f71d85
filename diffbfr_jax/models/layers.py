"""Building blocks shared by the SR3 and ADM UNets.

Everything is NHWC. Parameters are always float32; `dtype` is the compute dtype. GroupNorm and
softmax always run in float32 (the PyTorch references do the same for GroupNorm via GroupNorm32,
and it keeps bfloat16 training stable).
"""

import math
import zlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's default GroupNorm epsilon (Flax's default is 1e-6).
GROUP_NORM_EPS = 1e-5


def sinusoidal_embedding(x, dim: int, *, sin_first: bool):
  """Sinusoidal embedding of a per-example scalar, as SR3 and guided-diffusion compute it.

  Args:
    x: [B] noise levels (SR3) or timesteps (ADM).
    dim: embedding width.
    sin_first: True gives SR3's `[sin, cos]`, False gives ADM's `[cos, sin]`.

  Returns:
    [B, dim] float32 with frequencies `exp(-ln(1e4) * k / (dim // 2))`; an odd `dim` gets a
    trailing zero column (guided-diffusion's convention).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(x, jnp.float32)[:, None] * freqs[None, :]
  parts = [jnp.sin(args), jnp.cos(args)] if sin_first else [jnp.cos(args), jnp.sin(args)]
  if dim % 2:
    parts.append(jnp.zeros_like(args[:, :1]))
  return jnp.concatenate(parts, axis=-1)


class GroupNorm(nn.Module):
  """PyTorch's GroupNorm (eps 1e-5, two-pass variance), in float32; parameters `scale`, `bias`
  as Flax's `nn.GroupNorm`.

  The statistics are sums over the spatial axes first, with the channels kept minor (one
  contiguous, vectorised pass), then over each group's channels on the small [B, C] result; on
  the CPU this is several times faster than reducing the `[B, H, W, G, C/G]` view at once.
  """
  num_groups: int
  epsilon: float = GROUP_NORM_EPS

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f'GroupNorm: {c} channels are not divisible by {self.num_groups} groups.')
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    x = x.astype(jnp.float32)
    b, per_group = x.shape[0], c // self.num_groups
    spatial = tuple(range(1, x.ndim - 1))
    count = math.prod(x.shape[1:-1]) * per_group

    def per_channel(group_values):  # [B, G] -> broadcastable [B, 1, ..., 1, C]
      return jnp.repeat(group_values, per_group, axis=1).reshape((b,) + (1,) * len(spatial) + (c,))

    def group_sum(v):  # [B, ..., C] -> [B, G]
      return jnp.sum(v, axis=spatial).reshape(b, self.num_groups, per_group).sum(-1)

    centred = x - per_channel(group_sum(x) / count)
    inv_std = jax.lax.rsqrt(group_sum(centred * centred) / count + self.epsilon)
    return centred * (per_channel(inv_std) * scale) + bias


def group_norm(x, num_groups: int, *, name: str):
  """PyTorch-exact GroupNorm (eps 1e-5, two-pass variance) in float32, cast back to x.dtype."""
  return GroupNorm(num_groups, name=name)(x).astype(x.dtype)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv3x3(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)


def _conv3x3_kernel_grad(x, dy):
  """d loss / d kernel of a 3x3, stride 1, pad 1 conv: [3, 3, C, O] from x [B, H, W, C] and
  dy [B, H, W, O].

  For each column offset j, a 1-D convolution along the rows contracts (batch, column) as its
  features: kernel[i, j] = sum_{b,h,w} x_pad[b, h + i, w + j] dy[b, h, w]. XLA's own lowering
  contracts only the batch per window position, which is slow on the CPU for small batches.
  """
  b, h, w, c = x.shape
  o = dy.shape[-1]
  x_pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rhs = jnp.transpose(dy, (1, 0, 2, 3)).reshape(h, b * w, o)  # [rows, (b, w), O]
  taps = []
  for j in range(3):
    lhs = jnp.transpose(x_pad[:, :, j:j + w, :], (3, 1, 0, 2)).reshape(c, h + 2, b * w)
    out = jax.lax.conv_general_dilated(lhs, rhs, (1,), ((0, 0),),
                                       dimension_numbers=('NWC', 'WIO', 'NWC'))  # [C, 3, O]
    taps.append(jnp.transpose(out, (1, 0, 2)))  # [3 (i), C, O]
  return jnp.stack(taps, axis=1)


def _xla_kernel_grad(x, dy):
  """XLA's own kernel gradient of `_conv3x3` (the transpose of its convolution)."""
  w = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)
  return jax.vjp(lambda k: _conv3x3(x, k), w)[1](dy)[0]


# The platforms whose kernel gradient is `_conv3x3_kernel_grad`; the others get XLA's own. Chosen
# when the backward pass is lowered for a platform (`jax.lax.platform_dependent`), so the network
# knows nothing of devices. The 1-D convolutions measured faster on XLA:CPU (docs/benchmarks.md);
# compiled for H100, XLA's own moves fewer bytes with fewer temporaries, and TPU was not shown to
# gain (docs/compile.md, Decisions). The compile benchmark sets it to compare the two.
ROWS_KERNEL_GRAD_PLATFORMS = ('cpu',)


@jax.custom_vjp
def conv3x3(x, w):
  """A 3x3 conv, stride 1, padding (1, 1), NHWC / HWIO: XLA's forward and input gradient, and
  the kernel gradient of `_conv3x3_kernel_grad` on ROWS_KERNEL_GRAD_PLATFORMS, XLA's elsewhere."""
  return _conv3x3(x, w)


def _conv3x3_fwd(x, w):
  return _conv3x3(x, w), (x, w)


def _conv3x3_bwd(res, dy):
  x, w = res
  _, input_grad = jax.vjp(lambda v: _conv3x3(v, w), x)
  rows = {platform: _conv3x3_kernel_grad for platform in ROWS_KERNEL_GRAD_PLATFORMS}
  kernel_grad = jax.lax.platform_dependent(x, dy, default=_xla_kernel_grad, **rows)
  return input_grad(dy)[0], kernel_grad.astype(w.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv3x3(nn.Module):
  """`nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)))` with the same parameters (`kernel`
  [3, 3, C, O], `bias`), computed by `conv3x3`."""
  features: int
  kernel_init: Callable
  dtype: Dtype
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    y = conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32
                         ).astype(self.dtype)
    return y


def conv(features: int, kernel: int, *, name: str, dtype: Dtype, kernel_init,
         stride: int = 1, use_bias: bool = True) -> nn.Module:
  """A square conv with PyTorch's explicit symmetric padding `kernel // 2`.

  Flax's 'SAME' pads a stride-2 conv on an even input as (0, 1); PyTorch's `padding=1` is (1, 1).
  """
  if kernel == 3 and stride == 1:
    return Conv3x3(features, kernel_init, dtype, use_bias, name=name)
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init,
                 bias_init=nn.initializers.zeros, name=name)


def dense(features: int, *, name: str, dtype: Dtype, kernel_init,
          use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=kernel_init, bias_init=nn.initializers.zeros, name=name)


def upsample_nearest(x):
  """Nearest-neighbour x2 up-sampling of [B, H, W, C] (PyTorch `interpolate(mode='nearest')`)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Downsample(nn.Module):
  """conv3x3, stride 2, explicit (1, 1) padding: PyTorch's `Conv2d(C, C, 3, 2, 1)`."""
  conv_name: str  # the PyTorch attribute name of the conv: 'conv' (SR3) or 'op' (ADM)
  kernel_init: Callable
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    return conv(x.shape[-1], 3, stride=2, name=self.conv_name, dtype=self.dtype,
                kernel_init=self.kernel_init)(x)


class Upsample(nn.Module):
  """Nearest x2, then conv3x3 (PyTorch attribute `conv`)."""
  kernel_init: Callable
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    return conv(x.shape[-1], 3, name='conv', dtype=self.dtype,
                kernel_init=self.kernel_init)(upsample_nearest(x))


class ResidualBlock(nn.Module):
  """The fields of both UNets' residual blocks (ADM's `ResBlock`, SR3's `ResnetBlock`), whose
  `__call__(x, emb, train, dropout_keys=None)` takes x [B, H, W, C] and the embedding [B, E] to
  [B, H, W, features] through GroupNorms of `norm_groups` groups and dropout at rate `dropout`,
  and adds the input back (`residual`)."""
  features: int
  norm_groups: int
  dropout: float
  dtype: Dtype


def residual(x, h, features: int, *, name: str, dtype: Dtype, kernel_init):
  """x + h: a residual block's output h plus its input x, x first taken to `features` channels by
  a 1x1 conv `name` (the PyTorch attribute) when it has other channels."""
  if x.shape[-1] != features:
    x = conv(features, 1, name=name, dtype=dtype, kernel_init=kernel_init)(x)
  return x + h


def dropout(module: nn.Module, x, rate: float, train: bool, keys=None):
  """Inverted dropout inside `module` (drop with probability `rate`, scale the rest by
  1 / (1 - rate)); the identity unless `train`.

  `keys` None: one mask for the batch from `module.make_rng('dropout')`, as `nn.Dropout`.
  `keys` [B] (one key per example): example i's mask comes from `keys[i]` folded with the
  module's path, so it does not depend on which other examples share the batch (the train step
  keys them by example id). The network runs once on the whole batch either way.
  """
  if not train or rate == 0:
    return x
  keep = 1.0 - rate
  if keys is None:
    mask = jax.random.bernoulli(module.make_rng('dropout'), keep, x.shape)
  else:
    if keys.shape != x.shape[:1]:
      raise ValueError(f'dropout_keys: one key per example expected, shape {x.shape[:1]}; got '
                       f'{keys.shape}')
    layer = zlib.crc32('/'.join(module.scope.path).encode())
    mask = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, layer), keep,
                                                   x.shape[1:]))(keys)
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def softmax_f32(logits, dtype: Dtype):
  """Softmax over the last axis computed in float32, returned in the compute dtype."""
  return nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def network_input(x_t, time, cond, *, image_size: int, num_levels: int, channels: int,
                  dtype: Dtype, what: str):
  """`concat[cond, x_t]` in the compute dtype and the per-example time as float32 [B].

  Inputs the UNet cannot take get a clear error here instead of a shape error deep inside.
  """
  x = x_t if cond is None else jnp.concatenate([cond, x_t.astype(cond.dtype)], axis=-1)
  if x.ndim != 4:
    raise ValueError(f'{what}: expected an NHWC batch [B, H, W, C], got shape {x.shape}.')
  factor = 2 ** (num_levels - 1)
  _, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f'{what}: height and width must be divisible by 2**(levels-1) = {factor} '
                     f'for {num_levels} levels, got {h}x{w} (model image_size {image_size}).')
  if c != channels:
    raise ValueError(f'{what}: the network takes {channels} input channels, got {c} '
                     f'(shape {x.shape}).')
  time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (x.shape[0],))
  return x.astype(dtype), time
