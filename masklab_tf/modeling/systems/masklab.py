"""Faster R-CNN with a mask head from the registry: MaskLab, its ablations,
FCIS and BiSeg (Chen et al., CVPR 2018, Fig. 2).

- The training graph (image, image_size, gt_boxes, gt_classes) returns what
  the losses read: RPN outputs and targets, sampled RoIs with their matched
  ground truth and the box classifier's outputs, and the mask head's outputs
  on the ground-truth boxes (paper 4.1: the semantic and direction branches
  are trained with ground-truth boxes only; jittered boxes misalign the
  direction layout).
- The inference graph (image, image_size) returns NMS'd detections, one
  box-relative mask per detection (on the predicted boxes and classes) and
  the dense semantic segmentation.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling import losses as losses_lib
from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import box_head
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import registry as heads_registry
from masklab_tf.modeling.heads import rpn_head
from masklab_tf.modeling.layers import image_normalization
from masklab_tf.modeling.layers import instance_padding
from masklab_tf.modeling.layers import roi_sampler
from masklab_tf.modeling.layers import rpn
from masklab_tf.modeling.systems import base
from masklab_tf.postprocess import detections as detections_lib
from masklab_tf.postprocess import semantic_map

# The dense auxiliary losses: (loss name, its weight's field, the head
# output it reads, the pipeline's labels it compares with).
DENSE_LOSSES = (
    ('semantic', 'semantic_loss_weight', outputs_lib.SEMANTIC_LOGITS,
     'semantic_labels'),
    ('direction', 'direction_loss_weight', outputs_lib.DIRECTION_LOGITS,
     'direction_labels'),
)


class MaskLabSystem(base.System):
  """A two-stage detector whose masks come from `head` (heads/registry.py).

  `mask_features` fixes MaskLab's feature ablation (paper Table 2) for the
  ablation systems (masklab_semantic_only, masklab_direction_only).
  """

  train_inputs = ('image', 'image_size', 'gt_boxes', 'gt_classes')
  inference_outputs = base.DETECTION_OUTPUTS + base.SEMANTIC_OUTPUTS

  def __init__(self, name: str, cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None, *,
               head: str, mask_features: str | None = None):
    """Args: name, cfg, geometry: as base.System; head: the mask head's
    registry name; mask_features: the feature ablation this system fixes
    (None: cfg.mask_features decides)."""
    super().__init__(name, cfg, geometry)
    self.head_name = head
    self.head_class = heads_registry.get_mask_head_class(head)
    self.mask_features = mask_features
    if mask_features is not None:
      head_config.require(
          cfg, 'mask_features', ('both', mask_features),
          f'--mask_head={name}',
          f'fixes the features to {mask_features!r}; for another ablation '
          f'use --mask_head={head} --mask_features=...')
    if outputs_lib.SEMANTIC_LOGITS not in self.head_class.PREDICTS:
      raise TypeError(f'the {head} mask head must predict '
                      f'{outputs_lib.SEMANTIC_LOGITS}: the inference graph '
                      'returns the semantic map (heads/registry.py)')
    for _, field, output, _ in DENSE_LOSSES:
      if getattr(cfg, field) and output not in self.head_class.PREDICTS:
        raise head_config.UnsupportedSettingError(
            f'--{field}={getattr(cfg, field)}: the {head} mask head predicts '
            f'no {output}; set --{field}=0 (heads with {output}: '
            + ', '.join(sorted(n for n, c in heads_registry.MASK_HEADS.items()
                               if output in c.PREDICTS)) + ')')
    self.endpoint_strides = resnet.endpoint_strides(cfg.output_stride)

  def build(self, max_instances: int = 100,
            image_shape: tuple = (None, None),
            use_xla: bool = True, gather_crops: bool = False,
            portable: bool = False) -> base.Models:
    cfg = self.cfg
    res4_stride = self.endpoint_strides['res4']
    image = tf_keras.Input(shape=(*image_shape, 3), name='image')
    image_size = tf_keras.Input(shape=(2,), dtype=tf.int32,
                                name='image_size')
    gt_boxes = tf_keras.Input(shape=(max_instances, 4), name='gt_boxes')
    gt_classes = tf_keras.Input(shape=(max_instances,), dtype=tf.int32,
                                name='gt_classes')

    backbone = resnet.build_backbone(
        cfg.backbone_depth, cfg.output_stride, tuple(cfg.backbone_multigrid),
        norm_momentum=cfg.norm_momentum, norm_epsilon=cfg.norm_epsilon,
        use_sync_bn=cfg.use_sync_bn)
    # Geometry (anchors, proposals, sampling, NMS) stays float32 under the
    # mixed precision policies: bfloat16 has 8 significant bits.
    anchors_layer = rpn.RpnAnchors(res4_stride, cfg.anchor_sizes,
                                   cfg.anchor_aspect_ratios, dtype='float32',
                                   name='anchors')
    rpn_layer = rpn_head.RpnHead(anchors_layer.num_anchors,
                                 cfg.rpn_head_channels, name='rpn_head')
    proposals_layer = rpn.ProposalGenerator(
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
        gather_crops=gather_crops, name='box_classifier')
    mask_head = self.head_class.from_model_config(
        cfg, self.geometry, self.endpoint_strides, use_xla=use_xla,
        gather_crops=gather_crops, name='mask_head',
        **({'features': self.mask_features} if self.mask_features else {}))

    normalized = image_normalization.ImageNormalization(name='normalize')(
        image)
    endpoints = backbone(normalized)
    rpn_scores, rpn_deltas = rpn_layer(endpoints['res4'])
    anchors = anchors_layer(endpoints['res4'])

    # Training graph.
    proposals, _ = proposals_layer(rpn_scores, rpn_deltas, anchors,
                                   image_size, training=True)
    rpn_labels, rpn_box_targets = rpn.RpnTargets(
        cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction,
        cfg.rpn_positive_iou, cfg.rpn_negative_iou, dtype='float32',
        name='rpn_targets')(anchors, gt_boxes)
    rois, matched_boxes, matched_classes = roi_sampler.RoiSampler(
        cfg.num_sampled_rois, cfg.roi_foreground_fraction,
        cfg.roi_foreground_iou, dtype='float32', name='roi_sampler')(
            proposals, gt_boxes, gt_classes)
    class_logits, box_deltas = classifier(endpoints['res4'], rois)
    mask_boxes, mask_classes = instance_padding.TrimInstancePadding(
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
        cfg.detection_score_threshold, portable, dtype='float32',
        name='detections')(
            test_logits, test_deltas, test_proposals, image_size)
    test_masks = outputs_lib.MaskHeadOutputs(self.head_name, mask_head(
        endpoints, detections['detection_boxes'],
        detections['detection_classes']))
    inference_outputs = {
        'num_detections': detections['num_detections'],
        'detection_boxes': detections['detection_boxes'],
        'detection_classes': detections['detection_classes'],
        'detection_scores': detections['detection_scores'],
        'detection_masks': tf_keras.layers.Activation(
            'sigmoid', dtype='float32', name='mask_probabilities')(
                test_masks.mask_logits),
        # float32 outputs whatever the compute policy (serving signatures).
        'semantic_logits': tf_keras.layers.Activation(
            'linear', dtype='float32', name='semantic_logits_float32')(
                test_masks.semantic_logits),
        'semantic_map': semantic_map.SemanticMap(
            dtype='float32', name='semantic_map')(test_masks.semantic_logits,
                                                  image),
    }
    inference_model = tf_keras.Model(
        inputs={'image': image, 'image_size': image_size},
        outputs=inference_outputs, name='masklab')
    return base.Models(train_model, inference_model, backbone, self)

  def compute_losses(self, outputs: dict, batch: dict
                     ) -> dict[str, tf.Tensor]:
    """RPN, box classifier and mask losses, plus the dense auxiliary losses
    whose weights are set; 'total' is their sum."""
    cfg = self.cfg
    masks = outputs_lib.MaskHeadOutputs(self.head_name, outputs)
    rpn_score, rpn_box = losses_lib.rpn_losses(
        outputs['rpn_scores'], outputs['rpn_deltas'], outputs['rpn_labels'],
        outputs['rpn_box_targets'])
    box_class, box_box = losses_lib.box_classifier_losses(
        outputs['class_logits'], outputs['box_deltas'], outputs['rois'],
        outputs['matched_boxes'], outputs['matched_classes'])
    # The mask branch ran on the first n ground-truth slots only
    # (TrimInstancePadding); the slots after them hold no instance.
    kept = tf.shape(masks.coarse_mask_logits)[1]
    mask_targets = batch['gt_mask_targets'][:, :kept]
    mask_classes = batch['gt_classes'][:, :kept]
    losses = {
        'rpn_score': rpn_score, 'rpn_box': rpn_box,
        'box_class': box_class, 'box_regression': box_box,
        'mask_coarse': losses_lib.mask_loss(
            masks.coarse_mask_logits, mask_targets, mask_classes),
    }
    if cfg.refine:
      # Heads without refinement (FCIS, BiSeg) return their one mask as
      # both, so their mask loss counts twice, as it always has.
      losses['mask_refined'] = losses_lib.mask_loss(
          masks.mask_logits, mask_targets, mask_classes)
    for loss, field, output, labels in DENSE_LOSSES:
      weight = getattr(cfg, field)
      if weight:
        losses[loss] = weight * losses_lib.dense_softmax_loss(
            masks.dense(output, f'--{field}'),
            losses_lib.labels_at_stride(batch[labels], cfg.output_stride))
    losses['total'] = tf.add_n(list(losses.values()))
    return losses
