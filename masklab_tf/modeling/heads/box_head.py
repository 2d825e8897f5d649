"""Faster R-CNN box classifier: a duplicated conv5 block on res4 RoI crops.

MaskLab (sec. 3) shares features up to res4 and gives the box classifier "one
extra duplicate conv5 block" with its own weights (initialisable from the
same ImageNet checkpoint) and its own multi-grid rates (paper best:
(1, 2, 4)). As in TF Object Detection API's ResNet Faster R-CNN, each RoI is
cropped from res4 at 14 x 14 (optionally with MaskLab's deformable
crop-and-resize), max-pooled to 7 x 7, run through the block, averaged, and
mapped to K + 1 class logits and class-specific box deltas.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.backbones import resnet as backbone_lib
from masklab_tf.ops import roi_crop


@tf_keras.utils.register_keras_serializable(package='masklab')
class BoxClassifier(tf_keras.layers.Layer):
  """res4 [B, H, W, C], rois [B, N, 4] -> logits [B, N, K+1],
  deltas [B, N, 4 (K+1)] (encoded with weights 10, 10, 5, 5)."""

  def __init__(self, num_classes: int, backbone_depth: int,
               multigrid=(1, 2, 4), crop_size: int = 14,
               feature_stride: int = 8, deformable: bool = False,
               norm_momentum: float = 0.997, norm_epsilon: float = 1e-5,
               use_sync_bn: bool = False, gather_crops: bool = False,
               **kwargs):
    """Args: num_classes: K; backbone_depth: the ResNet depth whose conv5
    block is duplicated; multigrid: its atrous rates; crop_size: RoI crop
    side on res4 before 2x2 max pooling; feature_stride: res4's stride;
    deformable: MaskLab's deformable crop-and-resize; norm_momentum,
    norm_epsilon, use_sync_bn: batch norm; gather_crops: crop RoIs by
    gathering (roi_crop.crop_rois' `gather`: deterministic runs on a GPU);
    **kwargs: Layer arguments."""
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.backbone_depth = backbone_depth
    self.multigrid = tuple(multigrid)
    self.crop_size = crop_size
    self.feature_stride = feature_stride
    self.deformable = deformable
    self.norm_momentum = norm_momentum
    self.norm_epsilon = norm_epsilon
    self.use_sync_bn = use_sync_bn
    self.gather_crops = gather_crops

  def build(self, input_shape):
    self.crop = roi_crop.DeformableCropAndResize(
        crop_size=self.crop_size, feature_stride=self.feature_stride,
        use_deformation=self.deformable, gather=self.gather_crops,
        name='roi_crop')
    self.pool = tf_keras.layers.MaxPool2D(2, name='roi_pool')
    self.conv5 = backbone_lib.build_conv5_block(
        self.backbone_depth, self.multigrid,
        norm_momentum=self.norm_momentum, norm_epsilon=self.norm_epsilon,
        use_sync_bn=self.use_sync_bn)
    self.class_logits = tf_keras.layers.Dense(
        self.num_classes + 1, name='class_logits',
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01))
    self.box_deltas = tf_keras.layers.Dense(
        4 * (self.num_classes + 1), name='box_deltas',
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.001))
    super().build(input_shape)

  def call(self, res4, rois, training=None):
    crops = self.crop(res4, rois)  # [B, N, s, s, C]
    shape = tf.shape(crops)
    batch, num = shape[0], shape[1]
    flat = tf.reshape(crops, tf.concat([[-1], shape[2:]], 0))
    net = self.conv5(self.pool(flat), training=training)
    net = tf.reduce_mean(net, axis=[1, 2])
    logits = self.class_logits(net)
    deltas = self.box_deltas(net)
    return (tf.reshape(logits, [batch, num, self.num_classes + 1]),
            tf.reshape(deltas, [batch, num, 4 * (self.num_classes + 1)]))

  def get_config(self):
    return {
        **super().get_config(),
        'num_classes': self.num_classes,
        'backbone_depth': self.backbone_depth,
        'multigrid': list(self.multigrid), 'crop_size': self.crop_size,
        'feature_stride': self.feature_stride, 'deformable': self.deformable,
        'norm_momentum': self.norm_momentum,
        'norm_epsilon': self.norm_epsilon, 'use_sync_bn': self.use_sync_bn,
        'gather_crops': self.gather_crops,
    }
