"""Position-sensitive assembling: a box crop that reads one channel per pixel.

MaskLab's direction pooling (sec. 3.2, Fig. 6) copies, at each position of an
S x S box crop, the direction logit channel that position would have as a
target; picking the semantic channel of a box's class reads one channel
everywhere; the k x k position-sensitive score maps of InstanceFCN, FCIS and
BiSeg read the channel of the grid cell a position falls in. All three are
one op: output[b, n, i, j] is the bilinear sample, at crop sample (i, j) of
box n, of channel channel_offsets[b, n] + channel_map[i, j] of features[b].

Sample positions are those of ops/crop.py (S samples per axis, both box
edges included), so the result equals tf.image.crop_and_resize of all
channels followed by a per-pixel channel select. crop_and_resize has no XLA
kernel, and cropping C channels to keep one wastes C times the work, so the
op is written as a bilinear interpolation whose gathers read only the
selected channel of the four neighbours of each sample. Its gradient (the
gathers' scatter-adds) compiles with XLA as well.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from masklab_tf.ops import direction

CHANNEL_MAP_KINDS = ('direction', 'constant', 'grid')


def grid_channel_map(crop_size: int, grid_size: int) -> tf.Tensor:
  """Channel map of a k x k position-sensitive grid over an S x S crop.

  InstanceFCN / FCIS / BiSeg give each of k x k cells its own score map;
  crop position (i, j) reads the map of the cell it falls in, numbered row
  by row: floor(i k / S) * k + floor(j k / S). With offset class * k^2 the
  same map selects the k^2 maps of one class.

  Returns:
    int32 [S, S], values in [0, k^2).
  """
  if crop_size < 1 or grid_size < 1:
    raise ValueError(f'crop_size ({crop_size}) and grid_size ({grid_size}) '
                     'must be positive')
  cells = np.arange(crop_size) * grid_size // crop_size
  return tf.constant(cells[:, None] * grid_size + cells[None, :], tf.int32)


def sample_neighbours(edge_min, edge_max, num_samples, size, stride):
  """Bilinear neighbours and weights of the crop samples along one axis.

  Args:
    edge_min: float32 [B, N], box edges in image pixels.
    edge_max: float32 [B, N].
    num_samples: S (int32 scalar).
    size: feature map size along this axis (int32 scalar).
    stride: feature stride.

  Returns:
    (lower, upper, lower_weight, upper_weight), each [B, N, S]: int32
    indices of the two neighbours and float32 weights. Samples outside
    [0, size - 1] in pixel-index space (the centre of pixel k is at k) get
    zero weights, as crop_and_resize's extrapolation_value=0; their indices
    are kept in range all the same.
  """
  edge_min = edge_min / stride - 0.5
  edge_max = edge_max / stride - 0.5
  step = tf.cast(tf.maximum(num_samples - 1, 1), tf.float32)
  # One sample sits at the box centre (crop_and_resize's convention).
  first = tf.where(num_samples > 1, 0.0, 0.5)
  fractions = first + tf.cast(tf.range(num_samples), tf.float32) / step
  positions = (edge_min[..., tf.newaxis] + fractions *
               (edge_max - edge_min)[..., tf.newaxis])
  # Written so that NaN positions are invalid too.
  valid = (positions >= 0.0) & (positions <= tf.cast(size - 1, tf.float32))
  positions = tf.where(valid, positions, 0.0)
  lower = tf.floor(positions)
  upper_weight = (positions - lower) * tf.cast(valid, tf.float32)
  lower_weight = tf.cast(valid, tf.float32) - upper_weight
  lower = tf.cast(lower, tf.int32)
  upper = tf.minimum(lower + 1, size - 1)
  return lower, upper, lower_weight, upper_weight


def assemble(features: tf.Tensor, boxes: tf.Tensor, channel_map: tf.Tensor,
             channel_offsets: tf.Tensor, feature_stride=1) -> tf.Tensor:
  """Crops each box, reading channel offset + map[i, j] at crop pixel (i, j).

  Equals tf.image.crop_and_resize(features, crop.to_crop_and_resize_boxes(
  boxes / feature_stride, H, W), ...) followed by a per-pixel channel
  select, but gathers only the selected channel of the four neighbours of
  each sample (its cost grows with N * S^2, not with H * W * C), and it
  compiles with XLA.

  Args:
    features: float [B, H, W, C] at stride `feature_stride` of the image,
      B * H * W * C < 2^31 (int32 flat indices). bfloat16 / float16 are
      interpolated in float32 and cast back.
    boxes: float [B, N, 4] continuous image [ymin, xmin, ymax, xmax].
    channel_map: int32 [S_h, S_w], channel read at each crop position.
    channel_offsets: int32 [B, N], added to the map per box (e.g. the class,
      or class * k^2). Channels are clamped to [0, C), so a bad offset
      cannot read a neighbouring pixel.
    feature_stride: image pixels per feature pixel (a Python number, so the
      jit-compiled version traces once per stride).

  Returns:
    [B, N, S_h, S_w] in the dtype of features; 0 where a sample falls
    outside the centres of the border pixels.
  """
  with tf.name_scope('assemble'):
    features = tf.convert_to_tensor(features)
    dtype = features.dtype
    features = tf.cast(features, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    channel_map = tf.cast(channel_map, tf.int32)
    channel_offsets = tf.cast(channel_offsets, tf.int32)
    batch, height, width, channels = tf.unstack(tf.shape(features))
    crop_height, crop_width = tf.unstack(tf.shape(channel_map))
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)

    top, bottom, top_weight, bottom_weight = sample_neighbours(
        ymin, ymax, crop_height, height, feature_stride)
    left, right, left_weight, right_weight = sample_neighbours(
        xmin, xmax, crop_width, width, feature_stride)
    selected = tf.clip_by_value(
        channel_offsets[:, :, tf.newaxis, tf.newaxis] + channel_map,
        0, channels - 1)
    # Flat indices into [B * H * W * C] of (b, row, col, selected channel).
    start = (tf.range(batch) * (height * width * channels))[
        :, tf.newaxis, tf.newaxis, tf.newaxis] + selected
    row_size = width * channels
    top = (top * row_size)[..., tf.newaxis]
    bottom = (bottom * row_size)[..., tf.newaxis]
    left = (left * channels)[:, :, tf.newaxis]
    right = (right * channels)[:, :, tf.newaxis]
    # One gather of [B, N, S_h, S_w, 4] compiled to faster XLA:CPU code
    # than four gathers, gather_nd, or a [..., 2, 2] reduction did.
    index = tf.stack([start + top + left, start + top + right,
                      start + bottom + left, start + bottom + right], -1)
    values = tf.gather(tf.reshape(features, [-1]), index)
    top_weight = top_weight[..., tf.newaxis]
    bottom_weight = bottom_weight[..., tf.newaxis]
    left_weight = left_weight[:, :, tf.newaxis]
    right_weight = right_weight[:, :, tf.newaxis]
    output = (top_weight * (left_weight * values[..., 0] +
                            right_weight * values[..., 1]) +
              bottom_weight * (left_weight * values[..., 2] +
                               right_weight * values[..., 3]))
    return tf.cast(output, dtype)


# XLA compiles once per shape (and per feature_stride, a Python constant);
# reduce_retracing keeps the TF trace itself shape-generic.
assemble_xla = tf.function(assemble, jit_compile=True, reduce_retracing=True)


def channel_map_for(kind: str, crop_size: int, num_directions: int = 8,
                    num_distance_bins: int = 4,
                    grid_size: int = 7) -> np.ndarray:
  """The [S, S] int32 channel map of a PositionSensitiveAssemble kind."""
  # Eager even when a layer is built inside a tf.function.
  with tf.init_scope():
    if kind == 'direction':
      channel_map = direction.pooling_index_map(crop_size, num_directions,
                                                num_distance_bins)
    elif kind == 'constant':
      channel_map = tf.zeros([crop_size, crop_size], tf.int32)
    elif kind == 'grid':
      channel_map = grid_channel_map(crop_size, grid_size)
    else:
      raise ValueError(f'channel_map_kind must be one of {CHANNEL_MAP_KINDS},'
                       f' got {kind!r}')
    return channel_map.numpy()


@tf_keras.utils.register_keras_serializable(package='masklab')
class PositionSensitiveAssemble(tf_keras.layers.Layer):
  """Keras layer around `assemble` with a fixed channel map.

  channel_map_kind picks the use:
    'direction': MaskLab direction pooling (ops/direction.py's index map over
      D x R direction logits; offsets 0);
    'constant': one channel per box, e.g. the semantic channel of its class
      (offsets = class);
    'grid': k x k position-sensitive maps (offsets = class * k^2).

  Call: (features [B, H, W, C], boxes [B, N, 4] image pixels,
  channel_offsets int [B, N] or None for zeros) -> [B, N, S, S] in the
  features' dtype. Only the features are autocast under mixed precision;
  boxes keep their own (float32) precision.
  """

  def __init__(self, crop_size: int, feature_stride, channel_map_kind: str,
               num_directions: int = 8, num_distance_bins: int = 4,
               grid_size: int = 7, use_xla: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.crop_size = crop_size
    self.feature_stride = feature_stride
    self.channel_map_kind = channel_map_kind
    self.num_directions = num_directions
    self.num_distance_bins = num_distance_bins
    self.grid_size = grid_size
    self.use_xla = use_xla
    self._channel_map = channel_map_for(channel_map_kind, crop_size,
                                        num_directions, num_distance_bins,
                                        grid_size)

  @property
  def channel_map(self) -> np.ndarray:
    """int32 [S, S]: the channel read at each crop position."""
    return self._channel_map

  def call(self, features, boxes, channel_offsets=None):
    if channel_offsets is None:
      channel_offsets = tf.zeros(tf.shape(boxes)[:2], tf.int32)
    op = assemble_xla if self.use_xla else assemble
    return op(features, boxes, tf.constant(self._channel_map),
              channel_offsets, self.feature_stride)

  def get_config(self):
    config = super().get_config()
    config.update({
        'crop_size': self.crop_size,
        'feature_stride': self.feature_stride,
        'channel_map_kind': self.channel_map_kind,
        'num_directions': self.num_directions,
        'num_distance_bins': self.num_distance_bins,
        'grid_size': self.grid_size,
        'use_xla': self.use_xla,
    })
    return config
