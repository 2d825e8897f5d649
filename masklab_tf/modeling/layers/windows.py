"""InstanceFCN's layers without weights: windows, their sampling, their
mask targets and the best-scored windows at inference."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.ops import crop
from masklab_tf.ops import sampling
from masklab_tf.ops import windows as window_ops


@tf_keras.utils.register_keras_serializable(package='masklab')
class SlidingWindows(tf_keras.layers.Layer):
  """Feature map [B, h, w, C] -> its windows [h * w * A, 4] (window_boxes)."""

  def __init__(self, stride: int, window_sizes, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.window_sizes = tuple(float(s) for s in window_sizes)

  def call(self, features):
    shape = tf.shape(features)
    return window_ops.window_boxes(shape[1], shape[2], self.stride,
                                   self.window_sizes)

  def get_config(self):
    return {**super().get_config(), 'stride': self.stride,
            'window_sizes': self.window_sizes}


@tf_keras.utils.register_keras_serializable(package='masklab')
class WindowSampler(tf_keras.layers.Layer):
  """Labels and samples windows; picks the positive ones to assemble.

  Call: (windows [N, 4], gt_boxes [B, M, 4], image_size [B, 2]) ->
    labels int32 [B, N] (1 positive, 0 negative, -1 not sampled),
    positive_boxes [B, P, 4] (P = sample_size * positive_fraction),
    positive_objects int32 [B, P] (object index), positive_valid [B, P].
  """

  def __init__(self, stride: int, window_sizes, sample_size: int = 256,
               positive_fraction: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.window_sizes = tuple(float(s) for s in window_sizes)
    self.sample_size = sample_size
    self.positive_fraction = positive_fraction

  @property
  def max_positives(self) -> int:
    return int(self.sample_size * self.positive_fraction)

  def call(self, windows, gt_boxes, image_size):
    positive, negative, matched = window_ops.window_labels(
        windows, gt_boxes, image_size, self.stride, self.window_sizes)
    labels = sampling.sample_labels(positive, negative, self.sample_size,
                               self.positive_fraction)
    # Sampled positives first (stable order), then the rest as padding.
    order = tf.argsort(tf.cast(labels == 1, tf.int32), axis=1,
                       direction='DESCENDING', stable=True)
    order = order[:, :self.max_positives]
    valid = tf.gather(labels, order, batch_dims=1) == 1
    boxes = tf.gather(windows, order)
    objects = tf.gather(matched, order, batch_dims=1)
    return (tf.stop_gradient(labels), tf.stop_gradient(boxes),
            tf.stop_gradient(objects), valid)

  def get_config(self):
    return {**super().get_config(), 'stride': self.stride,
            'window_sizes': self.window_sizes,
            'sample_size': self.sample_size,
            'positive_fraction': self.positive_fraction}


@tf_keras.utils.register_keras_serializable(package='masklab')
class WindowMaskTargets(tf_keras.layers.Layer):
  """The object's mask cropped to each positive window (S x S, ops/crop.py).

  Call: (gt_masks [B, M, H, W], objects int [B, P], boxes [B, P, 4]) ->
  float32 [B, P, S, S] in [0, 1]; outside the image it is 0.
  """

  def __init__(self, crop_size: int, **kwargs):
    super().__init__(**kwargs)
    self.crop_size = crop_size

  def call(self, gt_masks, objects, boxes):
    shape = tf.shape(gt_masks)
    batch, num_objects = shape[0], shape[1]
    flat = tf.reshape(gt_masks, tf.concat([[-1], shape[2:]], 0))
    index = (tf.range(batch)[:, tf.newaxis] * num_objects +
             tf.cast(objects, tf.int32))
    num = tf.shape(objects)[1]
    crops = crop.crop_masks(flat, tf.reshape(boxes, [-1, 4]),
                            self.crop_size,
                            box_indices=tf.reshape(index, [-1]))
    return tf.stop_gradient(
        tf.reshape(crops, [batch, num, self.crop_size, self.crop_size]))

  def get_config(self):
    return {**super().get_config(), 'crop_size': self.crop_size}


@tf_keras.utils.register_keras_serializable(package='masklab')
class TopWindows(tf_keras.layers.Layer):
  """The `top_k` best-scored windows whose centre is in the image.

  Call: (objectness [B, h, w, A], windows [N, 4], image_size [B, 2]) ->
  boxes [B, T, 4], scores [B, T] (probabilities; -1 for windows outside).
  """

  def __init__(self, top_k: int = 2000, **kwargs):
    super().__init__(**kwargs)
    self.top_k = top_k

  def call(self, objectness, windows, image_size):
    batch = tf.shape(objectness)[0]
    scores = tf.sigmoid(tf.reshape(tf.cast(objectness, tf.float32),
                                   [batch, -1]))
    scores = tf.where(window_ops.windows_inside(windows, image_size), scores,
                      -1.0)
    k = tf.minimum(self.top_k, tf.shape(scores)[1])
    top_scores, top_index = tf.math.top_k(scores, k=k)
    return tf.gather(windows, top_index), top_scores

  def get_config(self):
    return {**super().get_config(), 'top_k': self.top_k}
