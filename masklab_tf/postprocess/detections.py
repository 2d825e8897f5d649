"""Inference post-processing: detections from the box classifier, and masks
pasted from box-relative crops into image coordinates."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.ops import box_ops

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def detect(class_logits, box_deltas, rois, image_size, max_detections=100,
           nms_iou=0.6, score_threshold=0.0):
  """Per-class NMS over decoded, clipped class-specific boxes.

  Args:
    class_logits: [B, N, K+1] (class 0 is background).
    box_deltas: [B, N, 4 (K+1)] encoded with BOX_CODER_WEIGHTS.
    rois: [B, N, 4] the RoIs the deltas refine.
    image_size: [B, 2] valid (height, width).
    max_detections, nms_iou, score_threshold: NMS settings.

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
  boxes = box_ops.decode_boxes(deltas, anchors, weights=BOX_CODER_WEIGHTS)
  size = tf.cast(image_size, tf.float32)[:, tf.newaxis, tf.newaxis, :]
  boxes = box_ops.clip_boxes(boxes, size)
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


@tf_keras.utils.register_keras_serializable(package='masklab')
class Detections(tf_keras.layers.Layer):
  """Layer form of `detect` for the functional inference graph."""

  def __init__(self, max_detections: int = 100, nms_iou: float = 0.6,
               score_threshold: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.max_detections = max_detections
    self.nms_iou = nms_iou
    self.score_threshold = score_threshold

  def call(self, class_logits, box_deltas, rois, image_size):
    return detect(class_logits, box_deltas, rois, image_size,
                  self.max_detections, self.nms_iou, self.score_threshold)

  def get_config(self):
    return {**super().get_config(), 'max_detections': self.max_detections,
            'nms_iou': self.nms_iou, 'score_threshold': self.score_threshold}


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int,
                width: int) -> np.ndarray:
  """Box-relative masks -> full-image probabilities (numpy, for evaluation).

  Inverse of the crop convention (ops/crop.py): pixel centre (x + 0.5) maps
  to sample position (x + 0.5 - xmin) / (xmax - xmin) * (S - 1) of the
  box's S samples, read bilinearly; pixels outside the box are 0.

  Args:
    masks: [N, S, S] probabilities.
    boxes: [N, 4] continuous [ymin, xmin, ymax, xmax] image pixels.
    height, width: image size.

  Returns:
    float32 [N, height, width].
  """
  num, size = masks.shape[0], masks.shape[1]
  out = np.zeros([num, height, width], np.float32)
  for i in range(num):
    ymin, xmin, ymax, xmax = boxes[i]
    if ymax - ymin <= 0 or xmax - xmin <= 0:
      continue
    rows = np.arange(max(int(np.floor(ymin)), 0),
                     min(int(np.ceil(ymax)), height))
    cols = np.arange(max(int(np.floor(xmin)), 0),
                     min(int(np.ceil(xmax)), width))
    if not len(rows) or not len(cols):
      continue
    ys = (rows + 0.5 - ymin) / (ymax - ymin) * (size - 1)
    xs = (cols + 0.5 - xmin) / (xmax - xmin) * (size - 1)
    out[i][np.ix_(rows, cols)] = _bilinear(masks[i], ys, xs)
  return out


def _interpolation_matrix(boxes_min, boxes_max, length: int, size: int):
  """[N, length, size] bilinear weights of `paste_masks`' sample positions
  for one axis: row p of box n reads position (p + 0.5 - min) / (max - min)
  * (size - 1), clipped to the samples; rows outside [floor(min),
  ceil(max)) and empty boxes get zero weights."""
  extent = boxes_max - boxes_min
  pixels = tf.cast(tf.range(length), tf.float32)[tf.newaxis, :]
  position = ((pixels + 0.5 - boxes_min[:, tf.newaxis]) /
              tf.maximum(extent, 1e-12)[:, tf.newaxis] * (size - 1))
  position = tf.clip_by_value(position, 0.0, size - 1.0)
  low = tf.minimum(tf.floor(position), size - 2.0)
  weight = position - low
  low = tf.cast(low, tf.int32)
  matrix = (tf.one_hot(low, size) * (1.0 - weight)[..., tf.newaxis] +
            tf.one_hot(low + 1, size) * weight[..., tf.newaxis])
  inside = ((pixels >= tf.floor(boxes_min)[:, tf.newaxis]) &
            (pixels < tf.math.ceil(boxes_max)[:, tf.newaxis]) &
            (extent > 0)[:, tf.newaxis])
  return matrix * tf.cast(inside, tf.float32)[..., tf.newaxis]


def paste_masks_tf(masks, boxes, height, width):
  """In-graph `paste_masks` (the same values), for SavedModel outputs.

  Bilinear reading is separable, so each pasted mask is Wy @ mask @ Wx^T
  with [height, S] and [width, S] interpolation matrices: no per-box loop.

  Args:
    masks: [N, S, S] probabilities.
    boxes: [N, 4] [ymin, xmin, ymax, xmax] image pixels.
    height, width: image size (ints or scalar tensors).

  Returns:
    float32 [N, height, width].
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  size = masks.shape[-1]
  rows = _interpolation_matrix(boxes[:, 0], boxes[:, 2], height, size)
  cols = _interpolation_matrix(boxes[:, 1], boxes[:, 3], width, size)
  return tf.einsum('nys,nst,nxt->nyx', rows, masks, cols)


def _bilinear(grid, ys, xs):
  size = grid.shape[0]
  ys = np.clip(ys, 0, size - 1)
  xs = np.clip(xs, 0, size - 1)
  y0 = np.minimum(np.floor(ys).astype(int), size - 2)
  x0 = np.minimum(np.floor(xs).astype(int), size - 2)
  wy = (ys - y0)[:, None]
  wx = (xs - x0)[None, :]
  top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
  bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
  return top * (1 - wy) + bottom * wy
