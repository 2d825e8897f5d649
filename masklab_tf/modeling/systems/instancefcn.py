"""InstanceFCN (Dai et al., ECCV 2016): class-agnostic segment proposals.

A system of its own beside the Faster R-CNN ones (no box branch), built on
the same atrous ResNet, assembling layer, data pipeline, training loop and
evaluator (--mask_head=instancefcn):

- On res5 (stride 8 as the paper's modified VGG-16), k x k
  instance-sensitive score maps (k = 5) and the objectness of the window
  centred at each position (heads/instancefcn_head.py).
- A window's segment is assembled from the k x k maps (cell (i, j) of the
  window copies the same cell of map i k + j): the assembling layer's
  'grid' channel map (ops/assemble.py), sampled at S x S over the window.
- The paper covers scales with an image pyramid (shorter side
  600 x 1.5^{-4..1}) and one 21 x 21 window (168 px at stride 8). Here the
  pyramid is folded into the windows: one objectness channel per window
  size, windows of several sizes assembled from the same maps (defaults:
  168 px seen at those six scales). The assembled S x S segment of a window
  w px wide equals the paper's 21 x 21 one resampled, without running the
  network six times.
- Training (sec. 3.3): 256 windows sampled per image, positives : negatives
  = 1 : 1, labelled by DeepMask's rule (ops/windows.py). Loss: logistic loss
  on the objectness of the sampled windows plus per-pixel logistic loss of
  the positive windows' segments against the object's mask cropped to the
  window (eq. 1).
- Inference: segment proposals on their tight boxes, class 1
  (postprocess/segment_proposals.py); no semantic map.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling import losses as losses_lib
from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import instancefcn_head
from masklab_tf.modeling.layers import image_normalization
from masklab_tf.modeling.layers import windows as window_layers
from masklab_tf.modeling.systems import base
from masklab_tf.ops import assemble
from masklab_tf.postprocess import segment_proposals

_OWNER = 'InstanceFCN (--mask_head=instancefcn)'


class InstanceFcnSystem(base.System):
  """InstanceFCN's models and loss (see the module docstring)."""

  class_agnostic = True
  needs_full_masks = True
  train_inputs = ('image', 'image_size', 'gt_boxes', 'gt_masks')

  def __init__(self, name: str, cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None):
    super().__init__(name, cfg, geometry)
    # Switches of the Faster R-CNN systems' parts, which this one lacks;
    # their sizes (anchors, RoIs, ...) may stand in a shared flags file.
    head_config.require(cfg, 'mask_features', ('both',), _OWNER,
                        "has no MaskLab feature crops to ablate")
    head_config.require(cfg, 'refine', (True,), _OWNER,
                        'has no refinement stage to turn off')
    head_config.require(cfg, 'refine_features',
                        (config_lib.ModelConfig.refine_features,), _OWNER,
                        'has no refinement stage to feed')
    head_config.require(cfg, 'deformable_crop', (False,), _OWNER,
                        'has no box classifier to crop for')
    head_config.require(cfg, 'semantic_head', ('conv1x1',), _OWNER,
                        'predicts no semantic logits')
    for field in ('semantic_loss_weight', 'direction_loss_weight'):
      head_config.require(cfg, field, (0, 0.0), _OWNER,
                          f'predicts no dense maps; set --{field}=0')

  def build(self, max_instances: int = 100,
            image_shape: tuple = (None, None),
            use_xla: bool = True, gather_crops: bool = False,
            portable: bool = False) -> base.Models:
    """(`gather_crops` changes nothing: InstanceFCN crops no RoI features,
    its windows are the assembling layer's gathers; nor does `portable`:
    its NMS is class-agnostic, which ONNX expresses as it is.)

    train_model(image, image_size, gt_boxes, gt_masks) returns
    objectness_logits [B, N], window_labels [B, N], segment_logits
    [B, P, S, S], segment_targets [B, P, S, S] and segment_valid [B, P];
    inference_model(image, image_size) returns segment proposals in the
    detection format (base.DETECTION_OUTPUTS)."""
    del gather_crops, portable
    cfg = self.cfg
    stride = cfg.output_stride
    image = tf_keras.Input(shape=(*image_shape, 3), name='image')
    image_size = tf_keras.Input(shape=(2,), dtype=tf.int32,
                                name='image_size')
    gt_boxes = tf_keras.Input(shape=(max_instances, 4), name='gt_boxes')
    gt_masks = tf_keras.Input(shape=(max_instances, *image_shape),
                              dtype=tf.uint8, name='gt_masks')

    backbone = resnet.build_backbone(
        cfg.backbone_depth, stride, tuple(cfg.backbone_multigrid),
        norm_momentum=cfg.norm_momentum, norm_epsilon=cfg.norm_epsilon,
        use_sync_bn=cfg.use_sync_bn)
    window_sizes = tuple(cfg.ifcn_window_sizes)
    head = instancefcn_head.InstanceFcnHead(
        cfg.ifcn_grid_size, len(window_sizes), cfg.ifcn_channels,
        name='instancefcn_head')
    # Window geometry, sampling, targets and NMS stay float32 under a mixed
    # precision policy (bfloat16 has 8 significant bits: pixels, not boxes).
    windows_layer = window_layers.SlidingWindows(
        stride, window_sizes, dtype='float32', name='windows')
    assembler = assemble.PositionSensitiveAssemble(
        crop_size=cfg.ifcn_crop_size, feature_stride=stride,
        channel_map_kind='grid', grid_size=cfg.ifcn_grid_size,
        use_xla=use_xla, name='assemble')

    normalized = image_normalization.ImageNormalization(name='normalize')(
        image)
    res5 = backbone(normalized)['res5']
    score_maps, objectness = head(res5)
    windows = windows_layer(res5)

    labels, positive_boxes, positive_objects, positive_valid = (
        window_layers.WindowSampler(
            stride, window_sizes, cfg.ifcn_windows_per_image, 0.5,
            dtype='float32', name='window_sampler')(
                windows, gt_boxes, image_size))
    train_model = tf_keras.Model(
        inputs={'image': image, 'image_size': image_size,
                'gt_boxes': gt_boxes, 'gt_masks': gt_masks},
        outputs={
            'objectness_logits': tf_keras.layers.Reshape(
                (-1,), name='flat_objectness')(objectness),
            'window_labels': labels,
            'segment_logits': assembler(score_maps, positive_boxes),
            'segment_targets': window_layers.WindowMaskTargets(
                cfg.ifcn_crop_size, dtype='float32',
                name='segment_targets')(gt_masks, positive_objects,
                                        positive_boxes),
            'segment_valid': positive_valid,
        }, name='instancefcn_train')

    top_windows, top_scores = window_layers.TopWindows(
        cfg.ifcn_pre_nms_top_k, dtype='float32', name='top_windows')(
            objectness, windows, image_size)
    proposals = segment_proposals.SegmentProposals(
        cfg.max_detections, cfg.ifcn_nms_iou, self.geometry.mask_crop_size,
        dtype='float32', name='segment_proposals')(
            top_windows, top_scores, assembler(score_maps, top_windows),
            image_size)
    inference_model = tf_keras.Model(
        inputs={'image': image, 'image_size': image_size},
        outputs=proposals, name='instancefcn')
    return base.Models(train_model, inference_model, backbone, self)

  def compute_losses(self, outputs: dict, batch: dict
                     ) -> dict[str, tf.Tensor]:
    """Eq. 1: logistic loss on the sampled windows' objectness, plus the
    per-pixel logistic loss of the positive windows' segments (mean over
    their pixels); 'total' is the sum. The targets were made in the
    graph, so `batch` is not read."""
    del batch
    labels = outputs['window_labels']
    sampled = labels >= 0
    ce = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(labels > 0, tf.float32),
        logits=tf.cast(outputs['objectness_logits'], tf.float32))
    objectness = losses_lib.safe_mean(
        tf.reduce_sum(tf.where(sampled, ce, 0.0)),
        tf.reduce_sum(tf.cast(sampled, tf.float32)))
    segment = losses_lib.mask_loss(
        outputs['segment_logits'], outputs['segment_targets'],
        tf.cast(outputs['segment_valid'], tf.int32))
    return {'objectness': objectness, 'segment': segment,
            'total': objectness + segment}
