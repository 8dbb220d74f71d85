"""The `make_test_set` job (configs/test_set.py): a reproducible LQ/GT test set from a folder of
HQ faces (`data.testset.write_test_set`), written to config.test_set.output_dir (or --workdir).
Its summary: the manifest's settings and counts; every image's entry is in manifest.json."""

from diffbfr_jax import job_outputs

PROCESSES = 'main'  # written once; the other processes wait for it


def run(config, workdir) -> dict:
  from diffbfr_jax.data import tensorflow_cpu  # pylint: disable=g-import-not-at-top (TensorFlow)
  from diffbfr_jax.data import testset  # pylint: disable=g-import-not-at-top (TensorFlow)

  tensorflow_cpu.keep_tensorflow_on_cpu()
  out = job_outputs.folder(config.test_set.output_dir, workdir, field='test_set.output_dir',
                           what='the test set')
  manifest = testset.write_test_set(degradation=dict(config.data.degradation),
                                    **{**config.test_set, 'output_dir': str(out)})
  summary = {k: v for k, v in manifest.items() if k != 'images'}
  return job_outputs.write_summary(out, {**summary, 'count': len(manifest['images']),
                                         'manifest': 'manifest.json'})
