r"""The evaluate job: the paper's Table 1 metrics of restored faces against their ground truth.

  python -m diffbfr_jax.main --config=configs/evaluate.py --workdir=runs/eval \
      --config.restored_dir=runs/restored --config.gt_dir=TEST_SET/gt
    -> per-pair progress with the ETA, then the results as a row of Table 1
       (| | SSIM | PSNR | FID | NIQE | LPIPS |), runs/eval/per_image.csv and runs/eval/summary.json.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  del arg  # no presets
  config = ml_collections.ConfigDict()
  config.job = 'evaluate'
  config.restored_dir = ''  # restored faces (e.g. the restore job's output folder)
  config.gt_dir = ''  # their ground truth (e.g. the make_test_set job's gt/), same relative names
  # Either may also be a prepared dataset's field, tfds:NAME:FIELD[:SPLIT] (tfds:face_pairs:gt).
  config.data_dir = ''  # the TFDS data folder of a tfds: field ('' = TFDS's default)
  config.output_dir = ''  # where per_image.csv and summary.json go ('' = the --workdir)
  config.metrics = ('psnr', 'ssim', 'lpips', 'niqe', 'fid')  # any of these
  config.y_channel = False  # PSNR/SSIM on the Y channel instead of RGB (GFPGAN papers use RGB)
  config.lpips_net = 'vgg'  # 'vgg' (GFPGAN, VQFR) | 'alex'
  config.fid_cache_dir = ''  # FID feature statistics per folder ('' = OUTPUT/fid_cache)
  config.batch_size = 8  # pairs per batch
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
