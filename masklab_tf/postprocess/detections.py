"""Detections from the box classifier: decoding, clipping and per-class NMS.

Two forms of the same NMS. The fast one gives tf.image.
combined_non_max_suppression each class its own boxes ([B, N, K, 4]). The
portable one (`portable=True`, the ONNX export graph) flattens them into
N * K boxes shared by all classes, each scoring for its own class only: the
form ONNX's NonMaxSuppression (per class over shared boxes) expresses and
tf2onnx converts. Per class, NMS then sees exactly the boxes and scores of
the fast form; the other classes' boxes score below the threshold and are
never candidates, so the detections are the same.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
from official.vision.ops import box_ops

from masklab_tf.ops import boxes as box_conventions



def detect(class_logits, box_deltas, rois, image_size, max_detections=100,
           nms_iou=0.6, score_threshold=0.0, portable=False):
  """Per-class NMS over decoded, clipped class-specific boxes.

  Args:
    class_logits: [B, N, K+1] (class 0 is background).
    box_deltas: [B, N, 4 (K+1)] encoded with ops/boxes.BOX_CODER_WEIGHTS.
    rois: [B, N, 4] the RoIs the deltas refine.
    image_size: [B, 2] valid (height, width).
    max_detections, nms_iou, score_threshold: NMS settings.
    portable: NMS over class-specific boxes flattened into shared ones
      (the module's docstring): same detections, ops ONNX can express.

  Returns:
    dict: detection_boxes [B, D, 4], detection_scores [B, D],
    detection_classes int32 [B, D] (1..K; 0 for padding), num_detections
    int32 [B]; padding boxes are zeros.
  """
  probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
  shape = tf.shape(probs)
  batch, num, num_classes = shape[0], shape[1], shape[2]
  deltas = tf.reshape(tf.cast(box_deltas, tf.float32),
                      [batch, num, num_classes + 1, 4])[:, :, 1:]
  anchors = tf.tile(rois[:, :, tf.newaxis, :], [1, 1, num_classes, 1])
  boxes = box_ops.decode_boxes(deltas, anchors, weights=box_conventions.BOX_CODER_WEIGHTS)
  size = tf.cast(image_size, tf.float32)[:, tf.newaxis, tf.newaxis, :]
  boxes = box_ops.clip_boxes(boxes, size)
  if portable:
    boxes, probs = _shared_boxes(boxes, probs, score_threshold)
  nmsed = tf.image.combined_non_max_suppression(
      boxes, probs, max_output_size_per_class=max_detections,
      max_total_size=max_detections, iou_threshold=nms_iou,
      score_threshold=score_threshold, pad_per_class=False, clip_boxes=False)
  valid = tf.range(max_detections)[tf.newaxis] < nmsed.valid_detections[:,
                                                                      None]
  classes = tf.where(valid, tf.cast(nmsed.nmsed_classes, tf.int32) + 1, 0)
  return {
      'detection_boxes': nmsed.nmsed_boxes,
      'detection_scores': nmsed.nmsed_scores,
      'detection_classes': classes,
      'num_detections': nmsed.valid_detections,
  }


def _shared_boxes(boxes, probs, score_threshold):
  """[B, N, K, 4] class boxes, [B, N, K] scores -> [B, N K, 1, 4] boxes
  shared by the classes and [B, N K, K] scores: box (n, k) keeps its score
  for class k and scores below `score_threshold` (never a candidate) for
  every other class."""
  shape = tf.shape(probs)
  batch, flat, num_classes = shape[0], shape[1] * shape[2], shape[2]
  own_class = tf.eye(num_classes, dtype=tf.bool)  # [K (box's), K (score's)]
  scores = tf.where(own_class, probs[..., tf.newaxis], score_threshold - 1.0)
  return (tf.reshape(boxes, [batch, flat, 1, 4]),
          tf.reshape(scores, [batch, flat, num_classes]))


@tf_keras.utils.register_keras_serializable(package='masklab')
class Detections(tf_keras.layers.Layer):
  """Layer form of `detect` for the functional inference graph."""

  def __init__(self, max_detections: int = 100, nms_iou: float = 0.6,
               score_threshold: float = 0.0, portable: bool = False,
               **kwargs):
    """Args: max_detections: detections per image; nms_iou: per-class NMS
    IoU threshold; score_threshold: lower scores are dropped; portable:
    the NMS form ONNX expresses (`detect`)."""
    super().__init__(**kwargs)
    self.max_detections = max_detections
    self.nms_iou = nms_iou
    self.score_threshold = score_threshold
    self.portable = portable

  def call(self, class_logits, box_deltas, rois, image_size):
    return detect(class_logits, box_deltas, rois, image_size,
                  self.max_detections, self.nms_iou, self.score_threshold,
                  self.portable)

  def get_config(self):
    return {**super().get_config(), 'max_detections': self.max_detections,
            'nms_iou': self.nms_iou, 'score_threshold': self.score_threshold,
            'portable': self.portable}
