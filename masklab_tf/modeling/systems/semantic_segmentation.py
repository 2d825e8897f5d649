"""Semantic-segmentation pretraining (MaskLab Table 6 "Seg").

The paper pretrains the whole network on COCO's semantic-segmentation
annotations before training MaskLab, for about +1 mAP@0.75: features that
already separate the classes pixel by pixel give the mask head's semantic
crops, and the box branch reading the same backbone, a head start. This
system is that stage (--mask_head=semantic_segmentation): MaskLab's
backbone and its semantic logits head on res5, nothing else, trained
DeepLab-style by softmax cross-entropy over K + 1 classes at every stride-s
cell (the labels the pipeline derives from the instance masks, so the same
COCO json serves both stages). Its checkpoint initialises MaskLab through
--init_checkpoint (modeling/checkpoints.py): the backbone and the semantic
logits load by name, the rest starts fresh.

The inference graph returns the semantic logits and map only; bin/train and
bin/evaluate score it by mean IoU (evaluation/semantic_metrics.py).
MaskLab's other settings (anchors, refinement, directions) describe the
system this stage initialises, so one flags file serves both stages; they
size nothing here.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling import losses as losses_lib
from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import semantic_head
from masklab_tf.modeling.layers import image_normalization
from masklab_tf.modeling.systems import base
from masklab_tf.postprocess import semantic_map

NAME = 'semantic_segmentation'
_OWNER = f'the semantic-segmentation pretraining stage (--mask_head={NAME})'
# Where MaskLab keeps the semantic logits head: this stage's layer of that
# name is MaskLab's mask_head/semantic_logits (checkpoints.py reads this).
CHECKPOINT_ALIASES = {'semantic_logits/': 'mask_head/semantic_logits/'}


class SemanticSegmentationSystem(base.System):
  """Backbone + semantic logits, dense softmax loss (module docstring)."""

  train_inputs = ('image', 'image_size')
  inference_outputs = base.SEMANTIC_OUTPUTS
  checkpoint_aliases = CHECKPOINT_ALIASES

  def __init__(self, name: str, cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None):
    super().__init__(name, cfg, geometry)
    # A flags file shared with the MaskLab stage may keep its dense
    # semantic loss switched on (weight 1): that loss is this stage's.
    head_config.require(
        cfg, 'semantic_loss_weight', (0, 0.0, 1, 1.0), _OWNER,
        'trains the semantic logits alone, at weight 1; the weight is '
        "MaskLab's auxiliary loss's: set it on the MaskLab stage")
    head_config.require(cfg, 'direction_loss_weight', (0, 0.0), _OWNER,
                        'predicts no direction logits; set '
                        '--direction_loss_weight=0')

  def build(self, max_instances: int = 100,
            image_shape: tuple = (None, None),
            use_xla: bool = True, gather_crops: bool = False,
            portable: bool = False) -> base.Models:
    """(`max_instances`, `use_xla`, `gather_crops` and `portable` change
    nothing: there are no instances, assembling layers, RoI crops or NMS.)

    train_model(image, image_size) returns {'semantic_logits' [B, h, w,
    K+1]}; inference_model(image, image_size) returns the semantic logits
    and the semantic map [B, H, W].
    """
    del max_instances, use_xla, gather_crops, portable
    cfg = self.cfg
    image = tf_keras.Input(shape=(*image_shape, 3), name='image')
    image_size = tf_keras.Input(shape=(2,), dtype=tf.int32,
                                name='image_size')
    # The same builders and arguments as MaskLab's (systems/masklab.py and
    # heads/masklab_head.py), so that every weight has MaskLab's name and
    # shape.
    backbone = resnet.build_backbone(
        cfg.backbone_depth, cfg.output_stride, tuple(cfg.backbone_multigrid),
        norm_momentum=cfg.norm_momentum, norm_epsilon=cfg.norm_epsilon,
        use_sync_bn=cfg.use_sync_bn)
    logits_layer = semantic_head.build_semantic_head(
        cfg.semantic_head, cfg.num_classes + 1, name='semantic_logits')
    normalized = image_normalization.ImageNormalization(name='normalize')(
        image)
    logits = logits_layer(backbone(normalized)['res5'])
    train_model = tf_keras.Model(
        inputs={'image': image, 'image_size': image_size},
        outputs={outputs_lib.SEMANTIC_LOGITS: logits},
        name='semantic_segmentation_train')
    inference_model = tf_keras.Model(
        inputs={'image': image, 'image_size': image_size},
        outputs={
            'semantic_logits': tf_keras.layers.Activation(
                'linear', dtype='float32', name='semantic_logits_float32')(
                    logits),
            'semantic_map': semantic_map.SemanticMap(
                dtype='float32', name='semantic_map')(logits, image)},
        name='semantic_segmentation')
    return base.Models(train_model, inference_model, backbone, self)

  def compute_losses(self, outputs: dict, batch: dict
                     ) -> dict[str, tf.Tensor]:
    """{'semantic', 'total'}: softmax cross-entropy of the logits against
    the pipeline's semantic labels at the logits' cell centres."""
    loss = losses_lib.dense_softmax_loss(
        outputs[outputs_lib.SEMANTIC_LOGITS],
        losses_lib.labels_at_stride(batch['semantic_labels'],
                                    self.cfg.output_stride))
    return {'semantic': loss, 'total': loss}
