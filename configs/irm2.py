r"""IRM-2: DiffBFR's high-resolution Identity Restoration Module (SR3 UNet, 512x512, conditional).

Table 6 of the paper, with SR3's `sr_sr3_64_512` (its [1,2,4,8,8,16,16] multiplier line) filling
what the table leaves out. Table 6 gives attention at [16], which SR3's file does not have.

  python -m diffbfr_jax.main --config=configs/irm2.py --config.job=summary
    -> "total parameters: 291,473,603" (278,881,475 with --config.model.attn_res='()').

Presets: `configs/irm2.py` (paper), `:smoke` (tiny, for tests), `:demo` (CPU-sized).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  preset = common.preset_name(arg)
  config = common.base('irm2')

  config.model_type = 'sr3'
  config.model = common.model(
      in_channels=6,  # concat[condition at 512 (3), x_t (3)] (Table 6: in 6)
      out_channels=3,  # the predicted noise eps (Table 6: out 3)
      inner_channels=64,  # width of level 0 and of the noise-level embedding (Table 6)
      channel_mults=(1, 2, 4, 8, 8, 16, 16),  # width of each level / inner_channels (Table 6)
      attn_res=(16,),  # feature-map sizes with self-attention (Table 6; SR3's file has none)
      res_blocks=1,  # residual blocks per level on the way down; +1 on the way up (SR3)
      dropout=0.0,  # SR3 sr_sr3_64_512
      norm_groups=16,  # GroupNorm groups (SR3 sr_sr3_64_512)
      image_size=512,  # pixels per side; decides where attention goes (Table 6)
  )

  # T = 2000, betas linear from 1e-6 to 1e-2 (Table 6).
  config.diffusion.schedule = common.linear_schedule(2000, 1e-6, 1e-2)
  config.diffusion.loss = ml_collections.ConfigDict(dict(  # diffusion.losses.noise_level_loss
      kind='l1',  # mean |eps - eps_theta| (Table 6); 'l2' also allowed
      per_example_t=False,  # SR3 draws one step t per batch, then a noise level per example
  ))

  # Algorithm 1: truncated start N1 = 1000 (resize(IRM-1 output) diffused to step 1000),
  # sigma_t^2 = beta_t, no clipping.
  # ddim_eps: SR3 has no DDIM; guided-diffusion's convention (the project's DDIM before the
  # option existed). Without clipping both conventions give the same chain.
  config.sampling = common.sampling(start_step=1000, from_noise=False, variance='beta',
                                    clip_x0=False, ddim_eps='from_x0')

  config.train.optimizer = 'adam'  # SR3 sr_sr3_64_512
  config.train.learning_rate = 3e-6  # SR3 sr_sr3_64_512
  config.train.batch_size = 2  # global batch over all devices (SR3 sr_sr3_64_512)
  config.train.num_steps = 1_000_000  # SR3 sr_sr3_64_512 n_iter
  config.train.warmup_steps = 0  # linear learning-rate warm-up (SR3 uses none)
  config.train.ema_decay = 0.9999  # EMA of the parameters used for sampling

  config.data.image_size = 512  # GT faces at 512
  # Training condition (Eq. 9; the paper does not say which was used): 'gt_down_up' = the GT
  # down-sampled to condition_size and resized back up; 'lq' = the degraded LQ face at 512.
  config.data.condition = 'gt_down_up'
  config.data.condition_size = 128  # the IRM-1 resolution the condition passes through

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
