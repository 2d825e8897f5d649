"""Atrous convolutions that reach the native dilated kernels.

`tf.nn.convolution`, which every Keras `Conv2D` calls, runs a dilated conv as
SpaceToBatchND -> undilated conv -> BatchToSpaceND everywhere but on TPUs
(its comment: gradients of dilated convs were once TPU-only). oneDNN (TF's
default CPU kernels on x86) and cuDNN now run dilated convs and both of their
gradients natively, and the detour costs: on the 7 x 7 RoI crops of the box
classifier's conv5 block the convs then run on 2 x 2 tiles, where a rate-4
3x3 conv's weight gradient took 1.8 s of an 8.7 s bfloat16 training step
(benchmarks/RESULTS.md, "dilated convolutions"). `AtrousConv2D` calls
`tf.nn.conv2d` with `dilations` directly where the kernels support it and
the map is small against the rate: SpaceToBatchND then leaves tiles of at
most SMALL_TILE pixels a side. On larger maps the detour is as fast or faster
(oneDNN forward, this 2-core Xeon: [1, 32, 32, 512] at rate 2, 16 px tiles:
92 ms native, 66 ms detour, float32; [1, 64, 64, 512] at rate 4: 237 / 199;
at rate 8, 8 px tiles: 250 / 317; [100, 7, 7, 512] at rate 4: 130 / 711), and
maps of unknown size (the backbone in a SavedModel taking any image size)
keep it too.

TF's own (non-oneDNN) CPU kernels run a dilated conv forward but not its
gradients ("Current CPU implementations do not yet support dilation rates
larger than 1"), so with oneDNN switched off (TF_ENABLE_ONEDNN_OPTS=0) and no
GPU the layer keeps Keras's SpaceToBatchND path.
"""

from __future__ import annotations

import functools

import tensorflow as tf
import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.layers import nn_blocks
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import

from masklab_tf.modeling import tiled_conv


# Largest SpaceToBatchND tile (ceil(size / rate)) for which the native kernel
# runs instead.
SMALL_TILE = 8


@functools.lru_cache(maxsize=None)
def native_dilation_supported() -> bool:
  """True where dilated conv gradients have native kernels (oneDNN, GPU)."""
  return bool(_pywrap_util_port.IsMklEnabled()
              or tf.config.list_physical_devices('GPU'))


@tf_keras.utils.register_keras_serializable(package='masklab')
class AtrousConv2D(tf_keras.layers.Conv2D):
  """`tf_keras.layers.Conv2D` whose dilated case runs the native kernel.

  Same arguments, weights and config as Conv2D; only how a conv with
  dilation_rate > 1 reaches the kernels differs (see the module docstring).
  """

  def convolution_op(self, inputs, kernel):
    # Conv2D's padding is 'valid' or 'same' (Keras refuses 'causal' there).
    if (not self._small_tiles(inputs.shape)
        or not native_dilation_supported()):
      return super().convolution_op(inputs, kernel)
    return tf.nn.conv2d(
        inputs, kernel, strides=list(self.strides),
        padding=self.padding.upper(), dilations=list(self.dilation_rate),
        data_format='NHWC' if self.data_format == 'channels_last' else 'NCHW',
        name=self.__class__.__name__)

  def _small_tiles(self, shape) -> bool:
    """Dilated, and every dilated axis's static size / rate <= SMALL_TILE."""
    axes = (1, 2) if self.data_format == 'channels_last' else (2, 3)
    dilated = [(shape[axis], rate)
               for axis, rate in zip(axes, self.dilation_rate) if rate > 1]
    return bool(dilated) and all(
        size is not None and -(-size // rate) <= SMALL_TILE
        for size, rate in dilated)


@tf_keras.utils.register_keras_serializable(package='masklab')
class AtrousBottleneckBlock(nn_blocks.BottleneckBlock):
  """Model Garden's plain `BottleneckBlock` with `AtrousConv2D` convs.

  Same arguments, sublayers, attribute names and creation order (hence the
  same weight order and object-based checkpoint keys) and the same function,
  so Model Garden's ResNet checkpoints and checkpoints written before this
  class existed load unchanged. Only the plain block is rebuilt here:
  squeeze-excitation, ResNet-D shortcuts and stochastic depth are refused.
  `call` runs the 1x1 conv + batch norm (+ ReLU) triplets on 8 x 8 pixel
  tiles of the map (`tiled_conv.to_pixel_tiles`), where oneDNN's 1x1 convs
  run faster than on one large map; the 3x3 conv sees the map as it is.
  """

  def build(self, input_shape):
    if (self._se_ratio or self._resnetd_shortcut
        or self._stochastic_depth_drop_rate):
      raise ValueError(
          'AtrousBottleneckBlock builds the plain bottleneck only; got '
          f'se_ratio={self._se_ratio}, resnetd_shortcut='
          f'{self._resnetd_shortcut}, stochastic_depth_drop_rate='
          f'{self._stochastic_depth_drop_rate}.')
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
    # Skips BottleneckBlock.build (it would build stock Conv2Ds).
    tf_keras.layers.Layer.build(self, input_shape)  # pylint: disable=bad-super-call

  def call(self, inputs, training=None):
    tiles = tiled_conv.to_pixel_tiles(inputs)
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
    return AtrousConv2D(
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
