"""RoI sampling for the box classifier (Faster R-CNN, second stage).

Proposals plus the ground-truth boxes are matched to ground truth by IoU;
a fixed number per image is sampled with a bounded foreground fraction.
Vectorised over the batch with a dynamic batch size (Model Garden's
ROISampler needs a static one).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
from official.vision.ops import box_ops

from masklab_tf.modeling.layers import sampler_base
from masklab_tf.ops import sampling


def sample_rois(proposals, gt_boxes, gt_classes, num_samples: int = 64,
                foreground_fraction: float = 0.25,
                foreground_iou: float = 0.5, uniform=None):
  """Samples RoIs and assigns their targets.

  Hand-written because the batch is dynamic here (the functional training
  graph has no static batch) and Model Garden's `ROISampler` loops over a
  static one: in a tf.function with an unknown batch it fails with
  "'NoneType' object cannot be interpreted as an integer"
  (tf-models-official 2.20); the balanced sampling is
  `ops/sampling.sample_labels`, vectorised over the batch. IoU is Model
  Garden's `box_ops.bbox_overlap`.

  Args:
    proposals: [B, P, 4] image-pixel boxes (zero boxes are padding).
    gt_boxes: [B, M, 4], padded with -1.
    gt_classes: int [B, M], padded with -1.
    num_samples: RoIs per image.
    foreground_fraction: at most this share of them foreground.
    foreground_iou: IoU at which a RoI is foreground (below: background).
    uniform: shape -> float32 draws in [0, 1) that choose and order the
      sample (default tf.random.uniform).

  Returns:
    rois: [B, num_samples, 4].
    matched_boxes: [B, num_samples, 4], ground truth of each RoI (its own
      box for background RoIs, which the box loss ignores).
    matched_classes: int32 [B, num_samples]: 1..K foreground, 0 background,
      -1 unused (an image with fewer candidates than num_samples).
  """
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  candidates = tf.concat([tf.cast(proposals, tf.float32), gt_boxes], axis=1)
  valid_gt = gt_boxes[..., 0] >= 0
  iou = box_ops.bbox_overlap(candidates, gt_boxes)  # [B, P+M, M]
  iou = tf.where(valid_gt[:, tf.newaxis, :], iou, -1.0)
  best_iou = tf.reduce_max(iou, axis=2)
  best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
  heights = candidates[..., 2] - candidates[..., 0]
  widths = candidates[..., 3] - candidates[..., 1]
  real = (heights > 0) & (widths > 0)
  has_gt = tf.reduce_any(valid_gt, axis=1, keepdims=True)
  foreground = real & (best_iou >= foreground_iou)
  background = real & ~foreground & ((best_iou >= 0) | ~has_gt)
  uniform = uniform or tf.random.uniform
  labels = sampling.sample_labels(foreground, background, num_samples,
                                  foreground_fraction, uniform)
  # Chosen candidates first (random order among them), then the rest.
  priority = tf.cast(labels >= 0, tf.float32) * 2.0 + uniform(
      tf.shape(best_iou))
  _, index = tf.math.top_k(priority, k=num_samples)
  chosen = tf.gather(labels, index, batch_dims=1)
  rois = tf.gather(candidates, index, batch_dims=1)
  matched_gt = tf.gather(best_gt, index, batch_dims=1)
  matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
  matched_classes = tf.gather(tf.cast(gt_classes, tf.int32), matched_gt,
                              batch_dims=1)
  matched_classes = tf.where(chosen == 1, matched_classes,
                             tf.where(chosen == 0, 0, -1))
  matched_boxes = tf.where((chosen == 1)[..., tf.newaxis], matched_boxes,
                           rois)
  return (tf.stop_gradient(rois), tf.stop_gradient(matched_boxes),
          tf.stop_gradient(matched_classes))


@tf_keras.utils.register_keras_serializable(package='masklab')
class RoiSampler(sampler_base.SamplerLayer):
  """Layer form of `sample_rois`, for the functional training graph,
  sampling with the layer's own checkpointed generator."""

  def __init__(self, num_samples: int = 64, foreground_fraction: float = 0.25,
               foreground_iou: float = 0.5, seed: int | None = None,
               **kwargs):
    """Args: as `sample_rois`; seed: the generator's (SamplerLayer)."""
    super().__init__(seed=seed, **kwargs)
    self.num_samples = num_samples
    self.foreground_fraction = foreground_fraction
    self.foreground_iou = foreground_iou

  def call(self, proposals, gt_boxes, gt_classes):
    return sample_rois(proposals, gt_boxes, gt_classes, self.num_samples,
                       self.foreground_fraction, self.foreground_iou,
                       self.uniform)

  def get_config(self):
    return {**super().get_config(), 'num_samples': self.num_samples,
            'foreground_fraction': self.foreground_fraction,
            'foreground_iou': self.foreground_iou}
