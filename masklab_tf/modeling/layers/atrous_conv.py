"""Atrous (and 1x1) convolutions that may reach faster kernels.

`tf.nn.convolution`, which every Keras `Conv2D` calls, runs a dilated conv as
SpaceToBatchND -> undilated conv -> BatchToSpaceND everywhere but on TPUs
(its comment: gradients of dilated convs were once TPU-only). On a map that
is small against the rate the detour leaves tiles of a few pixels, where
convolution kernels run slowly: the box classifier's conv5 block runs its
rate-2 and rate-4 3x3 convs on 7 x 7 RoI crops, i.e. on 4 x 4 and 2 x 2
tiles. `AtrousConv2D` is Conv2D with the same arguments, weights and
function, which, where its kernel rewrites are on (kernel_rewrites.py,
ModelConfig.kernel_rewrites), reaches other kernels:

- Native dilated kernels: oneDNN (TF's default CPU kernels on recent x86)
  runs dilated convs and both of their gradients natively, so the layer
  calls `tf.nn.conv2d` with `dilations` where the map's static size leaves
  SpaceToBatchND tiles of at most SMALL_TILE pixels a side. On larger maps
  the detour was as fast or faster, and maps of unknown size (the backbone
  in a SavedModel taking any image size) keep it too
  (docs/perf-notes.md#native-dilated-kernels). TF's own (Eigen) CPU kernels
  run a dilated conv forward but not its gradients ("Current CPU
  implementations do not yet support dilation rates larger than 1"), so
  there the layer keeps Keras's path.
- Sparse taps: where the rate is large against the map, most of a dilated
  conv's taps read 'same' padding: a 3x3 rate-4 conv on 7 x 7 crops reads
  169 in-map pixels of the 441 its nominal FLOPs pay for. There
  (`tap_coverage` at most the rewrites' max_sparse_tap_coverage, static
  sizes, stride 1, 'same', odd kernel) the layer runs `sparse_tap_conv2d`:
  one matmul per tap on the window of the map the tap reads, summed. Exact,
  and its gradients are matmuls, which pay where the dilated conv's weight
  gradient (oneDNN) or the SpaceToBatchND path's input gradient (Eigen) led
  the training step's profile; without native dilated kernels the matmuls
  win on denser maps too (docs/perf-notes.md#sparse-taps,
  docs/perf-notes.md#sparse-taps-without-onednn).
- Pointwise matmuls: in training, stride-1 1x1 convs run as matmuls on the
  [pixels, C] view of the map, where oneDNN's 1x1 conv gradients (bfloat16
  most) ran slower than the matmuls that compute them; the box classifier's
  conv5 block on every sampled RoI is mostly 1x1 convs
  (docs/perf-notes.md#pointwise-matmuls).

modeling/layers/resnet_blocks.py builds the ResNet units from these convs.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.layers import kernel_rewrites as rewrites_lib


# Largest SpaceToBatchND tile (ceil(size / rate)) for which the native kernel
# runs instead (docs/perf-notes.md#native-dilated-kernels).
SMALL_TILE = 8


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
  """`tf_keras.layers.Conv2D` that may reach faster kernels.

  Same weights and function as Conv2D; only how the conv reaches the
  kernels differs, and only where its kernel rewrites are on: dilated convs
  (native kernel or sparse taps) and 1x1 convs in training (matmul); see
  the module docstring. With none on (kernel_rewrites='off', or 'auto' on a
  host where none pays) every call is Conv2D's.
  """

  def __init__(self, *args, kernel_rewrites: str | None = None, **kwargs):
    """Conv2D(*args, **kwargs) that may rewrite its kernels.

    Args:
      *args: Conv2D's positional arguments (filters, kernel_size, ...).
      kernel_rewrites: 'auto' or 'off' (kernel_rewrites.py); None takes the
        enclosing kernel_rewrites.scope's mode ('auto' outside any).
      **kwargs: Conv2D's keyword arguments.
    """
    super().__init__(*args, **kwargs)
    self.kernel_rewrites, self._rewrites = rewrites_lib.for_layer(
        kernel_rewrites)

  def call(self, inputs, training=None):
    if (training is not True or not self._rewrites.pointwise_matmul
        or not self._pointwise(inputs.shape)):
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
    if (not self._rewrites.native_dilation
        or not self._small_tiles(inputs.shape)):
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
    limit = self._rewrites.max_sparse_tap_coverage
    if (limit <= 0 or self.data_format != 'channels_last'
        or self.padding != 'same' or tuple(self.strides) != (1, 1)
        or max(self.dilation_rate) == 1 or self.groups != 1
        or not all(k % 2 for k in self.kernel_size)
        or None in (shape[1], shape[2])):
      return False
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

  def get_config(self):
    return {**super().get_config(), 'kernel_rewrites': self.kernel_rewrites}
