"""Data: face sources (folders, prepared TFDS datasets, the bundled faces), the degradation model
on the host (TensorFlow ops, `degradations`) and on the device (JAX, `device_degradation`), the
tf.data pipeline, and the reproducible test set."""
