"""PyTorch re-implementations of the two UNets that diffbfr_jax ports, for conversion tests.

`SR3UNet` has the module layout of Janspiry's SR3 UNet (`model/sr3_modules/unet.py`) and
`ADMUNet` that of guided-diffusion / DifFace's `UNetModel` (scale-shift norm, conv resampling,
`num_head_channels`, legacy q/k/v split, per-level `num_res_blocks`, attention at absolute
resolutions). Written independently of `diffbfr_jax` from REFERENCE.md sections 2-3, so their
state_dict keys and shapes are those of the PyTorch originals and their outputs are what a
converted checkpoint must reproduce.

Everything is NCHW. Constructor arguments mirror the Flax classes' fields (`dtype` and `remat`
are accepted and ignored), so `SR3UNet(**config.model)` works. The forward passes take the
network input `x` (for SR3 already `cat([condition, x_t], 1)`) and a per-example time vector:
the noise level sqrt(gamma) for SR3, the integer timestep for ADM.
Only the architecture is reproduced: parameters keep PyTorch's default initialisation (not
SR3's orthogonal init nor guided-diffusion's zeroed convs); tests draw their own weights.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F


def sinusoidal(t, dim, sin_first):
  """[sin, cos] (SR3) or [cos, sin] (ADM) of t * exp(-ln(1e4) k / (dim // 2)), k < dim // 2."""
  half = dim // 2
  freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32,
                                                  device=t.device) / half)
  args = t.float()[:, None] * freqs[None]
  parts = [torch.sin(args), torch.cos(args)]
  if not sin_first:
    parts.reverse()
  if dim % 2:
    parts.append(torch.zeros_like(args[:, :1]))
  return torch.cat(parts, dim=-1)


class Upsample(nn.Module):
  """Nearest x2, then a 3x3 conv named `conv` (both code bases)."""

  def __init__(self, channels):
    super().__init__()
    self.conv = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))


def down_conv(channels):
  """3x3 conv, stride 2, symmetric padding 1 (SR3 `Downsample.conv`, ADM `Downsample.op`)."""
  return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class GroupNorm32(nn.GroupNorm):
  """GroupNorm computed in float32 (guided-diffusion's `normalization`); eps 1e-5."""

  def forward(self, x):
    return super().forward(x.float()).type(x.dtype)


# --------------------------------------------------------------------------------------------
# SR3
# --------------------------------------------------------------------------------------------


class SR3Downsample(nn.Module):

  def __init__(self, channels):
    super().__init__()
    self.conv = down_conv(channels)

  def forward(self, x):
    return self.conv(x)


class PositionalEncoding(nn.Module):
  """SR3's noise-level encoding: sin first."""

  def __init__(self, dim):
    super().__init__()
    self.dim = dim

  def forward(self, noise_level):
    return sinusoidal(noise_level, self.dim, sin_first=True)


class Swish(nn.Module):

  def forward(self, x):
    return x * torch.sigmoid(x)


class Block(nn.Module):
  """`block` = [GroupNorm, Swish, Dropout or Identity, Conv3x3] at indices 0..3."""

  def __init__(self, dim, dim_out, groups, dropout=0.0):
    super().__init__()
    self.block = nn.Sequential(
        nn.GroupNorm(groups, dim), Swish(),
        nn.Dropout(dropout) if dropout else nn.Identity(),
        nn.Conv2d(dim, dim_out, 3, padding=1))

  def forward(self, x):
    return self.block(x)


class FeatureWiseAffine(nn.Module):
  """Adds Linear(noise embedding) per channel (SR3's use_affine_level=False)."""

  def __init__(self, emb_dim, channels):
    super().__init__()
    self.noise_func = nn.Sequential(nn.Linear(emb_dim, channels))

  def forward(self, x, emb):
    return x + self.noise_func(emb)[:, :, None, None]


class ResnetBlock(nn.Module):

  def __init__(self, dim, dim_out, emb_dim, groups, dropout):
    super().__init__()
    self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
    self.block1 = Block(dim, dim_out, groups)
    self.block2 = Block(dim_out, dim_out, groups, dropout)
    self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

  def forward(self, x, emb):
    h = self.noise_func(self.block1(x), emb)
    return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
  """One head; bias-free qkv with channels [q | k | v]; scores scaled by 1/sqrt(C)."""

  def __init__(self, channels, groups):
    super().__init__()
    self.norm = nn.GroupNorm(groups, channels)
    self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
    self.out = nn.Conv2d(channels, channels, 1)

  def forward(self, x):
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # each [B, C, HW]
    scores = torch.einsum('bcq,bck->bqk', q, k) / math.sqrt(c)
    a = torch.einsum('bqk,bck->bcq', scores.softmax(-1), v).reshape(b, c, h, w)
    return self.out(a) + x


class ResnetBlocWithAttn(nn.Module):

  def __init__(self, dim, dim_out, emb_dim, groups, dropout, with_attn):
    super().__init__()
    self.with_attn = with_attn
    self.res_block = ResnetBlock(dim, dim_out, emb_dim, groups, dropout)
    if with_attn:
      self.attn = SelfAttention(dim_out, groups)

  def forward(self, x, emb):
    x = self.res_block(x, emb)
    return self.attn(x) if self.with_attn else x


class SR3UNet(nn.Module):
  """SR3's UNet; `forward(x, noise_level)` with x = cat([condition, x_t], 1)."""

  def __init__(self, in_channels=6, out_channels=3, inner_channels=64,
               channel_mults=(1, 2, 4, 8, 8), attn_res=(16,), res_blocks=2, dropout=0.0,
               norm_groups=32, image_size=128, dtype=None, remat=None):
    super().__init__()
    del dtype, remat
    c = inner_channels
    self.noise_level_mlp = nn.Sequential(
        PositionalEncoding(c), nn.Linear(c, 4 * c), Swish(), nn.Linear(4 * c, c))

    def block(dim, dim_out, with_attn):
      return ResnetBlocWithAttn(dim, dim_out, c, norm_groups, dropout, with_attn)

    last = len(channel_mults) - 1
    res = image_size
    downs = [nn.Conv2d(in_channels, c, 3, padding=1)]
    skips = [c]  # channels of every output pushed to the skip stack
    ch = c
    for level, mult in enumerate(channel_mults):
      for _ in range(res_blocks):
        downs.append(block(ch, c * mult, res in attn_res))
        ch = c * mult
        skips.append(ch)
      if level != last:
        downs.append(SR3Downsample(ch))
        skips.append(ch)
        res //= 2
    self.downs = nn.ModuleList(downs)

    self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch, False)])

    ups = []
    for level in reversed(range(len(channel_mults))):
      for _ in range(res_blocks + 1):
        ups.append(block(ch + skips.pop(), c * channel_mults[level], res in attn_res))
        ch = c * channel_mults[level]
      if level != 0:
        ups.append(Upsample(ch))
        res *= 2
    assert not skips
    self.ups = nn.ModuleList(ups)

    self.final_conv = Block(ch, out_channels, norm_groups)

  def forward(self, x, noise_level):
    emb = self.noise_level_mlp(noise_level)
    feats = []
    for layer in self.downs:
      x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
      feats.append(x)
    for layer in self.mid:
      x = layer(x, emb)
    for layer in self.ups:
      if isinstance(layer, ResnetBlocWithAttn):
        x = layer(torch.cat([x, feats.pop()], dim=1), emb)
      else:
        x = layer(x)
    return self.final_conv(x)


# --------------------------------------------------------------------------------------------
# ADM (guided-diffusion / DifFace)
# --------------------------------------------------------------------------------------------


class ADMDownsample(nn.Module):

  def __init__(self, channels):
    super().__init__()
    self.op = down_conv(channels)

  def forward(self, x):
    return self.op(x)


class ResBlock(nn.Module):
  """Scale-shift-norm ResBlock: h = out_rest(GN(in_layers(x)) * (1 + scale) + shift)."""

  def __init__(self, channels, emb_channels, out_channels, groups, dropout):
    super().__init__()
    self.in_layers = nn.Sequential(
        GroupNorm32(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
    self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
    self.out_layers = nn.Sequential(
        GroupNorm32(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
        nn.Conv2d(out_channels, out_channels, 3, padding=1))
    self.skip_connection = (nn.Identity() if out_channels == channels
                            else nn.Conv2d(channels, out_channels, 1))

  def forward(self, x, emb):
    h = self.in_layers(x)
    scale, shift = self.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
    h = self.out_layers[0](h) * (1 + scale) + shift
    for layer in self.out_layers[1:]:
      h = layer(h)
    return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
  """Per head the 3*ch channels are [q_h, k_h, v_h]; q and k each scaled by ch^-1/4."""

  def __init__(self, n_heads):
    super().__init__()
    self.n_heads = n_heads

  def forward(self, qkv):
    bs, width, length = qkv.shape
    ch = width // (3 * self.n_heads)
    q, k, v = qkv.reshape(bs * self.n_heads, 3 * ch, length).split(ch, dim=1)
    scale = ch ** -0.25
    logits = torch.einsum('bct,bcs->bts', q * scale, k * scale)
    weight = torch.softmax(logits.float(), dim=-1).type(logits.dtype)
    return torch.einsum('bts,bcs->bct', weight, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):

  def __init__(self, channels, head_channels, groups):
    super().__init__()
    self.norm = GroupNorm32(groups, channels)
    self.qkv = nn.Conv1d(channels, 3 * channels, 1)
    self.attention = QKVAttentionLegacy(channels // head_channels)
    self.proj_out = nn.Conv1d(channels, channels, 1)

  def forward(self, x):
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    h = self.proj_out(self.attention(self.qkv(self.norm(x))))
    return (x + h).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
  """Passes the embedding to the ResBlocks among its children."""

  def forward(self, x, emb):
    for layer in self:
      x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
    return x


class ADMUNet(nn.Module):
  """DifFace's ADM UNet; `forward(x, timesteps)`."""

  def __init__(self, image_size=512, in_channels=3, model_channels=32, out_channels=6,
               num_res_blocks=(1, 2, 2, 2, 2, 3, 4), attention_resolutions=(32, 16, 8),
               dropout=0.0, channel_mult=(1, 2, 4, 8, 8, 16, 16), num_head_channels=64,
               norm_groups=32, dtype=None, remat=None):
    super().__init__()
    del dtype, remat
    self.model_channels = model_channels
    c = model_channels
    emb_dim = 4 * c
    self.time_embed = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def res_block(ch_in, ch_out):
      return ResBlock(ch_in, emb_dim, ch_out, norm_groups, dropout)

    def attention(ch):
      return AttentionBlock(ch, num_head_channels, norm_groups)

    ch = c * channel_mult[0]
    self.input_blocks = nn.ModuleList(
        [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    skips = [ch]
    ds = image_size
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks[level]):
        layers = [res_block(ch, c * mult)]
        ch = c * mult
        if ds in attention_resolutions:
          layers.append(attention(ch))
        self.input_blocks.append(TimestepEmbedSequential(*layers))
        skips.append(ch)
      if level != len(channel_mult) - 1:
        self.input_blocks.append(TimestepEmbedSequential(ADMDownsample(ch)))
        skips.append(ch)
        ds //= 2

    self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch),
                                                res_block(ch, ch))

    self.output_blocks = nn.ModuleList()
    for level in reversed(range(len(channel_mult))):
      for i in range(num_res_blocks[level] + 1):
        layers = [res_block(ch + skips.pop(), c * channel_mult[level])]
        ch = c * channel_mult[level]
        if ds in attention_resolutions:
          layers.append(attention(ch))
        if level and i == num_res_blocks[level]:
          layers.append(Upsample(ch))
          ds *= 2
        self.output_blocks.append(TimestepEmbedSequential(*layers))
    assert not skips

    self.out = nn.Sequential(GroupNorm32(norm_groups, ch), nn.SiLU(),
                             nn.Conv2d(ch, out_channels, 3, padding=1))

  def forward(self, x, timesteps):
    emb = self.time_embed(sinusoidal(timesteps, self.model_channels, sin_first=False))
    hs = []
    h = x
    for module in self.input_blocks:
      h = module(h, emb)
      hs.append(h)
    h = self.middle_block(h, emb)
    for module in self.output_blocks:
      h = module(torch.cat([h, hs.pop()], dim=1), emb)
    return self.out(h)


CLASSES = {'sr3': SR3UNet, 'adm': ADMUNet}  # by config.model_type


def random_net(config, seed: int = 0):
  """The PyTorch network of a stage config in eval mode, every parameter drawn from N(0, 0.2^2):
  nothing is zero (guided-diffusion zero-initialises some convs, which would hide errors)."""
  torch.manual_seed(seed)
  net = CLASSES[config.model_type](**config.model).eval()
  with torch.no_grad():
    for p in net.parameters():
      p.normal_(0.0, 0.2)
  return net
