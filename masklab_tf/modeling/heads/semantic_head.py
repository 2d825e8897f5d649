"""Semantic logits heads: MaskLab's 1x1 conv, or the fusion paper's ASPP.

MaskLab (sec. 3) predicts semantic logits with a 1x1 conv on res5. The
output-fusion paper (Costea et al., sec. 2) uses an atrous spatial pyramid
for its coarse segmentation heads: one 1x1 conv and three 3x3 convs at
rates 6, 12, 18, concatenated and passed through 128 1x1 filters; a 1x1
conv then gives the class logits. A better semantic map matters most to
what reads it as a whole: the semantic map output, BiSeg's prior and the
output fusion.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.layers import atrous_conv

SEMANTIC_HEADS = ('conv1x1', 'aspp')


def build_semantic_head(kind: str, num_logits: int, filters: int = 128,
                        rates: tuple[int, ...] = (6, 12, 18),
                        name: str = 'semantic_logits'
                        ) -> tf_keras.layers.Layer:
  """features [B, h, w, C] -> logits [B, h, w, num_logits]."""
  if kind == 'conv1x1':
    return tf_keras.layers.Conv2D(num_logits, 1, name=name)
  if kind == 'aspp':
    return AsppSemanticHead(num_logits, filters, rates, name=name)
  raise ValueError(f'semantic head must be one of {SEMANTIC_HEADS}, got '
                   f'{kind!r}')


@tf_keras.utils.register_keras_serializable(package='masklab')
class AsppSemanticHead(tf_keras.layers.Layer):
  """ASPP (1x1 + three rate-r 3x3 convs, `filters` each, ReLU), concat,
  a 1x1 conv to `filters`, then a 1x1 conv to the logits."""

  def __init__(self, num_logits: int, filters: int = 128,
               rates: tuple[int, ...] = (6, 12, 18), **kwargs):
    """Args: num_logits: output channels; filters: channels of each
    branch and of the projection; rates: atrous rates of the 3x3 branches;
    **kwargs: tf_keras.layers.Layer arguments."""
    super().__init__(**kwargs)
    self.num_logits = num_logits
    self.filters = filters
    self.rates = tuple(rates)

  def build(self, input_shape):
    self.branches = [tf_keras.layers.Conv2D(
        self.filters, 1, activation='relu', name='aspp_1x1')] + [
            atrous_conv.AtrousConv2D(
                self.filters, 3, padding='same', dilation_rate=rate,
                activation='relu', name=f'aspp_rate{rate}')
            for rate in self.rates]
    self.project = tf_keras.layers.Conv2D(self.filters, 1, activation='relu',
                                          name='project')
    self.logits = tf_keras.layers.Conv2D(self.num_logits, 1, name='logits')
    super().build(input_shape)

  def call(self, features):
    net = tf.concat([branch(features) for branch in self.branches], axis=-1)
    return self.logits(self.project(net))

  def get_config(self):
    return {**super().get_config(), 'num_logits': self.num_logits,
            'filters': self.filters, 'rates': self.rates}
