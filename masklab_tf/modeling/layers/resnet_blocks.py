"""The two ResNet units, with atrous rates: basic and bottleneck.

Both keep Model Garden's sublayers, attribute names and creation order
(`nn_blocks.ResidualBlock` and `nn_blocks.BottleneckBlock`), so Model
Garden's ResNet checkpoints map onto them layer by layer
(modeling/checkpoints.py), and build their convs from AtrousConv2D
(atrous_conv.py), which reaches the faster kernels where
--kernel_rewrites allows.
"""

from __future__ import annotations

import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.layers import nn_blocks

from masklab_tf.modeling.layers import atrous_conv
from masklab_tf.modeling.layers import kernel_rewrites as rewrites_lib
from masklab_tf.modeling.layers import tiled_conv


@tf_keras.utils.register_keras_serializable(package='masklab')
class AtrousResidualBlock(tf_keras.layers.Layer):
  """Basic ResNet block (two 3x3 convs) with an atrous rate.

  [B, H, W, C] -> [B, H / strides, W / strides, filters]. Same sublayers,
  attribute names and creation order as `nn_blocks.ResidualBlock` (so its
  weights, and object-based checkpoints, line up one to one), plus
  `dilation_rate` on both 3x3 convs, which ResNet-10/18/26/34 need for output
  stride 8 or 16. A conv cannot both stride and dilate, so strides > 1 needs
  dilation_rate 1.
  """

  def __init__(self,
               filters: int,
               strides: int,
               dilation_rate: int = 1,
               use_projection: bool = False,
               kernel_initializer='VarianceScaling',
               kernel_regularizer=None,
               bias_regularizer=None,
               activation: str = 'relu',
               use_sync_bn: bool = False,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 0.001,
               bn_trainable: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    if strides > 1 and dilation_rate > 1:
      raise ValueError('A block cannot both stride and dilate (strides='
                       f'{strides}, dilation_rate={dilation_rate}).')
    self._filters = filters
    self._strides = strides
    self._dilation_rate = dilation_rate
    self._use_projection = use_projection
    self._kernel_initializer = kernel_initializer
    self._kernel_regularizer = kernel_regularizer
    self._bias_regularizer = bias_regularizer
    self._activation = activation
    self._use_sync_bn = use_sync_bn
    self._norm_momentum = norm_momentum
    self._norm_epsilon = norm_epsilon
    self._bn_trainable = bn_trainable
    self._activation_fn = tf_utils.get_activation(activation)

  def _make_conv(self, kernel_size, strides, dilation_rate):
    return atrous_conv.AtrousConv2D(
        filters=self._filters,
        kernel_size=kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding='same',
        use_bias=False,
        kernel_initializer=tf_utils.clone_initializer(self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer)

  def _make_norm(self):
    return tf_keras.layers.BatchNormalization(
        axis=-1,
        momentum=self._norm_momentum,
        epsilon=self._norm_epsilon,
        trainable=self._bn_trainable,
        synchronized=self._use_sync_bn)

  def build(self, input_shape):
    if self._use_projection:
      self._shortcut = self._make_conv(1, self._strides, 1)
      self._norm0 = self._make_norm()
    self._conv1 = self._make_conv(3, self._strides, self._dilation_rate)
    self._norm1 = self._make_norm()
    self._conv2 = self._make_conv(3, 1, self._dilation_rate)
    self._norm2 = self._make_norm()
    super().build(input_shape)

  def call(self, inputs, training=None):
    shortcut = inputs
    if self._use_projection:
      shortcut = self._norm0(self._shortcut(shortcut), training=training)
    x = self._conv1(inputs)
    x = self._activation_fn(self._norm1(x, training=training))
    x = self._norm2(self._conv2(x), training=training)
    return self._activation_fn(x + shortcut)

  def get_config(self):
    config = {
        'filters': self._filters,
        'strides': self._strides,
        'dilation_rate': self._dilation_rate,
        'use_projection': self._use_projection,
        'kernel_initializer': self._kernel_initializer,
        'kernel_regularizer': self._kernel_regularizer,
        'bias_regularizer': self._bias_regularizer,
        'activation': self._activation,
        'use_sync_bn': self._use_sync_bn,
        'norm_momentum': self._norm_momentum,
        'norm_epsilon': self._norm_epsilon,
        'bn_trainable': self._bn_trainable,
    }
    base_config = super().get_config()
    return dict(list(base_config.items()) + list(config.items()))


@tf_keras.utils.register_keras_serializable(package='masklab')
class AtrousBottleneckBlock(nn_blocks.BottleneckBlock):
  """Model Garden's plain `BottleneckBlock` with `AtrousConv2D` convs.

  Same arguments, sublayers, attribute names and creation order (hence the
  same weight order and object-based checkpoint keys) and the same function,
  so Model Garden's ResNet checkpoints and checkpoints written before this
  class existed load unchanged. Only the plain block is rebuilt here:
  squeeze-excitation, ResNet-D shortcuts and stochastic depth are refused.
  Where its pixel-tile rewrite is on (kernel_rewrites.py), `call` runs the
  1x1 conv + batch norm (+ ReLU) triplets on 8 x 8 pixel tiles of the map
  (`tiled_conv.to_pixel_tiles`), where oneDNN's 1x1 convs run faster than
  on one large map (at inference: in training AtrousConv2D runs them as
  matmuls over the pixels); the 3x3 conv sees the map as it is. With the
  rewrites off it is Model Garden's block, call and all.
  """

  def __init__(self, *args, kernel_rewrites: str | None = None, **kwargs):
    """BottleneckBlock(*args, **kwargs) that may rewrite its kernels.

    Args:
      *args: BottleneckBlock's positional arguments (filters, strides, ...).
      kernel_rewrites: 'auto' or 'off' (kernel_rewrites.py), for the block
        and its convs; None takes the enclosing kernel_rewrites.scope's mode
        ('auto' outside any).
      **kwargs: BottleneckBlock's keyword arguments.
    """
    super().__init__(*args, **kwargs)
    self._kernel_rewrites, self._rewrites = rewrites_lib.for_layer(
        kernel_rewrites)
    self._rewrites_host = rewrites_lib.current_host()

  def build(self, input_shape):
    if (self._se_ratio or self._resnetd_shortcut
        or self._stochastic_depth_drop_rate):
      raise ValueError(
          'AtrousBottleneckBlock builds the plain bottleneck only; got '
          f'se_ratio={self._se_ratio}, resnetd_shortcut='
          f'{self._resnetd_shortcut}, stochastic_depth_drop_rate='
          f'{self._stochastic_depth_drop_rate}.')
    # The convs decide as the block did, wherever it builds.
    with rewrites_lib.scope(self._kernel_rewrites, self._rewrites_host):
      self._build_layers()
    # Skips BottleneckBlock.build (it would build stock Conv2Ds).
    tf_keras.layers.Layer.build(self, input_shape)  # pylint: disable=bad-super-call

  def _build_layers(self):
    """BottleneckBlock.build's sublayers, in its order, with AtrousConv2D."""
    if self._use_projection:
      self._shortcut = self._conv(self._filters * 4, 1, self._strides)
      self._norm0 = self._norm_layer()
    self._conv1 = self._conv(self._filters, 1, 1)
    self._norm1 = self._norm_layer()
    self._activation1 = tf_utils.get_activation(self._activation,
                                                use_keras_layer=True)
    self._conv2 = self._conv(self._filters, 3, self._strides,
                             self._dilation_rate)
    self._norm2 = self._norm_layer()
    self._activation2 = tf_utils.get_activation(self._activation,
                                                use_keras_layer=True)
    self._conv3 = self._conv(self._filters * 4, 1, 1)
    self._norm3 = self._norm_layer()
    self._activation3 = tf_utils.get_activation(self._activation,
                                                use_keras_layer=True)
    self._squeeze_excitation = None
    self._stochastic_depth = None
    self._add = tf_keras.layers.Add()

  def call(self, inputs, training=None):
    tiles = (tiled_conv.to_pixel_tiles(inputs) if self._rewrites.pixel_tiles
             else None)
    if tiles is None:
      return super().call(inputs, training=training)

    def pointwise(conv, norm, activation, x_tiles, like):
      y = norm(conv(x_tiles), training=training)
      if activation is not None:
        y = activation(y)
      return tiled_conv.from_pixel_tiles(y, like)

    if not self._use_projection:
      shortcut = inputs
    elif self._strides == 1:
      shortcut = pointwise(self._shortcut, self._norm0, None, tiles, inputs)
    else:
      shortcut = self._norm0(self._shortcut(inputs), training=training)
    x = pointwise(self._conv1, self._norm1, self._activation1, tiles, inputs)
    x = self._activation2(self._norm2(self._conv2(x), training=training))
    x_tiles = tiled_conv.to_pixel_tiles(x)
    if x_tiles is None:  # conv2 strided the map down to one tile or less.
      x = self._norm3(self._conv3(x), training=training)
    else:
      x = pointwise(self._conv3, self._norm3, None, x_tiles, x)
    x = self._add([x, shortcut])
    return self._activation3(x)

  def _conv(self, filters, kernel_size, strides, dilation_rate=1):
    return atrous_conv.AtrousConv2D(
        filters=filters, kernel_size=kernel_size, strides=strides,
        dilation_rate=dilation_rate,
        padding='same' if kernel_size > 1 else 'valid', use_bias=False,
        kernel_initializer=tf_utils.clone_initializer(
            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer)

  def _norm_layer(self):
    return self._norm(
        axis=self._bn_axis, momentum=self._norm_momentum,
        epsilon=self._norm_epsilon, trainable=self._bn_trainable,
        synchronized=self._use_sync_bn)

  def get_config(self):
    return {**super().get_config(), 'kernel_rewrites': self._kernel_rewrites}
