"""Semantic logits -> a class per input pixel (the semantic map output)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras


@tf_keras.utils.register_keras_serializable(package='masklab')
class SemanticMap(tf_keras.layers.Layer):
  """Semantic logits at stride s -> class map [B, H, W] at input resolution.

  Logits are upsampled bilinearly before the argmax (DeepLab), with the
  stride-s cell centres at the image positions the losses sample.
  """

  def call(self, logits, images):
    size = tf.shape(images)[1:3]
    upsampled = tf.image.resize(tf.cast(logits, tf.float32), size,
                                method='bilinear')
    return tf.cast(tf.argmax(upsampled, axis=-1), tf.int32)
