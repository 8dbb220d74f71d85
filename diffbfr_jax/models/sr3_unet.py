"""The SR3 UNet (IRM-1 and IRM-2), behaviour-exact to Janspiry's PyTorch SR3 code.

Conditioning is on the continuous noise level sqrt(gamma) (not an integer step). Parameter paths
mirror the PyTorch state_dict keys (see `naming.py`): `downs.1.res_block.block1.block.3.weight`
lives at `downs_1/res_block/block1/block_3/kernel`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from diffbfr_jax.models import layers

# SR3 initialises every conv and linear weight orthogonally (gain 1) and every bias to zero.
_init = nn.initializers.orthogonal(scale=1.0)


class Block(nn.Module):
  """GroupNorm -> swish -> dropout -> conv3x3 (PyTorch `Block`: indices 0, 1, 2, 3)."""
  features: int
  norm_groups: int
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool, dropout_keys=None):
    h = layers.group_norm(x, self.norm_groups, name='block_0')
    h = nn.swish(h)
    h = layers.dropout(self, h, self.dropout, train, dropout_keys)
    return layers.conv(self.features, 3, name='block_3', dtype=self.dtype, kernel_init=_init)(h)


class FeatureWiseAffine(nn.Module):
  """Adds Dense(noise embedding) per channel; SR3 uses no activation and no scale here."""
  features: int
  dtype: Any

  @nn.compact
  def __call__(self, x, emb):
    shift = layers.dense(self.features, name='noise_func_0', dtype=self.dtype,
                         kernel_init=_init)(emb)  # [B, C]
    return x + shift[:, None, None, :].astype(x.dtype)


class ResnetBlock(layers.ResidualBlock):
  """SR3's ResnetBlock: Block, the noise embedding added per channel, Block with dropout."""

  @nn.compact
  def __call__(self, x, emb, train: bool, dropout_keys=None):
    h = Block(self.features, self.norm_groups, 0.0, self.dtype, name='block1')(x, train)
    h = FeatureWiseAffine(self.features, self.dtype, name='noise_func')(h, emb)
    h = Block(self.features, self.norm_groups, self.dropout, self.dtype,
              name='block2')(h, train, dropout_keys)
    return layers.residual(x, h, self.features, name='res_conv', dtype=self.dtype,
                           kernel_init=_init)


class SelfAttention(nn.Module):
  """Single-head attention: bias-free qkv 1x1 conv, channels split [q | k | v], scale 1/sqrt(C)."""
  norm_groups: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = layers.group_norm(x, self.norm_groups, name='norm')
    qkv = layers.conv(3 * c, 1, name='qkv', dtype=self.dtype, kernel_init=_init,
                      use_bias=False)(h)
    q, k, v = jnp.split(qkv.reshape(b, hgt * wid, 3 * c), 3, axis=-1)  # each [B, HW, C]
    scores = jnp.einsum('bqc,bkc->bqk', q, k) / jnp.sqrt(jnp.asarray(c, q.dtype))
    attn = layers.softmax_f32(scores, self.dtype)
    out = jnp.einsum('bqk,bkc->bqc', attn, v).reshape(b, hgt, wid, c)
    out = layers.conv(c, 1, name='out', dtype=self.dtype, kernel_init=_init)(out)
    return out + x


class ResnetBlocWithAttn(nn.Module):
  features: int
  norm_groups: int
  dropout: float
  with_attn: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, emb, train: bool, dropout_keys=None):
    x = ResnetBlock(self.features, self.norm_groups, self.dropout, self.dtype,
                    name='res_block')(x, emb, train, dropout_keys)
    if self.with_attn:
      x = SelfAttention(self.norm_groups, self.dtype, name='attn')(x)
    return x


class SR3UNet(nn.Module):
  """SR3's UNet. Field names follow SR3's JSON configs (`configs/irm1.py`, `configs/irm2.py`).

  Call: `model.apply(variables, x_t, noise_level, cond, train=False, rngs={'dropout': key})`
  with `x_t` [B, H, W, 3], `noise_level` [B] (sqrt(gamma)) and `cond` [B, H, W, Cc] or None;
  `dropout_keys=[B] keys` instead of the rng draws each example's dropout masks from its own key
  (layers.dropout).
  The network input is `concat[cond, x_t]` (condition channels first, as SR3). Returns
  [B, H, W, out_channels] float32.
  """
  in_channels: int = 6  # channels of concat[cond, x_t]
  out_channels: int = 3
  inner_channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 4, 8, 8)
  attn_res: Sequence[int] = (16,)  # resolutions, counted from image_size, that get attention
  res_blocks: int = 2
  dropout: float = 0.0
  norm_groups: int = 32
  image_size: int = 128  # decides where attention goes, as in SR3; inputs may be other sizes
  dtype: str = 'float32'  # compute dtype; parameters stay float32
  remat: bool = False  # rematerialise each residual block in the backward pass

  @nn.compact
  def __call__(self, x_t, noise_level, cond=None, *, train: bool = False, dropout_keys=None):
    dtype = jnp.dtype(self.dtype)
    x, noise_level = layers.network_input(
        x_t, noise_level, cond, image_size=self.image_size, num_levels=len(self.channel_mults),
        channels=self.in_channels, dtype=dtype, what='SR3UNet input concat[cond, x_t]')
    block = ResnetBlocWithAttn
    if self.remat:
      # Argument 3 (counting the module itself as 0) is the static `train` flag.
      block = nn.remat(ResnetBlocWithAttn, static_argnums=(3,))

    # Noise-level MLP: PositionalEncoding (index 0), Linear (1), Swish (2), Linear (3).
    c = self.inner_channels
    emb = layers.sinusoidal_embedding(noise_level, c, sin_first=True).astype(dtype)
    emb = layers.dense(4 * c, name='noise_level_mlp_1', dtype=dtype, kernel_init=_init)(emb)
    emb = nn.swish(emb)
    emb = layers.dense(c, name='noise_level_mlp_3', dtype=dtype, kernel_init=_init)(emb)

    def res_block(h, features, with_attn, name):
      return block(features, self.norm_groups, self.dropout, with_attn, dtype,
                   name=name)(h, emb, train, dropout_keys)

    last = len(self.channel_mults) - 1
    h = layers.conv(c, 3, name='downs_0', dtype=dtype, kernel_init=_init)(x)
    feats = [h]
    idx, res = 1, self.image_size
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.res_blocks):
        h = res_block(h, c * mult, res in self.attn_res, f'downs_{idx}')
        feats.append(h)
        idx += 1
      if level != last:
        h = layers.Downsample('conv', _init, dtype, name=f'downs_{idx}')(h)
        feats.append(h)
        idx += 1
        res //= 2

    h = res_block(h, h.shape[-1], True, 'mid_0')
    h = res_block(h, h.shape[-1], False, 'mid_1')

    idx = 0
    for level in reversed(range(len(self.channel_mults))):
      for _ in range(self.res_blocks + 1):
        h = jnp.concatenate([h, feats.pop()], axis=-1)  # [h, skip], h first as SR3
        h = res_block(h, c * self.channel_mults[level], res in self.attn_res, f'ups_{idx}')
        idx += 1
      if level != 0:
        h = layers.Upsample(_init, dtype, name=f'ups_{idx}')(h)
        idx += 1
        res *= 2
    assert not feats, 'every skip connection must be used exactly once'

    out = Block(self.out_channels, self.norm_groups, 0.0, dtype, name='final_conv')(h, train)
    return out.astype(jnp.float32)
