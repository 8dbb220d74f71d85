r"""Entry point: `python -m diffbfr_jax.main --config=configs/<stage>.py[:preset] --workdir=DIR`.

The config's `job` field picks what runs:
  summary        print the network's parameter overview and total count (allocates nothing).
  train          train the stage (see the README for what this version provides).
  make_test_set  write a reproducible LQ/GT test set (configs/test_set.py).
  restore        restore a folder of faces with the cascade (configs/cascade.py).
  evaluate       PSNR, SSIM, LPIPS, NIQE and FID of restored faces (configs/evaluate.py).
  convert        a stage checkpoint from published PyTorch weights (config.convert).
  demo           DiffBFR end to end on scikit-image's faces, on a CPU (configs/demo.py).
"""

import logging
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from diffbfr_jax import checkpointing
from diffbfr_jax import config_checks
from diffbfr_jax import summary
from diffbfr_jax.convert import state_dict
from diffbfr_jax.convert import torch_zip
from diffbfr_jax.data import sources

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics of the run.')
config_flags.DEFINE_config_file(
    'config', None, 'A stage config file, e.g. configs/tem.py or configs/irm1.py:demo.',
    lock_config=True)


def run(config, workdir):
  """Runs `config.job` and returns what it returns (the trained state, the restore report);
  separate from `main` so tests can call it without flags."""
  if config.get('job') == 'make_test_set':
    from diffbfr_jax.data import testset  # pylint: disable=g-import-not-at-top (TensorFlow)
    return testset.run(config)
  if config.get('job') == 'restore':
    from diffbfr_jax import restore  # pylint: disable=g-import-not-at-top
    return restore.run(config, workdir)
  if config.get('job') == 'demo':
    from diffbfr_jax import demo  # pylint: disable=g-import-not-at-top
    return demo.run(config, workdir)
  if config.get('job') == 'evaluate':
    from diffbfr_jax import evaluate  # pylint: disable=g-import-not-at-top
    return evaluate.run(config, workdir)
  config_checks.check_stage_config(config)  # again: command-line overrides come after get_config
  if config.job == 'summary':
    print(summary.summarize(config))
  elif config.job == 'convert':
    from diffbfr_jax.convert import job  # pylint: disable=g-import-not-at-top
    return job.run(config, workdir)
  elif config.job == 'train':
    config_checks.check_data_source(config)
    from diffbfr_jax import train  # pylint: disable=g-import-not-at-top (TensorFlow for data)
    return train.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.config is None:
    raise app.UsageError('Pass --config=configs/<stage>.py[:preset], e.g. configs/irm1.py:demo.')
  logging.info('JAX process %d / %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    run(FLAGS.config, FLAGS.workdir)
  except (config_checks.ConfigError, checkpointing.CheckpointError, sources.DecodeError,
          state_dict.ConversionError, torch_zip.FormatError, FileNotFoundError, FileExistsError,
          FloatingPointError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
