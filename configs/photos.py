r"""The photos job: every face of whole photos found, aligned as FFHQ's faces are, restored by
DiffBFR's cascade and pasted back into the photo, up-sampled.

  python -m diffbfr_jax.main --config=configs/photos.py[:preset] --workdir=DIR \
      --config.input_dir=PHOTOS --config.irm1.checkpoint=... (as configs/cascade.py)
    -> DIR/<relative name>.png (the restored photo, `upscale` times larger),
       DIR/<relative name>.json (every face: box, score, landmarks, transform, paste order),
       DIR/faces/<relative name>/face<i>_crop.png and face<i>_restored.png,
       DIR/grids/<relative name>.png (the photo up-sampled | restored, side by side).

The preset is configs/cascade.py's (which cascade, which network size): `:fast,demo` restores
with the demo's stages. The detector is MTCNN with the weights of the `mtcnn` wheel (the
`photos` extra), read offline; docs/photos.md.
"""

import ml_collections

from configs import cascade
from configs import common


def get_config(arg=None):
  restore = cascade.get_config(arg)
  config = ml_collections.ConfigDict()
  config.job = 'photos'
  config.seed = 0  # with the photo's relative name and the face's index, fixes its result
  config.input_dir = ''  # folder of photos (any size, PNG/JPEG/..., nested folders)
  config.output_dir = ''  # where the outputs go ('' = the --workdir)
  config.overwrite = False  # replace outputs that already exist (otherwise stop before compute)
  config.image_size = restore.image_size  # the aligned crops' size: the cascade's input
  config.batch_size = restore.batch_size  # faces per call of the cascade (over all photos)
  config.upscale = 2  # the restored photo is this many times the input's width and height
  config.min_face_size = 20.0  # the smallest face the detector looks for, in photo pixels
  config.only_largest = False  # restore only the largest face of each photo
  # MTCNN's P-, R- and O-net score thresholds (the mtcnn package's defaults)
  config.thresholds = (0.6, 0.7, 0.8)
  config.save_faces = True  # faces/<name>/face<i>_crop.png and face<i>_restored.png
  config.save_grid = True  # grids/<name>.png
  for name in ('irm1', 'irm2', 'tem'):
    config[name] = restore[name]
  common.runtime(config)
  return config
