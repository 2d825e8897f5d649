"""The Region Proposal Network's head on res4 (Faster R-CNN, MaskLab sec. 3).

A 3x3 conv and two 1x1 convs give, per cell and anchor, an objectness logit
(sigmoid, as Model Garden) and box deltas. Anchors, proposals and targets are
the RPN's layers without weights (modeling/layers/rpn.py).
"""

from __future__ import annotations

import tf_keras

from masklab_tf.modeling.layers import tiled_conv


@tf_keras.utils.register_keras_serializable(package='masklab')
class RpnHead(tf_keras.layers.Layer):
  """3x3 conv + ReLU, then 1x1 objectness [.., A] and 1x1 deltas [.., 4A]."""

  def __init__(self, num_anchors: int, channels: int = 512, **kwargs):
    """Args: num_anchors: A, anchors per cell; channels: of the 3x3 conv;
    **kwargs: tf_keras.layers.Layer arguments."""
    super().__init__(**kwargs)
    self.num_anchors = num_anchors
    self.channels = channels

  def build(self, input_shape):
    def conv(filters, size, name, layer=tf_keras.layers.Conv2D, **kwargs):
      return layer(
          filters, size, padding='same', name=name,
          kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
          **kwargs)

    # On res4 (64 x 64 at output stride 8 for 512 px) oneDNN runs this conv
    # faster at inference on 32 px tiles (tiled_conv, where the kernel
    # rewrites are on; docs/perf-notes.md#halo-tiles).
    self.conv = conv(self.channels, 3, 'conv', activation='relu',
                     layer=tiled_conv.HaloTiledConv2D)
    self.scores = conv(self.num_anchors, 1, 'scores')
    self.deltas = conv(4 * self.num_anchors, 1, 'deltas')
    super().build(input_shape)

  def call(self, features, training=None):
    """features [B, h, w, C] -> (scores [B, h, w, A], deltas [B, h, w, 4A])."""
    hidden = self.conv(features, training=training)
    return self.scores(hidden), self.deltas(hidden)

  def get_config(self):
    return {**super().get_config(), 'num_anchors': self.num_anchors,
            'channels': self.channels}
