"""MaskLab's losses as free functions (Detectron2 style), with shapes.

Every function returns a scalar: a sum over this replica's examples of the
quantity the paper or TF Object Detection API uses, divided by the count of
its terms over the *global* batch (all-reduced when called on a replica of a
tf.distribute strategy). So each replica returns its share of the global
batch's loss, the shares add up to it, and gradients summed over replicas
are exactly those of one device on the whole batch, however the batch is
split and however many anchors, RoIs or labelled pixels each part holds.
Outside a strategy (or with one replica) it is the plain mean.
"""

from __future__ import annotations

import tensorflow as tf
from official.vision.ops import box_ops

from masklab_tf.ops import boxes as box_conventions
from masklab_tf.ops import label_values


def global_count(count):
  """`count` summed over the replicas in sync (itself outside a strategy)."""
  count = tf.stop_gradient(tf.cast(count, tf.float32))
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
  return count


def safe_mean(total, count):
  """total / (global count, at least 1): this replica's share of the mean."""
  return total / tf.maximum(global_count(count), 1.0)


def huber(x, delta: float = 1.0):
  """Elementwise Huber (smooth L1 at delta 1)."""
  x = tf.abs(x)
  return tf.where(x < delta, 0.5 * x * x, delta * (x - 0.5 * delta))


def rpn_losses(scores, deltas, labels, box_targets):
  """RPN objectness (sigmoid CE) and box (Huber) losses.

  Args:
    scores: [B, h, w, A] objectness logits.
    deltas: [B, h, w, 4A] box deltas.
    labels: int [B, h*w*A]: 1 positive, 0 negative, -1 not sampled.
    box_targets: [B, h*w*A, 4] encoded targets (rpn.rpn_targets).

  Returns:
    (score_loss, box_loss): both normalised by the number of sampled anchors,
    as TF Object Detection API does.
  """
  batch = tf.shape(scores)[0]
  scores = tf.reshape(tf.cast(scores, tf.float32), [batch, -1])
  deltas = tf.reshape(tf.cast(deltas, tf.float32), [batch, -1, 4])
  sampled = labels >= 0
  num_sampled = tf.reduce_sum(tf.cast(sampled, tf.float32))
  ce = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.cast(labels > 0, tf.float32), logits=scores)
  score_loss = safe_mean(tf.reduce_sum(tf.where(sampled, ce, 0.0)),
                          num_sampled)
  positive = tf.cast(labels > 0, tf.float32)[..., tf.newaxis]
  box_loss = safe_mean(
      tf.reduce_sum(huber(deltas - box_targets) * positive), num_sampled)
  return score_loss, box_loss


def box_classifier_losses(class_logits, box_deltas, rois, matched_boxes,
                          matched_classes):
  """Softmax CE over K+1 classes and Huber loss on the true class's deltas.

  Args:
    class_logits: [B, N, K+1].
    box_deltas: [B, N, 4 (K+1)].
    rois: [B, N, 4] sampled RoIs (image pixels).
    matched_boxes: [B, N, 4] ground truth box of each RoI.
    matched_classes: int [B, N], 0 for background RoIs, -1 for unused
      slots (ignored).

  Returns:
    (class_loss, box_loss), each averaged over the sampled RoIs.
  """
  class_logits = tf.cast(class_logits, tf.float32)
  used = matched_classes >= 0
  matched_classes = tf.maximum(tf.cast(matched_classes, tf.int32), 0)
  num_rois = tf.reduce_sum(tf.cast(used, tf.float32))
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=matched_classes, logits=class_logits)
  class_loss = safe_mean(tf.reduce_sum(tf.where(used, ce, 0.0)), num_rois)

  deltas = tf.reshape(tf.cast(box_deltas, tf.float32),
                      tf.concat([tf.shape(class_logits), [4]], 0))
  deltas = tf.gather(deltas, matched_classes, batch_dims=2)  # [B, N, 4]
  targets = box_ops.encode_boxes(matched_boxes, rois,
                                 weights=box_conventions.BOX_CODER_WEIGHTS)
  foreground = tf.cast(matched_classes > 0, tf.float32)[..., tf.newaxis]
  box_loss = safe_mean(
      tf.reduce_sum(huber(deltas - tf.stop_gradient(targets)) * foreground),
      num_rois)
  return class_loss, box_loss


def mask_loss(mask_logits, mask_targets, classes):
  """Per-pixel sigmoid CE between box-relative mask logits and targets.

  Args:
    mask_logits: [B, M, S, S] (coarse or refined).
    mask_targets: [B, M, S, S] in [0, 1] (ground truth cropped to its box;
      binarised at 0.5).
    classes: int [B, M]; instances with class <= 0 are padding.

  Returns:
    Mean over valid instances and pixels.
  """
  valid = tf.cast(classes > 0, tf.float32)[:, :, tf.newaxis, tf.newaxis]
  labels = tf.cast(mask_targets >= 0.5, tf.float32)
  ce = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(mask_logits, tf.float32))
  pixels = tf.cast(tf.reduce_prod(tf.shape(mask_logits)[2:]), tf.float32)
  return safe_mean(tf.reduce_sum(ce * valid),
                    tf.reduce_sum(valid) * pixels)


def labels_at_stride(labels, stride: int):
  """Dense labels [B, H, W] sampled at the centres of stride-s cells.

  Cell (i, j) of a stride-s map covers pixels [i s, (i + 1) s); its centre
  pixel is (i s + s // 2, j s + s // 2).
  """
  return labels[:, stride // 2::stride, stride // 2::stride]


def dense_softmax_loss(logits, labels):
  """Softmax CE over pixels whose label is not IGNORE_LABEL.

  Args:
    logits: [B, h, w, C].
    labels: int [B, h, w] (already at the logits' resolution).

  Returns:
    Mean over labelled pixels.
  """
  labels = tf.cast(labels, tf.int32)
  h, w = tf.shape(logits)[1], tf.shape(logits)[2]
  labels = labels[:, :h, :w]
  valid = labels != label_values.IGNORE_LABEL
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.where(valid, labels, 0), logits=tf.cast(logits, tf.float32))
  return safe_mean(tf.reduce_sum(tf.where(valid, ce, 0.0)),
                    tf.reduce_sum(tf.cast(valid, tf.float32)))
