r"""IRM-2: DiffBFR's high-resolution Identity Restoration Module (SR3 UNet, 512x512, conditional).

Table 6 of the paper, with SR3's `sr_sr3_64_512` (its [1,2,4,8,8,16,16] multiplier line) filling
what the table leaves out. Table 6 gives attention at [16], which SR3's file does not have.

  python -m diffbfr_jax.main --config=configs/irm2.py --config.job=summary
    -> "total parameters: 291,473,603" (278,881,475 with --config.model.attn_res='()').

Presets: `configs/irm2.py` (paper), `:smoke` (tiny, for tests), `:demo` (CPU-sized).
"""

from configs import common


def get_config(arg=None):
  preset = common.preset_name(arg)
  # SR3's sr_sr3_64_512 for what Table 6 leaves out. GT faces at 512, the condition (Eq. 9) as
  # config.data.condition says. Algorithm 1: truncated start N1 = 1000 (resize(IRM-1 output)
  # diffused to step 1000).
  config = common.sr3_stage(
      'irm2', image_size=512, start_step=1000, from_noise=False, learning_rate=3e-6, batch_size=2,
      channel_mults=(1, 2, 4, 8, 8, 16, 16),  # width of each level / inner_channels (Table 6)
      attn_res=(16,),  # feature-map sizes with self-attention (Table 6; SR3's file has none)
      res_blocks=1,  # residual blocks per level on the way down; +1 on the way up (SR3)
      dropout=0.0,  # SR3 sr_sr3_64_512
      norm_groups=16,  # GroupNorm groups (SR3 sr_sr3_64_512)
  )

  if preset == 'smoke':
    config.model.update(inner_channels=16, channel_mults=(1, 2, 2), attn_res=(8,), res_blocks=1,
                        norm_groups=8, image_size=32)
  elif preset == 'demo':
    config.model.update(inner_channels=32, channel_mults=(1, 2, 2, 2), attn_res=(8,),
                        res_blocks=1, norm_groups=16, image_size=32)
    # As IRM-1's :demo: a noise level per example (docs/demo.md).
    config.diffusion.loss.per_example_t = True
  if preset:
    # :demo trains IRM-2 at twice the other stages' rate (docs/demo.md).
    common.small_preset(config, preset, **({'learning_rate': 2e-3} if preset == 'demo' else {}))
    config.data.condition_size = 16  # the small IRM-1's size

  return common.finish(config)
