"""The host's steps of making training examples, one face at a time, as callables that the feeding
benchmark (`diffbfr_jax.benchmarks.feeding`) times: each step of the degradation, a stage's whole
example (`pipeline.make_example`) and the host's part of the device path
(`pipeline.device_item`). Faces are uint8 [512, 512, 3]; face i's randomness is drawn from
(seed 0, id i), as training draws it."""

import functools

import jax
import numpy as np
import tensorflow as tf

from diffbfr_jax.data import degradations
from diffbfr_jax.data import device_degradation
from diffbfr_jax.data import pipeline
from diffbfr_jax.data import tensorflow_cpu


def use_one_core() -> None:
  """TensorFlow on the CPU alone, and on one thread (the tf.data pipeline makes one example per
  core in parallel)."""
  tensorflow_cpu.keep_tensorflow_on_cpu()
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:  # TensorFlow already ran something in this process (tests)
    pass


def degradation_params(degradation: dict, count: int) -> list:
  """The degradation parameters of faces 0 .. count - 1 (`degradation`: config.data.degradation)."""
  return [degradations._cast_params(degradations.sample_params(  # pylint: disable=protected-access
      tf.constant([0, i], tf.int64), **degradation)) for i in range(count)]


def degradation_steps(faces, params: list, degradation: dict):
  """(name, fn) for each step of the degradation (`degradations.STEPS`), in order: fn(i) applies
  the step to face i as the steps before it left it, with face i's `params`."""
  kernel_size = degradations.resolve_options(**degradation)['kernel_size']
  inputs = [tf.image.convert_image_dtype(face, tf.float32) for face in faces]
  for name, step in degradations.STEPS:
    fn = tf.function(lambda p, x, step=step: step(p, x, (512, 512), kernel_size),
                     reduce_retracing=True)
    outputs = [fn(p, x) for p, x in zip(params, inputs)]
    yield name, lambda i, fn=fn, inputs=inputs: fn(params[i], inputs[i]).numpy()
    inputs = outputs


def example_maker(faces, **options):
  """fn(i): face i's example (`pipeline.make_example(**options)`), as numpy arrays."""
  make = tf.function(functools.partial(pipeline.make_example, seed=0, **options))
  return lambda i: {k: v.numpy() for k, v in make(
      faces[i], example_id=tf.constant(i, tf.int64)).items()}


def device_item_maker(faces, *, stage: str, image_size: int, degradation: dict, irm1_pair: str):
  """fn(i): what the host sends for face i when the degradation runs on the device
  (`pipeline.device_item`: the face and its drawn parameters), as numpy arrays."""
  item = tf.function(functools.partial(
      pipeline.device_item, seed=0, stage=stage, image_size=image_size,
      degradation=degradation, irm1_pair=irm1_pair))
  return lambda i: tf.nest.map_structure(
      lambda v: v.numpy(), item(faces[i], example_id=tf.constant(i, tf.int64)))


def host_and_device_examples(stage: str, faces, options: dict, device_options: dict,
                             degradation: dict):
  """(host, device) for each face: its example from `pipeline.make_example(**options)` and the
  one `device_degradation.make_example(**device_options)` builds from the same parameters with
  TensorFlow's noise, {name: numpy array in [-1, 1]} without the 'id'."""
  build = jax.jit(lambda item, noise: device_degradation.make_example(
      item, noise=noise, **device_options))
  buffer = device_options['buffer']
  for i, face in enumerate(faces):
    host = pipeline.make_example(face, 0, i, **options)
    item = pipeline.device_item(face, 0, i, stage=stage, image_size=options['image_size'],
                                degradation=degradation, irm1_pair=options['irm1_pair'])
    noise = np.zeros((buffer, buffer, 3), np.float32)
    if stage != 'tem':
      degraded_at = face.shape[:2]
      if stage == 'irm1' and options['irm1_pair'] == 'resize_then_degrade':
        degraded_at = (options['image_size'],) * 2
      noise = degradations.noise_for_device(
          degradations.sample_params(tf.constant([0, i], tf.int64), **degradation), degraded_at,
          buffer)
    ours = build(tf.nest.map_structure(lambda v: v.numpy(), item), noise)
    names = set(host) - {'id'}
    yield ({k: host[k].numpy() for k in names}, {k: np.asarray(ours[k]) for k in names})
