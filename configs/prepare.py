r"""The `prepare` job: a face dataset kept as local files made into a TFDS dataset, once.

  python -m diffbfr_jax.main --config=configs/prepare.py \
      --config.prepare.name=face_folder/512 --config.prepare.manual_dir=FFHQ \
      --config.prepare.data_dir=DATASETS
    -> DATASETS/face_folder/512/1.0.0/ (array_record files) and a line with each split's size.
       Training then reads it by name: --config.data.source.kind=tfds
       --config.data.source.tfds_name=face_folder/512 --config.data.source.data_dir=DATASETS

Datasets (diffbfr_jax/data/prepared.py): 'face_folder/512' (every image under the folder,
centre-cropped and resized to 512; split 'train'), 'face_pairs' (the folder's lq/ and gt/ with
the same names, as the make_test_set job writes them; split 'test').
"""

import ml_collections

from configs import common


def get_config(arg=None):
  del arg  # no presets
  config = ml_collections.ConfigDict()
  config.job = 'prepare'
  config.prepare = ml_collections.ConfigDict(dict(  # diffbfr_jax.data.prepared.prepare
      name='face_folder/512',  # 'face_folder/512' | 'face_pairs'
      manual_dir='',  # the folder of faces (face_pairs: the folder holding lq/ and gt/)
      data_dir='',  # where TFDS datasets live ('' = TFDS's default, ~/tensorflow_datasets)
  ))
  common.runtime(config)  # config.distributed, config.compilation_cache_dir
  return config
