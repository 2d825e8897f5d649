"""InstanceFCN's inference: assembled window segments -> segment proposals.

Every window is scored; the best `pre_nms_top_k` are assembled, binarised at
0.5 and boxed tightly; NMS at box IoU 0.8 on those boxes (the paper's),
keeping `max_detections` proposals. Masks are returned box-relative on
their tight boxes, like the detections of the Faster R-CNN systems, with
class 1 ("object"): they are evaluated as proposals (average recall,
evaluation/proposal_recall.py).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


def segment_proposals(window_boxes_, scores, segment_logits, image_size,
                      num_proposals=100, nms_iou=0.8, crop_size=41,
                      mask_threshold=0.5):
  """Assembled window segments -> NMS'd proposals on their tight boxes.

  Args:
    window_boxes_: [B, T, 4] windows (image pixels).
    scores: [B, T] objectness probabilities (-1: not a candidate).
    segment_logits: [B, T, S, S] window-relative segment logits.
    image_size: int [B, 2] valid size.
    num_proposals, nms_iou: proposals kept per image; NMS threshold on the
      tight boxes of the binarised segments (paper: 0.8).
    crop_size: side of the returned box-relative masks.
    mask_threshold: binarisation of the segments (paper: 0.5).

  Returns:
    The detection dict of MaskLab's inference model: detection_boxes
    [B, D, 4] (tight, clipped to the image), detection_scores [B, D],
    detection_classes int32 [B, D] (1; 0 for padding), num_detections [B],
    detection_masks [B, D, crop_size, crop_size] probabilities on the boxes.
  """
  probs = tf.sigmoid(tf.cast(segment_logits, tf.float32))
  shape = tf.shape(probs)
  batch, size = shape[0], shape[2]
  binary = probs >= mask_threshold
  rows = tf.reduce_any(binary, axis=3)  # [B, T, S]
  cols = tf.reduce_any(binary, axis=2)
  nonempty = tf.reduce_any(rows, axis=-1)

  def extent(hits):
    index = tf.range(size, dtype=tf.float32)
    first = tf.reduce_min(tf.where(hits, index, float(1e9)), axis=-1)
    last = tf.reduce_max(tf.where(hits, index, -1.0), axis=-1)
    return first, last

  y0, y1 = extent(rows)
  x0, x1 = extent(cols)
  step_y = (window_boxes_[..., 2] - window_boxes_[..., 0]) / tf.cast(
      size - 1, tf.float32)
  step_x = (window_boxes_[..., 3] - window_boxes_[..., 1]) / tf.cast(
      size - 1, tf.float32)
  # A sample stands for the half step around it.
  tight = tf.stack([
      window_boxes_[..., 0] + (y0 - 0.5) * step_y,
      window_boxes_[..., 1] + (x0 - 0.5) * step_x,
      window_boxes_[..., 0] + (y1 + 0.5) * step_y,
      window_boxes_[..., 1] + (x1 + 0.5) * step_x], axis=-1)
  limits = tf.tile(tf.cast(image_size, tf.float32), [1, 2])[:, tf.newaxis]
  tight = tf.clip_by_value(tight, 0.0, limits)
  tight = tf.where(nonempty[..., tf.newaxis], tight, 0.0)
  scores = tf.where(nonempty & (scores >= 0), scores, -1.0)

  selected, valid = tf.image.non_max_suppression_padded(
      tight, scores, num_proposals, iou_threshold=nms_iou,
      score_threshold=0.0, pad_to_max_output_size=True)
  keep = tf.range(num_proposals)[tf.newaxis] < valid[:, tf.newaxis]
  boxes = tf.where(keep[..., tf.newaxis],
                   tf.gather(tight, selected, batch_dims=1), 0.0)
  windows = tf.gather(window_boxes_, selected, batch_dims=1)
  kept_probs = tf.gather(probs, selected, batch_dims=1)  # [B, D, S, S]

  # Re-sample each segment on its tight box: normalised crop_and_resize
  # coordinates of the box inside its window's S x S samples.
  window_size = tf.maximum(windows[..., 2:] - windows[..., :2], 1e-6)
  relative = (boxes - tf.tile(windows[..., :2], [1, 1, 2])) / tf.tile(
      window_size, [1, 1, 2])
  masks = tf.image.crop_and_resize(
      tf.reshape(kept_probs, [-1, size, size, 1]),
      tf.reshape(relative, [-1, 4]),
      tf.range(batch * num_proposals), [crop_size, crop_size])
  masks = tf.reshape(masks, [batch, num_proposals, crop_size, crop_size])
  masks = tf.where(keep[..., tf.newaxis, tf.newaxis], masks, 0.0)
  return {
      'num_detections': valid,
      'detection_boxes': boxes,
      'detection_classes': tf.cast(keep, tf.int32),
      'detection_scores': tf.where(keep, tf.gather(scores, selected,
                                                   batch_dims=1), 0.0),
      'detection_masks': masks,
  }


@tf_keras.utils.register_keras_serializable(package='masklab')
class SegmentProposals(tf_keras.layers.Layer):
  """Layer form of `segment_proposals`."""

  def __init__(self, num_proposals: int = 100, nms_iou: float = 0.8,
               crop_size: int = 41, mask_threshold: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    self.num_proposals = num_proposals
    self.nms_iou = nms_iou
    self.crop_size = crop_size
    self.mask_threshold = mask_threshold

  def call(self, windows, scores, segment_logits, image_size):
    return segment_proposals(windows, scores, segment_logits, image_size,
                             self.num_proposals, self.nms_iou,
                             self.crop_size, self.mask_threshold)

  def get_config(self):
    return {**super().get_config(), 'num_proposals': self.num_proposals,
            'nms_iou': self.nms_iou, 'crop_size': self.crop_size,
            'mask_threshold': self.mask_threshold}
