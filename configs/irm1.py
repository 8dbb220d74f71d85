r"""IRM-1: DiffBFR's low-resolution Identity Restoration Module (SR3 UNet, 128x128, conditional).

Table 6 of the paper, with SR3's `sr_sr3_16_128` filling what the table leaves out.

  python -m diffbfr_jax.main --config=configs/irm1.py --config.job=summary
    -> the parameter overview, ending "total parameters: 97,807,491" (nothing is allocated).

Presets: `configs/irm1.py` (paper), `configs/irm1.py:smoke` (a tiny model for tests),
`configs/irm1.py:demo` (a small model that trains in minutes on a CPU).
"""

from configs import common


def get_config(arg=None):
  preset = common.preset_name(arg)
  # SR3's sr_sr3_16_128 for what Table 6 leaves out (depth, dropout, groups, rate, batch). The LQ
  # and GT faces at 128 (x'_0 = downsample(y_0)); the LQ face is the condition. Algorithm 1: the
  # full chain from x_T ~ N(0, I) (SR3's code uses variance='posterior' and clip_x0=True).
  config = common.sr3_stage(
      'irm1', image_size=128, start_step=2000, from_noise=True, learning_rate=1e-4, batch_size=4,
      channel_mults=(1, 2, 4, 8, 8),  # width of each level / inner_channels (Table 6)
      attn_res=(16,),  # feature-map sizes with self-attention (Table 6)
      res_blocks=2,  # residual blocks per level on the way down; +1 on the way up (SR3)
      dropout=0.2,  # dropout before each block's second conv (SR3 sr_sr3_16_128)
      norm_groups=32,  # GroupNorm groups (SR3 sr_sr3_16_128)
  )

  if preset == 'smoke':
    config.model.update(inner_channels=16, channel_mults=(1, 2), attn_res=(8,), res_blocks=1,
                        dropout=0.1, norm_groups=8, image_size=16)
  elif preset == 'demo':
    config.model.update(inner_channels=32, channel_mults=(1, 2, 2), attn_res=(8,), res_blocks=1,
                        dropout=0.0, norm_groups=16, image_size=16)
    # A noise level per example instead of SR3's one per batch: lower-variance gradients, which
    # a run of minutes needs (docs/demo.md).
    config.diffusion.loss.per_example_t = True
  if preset:
    common.small_preset(config, preset)

  return common.finish(config)
