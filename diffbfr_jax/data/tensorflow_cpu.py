"""TensorFlow feeds data on the CPU only: every module that starts TensorFlow's data work calls
`keep_tensorflow_on_cpu` first, so that it never takes accelerator memory from JAX."""

import tensorflow as tf


def keep_tensorflow_on_cpu() -> None:
  tf.config.set_visible_devices([], 'GPU')
