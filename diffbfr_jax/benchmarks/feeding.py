r"""What feeding an accelerator costs the host: images per second per host core for each data
path, against the images per second one accelerator trains on.

  python -m diffbfr_jax.benchmarks.feeding [--stages=irm1,irm2,tem] [--images=16] [--mfu=0.4]

On one host core (TensorFlow held to one thread; the tf.data pipeline runs one such example per
core in parallel), over --images faces whose degradation parameters are drawn per face as in
training:
- what each step of making one example costs: reading the face from a folder of 1024x1024 PNGs
  (FFHQ's format: decode, centre-crop, resize to 512) or from the prepared `face_folder/512`
  (PNG) and `face_folder/512_raw` (uncompressed) datasets, each step of the degradation at 512
  (`degradations.STEPS`), each stage's whole example (`pipeline.make_example`), and the host's
  part when the degradation runs on the device (`pipeline.device_item`: drawing the parameters);
- each data path's (reader, where the degradation runs) images per second per core;
- the device's FLOPs per image: XLA's FLOPs of the stage's train step at the paper's size
  (`benchmarks.train_step.flops_per_image`; nothing compiled), plus those of the compiled
  device-side degradation (`device_degradation.make_examples`) on the device paths;
- the accelerator's demand at --mfu of --peak_tflops, and host cores per device: the demand /
  images per second per core;
- how close the device-built examples are to the host's on the same parameters and noise
  (lowest PSNR over the faces).
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
  import jax  # pylint: disable=g-import-not-at-top

  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import device_degradation  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import host_steps  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import prepared  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.data import sources  # pylint: disable=g-import-not-at-top

  host_steps.use_one_core()
  folder = tempfile.mkdtemp(prefix='diffbfr_feeding_')
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  input_pipeline.write_faces(f'{folder}', images)  # 1024x1024 PNGs
  readers = {'PNG folder': sources.FolderSource(folder, 512)}
  for name in PREPARED:
    prepared.prepare(name, manual_dir=folder, data_dir=f'{folder}/tfds')
    readers[name] = sources.make_source('tfds', 512, tfds_name=name, data_dir=f'{folder}/tfds')
  ids = list(range(images))
  read = {path: _mean_ms(reader.load, ids) for path, reader in readers.items()}
  steps = {f'read: {READS[path]}': ms for path, ms in read.items()}

  # The paper configs' data settings (faces at 512); the FLOPs from the networks at `size`.
  data = {stage: config_files.stage_config(config_dir, stage).data for stage in stages}
  degradation = dict(next(iter(data.values())).degradation) if data else {}
  uint8 = [readers[PREPARED[0]].load(i) for i in ids]
  params = host_steps.degradation_params(degradation, images)
  for name, fn in host_steps.degradation_steps(uint8, params, degradation):
    steps[f'degradation: {name}'] = _mean_ms(fn, ids)

  figures = {}
  for stage in stages:
    d = data[stage]
    options = dict(stage=stage, image_size=d.image_size, degradation=dict(d.degradation),
                   condition=d.condition, condition_size=d.condition_size,
                   irm1_pair=d.irm1_pair)
    example_ms = _mean_ms(host_steps.example_maker(uint8, **options), ids)
    steps[f'{stage}: the whole example (degradation and resizes)'] = example_ms
    make_item = host_steps.device_item_maker(uint8, stage=stage, image_size=d.image_size,
                                             degradation=dict(d.degradation),
                                             irm1_pair=options['irm1_pair'])
    item_ms = _mean_ms(make_item, ids)
    steps[f'{stage}: degradation on the device, the host part (parameters drawn)'] = item_ms

    # The device's share: XLA's FLOPs of the compiled degradation of one item (dead code, such
    # as IRM-2's unused LQ, removed), and its LQ against the host's on equal noise.
    paper = config_files.stage_config(config_dir, stage)
    device_options = device_degradation.options_from_config(paper)
    build = jax.jit(functools.partial(device_degradation.make_examples, **device_options))
    batch = jax.tree_util.tree_map(lambda v: v[None], make_item(0))
    degrade_flops = train_step.flops(build.lower(batch).compile().cost_analysis())
    agreement = _device_psnr(stage, uint8, options, device_options, params=degradation)

    config = config_files.stage_config(config_dir, stage, size or None)
    train_flops = train_step.flops_per_image(config)
    paths = {}
    for path, read_ms in read.items():
      for where in ('host', 'device'):
        host_ms = read_ms + (example_ms if where == 'host' else item_ms)
        flops = train_flops + (degrade_flops if where == 'device' else 0.0)
        demand = mfu * peak_tflops * 1e12 / flops
        rate = 1e3 / host_ms
        paths[f'{path}, degraded on the {where}'] = dict(
            host_ms=host_ms, images_per_s_per_core=rate, device_gflop_per_image=flops / 1e9,
            device_images_per_s=demand, cores_per_device=demand / rate)
    figures[stage] = dict(train_gflop_per_image=train_flops / 1e9,
                          degradation_gflop_per_image=degrade_flops / 1e9,
                          device_vs_host_psnr=agreement, paths=paths)
  return {'steps': steps, 'stages': figures}


PREPARED = ('face_folder/512', 'face_folder/512_raw')
READS = {'PNG folder': 'a 1024x1024 PNG from a folder, decoded, centre-cropped, resized to 512',
         'face_folder/512': 'a face_folder/512 record (a 512x512 PNG), decoded',
         'face_folder/512_raw': 'a face_folder/512_raw record (512x512 uncompressed uint8)'}


def _device_psnr(stage, uint8, options, device_options, params) -> float:
  """The lowest PSNR (dB, on [0, 1]) over the faces and the example's images between the
  device-built example and the host's (`pipeline.make_example`), on TensorFlow's noise."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from diffbfr_jax.data import host_steps  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.metrics import psnr_ssim  # pylint: disable=g-import-not-at-top

  to_255 = lambda x: (np.asarray(x)[None] + 1.0) * 127.5
  worst = np.inf
  for host, ours in host_steps.host_and_device_examples(stage, uint8, options, device_options,
                                                        params):
    for key in host:
      worst = min(worst, float(psnr_ssim.psnr(to_255(ours[key]), to_255(host[key]))[0]))
  return float(worst)


def table(result: dict, *, mfu: float, peak_tflops: float) -> str:
  lines = ['| step, one host core | ms per image |', '|---|---|']
  lines += [f'| {name} | {ms:.1f} |' for name, ms in result['steps'].items()]
  lines += ['', '| stage | data path | host ms / image | img/s per core | device GFLOP / image '
            '| one device trains on (img/s) | host cores per device |',
            '|---|---|---|---|---|---|---|']
  for stage, f in result['stages'].items():
    for path, p in f['paths'].items():
      lines.append(f"| {stage} | {path} | {p['host_ms']:.1f} | "
                   f"{p['images_per_s_per_core']:.1f} | {p['device_gflop_per_image']:.4g} | "
                   f"{p['device_images_per_s']:.0f} | {p['cores_per_device']:.1f} |")
  lines.append('')
  for stage, f in result['stages'].items():
    lines.append(f"{stage}: train step {f['train_gflop_per_image']:.4g} GFLOP / image, "
                 f"degradation on the device {f['degradation_gflop_per_image']:.3g} GFLOP / "
                 f"image; device vs host examples on equal noise: lowest PSNR "
                 f"{f['device_vs_host_psnr']:.1f} dB")
  lines.append(f'The device at {100 * mfu:.0f}% MFU of {peak_tflops:g} TFLOP/s.')
  return '\n'.join(lines)


def main(argv):
  del argv
  result = measure(FLAGS.stages, images=FLAGS.images, mfu=FLAGS.mfu,
                   peak_tflops=FLAGS.peak_tflops, size=FLAGS.size, config_dir=FLAGS.config_dir)
  print(table(result, mfu=FLAGS.mfu, peak_tflops=FLAGS.peak_tflops))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
