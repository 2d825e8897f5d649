"""Atrous (and 1x1) convolutions that reach the faster kernels.

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

Where the rate is large against the map, most of a dilated conv's taps read
'same' padding: a 3x3 rate-4 conv on the box classifier's 7 x 7 crops reads
169 in-map pixels of the 441 its nominal FLOPs pay for. There
(`tap_coverage` <= MAX_SPARSE_TAP_COVERAGE, static sizes, stride 1, 'same',
odd kernel) the layer runs `sparse_tap_conv2d`: one matmul per tap on the
window of the map the tap reads inside the map, summed. Exact, every
backend, and its gradients are matmuls: oneDNN's weight gradient of that
conv was the largest op of a bfloat16 training step (benchmarks/RESULTS.md,
"sparse taps"). Without native dilated kernels the SpaceToBatchND path's
input gradient on 7 x 7 crops at rate 2 was the largest op of a float32
training step (2.1 of 16 s on an AMD EPYC), and the matmuls win up to a
coverage of MAX_SPARSE_TAP_COVERAGE_WITHOUT_NATIVE.

In training, stride-1 1x1 convs run as matmuls on the [pixels, C] view of
the map: oneDNN's bfloat16 1x1 conv gradients ran 1.1-2x slower than the
matmuls that compute them (float32: about even), and the box classifier's
conv5 block on every sampled RoI is mostly 1x1 convs.
"""

from __future__ import annotations

import functools

import tensorflow as tf
import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.layers import nn_blocks
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import

from masklab_tf.modeling.layers import tiled_conv


# Largest SpaceToBatchND tile (ceil(size / rate)) for which the native kernel
# runs instead.
SMALL_TILE = 8
# Largest share of a conv's nominal pixel-taps that read inside the map for
# which `sparse_tap_conv2d` runs instead of the conv, with native dilated
# kernels (oneDNN, 2-core Xeon, 7 x 7 crops: rate 4 0.38, 2-3.5x faster in
# training; rate 2 0.66, no faster)...
MAX_SPARSE_TAP_COVERAGE = 0.5
# ... and without them (TF's Eigen kernels: SpaceToBatchND and an undilated
# conv on the tiles; 2-core AMD EPYC, float32, forward and both gradients,
# [128, 7, 7, 512] 3x3 rate 2 (0.66): 2947 -> 654 ms; [2, 32, 32, 512]:
# rate 4 (0.84) 331 -> 258, rate 2 (0.92) 293 -> 317). Undilated convs keep
# the conv (7 x 7, 0.82: 1050 -> 851 ms, not worth other round-off in every
# small map of the tests' tiny backbones).
MAX_SPARSE_TAP_COVERAGE_WITHOUT_NATIVE = 0.85


@functools.lru_cache(maxsize=None)
def native_dilation_supported() -> bool:
  """True where dilated conv gradients have native kernels (oneDNN, GPU)."""
  return bool(_pywrap_util_port.IsMklEnabled()
              or tf.config.list_physical_devices('GPU'))


def _tap_windows(size: int, kernel_size: int, rate: int):
  """Per tap of one axis: (offset, first, end) of the outputs it reaches.

  A 'same' conv with an odd kernel reads input o + offset for output o,
  offset = (tap - (kernel_size - 1) / 2) * rate; outputs [first, end) read
  inside [0, size). Taps reading only padding get first >= end.
  """
  windows = []
  for tap in range(kernel_size):
    offset = (tap - (kernel_size - 1) // 2) * rate
    windows.append((offset, max(0, -offset), min(size, size - offset)))
  return windows


def tap_coverage(height: int, width: int, kernel_size, dilation_rate) -> float:
  """Share of a 'same' conv's output-pixel x tap pairs that read the map."""
  coverage = 1.0
  for size, k, rate in zip((height, width), kernel_size, dilation_rate):
    inside = sum(max(0, end - first)
                 for _, first, end in _tap_windows(size, k, rate))
    coverage *= inside / (k * size)
  return coverage


def sparse_tap_conv2d(inputs: tf.Tensor, kernel: tf.Tensor,
                      dilation_rate) -> tf.Tensor:
  """A stride-1 'same' dilated conv as one matmul per tap, on its window.

  Equals tf.nn.conv2d(inputs, kernel, 1, 'SAME', dilations=dilation_rate)
  but pays only for the taps' pixels that lie inside the map: tap (i, j)
  multiplies the window of inputs it reads by kernel[i, j] and adds the
  product, zero-padded, to the outputs it reaches.

  Args:
    inputs: [B, H, W, C], H and W static.
    kernel: [kh, kw, C, C'], kh and kw odd.
    dilation_rate: (rate_h, rate_w).

  Returns:
    [B, H, W, C'].
  """
  _, height, width, channels = inputs.shape
  kernel_h, kernel_w, _, filters = kernel.shape
  rows = _tap_windows(height, kernel_h, dilation_rate[0])
  cols = _tap_windows(width, kernel_w, dilation_rate[1])
  outputs = None
  for i, (dy, top, bottom) in enumerate(rows):
    for j, (dx, left, right) in enumerate(cols):
      if top >= bottom or left >= right:
        continue  # The tap reads padding only.
      window = inputs[:, top + dy:bottom + dy, left + dx:right + dx, :]
      product = tf.matmul(tf.reshape(window, [-1, channels]), kernel[i, j])
      product = tf.reshape(product,
                           [-1, bottom - top, right - left, filters])
      if (top, bottom, left, right) != (0, height, 0, width):
        product = tf.pad(product, [[0, 0], [top, height - bottom],
                                   [left, width - right], [0, 0]])
      outputs = product if outputs is None else outputs + product
  return outputs


@tf_keras.utils.register_keras_serializable(package='masklab')
class AtrousConv2D(tf_keras.layers.Conv2D):
  """`tf_keras.layers.Conv2D` that reaches the faster kernels where it can.

  Same arguments, weights and config as Conv2D; only how the conv reaches
  the kernels differs: dilated convs (native kernel or sparse taps) and 1x1
  convs in training (matmul); see the module docstring.
  """

  def call(self, inputs, training=None):
    if training is not True or not self._pointwise(inputs.shape):
      return super().call(inputs)
    channels = inputs.shape[-1]
    outputs = tf.matmul(tf.reshape(inputs, [-1, channels]),
                        tf.reshape(self.kernel, [channels, self.filters]))
    outputs = tf.reshape(
        outputs, tf.concat([tf.shape(inputs)[:-1], [self.filters]], 0))
    outputs.set_shape(inputs.shape[:-1].concatenate([self.filters]))
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs

  def convolution_op(self, inputs, kernel):
    if self._sparse_taps(inputs.shape):
      return sparse_tap_conv2d(inputs, kernel, self.dilation_rate)
    # Conv2D's padding is 'valid' or 'same' (Keras refuses 'causal' there).
    if (not self._small_tiles(inputs.shape)
        or not native_dilation_supported()):
      return super().convolution_op(inputs, kernel)
    return tf.nn.conv2d(
        inputs, kernel, strides=list(self.strides),
        padding=self.padding.upper(), dilations=list(self.dilation_rate),
        data_format='NHWC' if self.data_format == 'channels_last' else 'NCHW',
        name=self.__class__.__name__)

  def _pointwise(self, shape) -> bool:
    """A stride-1 1x1 conv, channels last: a matmul over pixels."""
    return (tuple(self.kernel_size) == (1, 1) and tuple(self.strides) == (1, 1)
            and self.groups == 1 and self.data_format == 'channels_last'
            and shape.rank == 4)

  def _sparse_taps(self, shape) -> bool:
    """Whether `sparse_tap_conv2d` computes this call (module docstring)."""
    if (self.data_format != 'channels_last' or self.padding != 'same'
        or tuple(self.strides) != (1, 1) or max(self.dilation_rate) == 1
        or self.groups != 1
        or not all(k % 2 for k in self.kernel_size)
        or None in (shape[1], shape[2])):
      return False
    limit = (MAX_SPARSE_TAP_COVERAGE if native_dilation_supported()
             else MAX_SPARSE_TAP_COVERAGE_WITHOUT_NATIVE)
    return tap_coverage(shape[1], shape[2], self.kernel_size,
                        self.dilation_rate) <= limit

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
  run faster than on one large map (at inference: in training AtrousConv2D
  runs them as matmuls over the pixels); the 3x3 conv sees the map as it is.
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
