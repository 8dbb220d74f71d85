r"""IRM-1: DiffBFR's low-resolution Identity Restoration Module (SR3 UNet, 128x128, conditional).

Table 6 of the paper, with SR3's `sr_sr3_16_128` filling what the table leaves out.

  python -m diffbfr_jax.main --config=configs/irm1.py --config.job=summary
    -> the parameter overview, ending "total parameters: 97,807,491" (nothing is allocated).

Presets: `configs/irm1.py` (paper), `configs/irm1.py:smoke` (a tiny model for tests),
`configs/irm1.py:demo` (a small model that trains in minutes on a CPU).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  preset = common.preset_name(arg)
  config = common.base('irm1')

  config.model_type = 'sr3'
  config.model = common.model(
      in_channels=6,  # concat[LQ face at 128 (3), x_t (3)] (Table 6: in 6)
      out_channels=3,  # the predicted noise eps (Table 6: out 3)
      inner_channels=64,  # width of level 0 and of the noise-level embedding (Table 6)
      channel_mults=(1, 2, 4, 8, 8),  # width of each level / inner_channels (Table 6)
      attn_res=(16,),  # feature-map sizes with self-attention (Table 6)
      res_blocks=2,  # residual blocks per level on the way down; +1 on the way up (SR3)
      dropout=0.2,  # dropout before each block's second conv (SR3 sr_sr3_16_128)
      norm_groups=32,  # GroupNorm groups (SR3 sr_sr3_16_128)
      image_size=128,  # pixels per side; decides where attention goes (Table 6)
  )

  # T = 2000, betas linear from 1e-6 to 1e-2 (Table 6).
  config.diffusion.schedule = common.linear_schedule(2000, 1e-6, 1e-2)
  config.diffusion.loss = ml_collections.ConfigDict(dict(  # diffusion.losses.noise_level_loss
      kind='l1',  # mean |eps - eps_theta| (Table 6); 'l2' also allowed
      per_example_t=False,  # SR3 draws one step t per batch, then a noise level per example
  ))

  # Algorithm 1: the full chain from x_T ~ N(0, I), sigma_t^2 = beta_t, no clipping
  # (SR3's code uses variance='posterior' and clip_x0=True).
  # ddim_eps: SR3 has no DDIM; guided-diffusion's convention (the project's DDIM before the
  # option existed). Without clipping both conventions give the same chain.
  config.sampling = common.sampling(start_step=2000, from_noise=True, variance='beta',
                                    clip_x0=False, ddim_eps='from_x0')

  config.train.optimizer = 'adam'  # SR3 sr_sr3_16_128
  config.train.learning_rate = 1e-4  # SR3 sr_sr3_16_128
  config.train.batch_size = 4  # global batch over all devices (SR3 sr_sr3_16_128)
  config.train.num_steps = 1_000_000  # SR3 sr_sr3_16_128 n_iter
  config.train.warmup_steps = 0  # linear learning-rate warm-up (SR3 uses none)
  config.train.ema_decay = 0.9999  # EMA of the parameters used for sampling

  config.data.image_size = 128  # GT and LQ faces at 128 (x'_0 = downsample(y_0))
  # The paper does not say how the 128 pair is made: 'degrade_then_resize' degrades the face at
  # source_size and resizes LQ and GT to 128; 'resize_then_degrade' degrades at 128.
  config.data.irm1_pair = 'degrade_then_resize'

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
