"""The improved-DDPM / guided-diffusion ("ADM") UNet used by DifFace, which is DiffBFR's TEM.

Behaviour-exact to DifFace's `UNetModel` with `use_scale_shift_norm`, `conv_resample`,
`num_head_channels`, per-level `num_res_blocks`, attention at absolute resolutions and the legacy
q/k/v head split. Parameter paths mirror the PyTorch keys (see `naming.py`):
`input_blocks.12.1.qkv.weight` lives at `input_blocks_12_1/qkv/kernel`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from diffbfr_jax.models import layers

# PyTorch's default Conv/Linear weight init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# guided-diffusion zero-initialises the last conv of each ResBlock, proj_out and the output conv.
_zero = nn.initializers.zeros


class ResBlock(layers.ResidualBlock):
  """guided-diffusion's ResBlock with use_scale_shift_norm: the embedding scales and shifts the
  second GroupNorm's output."""

  @nn.compact
  def __call__(self, x, emb, train: bool, dropout_keys=None):
    h = layers.group_norm(x, self.norm_groups, name='in_layers_0')
    h = layers.conv(self.features, 3, name='in_layers_2', dtype=self.dtype,
                    kernel_init=_init)(nn.silu(h))
    emb_out = layers.dense(2 * self.features, name='emb_layers_1', dtype=self.dtype,
                           kernel_init=_init)(nn.silu(emb))
    scale, shift = jnp.split(emb_out[:, None, None, :].astype(h.dtype), 2, axis=-1)
    h = layers.group_norm(h, self.norm_groups, name='out_layers_0') * (1 + scale) + shift
    h = layers.dropout(self, nn.silu(h), self.dropout, train, dropout_keys)
    h = layers.conv(self.features, 3, name='out_layers_3', dtype=self.dtype, kernel_init=_zero)(h)
    return layers.residual(x, h, self.features, name='skip_connection', dtype=self.dtype,
                           kernel_init=_init)


class AttentionBlock(nn.Module):
  """Multi-head self-attention with guided-diffusion's legacy per-head [q_h, k_h, v_h] layout."""
  head_channels: int
  norm_groups: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    heads, ch = c // self.head_channels, self.head_channels
    h = layers.group_norm(x, self.norm_groups, name='norm').reshape(b, hgt * wid, c)
    qkv = layers.dense(3 * c, name='qkv', dtype=self.dtype, kernel_init=_init)(h)
    # PyTorch reshapes the 3C channels to (heads, 3 * ch): head-major, then q/k/v, then channel.
    qkv = qkv.reshape(b, hgt * wid, heads, 3, ch)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]  # each [B, L, heads, ch]
    scale = ch ** -0.25  # applied to q and k each, as guided-diffusion does for fp16 range
    logits = jnp.einsum('bqhc,bkhc->bhqk', q * scale, k * scale)
    weight = layers.softmax_f32(logits, self.dtype)
    a = jnp.einsum('bhqk,bkhc->bqhc', weight, v).reshape(b, hgt * wid, c)
    out = layers.dense(c, name='proj_out', dtype=self.dtype, kernel_init=_zero)(a)
    return x + out.reshape(b, hgt, wid, c)


class ADMUNet(nn.Module):
  """DifFace's ADM UNet. Field names follow DifFace's `diffusion_ffhq512.yaml` (configs/tem.py).

  Call: `model.apply(variables, x_t, t, cond=None, train=False, rngs={'dropout': key})` with
  `x_t` [B, H, W, in_channels] and `t` [B] (model timesteps, integer-valued);
  `dropout_keys=[B] keys` instead of the rng draws each example's dropout masks from its own key
  (layers.dropout). Returns
  [B, H, W, out_channels] float32; with learned variance the channels are [eps (3), v (3)].
  """
  image_size: int = 512  # attention resolutions are absolute, counted from this size
  in_channels: int = 3
  model_channels: int = 32
  out_channels: int = 6
  num_res_blocks: Sequence[int] = (1, 2, 2, 2, 2, 3, 4)  # per level
  attention_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.0
  channel_mult: Sequence[int] = (1, 2, 4, 8, 8, 16, 16)
  num_head_channels: int = 64
  norm_groups: int = 32  # guided-diffusion's GroupNorm32
  dtype: str = 'float32'  # compute dtype; parameters stay float32
  remat: bool = False  # rematerialise each residual block in the backward pass

  @nn.compact
  def __call__(self, x_t, t, cond=None, *, train: bool = False, dropout_keys=None):
    dtype = jnp.dtype(self.dtype)
    x, t = layers.network_input(x_t, t, cond, image_size=self.image_size,
                                num_levels=len(self.channel_mult), channels=self.in_channels,
                                dtype=dtype, what='ADMUNet input')
    res_block_cls, attn_cls = ResBlock, AttentionBlock
    if self.remat:
      # Argument 3 (counting the module itself as 0) is the static `train` flag.
      res_block_cls = nn.remat(ResBlock, static_argnums=(3,))
      attn_cls = nn.remat(AttentionBlock)

    c = self.model_channels
    emb = layers.sinusoidal_embedding(t, c, sin_first=False).astype(dtype)
    emb = layers.dense(4 * c, name='time_embed_0', dtype=dtype, kernel_init=_init)(emb)
    emb = layers.dense(4 * c, name='time_embed_2', dtype=dtype, kernel_init=_init)(nn.silu(emb))

    def res_block(h, features, name):
      return res_block_cls(features, self.norm_groups, self.dropout, dtype, name=name)(
          h, emb, train, dropout_keys)

    def attention(h, name):
      return attn_cls(self.num_head_channels, self.norm_groups, dtype, name=name)(h)

    # Each PyTorch `TimestepEmbedSequential` entry N holds sub-modules N.0 (ResBlock or resampler),
    # N.1 (attention or up-sampler) and N.2 (up-sampler after attention).
    h = layers.conv(c * self.channel_mult[0], 3, name='input_blocks_0_0', dtype=dtype,
                    kernel_init=_init)(x)
    hs = [h]
    idx, ds = 1, self.image_size
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks[level]):
        h = res_block(h, c * mult, f'input_blocks_{idx}_0')
        if ds in self.attention_resolutions:
          h = attention(h, f'input_blocks_{idx}_1')
        hs.append(h)
        idx += 1
      if level != len(self.channel_mult) - 1:
        h = layers.Downsample('op', _init, dtype, name=f'input_blocks_{idx}_0')(h)
        hs.append(h)
        idx += 1
        ds //= 2

    h = res_block(h, h.shape[-1], 'middle_block_0')
    h = attention(h, 'middle_block_1')
    h = res_block(h, h.shape[-1], 'middle_block_2')

    idx = 0
    for level in reversed(range(len(self.channel_mult))):
      for i in range(self.num_res_blocks[level] + 1):
        h = jnp.concatenate([h, hs.pop()], axis=-1)  # [h, skip], h first as guided-diffusion
        h = res_block(h, c * self.channel_mult[level], f'output_blocks_{idx}_0')
        sub = 1
        if ds in self.attention_resolutions:
          h = attention(h, f'output_blocks_{idx}_1')
          sub = 2
        if level and i == self.num_res_blocks[level]:
          h = layers.Upsample(_init, dtype, name=f'output_blocks_{idx}_{sub}')(h)
          ds *= 2
        idx += 1
    assert not hs, 'every skip connection must be used exactly once'

    h = nn.silu(layers.group_norm(h, self.norm_groups, name='out_0'))
    out = layers.conv(self.out_channels, 3, name='out_2', dtype=dtype, kernel_init=_zero)(h)
    return out.astype(jnp.float32)
