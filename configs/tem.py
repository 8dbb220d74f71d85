r"""TEM: DiffBFR's Texture Enhancement Module (ADM UNet, 512x512, unconditional).

Table 6 of the paper, with DifFace's `configs/training/diffusion_ffhq512.yaml` (an improved-DDPM
UNet whose FFHQ-512 weights are published) filling what the table leaves out.

  python -m diffbfr_jax.main --config=configs/tem.py --config.job=summary
    -> the parameter overview, ending "total parameters: 159,788,454" (nothing is allocated).

Presets: `configs/tem.py` (paper), `:smoke` (tiny, for tests), `:demo` (CPU-sized).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  preset = common.preset_name(arg)
  config = common.base('tem')

  config.model_type = 'adm'
  config.model = common.model(
      image_size=512,  # pixels per side; attention resolutions are absolute sizes (Table 6)
      in_channels=3,  # x_t only: TEM is unconditional (Table 6: in 3)
      model_channels=32,  # width of level 0; the time embedding is 4x this (Table 6)
      out_channels=6,  # [eps (3), learned-range variance v (3)] (Table 6: out 6)
      num_res_blocks=(1, 2, 2, 2, 2, 3, 4),  # per level on the way down; +1 up (DifFace)
      attention_resolutions=(32, 16, 8),  # feature-map sizes with attention (Table 6)
      dropout=0.0,  # DifFace
      channel_mult=(1, 2, 4, 8, 8, 16, 16),  # width of each level / model_channels (Table 6)
      num_head_channels=64,  # channels per attention head (DifFace)
      norm_groups=32,  # GroupNorm groups (guided-diffusion's GroupNorm32)
  )

  # T = 1000, betas linear from 1e-4 to 2e-2 (Table 6).
  config.diffusion.schedule = common.linear_schedule(1000, 1e-4, 2e-2)
  config.diffusion.loss = ml_collections.ConfigDict(dict(  # diffusion.losses.timestep_loss
      kind='l1',  # eps term: mean |eps - eps_theta| (Table 6); 'l2' also allowed
      # The 6-channel output adds improved DDPM's variational-bound term for the learned
      # variance (hybrid loss), scaled by T / 1000 when this is on (DifFace's rescale_learned_sigmas).
      rescale_vb=True,
  ))

  # Algorithm 1: truncated start N2 = 100 on the 1000-step grid (IRM-2's output diffused to
  # step 100); the learned-range variance and x_0 clipping of DifFace.
  # ddim_eps='model': with sampler='ddim', DifFace's convention for its own network (its
  # `ddim_sample` keeps the network's eps beside the clipped x_0). Algorithm 1's ancestral chain
  # does not read it.
  config.sampling = common.sampling(start_step=100, from_noise=False,
                                    variance='learned_range', clip_x0=True, ddim_eps='model')

  config.train.optimizer = 'adamw'  # DifFace
  config.train.learning_rate = 1e-4  # DifFace
  config.train.batch_size = 64  # global batch over all devices (DifFace)
  config.train.num_steps = 500_000  # DifFace's published EMA weights are from step 500k
  config.train.warmup_steps = 10_000  # linear learning-rate warm-up (DifFace)
  config.train.ema_decay = 0.999  # DifFace

  config.data.image_size = 512  # HQ faces at 512; TEM never sees a degraded face

  if preset == 'smoke':
    # 32x32, as the IRM-2 smoke network, so the smoke stages make a cascade.
    config.model.update(image_size=32, model_channels=16, channel_mult=(1, 2),
                        num_res_blocks=(1, 2), attention_resolutions=(16,), num_head_channels=16,
                        norm_groups=8)
    common.small_preset(config, preset)
  elif preset == 'demo':
    config.model.update(image_size=32, channel_mult=(1, 2, 2, 2), num_res_blocks=(1, 1, 1, 1),
                        attention_resolutions=(8,), num_head_channels=32)
    common.small_preset(config, preset)

  return common.finish(config)
