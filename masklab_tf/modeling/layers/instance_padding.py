"""Ground truth without its padding slots, for the per-instance mask losses."""

from __future__ import annotations

import tensorflow as tf
import tf_keras


@tf_keras.utils.register_keras_serializable(package='masklab')
class TrimInstancePadding(tf_keras.layers.Layer):
  """Drops the padding slots after the batch's last real instance.

  Ground truth comes padded to max_instances (100 in the COCO configs, while
  a COCO image has 7 instances on average), and the mask branch trains on
  every slot: on padding, a crop, a pooling and three 5x5 convolutions at
  41x41 whose loss is then masked to zero. Keeping only the first n slots,
  n = the last slot holding an instance (class > 0) in any image of the
  batch, rounded up to a power of two and at least MIN_SLOTS (so the XLA
  assembling compiles for a handful of shapes, not one per count: each
  new shape costs a compilation of its forward and backward), capped at
  max_instances, computes the same losses for a fraction of the work.

  Call: (gt_boxes [B, M, 4], gt_classes int [B, M]) -> the same, [B, n, ...].
  """

  # Images of up to 8 instances (most of COCO, every shapes image) share
  # one shape; COCO's max_instances=100 gives at most 5: 8, 16, 32, 64, 100.
  MIN_SLOTS = 8

  def call(self, gt_boxes, gt_classes):
    slots = tf.shape(gt_classes)[1]
    number = tf.range(1, slots + 1)[tf.newaxis]
    last = tf.reduce_max(tf.where(gt_classes > 0, number, 0))
    bucket = 2 ** tf.cast(tf.math.ceil(tf.math.log(
        tf.cast(tf.maximum(last, self.MIN_SLOTS), tf.float32)) /
                                       tf.math.log(2.0)), tf.int32)
    # log2 of an exact power of two may round up by one ulp; the cap holds.
    kept = tf.minimum(bucket, slots)
    return gt_boxes[:, :kept], gt_classes[:, :kept]
