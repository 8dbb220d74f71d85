r"""The `make_test_set` job: a reproducible LQ/GT test set (the CelebA-Test protocol).

  python -m diffbfr_jax.main --config=configs/test_set.py \
      --config.test_set.input_dir=HQ_FACES --config.test_set.output_dir=TEST_SET
    -> TEST_SET/gt/*.png, TEST_SET/lq/*.png (512x512) and TEST_SET/manifest.json with every
       image's degradation parameters; the same folder and seed always give the same files.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  del arg  # no presets
  config = ml_collections.ConfigDict()
  config.job = 'make_test_set'
  config.test_set = ml_collections.ConfigDict(dict(  # diffbfr_jax.data.testset.write_test_set
      input_dir='',  # folder of HQ faces (nested folders, any size: centre-cropped and resized),
      # or a prepared dataset's field, tfds:NAME:FIELD[:SPLIT] (tfds:face_folder/512:image:train)
      data_dir='',  # the TFDS data folder of a tfds: input ('' = TFDS's default)
      output_dir='',  # where gt/, lq/ and manifest.json go
      size=512,  # pixels per side of both images (CelebA-Test: 512)
      seed=0,  # with each file's relative path, fixes its degradation
      overwrite=False,  # replace an existing test set in output_dir
  ))
  config.data = common.data()
  # The training degradation model (the paper's protocol), without the training flips.
  config.data.degradation.flip_prob = 0.0
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
