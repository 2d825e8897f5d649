"""Position-sensitive mask heads of the seed papers: FCIS and BiSeg.

Both read inside/outside position-sensitive score maps through the
assembling layer (ops/assemble.py, 'grid' channel maps) and plug into the
mask-head registry, so they train and evaluate in the same Faster R-CNN
model as MaskLab (one box branch, one loop, one evaluator).

Score-map layout, for k x k cells and C + 1 classes (background included):
channels [0, (C+1) k^2) are the outside maps, [(C+1) k^2, 2 (C+1) k^2) the
inside maps; class c's cells start at c k^2 in each half (cell index row by
row, ops/assemble.grid_channel_map). A box of class c assembles its outside
and inside likelihoods from class c's cells.

FCIS (as BiSeg sec. 2 describes it): the foreground probability is the
softmax over (inside, outside), i.e. sigmoid(inside - outside), so the mask
logit is inside - outside. FCIS also scores the class by average pooling
max(inside, outside); here the box classifier scores classes (same as for
MaskLab), which keeps the comparison about masks.

BiSeg (sec. 3): two sets of score maps, k1 x k1 from res5 and k2 x k2 from
res3 (paper: 7 and 9); the first is assembled at half the crop size and
upsampled x2, then both are summed (Fig. 4). The semantic map is the prior:
the posterior inside score is prior x inside likelihood, the outside score
passes through, and a softmax over the two gives the foreground
probability. With likelihoods as exponentiated scores, the product is a sum
in log space: mask logit = inside + log P(c | X) - outside. BiSeg trains the
semantic map with its own per-pixel loss (L_ss): set
--semantic_loss_weight=1 (configs do).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.heads import masklab_head
from masklab_tf.modeling.heads import semantic_head as semantic_head_lib
from masklab_tf.ops import assemble


class _InsideOutside(tf_keras.layers.Layer):
  """Assembles class c's inside and outside maps for each box."""

  def __init__(self, num_classes: int, grid_size: int, crop_size: int,
               feature_stride, use_xla: bool, **kwargs):
    super().__init__(**kwargs)
    self.num_classes, self.grid_size = num_classes, grid_size
    self.assemble = assemble.PositionSensitiveAssemble(
        crop_size=crop_size, feature_stride=feature_stride,
        channel_map_kind='grid', grid_size=grid_size, use_xla=use_xla,
        name='assemble')

  def call(self, score_maps, boxes, classes):
    cells = self.grid_size ** 2
    offsets = tf.maximum(tf.cast(classes, tf.int32), 0) * cells
    outside = self.assemble(score_maps, boxes, offsets)
    inside = self.assemble(score_maps, boxes,
                           offsets + (self.num_classes + 1) * cells)
    return inside, outside


class _PositionSensitiveHead(tf_keras.layers.Layer):
  """Shared parts: the feature reduction, the semantic logits (every head
  returns them: the inference model's semantic map reads them) and the
  registry's common arguments."""

  def __init__(self, num_classes: int, crop_size: int = 41,
               output_stride: int = 8, ps_grid_size: int = 7,
               ps_feature_channels: int = 1024,
               semantic_head: str = 'conv1x1', use_xla: bool = True,
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.crop_size = crop_size
    self.output_stride = output_stride
    self.ps_grid_size = ps_grid_size
    self.ps_feature_channels = ps_feature_channels
    self.semantic_head = semantic_head
    self.use_xla = use_xla
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  def _conv(self, filters, name, activation=None):
    return tf_keras.layers.Conv2D(
        filters, 1, activation=activation, name=name,
        kernel_regularizer=self.kernel_regularizer)

  def _score_channels(self, grid_size):
    return 2 * grid_size ** 2 * (self.num_classes + 1)

  def build(self, input_shape):
    # BiSeg / FCIS: a 1x1 conv reduces res5 (2048 channels) to 1024.
    self.reduce = self._conv(self.ps_feature_channels, 'reduce', 'relu')
    self.semantic_conv = semantic_head_lib.build_semantic_head(
        self.semantic_head, self.num_classes + 1,
        kernel_regularizer=self.kernel_regularizer)
    self.score_maps = self._conv(self._score_channels(self.ps_grid_size),
                                 'score_maps')
    self.inside_outside = _InsideOutside(
        self.num_classes, self.ps_grid_size, self._coarse_crop_size(),
        self.output_stride, self.use_xla, name='inside_outside')
    super().build(input_shape)

  def _coarse_crop_size(self) -> int:
    return self.crop_size

  def get_config(self):
    return {
        **super().get_config(),
        'num_classes': self.num_classes, 'crop_size': self.crop_size,
        'output_stride': self.output_stride,
        'ps_grid_size': self.ps_grid_size,
        'ps_feature_channels': self.ps_feature_channels,
        'semantic_head': self.semantic_head, 'use_xla': self.use_xla,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer) if self.kernel_regularizer else None,
    }


@masklab_head.register('fcis')
@tf_keras.utils.register_keras_serializable(package='masklab')
class FcisHead(_PositionSensitiveHead):
  """FCIS: 2 k^2 (C+1) inside/outside maps on res5 (k = 7), assembled per
  box for its class; mask logit = inside - outside."""

  def call(self, endpoints, boxes, classes, training=None):
    features = self.reduce(endpoints['res5'])
    inside, outside = self.inside_outside(self.score_maps(features), boxes,
                                          classes)
    logits = inside - outside
    return {'semantic_logits': self.semantic_conv(features),
            'coarse_mask_logits': logits, 'mask_logits': logits}


@masklab_head.register('biseg')
@tf_keras.utils.register_keras_serializable(package='masklab')
class BisegHead(_PositionSensitiveHead):
  """BiSeg: fused k1 (res5, assembled at S/2 and upsampled x2) and k2
  (res3) inside/outside likelihoods, the semantic map as the prior."""

  def __init__(self, *args, ps_grid_size_fine: int = 9, **kwargs):
    super().__init__(*args, **kwargs)
    self.ps_grid_size_fine = ps_grid_size_fine

  def _coarse_crop_size(self) -> int:
    # Set 1 at half the crop size, upsampled x2 in call (paper Fig. 4).
    return (self.crop_size + 1) // 2

  def build(self, input_shape):
    super().build(input_shape)
    self.reduce_fine = self._conv(self.ps_feature_channels // 2,
                                  'reduce_fine', 'relu')
    self.score_maps_fine = self._conv(
        self._score_channels(self.ps_grid_size_fine), 'score_maps_fine')
    self.inside_outside_fine = _InsideOutside(  # res3: stride 8 always.
        self.num_classes, self.ps_grid_size_fine, self.crop_size, 8,
        self.use_xla, name='inside_outside_fine')
    self.prior_crop = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size, feature_stride=self.output_stride,
        channel_map_kind='constant', use_xla=self.use_xla, name='prior_crop')

  def _upsample(self, maps):
    """[B, N, S/2, S/2] -> [B, N, S, S], bilinear, corners aligned (the
    half-size crop's samples include both box edges, as the full one's)."""
    shape = tf.shape(maps)
    flat = tf.reshape(maps, tf.concat([[-1], shape[2:], [1]], 0))
    size = [self.crop_size, self.crop_size]
    up = tf.compat.v1.image.resize_bilinear(flat, size, align_corners=True)
    # resize_bilinear answers float32 whatever it is given.
    up = tf.cast(up, maps.dtype)
    return tf.reshape(up, tf.concat([shape[:2], size], 0))

  def call(self, endpoints, boxes, classes, training=None):
    features = self.reduce(endpoints['res5'])
    semantic_logits = self.semantic_conv(features)
    inside, outside = self.inside_outside(self.score_maps(features), boxes,
                                          classes)
    fine = self.score_maps_fine(self.reduce_fine(endpoints['res3']))
    inside_fine, outside_fine = self.inside_outside_fine(fine, boxes, classes)
    inside = self._upsample(inside) + inside_fine
    outside = self._upsample(outside) + outside_fine
    prior = self.prior_crop(
        tf.nn.softmax(tf.cast(semantic_logits, tf.float32)), boxes,
        tf.maximum(tf.cast(classes, tf.int32), 0))
    log_prior = tf.cast(tf.math.log(tf.maximum(prior, 1e-6)), inside.dtype)
    logits = inside + log_prior - outside
    return {'semantic_logits': semantic_logits,
            'coarse_mask_logits': logits, 'mask_logits': logits}

  def get_config(self):
    return {**super().get_config(),
            'ps_grid_size_fine': self.ps_grid_size_fine}
