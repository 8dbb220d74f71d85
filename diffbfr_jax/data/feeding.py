r"""What feeding an accelerator costs the host: images per second per host core for each data
path, against the images per second one accelerator trains on.

  python -m diffbfr_jax.data.feeding [--stages=irm1,irm2,tem] [--images=16] [--mfu=0.4]

On one host core (TensorFlow held to one thread; the tf.data pipeline runs one such example per
core in parallel), over --images faces whose degradation parameters are drawn per face as in
training:
- what each step of making one example costs: reading the face from a folder of 1024x1024 PNGs
  (FFHQ's format: decode, centre-crop, resize to 512) or from the prepared `face_folder/512`
  dataset (read and decode one 512 PNG), each step of the degradation at 512
  (`degradations.STEPS`), and each stage's whole example (`pipeline.make_example`: the
  degradation and the stage's resizes);
- each data path's images per second per core: 1 / (reading + the stage's example);
- the accelerator's demand: the images per second one device trains on at --mfu of
  --peak_tflops, from XLA's FLOPs per image of the stage's train step at the paper's size
  (`benchmarks.train_step.flops_per_image`; nothing compiled);
- host cores per device: the demand / images per second per core.
"""

import atexit
import functools
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags

from diffbfr_jax.benchmarks import accelerator

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a program, so importing `measure` defines no flags.
  flags.DEFINE_list('stages', ['irm1', 'irm2', 'tem'], 'Stages to measure.')
  flags.DEFINE_integer('images', 16, 'Faces (and degradation parameter draws) timed per step.')
  flags.DEFINE_float('mfu', 0.4, 'Model FLOPs utilisation assumed for the demand.')
  flags.DEFINE_float('peak_tflops', dict(accelerator.PEAK_TFLOPS)['H100'],
                     "One device's peak, TFLOP/s (default: H100 SXM, dense bfloat16, data "
                     'sheet).')
  flags.DEFINE_string('size', '', "Network size for the FLOPs: '' (the paper's), 'demo', 'smoke'.")
  flags.DEFINE_string('config_dir', 'configs', 'The folder of the stage configs.')


def _mean_ms(fn, items) -> float:
  """Mean milliseconds of fn(item) over `items`, after one untimed pass (tracing, caches)."""
  for item in items:
    fn(item)
  times = []
  for item in items:
    t0 = time.perf_counter()
    fn(item)
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.fmean(times)


def measure(stages, *, images: int, mfu: float, peak_tflops: float, size: str = '',
            config_dir: str = 'configs') -> dict:
  """{'steps': {step: ms per image}, 'stages': {stage: figures}} on one host core."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import benchmark  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import degradations  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import prepared  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import sources  # pylint: disable=g-import-not-at-top

  pipeline.keep_tensorflow_on_cpu()
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:  # TensorFlow already ran something in this process (tests)
    pass
  folder = tempfile.mkdtemp(prefix='diffbfr_feeding_')
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  benchmark.write_faces(f'{folder}', images)  # 1024x1024 PNGs
  prepared.prepare('face_folder/512', manual_dir=folder, data_dir=f'{folder}/tfds')
  from_folder = sources.FolderSource(folder, 512)
  from_prepared = sources.make_source('tfds', 512, tfds_name='face_folder/512',
                                      data_dir=f'{folder}/tfds')
  ids = list(range(images))
  read = {'PNG folder': _mean_ms(from_folder.load, ids),
          'prepared dataset': _mean_ms(from_prepared.load, ids)}
  steps = {'read: a 1024x1024 PNG from a folder, decoded, centre-cropped, resized to 512':
               read['PNG folder'],
           'read: a face_folder/512 record (a 512x512 PNG), decoded': read['prepared dataset']}

  # The paper configs' data settings (faces at 512); the FLOPs from the networks at `size`.
  data = {stage: config_files.stage_config(config_dir, stage).data for stage in stages}
  degradation = dict(next(iter(data.values())).degradation) if data else {}
  uint8 = [from_prepared.load(i) for i in ids]
  faces = [tf.image.convert_image_dtype(face, tf.float32) for face in uint8]
  params = [degradations._cast_params(degradations.sample_params(  # pylint: disable=protected-access
      tf.constant([0, i], tf.int64), **degradation)) for i in ids]
  inputs = list(faces)
  for name, step in degradations.STEPS:
    kernel_size = degradation.get('kernel_size', 41)
    fn = tf.function(lambda p, x, step=step: step(p, x, (512, 512), kernel_size),
                     reduce_retracing=True)
    outputs = [fn(p, x) for p, x in zip(params, inputs)]
    steps[f'degradation: {name}'] = _mean_ms(lambda i, fn=fn: fn(params[i], inputs[i]).numpy(),
                                             ids)
    inputs = outputs

  figures = {}
  for stage in stages:
    d = data[stage]
    options = dict(stage=stage, image_size=d.image_size, degradation=dict(d.degradation),
                   condition=d.get('condition', 'gt_down_up'),
                   condition_size=d.get('condition_size', 128),
                   irm1_pair=d.get('irm1_pair', 'degrade_then_resize'))
    make = tf.function(functools.partial(pipeline.make_example, seed=0, **options))
    example_ms = _mean_ms(lambda i, make=make: {k: v.numpy() for k, v in make(
        uint8[i], example_id=tf.constant(i, tf.int64)).items()}, ids)
    steps[f'{stage}: the whole example (degradation and resizes)'] = example_ms
    config = config_files.stage_config(config_dir, stage, size or None)
    flops = train_step.flops_per_image(config)
    demand = mfu * peak_tflops * 1e12 / flops
    paths = {}
    for path, read_ms in read.items():
      rate = 1e3 / (read_ms + example_ms)
      paths[path] = dict(images_per_s_per_core=rate, cores_per_device=demand / rate)
    figures[stage] = dict(train_gflop_per_image=flops / 1e9, device_images_per_s=demand,
                          paths=paths)
  return {'steps': steps, 'stages': figures}


def table(result: dict, *, mfu: float, peak_tflops: float) -> str:
  lines = ['| step, one host core | ms per image |', '|---|---|']
  lines += [f'| {name} | {ms:.1f} |' for name, ms in result['steps'].items()]
  paths = list(next(iter(result['stages'].values()))['paths']) if result['stages'] else []
  lines += ['', '| stage | train GFLOP / image | one device trains on (img/s) | '
            + ' | '.join(f'{p}: img/s per core | {p}: cores per device' for p in paths) + ' |',
            '|---|---|---|' + '---|---|' * len(paths)]
  for stage, f in result['stages'].items():
    lines.append(f"| {stage} | {f['train_gflop_per_image']:.4g} | "
                 f"{f['device_images_per_s']:.0f} | " + ' | '.join(
                     f"{f['paths'][p]['images_per_s_per_core']:.1f} | "
                     f"{f['paths'][p]['cores_per_device']:.1f}" for p in paths) + ' |')
  lines.append(f'\nThe device at {100 * mfu:.0f}% MFU of {peak_tflops:g} TFLOP/s.')
  return '\n'.join(lines)


def main(argv):
  del argv
  result = measure(FLAGS.stages, images=FLAGS.images, mfu=FLAGS.mfu,
                   peak_tflops=FLAGS.peak_tflops, size=FLAGS.size, config_dir=FLAGS.config_dir)
  print(table(result, mfu=FLAGS.mfu, peak_tflops=FLAGS.peak_tflops))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
