r"""The iterate job: rounds of train -> clean -> train again on the cleaned set (IDM's extrinsic
enhancement), every round scored on the same held-out test set.

  python -m diffbfr_jax.main --config=configs/iterate.py:demo --workdir=runs/iterate
    -> runs/iterate/round_0/ (the stages trained on the bundled training faces, the held-out
       faces restored and scored, TEM's samples and their FID, the training faces cleaned),
       runs/iterate/round_1/ (the same, trained on round 0's cleaned faces), a table per round
       (round_<r>/table.md) and all rounds in runs/iterate/table.md and summary.json.

The argument: '' the paper's stage configs (give train_faces and test_set, and the steps you
can afford); 'demo' the :demo networks on the faces bundled with scikit-image (the demo job's
recipe, about 25 minutes on a 2-core CPU for two rounds); 'smoke' the :smoke TEM alone (tests).
"""

import ml_collections

from configs import common

PRESETS = ('demo', 'smoke')


def get_config(arg=None):
  size = common.parse_preset(arg, size=PRESETS)['size']
  config = ml_collections.ConfigDict()
  config.job = 'iterate'
  config.networks = size  # the stage presets: '' (the paper's), 'demo' or 'smoke'
  # Stages trained every round, comma-separated; the held-out faces are restored by their
  # cascade (in the order irm1, irm2, tem).
  config.stages = 'irm1,irm2,tem'
  config.rounds = 1  # cleaning rounds: round 0 trains on train_faces, round r on round r-1's
  # cleaned set
  # 'scratch': every round trains new networks (same seed and steps), so rounds differ by their
  # faces only; 'finetune': round r goes on from round r-1's state (parameters, EMA, optimizer,
  # step) for finetune_steps more steps on the cleaned faces.
  config.mode = 'scratch'
  config.seed = 0  # training seed (every round), and with each face's name the restorations
  # Round 0's training faces: a folder of faces (any size, read as the training jobs read it),
  # or 'bundled': the training split of the faces that ship with scikit-image, written once
  # into <workdir>/train_faces at the stages' source size.
  config.train_faces = ''
  # The held-out test set: a make_test_set folder (lq/, gt/), or 'bundled': the held-out
  # bundled faces degraded with Eq. 13 (test_seed) into <workdir>/test_set, as the demo's.
  config.test_set = ''
  config.test_seed = 0
  # Optimizer steps per stage: of round 0, and of every round when mode='scratch'.
  config.steps = ml_collections.ConfigDict(dict(irm1=0, irm2=0, tem=0))  # 0 = the preset's
  config.finetune_steps = ml_collections.ConfigDict(dict(irm1=0, irm2=0, tem=0))
  # Round 0 from stages trained already: {stage: workdir}, read only ('' = train it).
  config.start_from = ml_collections.ConfigDict(dict(irm1='', irm2='', tem=''))
  # What cleans: 'tem' (TEM alone from N2 of each face) or 'cascade' (the trained stages, as the
  # restore job); select / niqe_threshold as configs/clean.py.
  config.cleaner = 'tem'
  config.select = 'all'
  config.niqe_threshold = 5.0
  # The chains of the cleaning, the restorations and the samples: 'fast' (configs/cascade.py's
  # :fast grids; sample.py's :fast) or 'full' (Algorithm 1's).
  config.chains = 'fast'
  # Fields of each stage's `sampling` set on top of the stage config's (the demo's choices).
  config.sampling = ml_collections.ConfigDict(dict(
      irm1=ml_collections.ConfigDict(), irm2=ml_collections.ConfigDict(),
      tem=ml_collections.ConfigDict()))
  config.params = 'ema_params'  # the weights that restore, clean and sample: or 'params'
  config.metrics = ('psnr', 'ssim', 'lpips')  # the evaluate job's, on the held-out faces
  # TEM samples per round, their FID against round 0's training faces (0 = none; needs tem).
  config.num_samples = 64
  config.batch_size = 8  # faces per batch of the restorations, cleaning and samples
  config.config_dir = 'configs'  # the stage, cascade, clean, sample and evaluate config files

  if size == 'demo':
    config.train_faces, config.test_set = 'bundled', 'bundled'
    # The demo job's recipe (configs/demo.py): its steps, its samplers and the raw weights.
    config.steps.update(irm1=1400, irm2=500, tem=500)
    config.finetune_steps.update(irm1=300, irm2=100, tem=100)
    config.sampling.irm1.update(variance='posterior', clip_x0=True)
    config.sampling.irm2.update(variance='posterior', clip_x0=True)
    config.params = 'params'
    config.num_samples = 80  # as many as the training faces
    config.batch_size = 16
  elif size == 'smoke':
    config.train_faces, config.test_set = 'bundled', 'bundled'
    config.stages = 'tem'
    config.mode = 'finetune'
    config.finetune_steps.update(irm1=2, irm2=2, tem=2)
    config.sampling.tem.respacing = '50'  # short chains: 5 steps from N2, 50 from noise
    config.num_samples = 4
    config.metrics = ('psnr', 'ssim')
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
