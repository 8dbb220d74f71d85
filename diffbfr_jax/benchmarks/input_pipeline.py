r"""Images per second of the tf.data pipeline at 512x512 on this machine.

  python -m diffbfr_jax.benchmarks.input_pipeline --stage=irm2 --batches=20

Writes FFHQ-like 1024x1024 PNG faces (the bundled astronaut portrait, shifted and flipped) to a
temporary folder, builds the stage's pipeline with the paper's degradation at 512, and times
--batches batches after two warm-up batches. Prints images per second.
"""

import atexit
import shutil
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from diffbfr_jax.data import pipeline
from diffbfr_jax.data import tensorflow_cpu
from diffbfr_jax.data import sources

FLAGS = flags.FLAGS
flags.DEFINE_enum('stage', 'irm2', list(pipeline.STAGES), 'Which stage examples to make.')
flags.DEFINE_integer('batches', 20, 'Timed batches.')
flags.DEFINE_integer('batch', 8, 'Images per batch.')
flags.DEFINE_integer('files', 32, 'Distinct 1024x1024 PNG files to read.')
STAGE_SIZE = {'irm1': 128, 'irm2': 512, 'tem': 512}


def write_faces(folder: str, count: int) -> None:
  from skimage import data  # pylint: disable=g-import-not-at-top

  portrait = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.BICUBIC)
  base = np.asarray(portrait)
  for i in range(count):
    face = np.roll(base, 8 * i, axis=1)
    if i % 2:
      face = face[:, ::-1]
    Image.fromarray(np.ascontiguousarray(face)).save(f'{folder}/face_{i:04d}.png')


def measure(stage: str, folder: str, *, batches: int, batch: int) -> float:
  ds, _ = pipeline.make_dataset(sources.FolderSource(folder, 512), stage=stage,
                                image_size=STAGE_SIZE[stage], seed=0, global_batch=batch)
  it = iter(ds)
  for _ in range(2):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - t0)


def main(argv):
  del argv
  tensorflow_cpu.keep_tensorflow_on_cpu()
  # The folder outlives the pipeline's prefetch threads: it is removed at exit.
  folder = tempfile.mkdtemp(prefix='diffbfr_data_benchmark_')
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  write_faces(folder, FLAGS.files)
  rate = measure(FLAGS.stage, folder, batches=FLAGS.batches, batch=FLAGS.batch)
  print(f'stage: {FLAGS.stage}  read at 512 from 1024x1024 PNG  batch: {FLAGS.batch}  '
        f'batches: {FLAGS.batches}')
  print(f'images per second: {rate:.1f}')


if __name__ == '__main__':
  app.run(main)
