"""The input normalisation every system starts with."""

from __future__ import annotations

import tensorflow as tf
import tf_keras


# ImageNet statistics in 0..255 RGB, as Model Garden normalises.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@tf_keras.utils.register_keras_serializable(package='masklab')
class ImageNormalization(tf_keras.layers.Layer):
  """uint8 / 0..255 RGB -> ImageNet-normalised float."""

  def call(self, images):
    images = tf.cast(images, tf.float32)
    return (images - MEAN_RGB) / STDDEV_RGB
