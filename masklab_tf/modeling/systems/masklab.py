"""MaskLab as tf_keras functional models (Chen et al., CVPR 2018, Fig. 2).

Two functional graphs share every layer:

- `train_model(image, image_size, gt_boxes, gt_classes)` returns what the
  losses read: RPN outputs and targets, sampled RoIs with their matched
  ground truth and the box classifier's outputs, and the mask head's outputs
  on the ground-truth boxes (paper 4.1: the semantic and direction branches
  are trained with ground-truth boxes only; jittered boxes misalign the
  direction layout).
- `inference_model(image, image_size)` returns NMS'd detections, one
  box-relative mask per detection (on the predicted boxes and classes) and
  the dense semantic segmentation.

Images enter as uint8 (or float 0..255) [B, H, W, 3], padded to a multiple of
the output stride; `image_size` [B, 2] is the valid (unpadded) size.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling.backbones import resnet as backbone_lib
from masklab_tf.modeling.heads import box_head
from masklab_tf.modeling import losses as losses_lib
from masklab_tf.modeling.heads import masklab_head
from masklab_tf.postprocess import detections as detections_lib
from masklab_tf.modeling.layers import roi_sampler
from masklab_tf.modeling.heads import rpn_head as rpn_head_lib

# ImageNet statistics in 0..255 RGB, as Model Garden normalises.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@tf_keras.utils.register_keras_serializable(package='masklab')
class ImageNormalization(tf_keras.layers.Layer):
  """uint8 / 0..255 RGB -> ImageNet-normalised float."""

  def call(self, images):
    images = tf.cast(images, tf.float32)
    return (images - MEAN_RGB) / STDDEV_RGB


@tf_keras.utils.register_keras_serializable(package='masklab')
class RpnTargets(tf_keras.layers.Layer):
  """Anchors + ground truth -> RPN labels and box targets (rpn_head_lib.rpn_targets)."""

  def __init__(self, batch_size_per_image=256, positive_fraction=0.5,
               positive_iou=0.7, negative_iou=0.3, **kwargs):
    super().__init__(**kwargs)
    self.batch_size_per_image = batch_size_per_image
    self.positive_fraction = positive_fraction
    self.positive_iou = positive_iou
    self.negative_iou = negative_iou

  def call(self, anchors, gt_boxes):
    return rpn_head_lib.rpn_targets(anchors, gt_boxes, self.batch_size_per_image,
                           self.positive_fraction, self.positive_iou,
                           self.negative_iou)

  def get_config(self):
    return {**super().get_config(),
            'batch_size_per_image': self.batch_size_per_image,
            'positive_fraction': self.positive_fraction,
            'positive_iou': self.positive_iou,
            'negative_iou': self.negative_iou}


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


@tf_keras.utils.register_keras_serializable(package='masklab')
class SemanticMap(tf_keras.layers.Layer):
  """Semantic logits at stride s -> class map [B, H, W] at input resolution.

  Logits are upsampled bilinearly before the argmax (DeepLab), with the
  stride-s cell centres at the image positions the losses sample.
  """

  def call(self, logits, images):
    size = tf.shape(images)[1:3]
    upsampled = tf.image.resize(tf.cast(logits, tf.float32), size,
                                method='bilinear')
    return tf.cast(tf.argmax(upsampled, axis=-1), tf.int32)


class MaskLabModels(NamedTuple):
  train_model: tf_keras.Model
  inference_model: tf_keras.Model
  backbone: tf_keras.Model


def build_masklab(cfg: config_lib.ModelConfig,
                  geometry: config_lib.GeometryConfig | None = None,
                  max_instances: int = 100,
                  image_shape: tuple = (None, None),
                  use_xla: bool = True) -> MaskLabModels:
  """Builds the two functional MaskLab graphs over shared layers."""
  geometry = geometry or config_lib.GeometryConfig()
  stride = cfg.output_stride
  res4_stride = 8 if stride == 8 else 16
  image = tf_keras.Input(shape=(*image_shape, 3), name='image')
  image_size = tf_keras.Input(shape=(2,), dtype=tf.int32, name='image_size')
  gt_boxes = tf_keras.Input(shape=(max_instances, 4), name='gt_boxes')
  gt_classes = tf_keras.Input(shape=(max_instances,), dtype=tf.int32,
                              name='gt_classes')

  backbone = backbone_lib.build_backbone(
      cfg.backbone_depth, stride, tuple(cfg.backbone_multigrid),
      norm_momentum=cfg.norm_momentum, norm_epsilon=cfg.norm_epsilon,
      use_sync_bn=cfg.use_sync_bn)
  anchors_layer = rpn_head_lib.RpnAnchors(res4_stride, cfg.anchor_sizes,
                                 cfg.anchor_aspect_ratios, dtype='float32',
                                 name='anchors')
  rpn_head = rpn_head_lib.RpnHead(anchors_layer.num_anchors, cfg.rpn_head_channels,
                         name='rpn_head')
  proposals_layer = rpn_head_lib.ProposalGenerator(
      pre_nms_top_k=cfg.rpn_pre_nms_top_k, nms_iou=cfg.rpn_nms_iou,
      num_proposals=cfg.num_proposals,
      test_pre_nms_top_k=cfg.rpn_pre_nms_top_k,
      test_num_proposals=cfg.test_num_proposals, dtype='float32',
      name='proposals')
  classifier = box_head.BoxClassifier(
      cfg.num_classes, cfg.backbone_depth, cfg.box_classifier_multigrid,
      crop_size=cfg.roi_crop_size, feature_stride=res4_stride,
      deformable=cfg.deformable_crop, norm_momentum=cfg.norm_momentum,
      norm_epsilon=cfg.norm_epsilon, use_sync_bn=cfg.use_sync_bn,
      name='box_classifier')
  mask_head = masklab_head.build_mask_head(
      cfg.mask_head, num_classes=cfg.num_classes,
      crop_size=geometry.mask_crop_size,
      num_directions=geometry.num_directions,
      num_distance_bins=geometry.num_distance_bins, output_stride=stride,
      features=cfg.mask_features, refine=cfg.refine,
      hypercolumn_channels=cfg.hypercolumn_channels,
      refine_filters=cfg.refine_filters, ps_grid_size=cfg.ps_grid_size,
      ps_grid_size_fine=cfg.ps_grid_size_fine,
      ps_feature_channels=cfg.ps_feature_channels,
      semantic_head=cfg.semantic_head, use_xla=use_xla,
      name='mask_head')

  normalized = ImageNormalization(name='normalize')(image)
  endpoints = backbone(normalized)
  rpn_scores, rpn_deltas = rpn_head(endpoints['res4'])
  anchors = anchors_layer(endpoints['res4'])

  # Training graph.
  proposals, _ = proposals_layer(rpn_scores, rpn_deltas, anchors, image_size,
                                 training=True)
  rpn_labels, rpn_box_targets = RpnTargets(
      cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction,
      cfg.rpn_positive_iou, cfg.rpn_negative_iou, dtype='float32',
      name='rpn_targets')(anchors, gt_boxes)
  rois, matched_boxes, matched_classes = roi_sampler.RoiSampler(
      cfg.num_sampled_rois, cfg.roi_foreground_fraction,
      cfg.roi_foreground_iou, dtype='float32', name='roi_sampler')(
          proposals, gt_boxes, gt_classes)
  class_logits, box_deltas = classifier(endpoints['res4'], rois)
  mask_boxes, mask_classes = TrimInstancePadding(
      dtype='float32', name='trim_instance_padding')(gt_boxes, gt_classes)
  train_masks = mask_head(endpoints, mask_boxes, mask_classes)
  train_outputs = {
      'rpn_scores': rpn_scores, 'rpn_deltas': rpn_deltas,
      'rpn_labels': rpn_labels, 'rpn_box_targets': rpn_box_targets,
      'rois': rois, 'matched_boxes': matched_boxes,
      'matched_classes': matched_classes, 'class_logits': class_logits,
      'box_deltas': box_deltas, **train_masks}
  train_model = tf_keras.Model(
      inputs={'image': image, 'image_size': image_size,
              'gt_boxes': gt_boxes, 'gt_classes': gt_classes},
      outputs=train_outputs, name='masklab_train')

  # Inference graph.
  test_proposals, _ = proposals_layer(rpn_scores, rpn_deltas, anchors,
                                      image_size, training=False)
  test_logits, test_deltas = classifier(endpoints['res4'], test_proposals)
  detections = detections_lib.Detections(
      cfg.max_detections, cfg.detection_nms_iou,
      cfg.detection_score_threshold, dtype='float32', name='detections')(
          test_logits, test_deltas, test_proposals, image_size)
  test_masks = mask_head(endpoints, detections['detection_boxes'],
                         detections['detection_classes'])
  inference_outputs = {
      'num_detections': detections['num_detections'],
      'detection_boxes': detections['detection_boxes'],
      'detection_classes': detections['detection_classes'],
      'detection_scores': detections['detection_scores'],
      'detection_masks': tf_keras.layers.Activation(
          'sigmoid', dtype='float32', name='mask_probabilities')(
              test_masks['mask_logits']),
      # float32 outputs whatever the compute policy (serving signatures).
      'semantic_logits': tf_keras.layers.Activation(
          'linear', dtype='float32', name='semantic_logits_float32')(
              test_masks['semantic_logits']),
      'semantic_map': SemanticMap(dtype='float32', name='semantic_map')(
          test_masks['semantic_logits'], image),
  }
  inference_model = tf_keras.Model(
      inputs={'image': image, 'image_size': image_size},
      outputs=inference_outputs, name='masklab')
  return MaskLabModels(train_model, inference_model, backbone)


def compute_losses(outputs: dict, batch: dict, cfg: config_lib.ModelConfig
                   ) -> dict[str, tf.Tensor]:
  """All MaskLab losses of one replica's batch; 'total' is their sum.

  Args:
    outputs: train_model's outputs.
    batch: the input pipeline's batch (data/pipeline.py).
    cfg: weights of the optional dense losses.
  """
  rpn_score, rpn_box = losses_lib.rpn_losses(
      outputs['rpn_scores'], outputs['rpn_deltas'], outputs['rpn_labels'],
      outputs['rpn_box_targets'])
  box_class, box_box = losses_lib.box_classifier_losses(
      outputs['class_logits'], outputs['box_deltas'], outputs['rois'],
      outputs['matched_boxes'], outputs['matched_classes'])
  # The mask branch ran on the first n ground-truth slots only
  # (TrimInstancePadding); the slots after them hold no instance.
  kept = tf.shape(outputs['coarse_mask_logits'])[1]
  mask_targets = batch['gt_mask_targets'][:, :kept]
  mask_classes = batch['gt_classes'][:, :kept]
  losses = {
      'rpn_score': rpn_score, 'rpn_box': rpn_box,
      'box_class': box_class, 'box_regression': box_box,
      'mask_coarse': losses_lib.mask_loss(
          outputs['coarse_mask_logits'], mask_targets, mask_classes),
  }
  if cfg.refine:
    losses['mask_refined'] = losses_lib.mask_loss(
        outputs['mask_logits'], mask_targets, mask_classes)
  stride = cfg.output_stride
  if cfg.semantic_loss_weight:
    losses['semantic'] = cfg.semantic_loss_weight * (
        losses_lib.dense_softmax_loss(
            outputs['semantic_logits'],
            losses_lib.labels_at_stride(batch['semantic_labels'], stride)))
  if cfg.direction_loss_weight:
    losses['direction'] = cfg.direction_loss_weight * (
        losses_lib.dense_softmax_loss(
            outputs['direction_logits'],
            losses_lib.labels_at_stride(batch['direction_labels'], stride)))
  losses['total'] = tf.add_n(list(losses.values()))
  return losses


def model_inputs(batch: dict, training: bool) -> dict:
  """The pipeline batch's entries that the train / inference model takes."""
  keys = ('image', 'image_size', 'gt_boxes', 'gt_classes') if training else (
      'image', 'image_size')
  return {k: batch[k] for k in keys}


def load_imagenet_checkpoint(models: MaskLabModels, checkpoint_path: str,
                             cfg: config_lib.ModelConfig) -> dict:
  """ImageNet ResNet weights into the backbone and the box classifier's
  duplicated conv5 block (paper Table 6 "BC": initialise the box classifier
  from the same checkpoint). Returns the matched / unmatched report."""
  names = {layer.name for layer in models.train_model.layers}
  conv5_blocks = ([models.train_model.get_layer('box_classifier').conv5]
                  if 'box_classifier' in names else [])  # InstanceFCN: none.
  return backbone_lib.load_resnet_checkpoint(
      models.backbone, checkpoint_path, cfg.backbone_depth,
      conv5_blocks=conv5_blocks)
