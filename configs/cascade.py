r"""The restore job: DiffBFR's cascade (Algorithm 1) on a folder of degraded faces.

  python -m diffbfr_jax.main --config=configs/cascade.py \
      --config.irm1.checkpoint=runs/irm1 --config.irm2.checkpoint=runs/irm2 \
      --config.tem.checkpoint=runs/tem --config.input_dir=LQ_FACES --workdir=runs/restored
    -> runs/restored/<same relative name>.png for every readable image under LQ_FACES (512x512),
       a line per batch with the ETA, and at the end the list of files that could not be read.

The argument names the cascade and the network size, comma-separated in any order (the one
preset syntax of every config file, common.parse_preset):
  ''        TEM-w, the full DiffBFR (Table 2's last row): IRM-1 2000 steps from noise, IRM-2 from
            N1 = 1000, TEM from N2 = 100 (3100 network evaluations per face).
  irm_c_t   IRM-1 then IRM-2 from N1 = 1000, no TEM (Table 2 "IRM-c-t").
  irm_c     IRM-1 then IRM-2 from noise (2000 steps), no TEM (Table 2 "IRM-c").
  irm_s     one conditional 512 stage from noise, conditioned on the LQ face (Table 2 "IRM-s";
            give it an IRM-2 trained with --config.data.condition=lq).
  fast      the full cascade on respaced grids: 100 + 50 + 25 evaluations per face.
  distillK  (K = 8, 4, 2, 1) the full cascade with distilled stages (the distill job's
            steps_K checkpoints, docs/distill.md): K DDIM steps (eta 0) per stage over its
            segment, each x_0 estimate clipped: 3K evaluations per face.
  ...,demo  the :demo networks (faces at 32, checkpoints in runs/<stage>_demo), e.g. `:fast,demo`.
  ...,smoke the :smoke networks (faces at 32), for tests.
Each stage's chain is config.<stage>.sampling: the keyword arguments of
diffusion.samplers.make_sampler, starting from the stage config's (Algorithm 1). Its ddim_eps
(the eps of a DDIM step whose x_0 is clipped) is the stage config's: 'from_x0' (guided-diffusion)
for IRM-1 and IRM-2, 'model' (DifFace's ddim_sample) for TEM; the ancestral chains of every
preset here do not read it. DifFace's own TEM sampler (ddim250, eta 0.5, clipping, "100 of 250")
is --config.tem.sampling.sampler=ddim --config.tem.sampling.eta=0.5
--config.tem.sampling.respacing=ddim250 --config.tem.sampling.start_grid=respaced (DifFace noises
its start one grid index higher than it first denoises; here both are index 99).
"""

import ml_collections

from configs import common
from configs import irm1
from configs import irm2
from configs import tem

DISTILLED = {'distill8': 8, 'distill4': 4, 'distill2': 2, 'distill1': 1}
CASCADES = ('', 'tem_w', 'irm_c_t', 'irm_c', 'irm_s', 'fast', *DISTILLED)
SIZES = ('', 'demo', 'smoke')


def distilled_chain(sampling, steps: int) -> None:
  """Sets a stage's `sampling` to the chain of its distilled checkpoint `steps_K`: K DDIM steps
  (eta 0, x_0 clipped) over the stage's own segment."""
  sampling.update(respacing=f'segment{steps}', sampler='ddim', eta=0.0, clip_x0=True)


def get_config(arg=None):
  preset = common.parse_preset(arg, cascade=CASCADES[1:], size=SIZES[1:])
  cascade, size = preset['cascade'], preset['size']
  stage_size = size or None
  config = ml_collections.ConfigDict()
  config.job = 'restore'
  config.seed = 0  # with each file's relative name and the sample index, fixes its result
  config.input_dir = ''  # folder of LQ faces: any size, PNG/JPEG/..., nested folders; or a
  # prepared dataset's field, tfds:NAME:FIELD[:SPLIT] (tfds:face_pairs:lq: the LQ of the pairs)
  config.data_dir = ''  # the TFDS data folder of a tfds: input ('' = TFDS's default)
  config.output_dir = ''  # where the restored PNGs go ('' = the --workdir)
  config.overwrite = False  # replace outputs that already exist (otherwise stop before compute)
  config.image_size = 512  # faces are read at this size (others resized, with a note)
  config.batch_size = 4  # faces per batch on this process, split over its devices
  config.num_samples = 1  # restorations per face, each from its own key: NAME_sample<k>.png
  config.save_grid = False  # also write grids/NAME.png: LQ | IRM-1 | IRM-2 | TEM side by side
  config.save_stages = False  # also write stages/<stage>/NAME.png for every stage but the last
  # A profiler trace of one call of the cascade, batch k of this process (1 = the first, which
  # compiles; 2 = the first compiled one), into OUT/profile for TensorBoard; 0 = none
  config.profile_batch = 0
  config.irm1 = common.sampling_stage(irm1.get_config(stage_size), '')
  config.irm2 = common.sampling_stage(irm2.get_config(stage_size), '')
  config.tem = common.sampling_stage(tem.get_config(stage_size), '')
  common.runtime(config)  # config.distributed, config.compilation_cache_dir

  if cascade in ('irm_c_t', 'irm_c', 'irm_s'):
    config.tem.enabled = False
  if cascade in ('irm_c', 'irm_s'):
    config.irm2.sampling.update(from_noise=True, start_step=2000)
  if cascade == 'irm_s':
    config.irm1.enabled = False
  if cascade == 'fast':
    config.irm1.sampling.respacing = '100'  # 2000 -> 100 steps
    config.irm2.sampling.respacing = '100'  # N1 = 1000 of 2000 -> 50 steps of the 100 kept
    config.tem.sampling.respacing = '250'  # N2 = 100 of 1000 -> 25 steps (DifFace's grid)

  if cascade in DISTILLED:
    for name in ('irm1', 'irm2', 'tem'):
      distilled_chain(config[name].sampling, DISTILLED[cascade])

  if size:
    config.image_size = 32
    config.batch_size = 8
  if size == 'demo':
    for name in ('irm1', 'irm2', 'tem'):
      config[name].checkpoint = f'runs/{name}_demo'
      if cascade in DISTILLED:
        config[name].checkpoint = f'runs/demo/distill/{name}/steps_{DISTILLED[cascade]}'
  return config
