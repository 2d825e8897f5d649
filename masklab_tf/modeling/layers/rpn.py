"""The RPN's layers without weights: anchors, proposals and training targets.

Proposals are decoded, clipped and NMS'd in the graph for any image size;
targets are assigned in the graph (not in tf.data), so the input pipeline
knows nothing about anchors.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
from official.vision.ops import box_ops

from masklab_tf.modeling.layers import sampler_base
from masklab_tf.ops import anchors as anchor_ops
from masklab_tf.ops import sampling


@tf_keras.utils.register_keras_serializable(package='masklab')
class RpnAnchors(tf_keras.layers.Layer):
  """Grid anchors for a feature map: [h, w, A * 4] in image pixels."""

  def __init__(self, stride: int, sizes, aspect_ratios, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.sizes = tuple(float(s) for s in sizes)
    self.aspect_ratios = tuple(float(r) for r in aspect_ratios)

  @property
  def num_anchors(self) -> int:
    return len(self.sizes) * len(self.aspect_ratios)

  def call(self, features):
    shape = tf.shape(features)
    return anchor_ops.grid_anchors(shape[1], shape[2], self.stride,
                                   self.sizes, self.aspect_ratios)

  def get_config(self):
    return {**super().get_config(), 'stride': self.stride,
            'sizes': list(self.sizes),
            'aspect_ratios': list(self.aspect_ratios)}


@tf_keras.utils.register_keras_serializable(package='masklab')
class ProposalGenerator(tf_keras.layers.Layer):
  """RPN outputs -> proposals [B, P, 4] and objectness scores [B, P].

  Keeps the pre_nms_top_k highest-scoring anchors, decodes their deltas,
  clips to the valid image, drops boxes under min_size pixels, and runs NMS
  at nms_iou down to P proposals (padded with zero boxes of score 0). Works
  on any feature map size (Model Garden's ROI generator needs static ones,
  and serving takes any image size).
  """

  def __init__(self, pre_nms_top_k: int = 6000, nms_iou: float = 0.7,
               num_proposals: int = 300, test_pre_nms_top_k: int = 6000,
               test_num_proposals: int = 300, min_size: float = 1.0,
               **kwargs):
    super().__init__(**kwargs)
    self.pre_nms_top_k = pre_nms_top_k
    self.nms_iou = nms_iou
    self.num_proposals = num_proposals
    self.test_pre_nms_top_k = test_pre_nms_top_k
    self.test_num_proposals = test_num_proposals
    self.min_size = min_size

  def call(self, scores, deltas, anchors, image_size, training=None):
    """Args: scores [B,h,w,A], deltas [B,h,w,4A], anchors [h,w,4A],
    image_size int [B, 2] (valid height, width). Returns (boxes, scores)."""
    top_k = self.pre_nms_top_k if training else self.test_pre_nms_top_k
    num_proposals = (self.num_proposals if training
                     else self.test_num_proposals)
    batch = tf.shape(scores)[0]
    scores = tf.reshape(tf.sigmoid(tf.cast(scores, tf.float32)), [batch, -1])
    deltas = tf.reshape(tf.cast(deltas, tf.float32), [batch, -1, 4])
    anchors = tf.reshape(anchors, [-1, 4])
    k = tf.minimum(top_k, tf.shape(scores)[1])
    top_scores, top_index = tf.math.top_k(scores, k=k, sorted=True)
    boxes = box_ops.decode_boxes(tf.gather(deltas, top_index, batch_dims=1),
                                 tf.gather(anchors, top_index))
    size = tf.cast(image_size, tf.float32)[:, tf.newaxis, :]
    boxes = box_ops.clip_boxes(boxes, size)
    heights = boxes[..., 2] - boxes[..., 0]
    widths = boxes[..., 3] - boxes[..., 1]
    large = (heights >= self.min_size) & (widths >= self.min_size)
    top_scores = tf.where(large, top_scores, -1.0)
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :], top_scores[..., tf.newaxis],
        max_output_size_per_class=num_proposals,
        max_total_size=num_proposals, iou_threshold=self.nms_iou,
        score_threshold=0.0, pad_per_class=False, clip_boxes=False)
    return tf.stop_gradient(nmsed.nmsed_boxes), tf.stop_gradient(
        nmsed.nmsed_scores)

  def get_config(self):
    return {**super().get_config(), 'pre_nms_top_k': self.pre_nms_top_k,
            'nms_iou': self.nms_iou, 'num_proposals': self.num_proposals,
            'test_pre_nms_top_k': self.test_pre_nms_top_k,
            'test_num_proposals': self.test_num_proposals,
            'min_size': self.min_size}


def rpn_targets(anchors: tf.Tensor, gt_boxes: tf.Tensor,
                batch_size_per_image: int = 256,
                positive_fraction: float = 0.5, positive_iou: float = 0.7,
                negative_iou: float = 0.3, uniform=None):
  """Labels and samples anchors for the RPN losses (Faster R-CNN rules).

  An anchor is positive at IoU >= positive_iou with some box, or when it is
  the best anchor of a box (so every box gets one); negative below
  negative_iou; ignored otherwise. Per image, up to
  batch_size_per_image anchors are sampled, at most positive_fraction of them
  positive, negatives filling the rest.

  Args:
    anchors: [h, w, 4A] image-pixel boxes.
    gt_boxes: [B, M, 4], padded with -1.
    batch_size_per_image, positive_fraction, positive_iou, negative_iou: as
      above.
    uniform: shape -> float32 draws in [0, 1) that choose the sample
      (sampling.sample_labels; default tf.random.uniform).

  Returns:
    labels: int32 [B, h*w*A]: 1 positive, 0 negative, -1 not sampled.
    box_targets: float32 [B, h*w*A, 4], encoded matched boxes (zeros for
      non-positives).
  """
  flat = tf.reshape(anchors, [-1, 4])
  batch = tf.shape(gt_boxes)[0]
  batched_anchors = tf.tile(flat[tf.newaxis], [batch, 1, 1])
  valid_gt = gt_boxes[..., 0] >= 0  # [B, M]
  # [B, num_anchors, M]; -1 against padded boxes.
  iou = box_ops.bbox_overlap(batched_anchors, gt_boxes)
  iou = tf.where(valid_gt[:, tf.newaxis, :], iou, -1.0)
  best_iou = tf.reduce_max(iou, axis=2)
  best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
  # The best anchor(s) of each valid box count as positive too.
  best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, M]
  is_best = tf.reduce_any(
      (iou >= best_per_gt - 1e-6) & (iou > 0) & valid_gt[:, tf.newaxis, :],
      axis=2)
  positive = (best_iou >= positive_iou) | is_best
  negative = (best_iou < negative_iou) & (best_iou >= 0) & ~positive
  # Images without boxes: every anchor is a negative candidate.
  negative |= ~tf.reduce_any(valid_gt, axis=1, keepdims=True)

  labels = sampling.sample_labels(positive, negative, batch_size_per_image,
                                  positive_fraction, uniform)
  matched = tf.gather(gt_boxes, best_gt, batch_dims=1)
  encoded = box_ops.encode_boxes(matched, batched_anchors)
  box_targets = tf.where((labels == 1)[..., tf.newaxis], encoded, 0.0)
  return tf.stop_gradient(labels), tf.stop_gradient(box_targets)


@tf_keras.utils.register_keras_serializable(package='masklab')
class RpnTargets(sampler_base.SamplerLayer):
  """Anchors + ground truth -> RPN labels and box targets (`rpn_targets`),
  sampled with the layer's own checkpointed generator."""

  def __init__(self, batch_size_per_image: int = 256,
               positive_fraction: float = 0.5, positive_iou: float = 0.7,
               negative_iou: float = 0.3, seed: int | None = None, **kwargs):
    """Args: as `rpn_targets`; seed: the generator's (SamplerLayer)."""
    super().__init__(seed=seed, **kwargs)
    self.batch_size_per_image = batch_size_per_image
    self.positive_fraction = positive_fraction
    self.positive_iou = positive_iou
    self.negative_iou = negative_iou

  def call(self, anchors, gt_boxes):
    return rpn_targets(anchors, gt_boxes, self.batch_size_per_image,
                       self.positive_fraction, self.positive_iou,
                       self.negative_iou, self.uniform)

  def get_config(self):
    return {**super().get_config(),
            'batch_size_per_image': self.batch_size_per_image,
            'positive_fraction': self.positive_fraction,
            'positive_iou': self.positive_iou,
            'negative_iou': self.negative_iou}
