"""The `prepare` job (configs/prepare.py): a face dataset kept as local files made into a TFDS
dataset once (`data.prepared.prepare`), under config.prepare.data_dir ('' = TFDS's default
folder). Prints each split's size; its summary (written to --workdir when one is given) holds
the dataset's name, folder and split sizes."""

from diffbfr_jax import job_outputs

PROCESSES = 'main'  # written once; the other processes wait for it


def run(config, workdir) -> dict:
  from diffbfr_jax.data import prepared  # pylint: disable=g-import-not-at-top (TensorFlow)
  from diffbfr_jax.data import tensorflow_cpu  # pylint: disable=g-import-not-at-top (TensorFlow)

  tensorflow_cpu.keep_tensorflow_on_cpu()
  builder = prepared.prepare(**config.prepare)
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  print(f'{builder.info.full_name} in {builder.data_dir}: '
        + ', '.join(f'{name}: {count} examples' for name, count in splits.items()))
  return job_outputs.write_summary(workdir or None, {
      'name': builder.info.full_name, 'data_dir': str(builder.data_dir), 'splits': splits})
