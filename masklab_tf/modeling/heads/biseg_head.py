"""BiSeg's mask head (Pham, Ito, Kozakaya, BMVC 2017, sec. 3).

Two sets of inside/outside score maps, k1 x k1 from res5 and k2 x k2 from
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

from masklab_tf import config as config_lib
from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import position_sensitive
from masklab_tf.ops import assemble


@tf_keras.utils.register_keras_serializable(package='masklab')
class BisegHead(position_sensitive.PositionSensitiveHead):
  """BiSeg: fused k1 (res5, assembled at S/2 and upsampled x2) and k2
  (res3) inside/outside likelihoods, the semantic map as the prior."""

  NAME = 'biseg'

  def __init__(self, *args, ps_grid_size_fine: int = 9, **kwargs):
    """Args: as PositionSensitiveHead, and ps_grid_size_fine: k2, cells per
    side of the res3 score maps (paper: 9)."""
    super().__init__(*args, **kwargs)
    self.ps_grid_size_fine = ps_grid_size_fine

  @classmethod
  def _extra_arguments(cls, cfg: config_lib.ModelConfig) -> dict:
    return {'ps_grid_size_fine': cfg.ps_grid_size_fine}

  def _coarse_crop_size(self) -> int:
    # Set 1 at half the crop size, upsampled x2 in call (paper Fig. 4).
    return (self.crop_size + 1) // 2

  def build(self, input_shape):
    super().build(input_shape)
    self.reduce_fine = self._conv(self.ps_feature_channels // 2,
                                  'reduce_fine', 'relu')
    self.score_maps_fine = self._conv(
        self._score_channels(self.ps_grid_size_fine), 'score_maps_fine')
    self.inside_outside_fine = position_sensitive.InsideOutside(
        self.num_classes, self.ps_grid_size_fine, self.crop_size,
        self.endpoint_strides['res3'], self.use_xla,
        name='inside_outside_fine')
    self.prior_crop = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size,
        feature_stride=self.endpoint_strides['res5'],
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
    """As MaskLabHead.call; returns the dict of heads/outputs.py."""
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
    return {outputs_lib.SEMANTIC_LOGITS: semantic_logits,
            outputs_lib.COARSE_MASK_LOGITS: logits,
            outputs_lib.MASK_LOGITS: logits}

  def get_config(self):
    return {**super().get_config(),
            'ps_grid_size_fine': self.ps_grid_size_fine}
