r"""The demo job: DiffBFR end to end on the faces bundled with scikit-image, on a CPU.

  python -m diffbfr_jax.main --config=configs/demo.py --workdir=runs/demo
    -> trains the :demo IRM-1, IRM-2 and TEM on LFW faces 0-79 (runs/demo/<stage>), degrades
       the held-out faces (LFW 80-99 and the astronaut) with Eq. 13 (runs/demo/test_set),
       restores each 8 times with the cascade (runs/demo/restored_tem_w.npz), writes
       runs/demo/grid_<row>.png (LQ | IRM-1 | IRM-2 | TEM | mean | GT) and prints PSNR, SSIM
       and LPIPS of the LQ input and of every stage's output, for the first sample and the mean.
    Measured (2-core CPU, 2026-12-02, `make demo` from a fresh clone): 686 s; LQ input
    17.04 dB / 0.2415 / 0.6607, output (TEM) 15.72 / 0.3373 / 0.4786 for one sample and
    17.59 / 0.4356 / 0.3869 for the mean of 8 (PSNR / SSIM / LPIPS-VGG; docs/demo.md).

The training recipe (the :demo presets, `steps`) and the samplers (`sampling`) are demo choices,
each measured in docs/demo.md. A finished stage is not trained again, so re-running with other
`rows` only samples.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  del arg  # no presets
  config = ml_collections.ConfigDict()
  config.job = 'demo'
  config.seed = 0  # training seed of every stage; with each face's name, the cascade's draws
  config.test_seed = 0  # degradation seed of the held-out faces
  # Table 2 rows to run, comma-separated: tem_w (DiffBFR), irm_c_t, irm_c, irm_s. irm_s trains
  # one more network (the IRM-2 demo network conditioned on the LQ face) into <workdir>/irm_s.
  config.rows = 'tem_w'
  # 'fast': the chains of configs/cascade.py's `fast` preset (100 + 50 + 25 evaluations for
  # tem_w); 'full': the paper's chains (2000 + 1000 + 100).
  config.grids = 'fast'
  # Optimizer steps of each stage (batch 16, the :demo presets' other settings): about 10
  # minutes of training on a 2-core CPU in all.
  config.steps = ml_collections.ConfigDict(dict(irm1=1400, irm2=500, tem=500, irm_s=500))
  # The weights the cascade samples with: 'params' (the raw weights) or 'ema_params'. Runs this
  # short are too short for the presets' EMA (docs/demo.md measures it).
  config.params = 'params'
  # Restorations per face (sample k from key (seed, face name, k), as the restore job's). With
  # K > 1 the mean of the K samples, a Monte Carlo estimate of the posterior mean, is scored too
  # (one more row per stage, one more grid column); every sample is kept in
  # <workdir>/restored_<row>.npz, and every printed number is computed from that file.
  config.num_samples = 8
  # The demo's samplers, a demo choice: fields of each stage's `sampling` (diffusion.samplers.
  # make_sampler) set on top of the stage config's, which is Algorithm 1's. IRM-1 and IRM-2 use
  # the sampler of SR3's code (the posterior variance with each x_0 estimate clipped to [-1, 1])
  # instead of Algorithm 1's sigma^2 = beta without clipping: with networks trained for minutes
  # it is worth several dB (docs/demo.md). TEM keeps its own (DifFace's) sampler.
  config.sampling = ml_collections.ConfigDict(dict(
      irm1=dict(variance='posterior', clip_x0=True),
      irm2=dict(variance='posterior', clip_x0=True),
      tem=ml_collections.ConfigDict(),
  ))
  config.lpips_net = 'vgg'  # 'vgg' | 'alex'
  config.networks = 'demo'  # the stage presets: 'demo', or 'smoke' (tiny, for tests)
  # The folder of the stage configs (<config_dir>/irm1.py, ...) and configs/cascade.py, relative
  # to the folder the command runs in.
  config.config_dir = 'configs'
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
