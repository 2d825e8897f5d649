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
of 0.5, not at all below). `vote_masks` takes an optional `pool` (masks,
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

from official.vision.ops import box_ops
import tensorflow as tf


def box_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
  """Pairwise box IoU, float32 [N, M] from [N, 4] and [M, 4].

  Model Garden's `box_ops.bbox_overlap`, for one image. Its conventions, all
  harmless for detections, which are clipped to the image and ordered
  (ymin <= ymax, xmin <= xmax): boxes are [ymin, xmin, ymax, xmax]; a box
  whose coordinates are all negative counts as padding and gets IoU -1 with
  every box (it never reaches a voting threshold); the union carries a
  1e-8 epsilon, so empty boxes get IoU 0 with all; areas are not clipped at
  0, so an inverted box would count a negative area.
  """
  boxes1 = tf.reshape(tf.cast(boxes1, tf.float32), [1, -1, 4])
  boxes2 = tf.reshape(tf.cast(boxes2, tf.float32), [1, -1, 4])
  return box_ops.bbox_overlap(boxes1, boxes2)[0]


def vote_weights(boxes, classes, pool_boxes, pool_scores, pool_classes,
                 iou_threshold: float = 0.5,
                 include_self: bool = False) -> tf.Tensor:
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
  """Score-weighted average of each detection's voters' masks, binarized.

  For one image (map over a batch). No loop over detections: the votes are
  an [N, M] weight matrix and the weighted sums one matmul over the
  flattened masks, so it runs inside a tf.function / SavedModel. Memory is
  that of the [M, H, W] pool masks. The weighted sum is compared with
  threshold * total weight rather than divided: no 0/0 for unvoted rows.
  tests/reference.py holds a numpy model of it.

  Args:
    masks: [N, H, W] full-image probabilities of the detections.
    boxes: [N, 4] continuous ymin, xmin, ymax, xmax.
    scores: [N].
    classes: [N] int 1..K (0 = padding: its output mask is empty).
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
  weights = vote_weights(boxes, classes, pool_boxes, pool_scores,
                         pool_classes, iou_threshold, include_self)
  pool_masks = tf.cast(pool_masks, tf.float32)
  shape = tf.shape(pool_masks)
  flat = tf.reshape(pool_masks, [shape[0], -1])
  total = tf.reshape(tf.matmul(weights, flat), [-1, shape[1], shape[2]])
  norm = tf.reduce_sum(weights, axis=1)[:, None, None]
  keep = (total >= mask_threshold * norm) & (norm > 0.0)
  return tf.cast(keep, tf.uint8)
