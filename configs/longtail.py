r"""The long-tail experiment (the paper's Sec. 4.2, Fig. 2): on long-tailed digits, a small DDPM's
samples cover the rare classes where a GAN of the same size collapses onto the frequent ones.

  python -m diffbfr_jax.main --config=configs/longtail.py --workdir=runs/longtail
    -> trains the DDPM and the GAN on scikit-learn's 8x8 digits with classes 2-9 thinned
       (runs/longtail/ddpm, runs/longtail/gan: Orbax checkpoints, resumed by the same command),
       labels num_samples samples of each with a classifier trained on the full training split,
       and prints the class histograms of the training set, the DDPM's and the GAN's samples, the
       classifier's accuracy on held-out real digits, and writes samples_ddpm.png,
       samples_gan.png and summary.json.

MNIST needs a download; scikit-learn's digits (1,797 images of 8x8, 10 classes) ship with it.
The argument: '' the experiment; 'smoke' a few steps of each (tests).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  size = common.parse_preset(arg, size=('smoke',))['size']
  config = ml_collections.ConfigDict()
  config.job = 'longtail'
  config.seed = 0  # the split, the thinning, the initialisations, the training and the samples
  config.held_out = 0.25  # of every class, for the classifier's accuracy (never trained on)
  # The fraction of each class's training digits kept, classes 0..9: 0 and 1 whole, the others
  # thinned (the paper drops labels of MNIST classes; its fractions are not given).
  config.keep = (1.0, 1.0, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03)
  config.num_samples = 1000  # samples drawn from each model and labelled
  config.grid_count = 100  # samples of each model in its PNG grid

  # The DDPM: this project's ADM UNet (TEM's network) at 8x8, one channel, 1,432,545 parameters
  # (the paper's: about 1.44M), with the diffusion module's linear schedule, eps-prediction L2
  # loss and ancestral sampler.
  config.ddpm = ml_collections.ConfigDict(dict(
      model=dict(image_size=8, in_channels=1, out_channels=1, model_channels=32,
                 channel_mult=(1, 2, 2), num_res_blocks=(2, 2, 1), attention_resolutions=(),
                 dropout=0.0, num_head_channels=32, norm_groups=16),
      schedule=dict(kind='linear', num_timesteps=1000, beta_start=1e-4, beta_end=2e-2),
      steps=1500, batch_size=64, learning_rate=2e-4, ema_decay=0.999,
      # samplers.make_sampler's fields: the ancestral chain on a respaced grid of 100 steps
      sampling=dict(respacing='100', variance='posterior', clip_x0=True),
  ))
  # The GAN: a DCGAN-style generator and discriminator in Flax (dense layers to 4x4 features,
  # a transposed convolution to 8x8; strided convolutions and dense layers; batch norm in the
  # generator), 1,485,282 parameters in all (the paper's: about 1.51M), the standard loss with
  # the non-saturating generator loss, Adam(2e-4, b1=0.5).
  config.gan = ml_collections.ConfigDict(dict(
      latent=128,  # generator input
      hidden=512, width=128,  # generator: first dense layer; channels of its 4x4 features
      d_width=64, d_hidden=1024,  # discriminator: channels at 2x2; its dense layer
      steps=3000, batch_size=64, learning_rate=2e-4, beta1=0.5,
  ))
  config.checkpoint_every = 500  # optimizer steps between checkpoints of each model
  if size == 'smoke':
    config.ddpm.update(steps=6, batch_size=8)
    config.ddpm.model.update(model_channels=16, channel_mult=(1, 2), num_res_blocks=(1, 1),
                             norm_groups=8, num_head_channels=16)
    config.ddpm.sampling.respacing = '10'
    config.gan.update(steps=6, batch_size=8, latent=16, hidden=32, width=16, d_width=16,
                      d_hidden=32)
    config.update(num_samples=40, grid_count=16, checkpoint_every=3)
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
