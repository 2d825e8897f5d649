"""Mask voting at inference (BiSeg sec. 3.3, after MNC).

A single mask prediction is noisy; neighbouring candidates of the same class
see the same object from slightly shifted boxes, so averaging their masks,
weighted by how confident each candidate is, smooths out the noise of any one
of them. BiSeg: "for each remaining ROI, we find its near-by instances which
overlap with it by IoU >= 0.5. Their foreground masks of the category are
averaged pixel-by-pixel, weighted by their classification scores. The
averaged masks are binarized to form the final output masks."

Overlap is *box* IoU: BiSeg's IoU is between RoIs, and MNC's released code
(`cpu_mask_voting`) selects voters with `bbox_overlaps` of boxes. Box IoU is
also what we can compute before any mask is pasted.

Which pool votes. MNC and BiSeg vote over the pre-NMS candidates (300 RoIs
after box regression), each weighted by its score for the kept box's class.
Our detections (postprocess.detect) come out of per-class NMS at box IoU
`detection_nms_iou` (default 0.6), so the default pool here is the kept
detections themselves: a detection's voters are itself and the same-class
detections NMS let through at box IoU in [0.5, 0.6). That is the pool the
SavedModel has; it votes far less than MNC's (hardly at all with an NMS IoU
of 0.5, not at all below). Both functions take an optional `pool` (masks,
boxes, scores, classes) so that a caller holding pre-NMS candidates (their
boxes, class scores and pasted masks) can vote with them instead, without
changing this module.

Two deviations from MNC's code, both following BiSeg's text: masks are
averaged as probabilities (MNC binarizes each candidate at 0.4 first), and the
average is binarized at 0.5 (the threshold `serving.model.to_original` uses
for unvoted masks), not 0.4.

Masks are full-image probabilities (postprocess.paste_masks /
paste_masks_tf). Boxes are continuous [ymin, xmin, ymax, xmax] pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def box_iou_np(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
  """Pairwise IoU of continuous boxes; empty boxes have IoU 0 with all.

  Args:
    boxes1: [N, 4] ymin, xmin, ymax, xmax.
    boxes2: [M, 4].

  Returns:
    float32 [N, M].
  """
  boxes1 = np.asarray(boxes1, np.float32).reshape(-1, 4)
  boxes2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
  top = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
  left = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
  bottom = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
  right = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
  inter = np.maximum(bottom - top, 0) * np.maximum(right - left, 0)
  area1 = _area_np(boxes1)
  area2 = _area_np(boxes2)
  union = area1[:, None] + area2[None, :] - inter
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(union > 0, inter / union, 0).astype(np.float32)


def vote_weights_np(boxes: np.ndarray, classes: np.ndarray,
                    pool_boxes: np.ndarray, pool_scores: np.ndarray,
                    pool_classes: np.ndarray, iou_threshold: float = 0.5,
                    include_self: bool = False) -> np.ndarray:
  """Who votes for whom, and how much.

  Args:
    boxes: [N, 4] the detections that receive a voted mask.
    classes: [N] their classes (1..K; 0 = padding, which gets no voters).
    pool_boxes, pool_scores, pool_classes: [M, 4], [M], [M] the voters.
    iou_threshold: a voter needs box IoU >= this with the detection.
    include_self: the pool is the detections (M == N); voter n always votes
      for detection n, even when its box is empty.

  Returns:
    float32 [N, M]: the voter's score where it votes, else 0.
  """
  classes = np.asarray(classes).reshape(-1)
  pool_classes = np.asarray(pool_classes).reshape(-1)
  votes = ((box_iou_np(boxes, pool_boxes) >= iou_threshold) &
           (classes[:, None] == pool_classes[None, :]) &
           (classes[:, None] > 0))
  if include_self:
    votes |= np.eye(len(classes), dtype=bool) & (classes[:, None] > 0)
  scores = np.asarray(pool_scores, np.float32).reshape(1, -1)
  return np.where(votes, scores, 0).astype(np.float32)


def vote_masks_np(masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                  classes: np.ndarray, iou_threshold: float = 0.5,
                  mask_threshold: float = 0.5, pool=None) -> np.ndarray:
  """Score-weighted average of each detection's voters' masks, binarized.

  Args:
    masks: [N, H, W] full-image probabilities of the detections.
    boxes: [N, 4] continuous ymin, xmin, ymax, xmax.
    scores: [N].
    classes: [N] 1..K (0 = padding: its output mask is empty).
    iou_threshold: box IoU a voter needs with the detection.
    mask_threshold: the weighted average is kept where >= this.
    pool: None (the detections vote, each always for itself) or a tuple
      (masks [M, H, W], boxes [M, 4], scores [M], classes [M]) of voters,
      e.g. the pre-NMS candidates, which should include the detections.

  Returns:
    uint8 [N, H, W] in {0, 1}; a detection whose voters weigh 0 in total
    gets an empty mask.
  """
  include_self = pool is None
  if pool is None:
    pool = (masks, boxes, scores, classes)
  pool_masks, pool_boxes, pool_scores, pool_classes = pool
  weights = vote_weights_np(boxes, classes, pool_boxes, pool_scores,
                            pool_classes, iou_threshold, include_self)
  pool_masks = np.asarray(pool_masks, np.float32)
  total = np.einsum('nm,mhw->nhw', weights, pool_masks)
  norm = weights.sum(axis=1)[:, None, None]
  # Compare the weighted sum with threshold * total weight rather than
  # divide: no 0/0 for unvoted rows, and `vote_masks` can do the same.
  keep = (total >= np.float32(mask_threshold) * norm) & (norm > 0)
  return keep.astype(np.uint8)


def box_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
  """`box_iou_np` in TF: float32 [N, M] from [N, 4] and [M, 4]."""
  boxes1 = tf.reshape(tf.cast(boxes1, tf.float32), [-1, 4])
  boxes2 = tf.reshape(tf.cast(boxes2, tf.float32), [-1, 4])
  top = tf.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
  left = tf.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
  bottom = tf.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
  right = tf.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
  inter = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
  union = _area(boxes1)[:, None] + _area(boxes2)[None, :] - inter
  return tf.math.divide_no_nan(inter, union)


def vote_weights(boxes, classes, pool_boxes, pool_scores, pool_classes,
                 iou_threshold: float = 0.5,
                 include_self: bool = False) -> tf.Tensor:
  """`vote_weights_np` in TF: float32 [N, M]."""
  classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
  pool_classes = tf.reshape(tf.cast(pool_classes, tf.int32), [-1])
  votes = ((box_iou(boxes, pool_boxes) >= iou_threshold) &
           tf.equal(classes[:, None], pool_classes[None, :]) &
           (classes[:, None] > 0))
  if include_self:
    num = tf.shape(classes)[0]
    votes |= tf.cast(tf.eye(num), tf.bool) & (classes[:, None] > 0)
  scores = tf.reshape(tf.cast(pool_scores, tf.float32), [1, -1])
  return tf.where(votes, scores, 0.0)


def vote_masks(masks, boxes, scores, classes, iou_threshold: float = 0.5,
               mask_threshold: float = 0.5, pool=None) -> tf.Tensor:
  """`vote_masks_np` in TF, for one image (map over a batch).

  No loop over detections: the votes are an [N, M] weight matrix and the
  weighted sums one matmul over the flattened masks, so it runs inside a
  tf.function / SavedModel. Memory is that of the [M, H, W] pool masks.

  Args:
    masks: [N, H, W] full-image probabilities.
    boxes: [N, 4]; scores: [N]; classes: [N] int (0 = padding).
    iou_threshold, mask_threshold, pool: as in `vote_masks_np`.

  Returns:
    uint8 [N, H, W].
  """
  include_self = pool is None
  if pool is None:
    pool = (masks, boxes, scores, classes)
  pool_masks, pool_boxes, pool_scores, pool_classes = pool
  weights = vote_weights(boxes, classes, pool_boxes, pool_scores,
                         pool_classes, iou_threshold, include_self)
  pool_masks = tf.cast(pool_masks, tf.float32)
  shape = tf.shape(pool_masks)
  flat = tf.reshape(pool_masks, [shape[0], -1])
  total = tf.reshape(tf.matmul(weights, flat), [-1, shape[1], shape[2]])
  norm = tf.reduce_sum(weights, axis=1)[:, None, None]
  keep = (total >= mask_threshold * norm) & (norm > 0.0)
  return tf.cast(keep, tf.uint8)


def _area_np(boxes):
  return (np.maximum(boxes[:, 2] - boxes[:, 0], 0) *
          np.maximum(boxes[:, 3] - boxes[:, 1], 0))


def _area(boxes):
  return (tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) *
          tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0))
