r"""The distill job: progressive distillation of one trained stage's chain (docs/distill.md).

  python -m diffbfr_jax.main --config=configs/distill.py:irm2 \
      --config.distill.teacher=runs/irm2 --workdir=runs/distill/irm2
    -> rounds in runs/distill/irm2/steps_<K>, K = start_steps / 2, ..., end_steps: each a stage
       checkpoint whose chain is K DDIM steps over the stage's segment (IRM-2: steps 1000..1),
       a line per round, and summary.json with each round's steps, loss and folder.

The argument names the stage (irm1, irm2 or tem; required) and optionally its size (demo,
smoke), comma-separated: `configs/distill.py:tem,demo`. The config is that stage's config file
with the preset (its network, diffusion, data and segment: config.sampling.start_step and
from_noise), plus `distill` and the training changes below.
"""

import ml_collections

from configs import common
from configs import irm1
from configs import irm2
from configs import tem

STAGE_FILES = {'irm1': irm1, 'irm2': irm2, 'tem': tem}


def get_config(arg=None):
  preset = common.parse_preset(arg, stage=tuple(STAGE_FILES), size=common.PRESETS[1:])
  stage, size = preset['stage'], preset['size']
  if not stage:
    raise ValueError(f'configs/distill.py needs the stage to distill: configs/distill.py:irm1 '
                     f'(or irm2, tem), optionally with a size (:irm1,demo); got {arg!r}.')
  config = STAGE_FILES[stage].get_config(size or None)
  config.job = 'distill'
  config.distill = ml_collections.ConfigDict(dict(
      teacher='',  # the stage's training workdir (or a distilled round's steps_<K> folder)
      teacher_step=-1,  # its checkpoint step; -1 = the latest
      teacher_params='ema_params',  # 'ema_params' | 'params': the teacher's weights
      # The teacher's DDIM steps over the segment in the first round (a power of two times
      # end_steps, at most the segment's length); each round halves them.
      start_steps={'irm1': 1024, 'irm2': 512, 'tem': 64}[stage],
      end_steps=1,  # the last round's student steps
      steps_per_round=50_000,  # optimizer steps of each round (the paper's CIFAR-10 setting)
      # What the student's output predicts: 'eps' (the teacher's own, so the student starts as
      # the teacher) or 'v' (sqrt(gamma) eps - sqrt(1 - gamma) x_0, started from the eps
      # teacher's weights, so off its target). Salimans and Ho: eps fails where the chain
      # starts near pure noise (its x_0 = (x_t - sqrt(1 - gamma) eps) / sqrt(gamma) blows up as
      # gamma -> 0), so IRM-1, which starts from noise, learns v; IRM-2 and TEM start from N1
      # and N2 (sqrt(gamma) 0.28 and 0.95) and keep eps (docs/distill.md).
      prediction={'irm1': 'v', 'irm2': 'eps', 'tem': 'eps'}[stage],
      weighting='snr_trunc',  # 'snr_trunc' (max(SNR, 1) on the x_0 error) | 'snr_plus_one'
      # The teacher's DDIM steps clip each x_0 estimate to [-1, 1] (with config.sampling's
      # ddim_eps), as the distilled presets sample; False: unclipped, as the paper's code
      clip_x0=True,
  ))
  # The student trains without dropout and without an EMA (its weights are the next round's
  # teacher), the stage's rate decayed linearly to 0 over each round (the paper's code).
  config.model.dropout = 0.0
  config.train.update(ema_decay=0.0, warmup_steps=0, lr_decay='linear', preview_every=0)
  if size == 'smoke':
    config.distill.update(start_steps=4, steps_per_round=2)
  elif size == 'demo':
    # The demo samples with the raw weights (configs/demo.py's params).
    config.distill.update(start_steps=32, steps_per_round=300, teacher_params='params')
    config.train.update(learning_rate=2e-4, log_every=50)
  if size:
    config.train.checkpoint_every = config.distill.steps_per_round
  return common.finish(config)
