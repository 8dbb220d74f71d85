r"""The clean job: every image of a training set restored by trained stages into a new set with
the same names and a manifest (IDM's extrinsic enhancement: restore the training set, train
again on it).

  python -m diffbfr_jax.main --config=configs/clean.py:tem --workdir=runs/cleaned \
      --config.input_dir=FFHQ_512 --config.tem.checkpoint=runs/tem
    -> runs/cleaned/images/<same relative name>.png for every readable image (the originals are
       only read), runs/cleaned/manifest.json (the source and its hashes, the checkpoints, chains
       and seed, the selection, and per image NIQE and the LPIPS between original and cleaned).

The argument picks what cleans, comma-separated with a size as configs/cascade.py:
  tem       TEM alone from N2 = 100 of the image itself: the texture stage as a cleaner (an
            unconditional FFHQ model pulls the face toward the clean faces it learned; the
            smallest move, and the only one that keeps the image's size and colours).
  ''        the full cascade (IRM-1, IRM-2, TEM; Algorithm 1), as the restore job.
  irm_c_t, irm_c, irm_s, fast, distill8 ... distill1: the restore job's cascades
            (configs/cascade.py).
  ...,demo  the :demo networks (32x32, runs/<stage>_demo); ...,smoke the :smoke ones.
Every other field of configs/cascade.py keeps its meaning (checkpoints, chains, batch, seed).
"""

from configs import cascade as cascade_config
from configs import common

CLEANERS = ('tem',) + cascade_config.CASCADES[1:]


def get_config(arg=None):
  preset = common.parse_preset(arg, cleaner=CLEANERS, size=cascade_config.SIZES[1:])
  cleaner, size = preset['cleaner'], preset['size']
  config = cascade_config.get_config(
      ','.join(p for p in ('' if cleaner == 'tem' else cleaner, size) if p))
  if cleaner == 'tem':
    config.irm1.enabled = False
    config.irm2.enabled = False
  config.job = 'clean'
  for field in ('num_samples', 'save_grid', 'save_stages', 'profile_batch'):  # the restore job's extras
    del config[field]
  # The set to clean: a folder (any size and kind, as the restore job reads), or a prepared
  # dataset's field tfds:NAME:FIELD[:SPLIT] with data_dir. Only read, never written.
  config.input_dir = ''
  # Where images/ and manifest.json go ('' = the --workdir); a second run with the same
  # settings goes on where the first stopped.
  config.output_dir = ''
  # Start over: forget the images cleaned by an earlier run (otherwise a run whose settings
  # differ from those recorded there stops with the differences).
  config.overwrite = False
  # Which images to clean: 'all', or 'niqe' (those whose NIQE, of the image as stored, is above
  # niqe_threshold; NIQE needs 192x96 pixels or more). The others are written as read (resized
  # to image_size as the cascade would read them), marked uncleaned in the manifest.
  config.select = 'all'
  config.niqe_threshold = 5.0
  config.grid_count = 8  # faces in grid.png: as read (top row) and cleaned (below); 0 = none
  config.lpips_net = 'vgg'  # LPIPS between each original and its cleaned face: 'vgg' | 'alex'
  return config
