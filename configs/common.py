"""Fields shared by every stage config, and the preset mechanism.

A stage config (`configs/irm1.py`, `configs/irm2.py`, `configs/tem.py`) starts from `base()` and
fills `model`, `diffusion`, `sampling`, `train` and `data` (IRM-1 and IRM-2 through `sr3_stage()`,
the part they share). Sub-dicts are call signatures: `config.model` holds exactly the keyword
arguments of the network class named by `config.model_type`
(`diffbfr_jax.models.create_model(config.model_type, **config.model)`).
"""

import os

import ml_collections

from diffbfr_jax import config_checks

PRESETS = ('', 'smoke', 'demo')


def base(stage: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = stage  # 'irm1' | 'irm2' | 'tem': which of DiffBFR's three models this trains
  # 'train' | 'summary' (print the parameter overview, allocate nothing) | 'convert' (write a
  # checkpoint from published PyTorch weights: config.convert, docs/convert.md)
  config.job = 'train'
  config.seed = 0  # root of every random key of the run
  config.model_type = ''  # 'sr3' (IRM-1, IRM-2) | 'adm' (TEM)
  config.model = ml_collections.ConfigDict()
  config.diffusion = ml_collections.ConfigDict()
  config.sampling = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict(dict(
      optimizer='adam',  # 'adam' | 'adamw' (the stage configs set the paper's)
      learning_rate=1e-4,  # peak rate, reached after warmup_steps
      warmup_steps=0,  # linear warm-up from 0
      lr_decay='constant',  # after the warm-up: 'constant' | 'linear' (down to 0 at num_steps)
      weight_decay=0.0,  # AdamW's decoupled weight decay
      grad_clip=1.0,  # clip gradients to this global norm; 0 turns clipping off
      batch_size=4,  # global batch: split over processes, then devices
      microbatches=1,  # accumulate gradients over this many slices of each device's batch
      num_steps=1000,  # optimizer steps of the whole run
      ema_decay=0.9999,  # EMA of the parameters (used for sampling)
      log_every=100,  # write train/* scalars every this many steps
      checkpoint_every=5000,  # save every this many steps (and at the end)
      keep_checkpoints=3,  # keep the last this many checkpoints
      preview_every=0,  # write an image grid (LQ | sample | GT) every this many steps; 0 = never
      preview_respacing='ddim25',  # the preview chain's grid (short, for speed)
      preview_count=4,  # faces in the preview grid
      # (first, last): a profiler trace of steps first..last (both counted from 1, the first
      # compiles) into the workdir, for TensorBoard's profile tab; (0, 0) = none
      profile_steps=(0, 0),
  ))
  runtime(config)
  config.data = data()
  # The convert job (diffbfr_jax.convert.job): a PyTorch checkpoint of this stage's network.
  config.convert = ml_collections.ConfigDict(dict(
      source='',  # the .pth file (SR3's *_gen.pth for IRM-1/IRM-2, DifFace's for TEM)
      key='',  # the file's entry that holds the state_dict; '' = the file is one, or has one
  ))
  return config


def runtime(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The fields every job config has, read by `main` before the job starts (`main.start`)."""
  # diffbfr_jax.parallel.initialize(**config.distributed): multi-host set-up, once per process.
  config.distributed = ml_collections.ConfigDict(dict(
      initialize='auto',  # 'auto': start jax.distributed on TPU pods, SLURM jobs of several
                          # tasks or with a coordinator_address; 'never': one process
      coordinator_address='',  # 'host:port' of process 0 (GPU clusters without SLURM)
      num_processes=0,  # with coordinator_address; 0 = let JAX find out
      process_id=-1,  # with coordinator_address; -1 = let JAX find out
  ))
  # JAX's persistent compilation cache: a program compiled once for a device kind is loaded
  # from here by the next job that runs it ('' = JAX's own setting, JAX_COMPILATION_CACHE_DIR).
  # The default is $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/diffbfr_jax/jax.
  config.compilation_cache_dir = os.environ.get('JAX_COMPILATION_CACHE_DIR',
                                                '~/.cache/diffbfr_jax/jax')
  return config


def data() -> ml_collections.ConfigDict:
  """`config.data`: where the HQ faces come from and how they are degraded (Eq. 13)."""
  return ml_collections.ConfigDict(dict(
      # diffbfr_jax.data.sources.make_source(size=source_size, **source). No default: training
      # on the wrong faces silently is worse than stopping.
      source=dict(
          kind='',  # 'folder' (path) | 'tfds' (tfds_name) | 'bundled' (skimage's faces, demos)
          path='',  # folder of HQ faces: PNG/JPEG/..., nested folders, any size (centre-cropped)
          split='train',  # TFDS split, or 'train' / 'test' of the bundled faces
          tfds_name='',  # e.g. 'face_folder/512' (the prepare job's); read as array_record
          data_dir='',  # TFDS data folder ('' = TFDS's default)
          manual_dir='',  # where a manually downloaded TFDS dataset's files are
      ),
      source_size=512,  # faces are read, flipped and degraded at this size (FFHQ resized to 512)
      image_size=512,  # the stage's size (= model.image_size)
      shuffle=True,  # a new permutation of the faces every epoch, seeded by config.seed
      # Where Eq. 13 and the stage's resizes run: 'host' (the tf.data pipeline, the reference)
      # or 'device' (in JAX on the accelerator, diffbfr_jax.data.device_degradation; the host
      # only reads faces and draws the parameters). docs/training.md, "Where the degradation runs".
      degrade_on='host',
      # GFPGAN's degradation with the paper's ranges (diffbfr_jax.data.degradations.DEFAULTS).
      degradation=dict(
          kernel_size=41,  # blur kernel side, pixels
          blur_sigma=(0.1, 10.0),  # sigma ~ U(range), pixels (Eq. 13)
          iso_prob=0.5,  # isotropic kernel with this probability, else anisotropic
          rotation=(-3.141592653589793, 3.141592653589793),  # anisotropic kernel angle, radians
          downsample_range=(0.8, 8.0),  # r ~ U(range): bilinear down-sampling factor (Eq. 13)
          noise_range=(0.0, 20.0),  # Gaussian noise std ~ U(range), on the 0..255 scale (Eq. 13)
          jpeg_range=(60, 100),  # integer JPEG quality ~ U{range} (Eq. 13)
          gray_prob=0.01,  # LQ to gray with this probability (GFPGAN)
          flip_prob=0.5,  # horizontal flip of the pair with this probability
          color_jitter_prob=0.0,  # GFPGAN's LQ colour jitter; the paper does not mention it
          color_jitter_shift=20.0 / 255.0,  # per-channel shift ~ U(+-shift) when jittering
      ),
      # IRM-2's condition (Eq. 9; the paper does not say which): 'gt_down_up' | 'lq' (the LQ face)
      condition='gt_down_up',
      condition_size=128,  # IRM-2's 'gt_down_up': the GT down to this size (IRM-1's) and back up
      # IRM-1's pair (unsaid too): 'degrade_then_resize' (at source_size) | 'resize_then_degrade'
      irm1_pair='degrade_then_resize',
  ))


def model(**architecture) -> ml_collections.ConfigDict:
  """`config.model`: a stage's architecture fields plus the compute options every network has."""
  return ml_collections.ConfigDict(dict(
      **architecture,
      dtype='float32',  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)
      remat=False,  # recompute each block in the backward pass: less memory, more compute
  ))


def linear_schedule(num_timesteps: int, beta_start: float,
                    beta_end: float) -> ml_collections.ConfigDict:
  """`config.diffusion.schedule`: betas spaced linearly from beta_start to beta_end (Table 6)."""
  return ml_collections.ConfigDict(dict(
      kind='linear',  # 'linear' is the paper's for all three stages
      num_timesteps=num_timesteps,  # T
      beta_start=beta_start,  # beta_1
      beta_end=beta_end,  # beta_T
  ))


def sampling(*, start_step: int, from_noise: bool, variance: str, clip_x0: bool,
             ddim_eps: str) -> ml_collections.ConfigDict:
  """`config.sampling`: the keyword arguments of `diffusion.samplers.make_sampler`.

  ddim_eps is a stage's choice (its config says whose convention it follows); it only changes
  DDIM steps whose x_0 estimate is clipped.
  """
  return ml_collections.ConfigDict(dict(
      start_step=start_step,  # N: the chain noises to step N and denoises N, ..., 1 (Table 6)
      start_grid='original',  # N counts steps of the training grid; 'respaced': of the sampling grid
      from_noise=from_noise,  # start from N(0, I) instead of the start image diffused to N
      variance=variance,  # 'beta' (Algorithm 1) | 'posterior' (SR3 code) | 'learned_range'
      clip_x0=clip_x0,  # clamp each x_0 estimate to [-1, 1]
      respacing='',  # '' = every step; guided-diffusion counts ('250', '10,20') or 'ddimN'
      sampler='ancestral',  # 'ancestral' (Algorithm 1) | 'ddim'
      eta=0.0,  # DDIM noise scale, 0 = deterministic (sampler='ddim' only)
      # DDIM's eps in sqrt(1 - gamma_prev - sigma^2) eps when clip_x0 clips: 'from_x0' (the eps
      # of the clipped x_0, guided-diffusion) | 'model' (the network's eps, DifFace)
      ddim_eps=ddim_eps,
  ))


def sr3_stage(stage: str, *, image_size: int, start_step: int, from_noise: bool,
              learning_rate: float, batch_size: int, **architecture) -> ml_collections.ConfigDict:
  """What IRM-1 and IRM-2 share (Table 6, SR3's code for what it leaves out): SR3's conditional
  UNet at image_size (the stage's faces too), the L1 noise-level loss on T = 2000 steps,
  Algorithm 1's sampler from start_step (from N(0, I) when from_noise) and SR3's Adam.
  `architecture`: the stage's other SR3UNet fields (channel_mults, attn_res, res_blocks, dropout,
  norm_groups), in that order."""
  config = base(stage)
  config.model_type = 'sr3'
  config.model = model(
      in_channels=6,  # concat[condition (3), x_t (3)] (Table 6: in 6)
      out_channels=3,  # the predicted noise eps (Table 6: out 3)
      inner_channels=64,  # width of level 0 and of the noise-level embedding (Table 6)
      **architecture,
      image_size=image_size,  # pixels per side; decides where attention goes (Table 6)
  )
  # T = 2000, betas linear from 1e-6 to 1e-2 (Table 6).
  config.diffusion.schedule = linear_schedule(2000, 1e-6, 1e-2)
  config.diffusion.loss = ml_collections.ConfigDict(dict(  # diffusion.losses.noise_level_loss
      kind='l1',  # mean |eps - eps_theta| (Table 6); 'l2' also allowed
      per_example_t=False,  # SR3 draws one step t per batch, then a noise level per example
  ))
  # Algorithm 1: sigma_t^2 = beta_t, no clipping.
  # ddim_eps: SR3 has no DDIM; guided-diffusion's convention (the project's DDIM before the
  # option existed). Without clipping both conventions give the same chain.
  config.sampling = sampling(start_step=start_step, from_noise=from_noise, variance='beta',
                             clip_x0=False, ddim_eps='from_x0')
  config.train.update(
      optimizer='adam',  # SR3
      learning_rate=learning_rate,
      batch_size=batch_size,  # global batch over all devices
      num_steps=1_000_000,  # SR3's n_iter
      warmup_steps=0,  # linear learning-rate warm-up (SR3 uses none)
      ema_decay=0.9999,  # EMA of the parameters used for sampling
  )
  config.data.image_size = image_size
  return config


def sampling_stage(stage_config, checkpoint: str) -> ml_collections.ConfigDict:
  """A trained stage as the sampling jobs (restore, sample) take it: its checkpoint and chain."""
  return ml_collections.ConfigDict(dict(
      enabled=True,  # run this stage (the restore job's cascades)
      checkpoint=checkpoint,  # the stage's training workdir (or its checkpoints/ folder)
      step=-1,  # checkpoint step; -1 = the latest
      params='ema_params',  # 'ema_params' (the EMA, for sampling) | 'params' (the raw weights)
      dtype='',  # compute dtype override: '' (as trained) | 'float32' | 'bfloat16'
      # diffusion.samplers.make_sampler(**sampling); ddim_eps as the stage config says
      sampling=stage_config.sampling,
  ))


def parse_preset(arg, **groups) -> dict:
  """The one preset syntax of every config file: `FILE:NAME[,NAME...]`, each name from one of
  `groups` ({group: allowed names}), at most one per group, in any order. Returns {group: name}
  with '' for a group not named ('' everywhere: the paper's configuration)."""
  chosen = dict.fromkeys(groups, '')
  for name in (n.strip() for n in (arg or '').split(',')):
    if not name:
      continue
    group = next((g for g, allowed in groups.items() if name in allowed), None)
    if group is None or chosen[group]:
      listed = '; '.join(f'{g}: {", ".join(allowed)}' for g, allowed in groups.items())
      raise ValueError(f'Unknown config preset {name!r} in {arg!r}; expected comma-separated '
                       f"names, at most one of each group ({listed}; none = the paper's "
                       'configuration).')
    chosen[group] = name
  return chosen


def preset_name(arg) -> str:
  """The size preset of a stage config (`--config=configs/<stage>.py:smoke`; '' = the paper's)."""
  return parse_preset(arg, size=PRESETS[1:])['size']


def small_preset(config: ml_collections.ConfigDict, preset: str, **train) -> None:
  """What the `:smoke` and `:demo` presets of the three stages share, set after the stage has
  set its small network (config.model): the bundled faces read at 32 and the stage's faces at
  the network's size; `:smoke` trains 4 steps of batch 2 (a test's budget), `:demo` 1500 steps
  of batch 16 at a rate of 1e-3 after 50 warm-up steps, with a short EMA (minutes on a CPU;
  docs/demo.md measures each choice). `train` overrides these."""
  config.data.source.kind = 'bundled'
  config.data.update(source_size=32, image_size=config.model.image_size)
  if preset == 'smoke':
    config.train.update(batch_size=2, num_steps=4, learning_rate=1e-4, warmup_steps=0,
                        log_every=2, checkpoint_every=2)
  elif preset == 'demo':
    config.train.update(batch_size=16, learning_rate=1e-3, warmup_steps=50, num_steps=1500,
                        ema_decay=0.995)
  else:
    raise ValueError(f"small_preset: preset={preset!r}; expected 'smoke' or 'demo'")
  config.train.update(train)


def finish(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sanity checks every stage config ends with (main runs them again after overrides)."""
  config_checks.check_stage_config(config)
  return config
