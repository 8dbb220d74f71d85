"""Building blocks shared by the SR3 and ADM UNets.

Everything is NHWC. Parameters are always float32; `dtype` is the compute dtype. GroupNorm and
softmax always run in float32 (the PyTorch references do the same for GroupNorm via GroupNorm32,
and it keeps bfloat16 training stable).
"""

import math
from typing import Any, Callable

import flax.linen as nn
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


def group_norm(x, num_groups: int, *, name: str):
  """PyTorch-exact GroupNorm (eps 1e-5, two-pass variance) in float32, cast back to x.dtype."""
  y = nn.GroupNorm(num_groups=num_groups, epsilon=GROUP_NORM_EPS, use_fast_variance=False,
                   dtype=jnp.float32, param_dtype=jnp.float32, name=name)(x.astype(jnp.float32))
  return y.astype(x.dtype)


def conv(features: int, kernel: int, *, name: str, dtype: Dtype, kernel_init,
         stride: int = 1, use_bias: bool = True) -> nn.Conv:
  """A square conv with PyTorch's explicit symmetric padding `kernel // 2`.

  Flax's 'SAME' pads a stride-2 conv on an even input as (0, 1); PyTorch's `padding=1` is (1, 1).
  """
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
