"""Data: sources, the degradation model (TensorFlow ops) and the tf.data pipeline."""
