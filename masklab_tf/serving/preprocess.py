"""Raw images -> the model's inputs, inside the graph (the input policy of
ops/image_policy.py, as the evaluation pipeline applies it).

Being layers and tf functions, they travel inside an exported SavedModel,
so clients send images as they are.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.ops import image_policy


@tf_keras.utils.register_keras_serializable(package='masklab')
class ResizeAndPad(tf_keras.layers.Layer):
  """uint8 images [B, H, W, 3] (one size) -> the model's inputs.

  Returns (images uint8 [B, Hp, Wp, 3], image_size int32 [B, 2] resized
  valid size, scale float32 [B, 2] = image_size / original size,
  original_size int32 [B, 2]).
  """

  def __init__(self, min_size: int, max_size: int, stride: int,
               pad_to: tuple[int, ...] = (), **kwargs):
    super().__init__(**kwargs)
    self.min_size, self.max_size = min_size, max_size
    self.stride, self.pad_to = stride, tuple(pad_to)

  def call(self, images):
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
      raise TypeError(f'{self.name}: images must be uint8 RGB, got '
                      f'{images.dtype.name}')
    original = tf.shape(images)[1:3]
    size = image_policy.resized_size(original[0], original[1],
                                     self.min_size, self.max_size)
    resized = image_policy.resize_image(images, size)
    padded = image_policy.padded_size(size[tf.newaxis], self.stride,
                                      self.pad_to)
    resized = tf.pad(resized, [[0, 0], [0, padded[0] - size[0]],
                               [0, padded[1] - size[1]], [0, 0]])
    batch = tf.shape(images)[0]
    scale = tf.cast(size, tf.float32) / tf.cast(original, tf.float32)
    return (resized, tf.tile(size[tf.newaxis], [batch, 1]),
            tf.tile(scale[tf.newaxis], [batch, 1]),
            tf.tile(original[tf.newaxis], [batch, 1]))

  def get_config(self):
    return {**super().get_config(), 'min_size': self.min_size,
            'max_size': self.max_size, 'stride': self.stride,
            'pad_to': self.pad_to}


def decode_images(encoded, min_size: int, max_size: int, stride: int,
                  pad_to=()):
  """JPEG / PNG strings [B] -> the model's inputs, images of any sizes.

  Returns (images uint8 [B, Hp, Wp, 3], image_size int32 [B, 2], scale
  float32 [B, 2], original_size int32 [B, 2]). Grayscale and RGBA decode
  to RGB; an undecodable string fails the request with TensorFlow's
  decode error naming the problem.
  """
  limit = (max(pad_to) if pad_to else
           (max_size + stride - 1) // stride * stride)

  def one(data):
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    original = tf.shape(image)[:2]
    size = image_policy.resized_size(original[0], original[1], min_size,
                                     max_size)
    resized = image_policy.resize_image(image, size)
    # Pad to the largest possible size; the batch is cropped below.
    resized = tf.pad(resized, [[0, limit - size[0]], [0, limit - size[1]],
                               [0, 0]])
    return resized, size, original

  images, sizes, originals = tf.map_fn(
      one, encoded, fn_output_signature=(
          tf.TensorSpec([limit, limit, 3], tf.uint8),
          tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32)))
  padded = image_policy.padded_size(sizes, stride, pad_to)
  images = images[:, :padded[0], :padded[1]]
  scale = tf.cast(sizes, tf.float32) / tf.cast(originals, tf.float32)
  return images, sizes, scale, originals
