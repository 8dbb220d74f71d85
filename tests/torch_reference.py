"""NumPy re-statements of the PyTorch SR3 and guided-diffusion layers, in NCHW and PyTorch weight
layouts, written from the PyTorch code's description (REFERENCE sections 2-3) in float64.

They are the independent side of the model tests: our Flax blocks, given the same weights moved by
the naming rule, must compute the same numbers.
"""

import jax
import numpy as np

from diffbfr_jax.models import naming


def conv2d(x, weight, bias=None, *, stride=1, padding=0):
  """PyTorch Conv2d: x [N, I, H, W], weight [O, I, kh, kw], symmetric zero padding."""
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  o, _, kh, kw = weight.shape
  n, _, h, w = x.shape
  oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
  out = np.zeros((n, o, oh, ow))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]  # [N, I, oh, ow]
      out += np.einsum('nihw,oi->nohw', patch, weight[:, :, i, j])
  if bias is not None:
    out += bias[None, :, None, None]
  return out


def group_norm(x, groups, weight, bias, eps=1e-5):
  """PyTorch GroupNorm on [N, C, ...] with the biased (population) variance."""
  n, c = x.shape[:2]
  g = x.reshape(n, groups, -1)
  mean = g.mean(-1, keepdims=True)
  var = ((g - mean) ** 2).mean(-1, keepdims=True)
  y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
  shape = (1, c) + (1,) * (x.ndim - 2)
  return y * weight.reshape(shape) + bias.reshape(shape)


def silu(x):
  return x / (1 + np.exp(-x))


def softmax(x, axis=-1):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def sr3_self_attention(x, sd, groups):
  """SR3 `SelfAttention` with n_head=1: keys norm, qkv (no bias), out."""
  b, c, h, w = x.shape
  qkv = conv2d(group_norm(x, groups, sd['norm.weight'], sd['norm.bias']), sd['qkv.weight'])
  q, k, v = np.split(qkv.reshape(b, 1, 3 * c, h, w), 3, axis=2)
  attn = np.einsum('bnchw,bncyx->bnhwyx', q, k) / np.sqrt(c)
  attn = softmax(attn.reshape(b, 1, h, w, -1)).reshape(b, 1, h, w, h, w)
  out = np.einsum('bnhwyx,bncyx->bnchw', attn, v).reshape(b, c, h, w)
  return conv2d(out, sd['out.weight'], sd['out.bias']) + x


def sr3_resnet_block(x, emb, sd, groups):
  """SR3 `ResnetBlock` (eval mode): block1, noise_func add, block2, res_conv."""
  def block(h, prefix):
    h = silu(group_norm(h, groups, sd[prefix + '.block.0.weight'], sd[prefix + '.block.0.bias']))
    return conv2d(h, sd[prefix + '.block.3.weight'], sd[prefix + '.block.3.bias'], padding=1)

  h = block(x, 'block1')
  h = h + (emb @ sd['noise_func.noise_func.0.weight'].T
           + sd['noise_func.noise_func.0.bias'])[:, :, None, None]
  h = block(h, 'block2')
  skip = conv2d(x, sd['res_conv.weight'], sd['res_conv.bias']) if 'res_conv.weight' in sd else x
  return h + skip


def adm_attention_block(x, sd, num_heads, groups):
  """guided-diffusion `AttentionBlock` with `QKVAttentionLegacy` (1-D convs over length)."""
  b, c, h, w = x.shape
  xs = x.reshape(b, c, -1)
  normed = group_norm(xs, groups, sd['norm.weight'], sd['norm.bias'])
  qkv = np.einsum('oi,bil->bol', sd['qkv.weight'][:, :, 0], normed) + sd['qkv.bias'][None, :, None]
  bs, width, length = qkv.shape
  ch = width // (3 * num_heads)
  q, k, v = np.split(qkv.reshape(bs * num_heads, ch * 3, length), 3, axis=1)
  scale = 1 / np.sqrt(np.sqrt(ch))
  weight = softmax(np.einsum('bct,bcs->bts', q * scale, k * scale))
  a = np.einsum('bts,bcs->bct', weight, v).reshape(bs, -1, length)
  out = np.einsum('oi,bil->bol', sd['proj_out.weight'][:, :, 0], a) + sd['proj_out.bias'][None, :, None]
  return (xs + out).reshape(b, c, h, w)


def adm_res_block(x, emb, sd, groups):
  """guided-diffusion `ResBlock` with use_scale_shift_norm (eval mode)."""
  h = silu(group_norm(x, groups, sd['in_layers.0.weight'], sd['in_layers.0.bias']))
  h = conv2d(h, sd['in_layers.2.weight'], sd['in_layers.2.bias'], padding=1)
  emb_out = silu(emb) @ sd['emb_layers.1.weight'].T + sd['emb_layers.1.bias']
  scale, shift = np.split(emb_out[:, :, None, None], 2, axis=1)
  h = group_norm(h, groups, sd['out_layers.0.weight'], sd['out_layers.0.bias']) * (1 + scale) + shift
  h = conv2d(silu(h), sd['out_layers.3.weight'], sd['out_layers.3.bias'], padding=1)
  skip = (conv2d(x, sd['skip_connection.weight'], sd['skip_connection.bias'])
          if 'skip_connection.weight' in sd else x)
  return skip + h


def sr3_noise_level_encoding(noise_level, dim):
  """SR3 `PositionalEncoding`: [sin, cos] of noise_level * exp(-ln(1e4) k / count)."""
  count = dim // 2
  step = np.arange(count) / count
  enc = noise_level[:, None] * np.exp(-np.log(1e4) * step[None, :])
  return np.concatenate([np.sin(enc), np.cos(enc)], axis=-1)


def adm_timestep_embedding(timesteps, dim, max_period=10000):
  """guided-diffusion `timestep_embedding`: [cos, sin], zero-padded to an odd dim."""
  half = dim // 2
  freqs = np.exp(-np.log(max_period) * np.arange(half) / half)
  args = timesteps[:, None] * freqs[None]
  emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
  if dim % 2:
    emb = np.concatenate([emb, np.zeros_like(emb[:, :1])], axis=-1)
  return emb


def torch_to_flax_params(state_dict):
  """Nests a PyTorch-layout {key: array} dict into a Flax params tree by the naming rule."""
  params = {}
  for key, value in state_dict.items():
    *path, leaf = naming.flax_path(key, np.shape(value))
    node = params
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = naming.flax_array(value)
  return params


def flax_to_torch_state_dict(params):
  """A Flax params tree -> {PyTorch key: PyTorch-layout float64 array}, by `naming`'s inverse."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = tuple(p.key for p in path)
    out[naming.torch_key(names, np.ndim(leaf))] = naming.torch_array(
        names, np.asarray(leaf, np.float64))
  return out
