"""Convolutions on a few large maps run as convolutions on many small tiles.

oneDNN's CPU convolutions run much slower on one large map than on a batch
of small ones with the same FLOPs (docs/perf-notes.md#pixel-tiles).
Batch-1 inference at output stride 8 is made of such maps (res4 and res5 at
64 x 64 for a 512 px image, the RPN's conv on res4), so two exact rewrites
recover the batched kernels' speed where the kernel rewrites are on
(kernel_rewrites.py: oneDNN hosts):

- Pointwise ops (1x1 convs, batch norm, ReLU) do not care where a pixel is,
  so a [B, H, W, C] map can be viewed, by a free reshape, as
  [B * H * W / 64, 8, 8, C] for them (`to_pixel_tiles`), the bottleneck
  block's 1x1 conv + BN (+ ReLU) triplets included (batch norm's statistics
  are over all pixels either way, so this holds in training too).
- A 3x3 'same' conv is a 'valid' conv on tiles that carry a halo of
  dilation * (k - 1) / 2 pixels of their neighbours (zeros at the image
  border, as 'same' pads): `HaloTiledConv2D`. Forward only: with its
  gradients the tiled conv was no faster, so training keeps the plain conv
  (docs/perf-notes.md#halo-tiles).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.layers import kernel_rewrites as rewrites_lib

# Side of the pixel tiles pointwise ops see (8 x 8 = 64 pixels).
PIXEL_TILE = 8


def to_pixel_tiles(x: tf.Tensor) -> Optional[tf.Tensor]:
  """[B, H, W, C] -> [B * H * W / 64, 8, 8, C] (same memory), or None.

  None where the view does not pay or cannot be formed: unknown static
  sizes, H * W of at most one tile, or B * H * W not a multiple of 64.
  Only for ops that treat every pixel alike (1x1 convs, batch norm,
  element-wise); `from_pixel_tiles` restores the layout.
  """
  batch, height, width, channels = x.shape
  if None in (batch, height, width, channels):
    return None
  pixels = batch * height * width
  if height * width <= PIXEL_TILE**2 or pixels % PIXEL_TILE**2:
    return None
  return tf.reshape(x, [pixels // PIXEL_TILE**2, PIXEL_TILE, PIXEL_TILE,
                        channels])


def from_pixel_tiles(tiles: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """tiles [N, 8, 8, C'] of `like` [B, H, W, C] -> [B, H, W, C']."""
  return tf.reshape(tiles, like.shape[:-1].concatenate(tiles.shape[-1:]))


def _split_with_halo(x, grid, tile, halo):
  """x [B, H, W, C] -> tiles [B * gh * gw, th + 2 hh, tw + 2 hw, C].

  Zero padding of the halo (hh, hw) on every side, plus whatever makes H, W
  multiples of the tile, stands for 'same' padding; tile (i, j) covers
  output rows i * th .. (i + 1) * th and columns j * tw .. (j + 1) * tw.
  """
  (grid_h, grid_w), (tile_h, tile_w), (halo_h, halo_w) = grid, tile, halo
  height, width = x.shape[1], x.shape[2]
  padded = tf.pad(x, [[0, 0],
                      [halo_h, halo_h + grid_h * tile_h - height],
                      [halo_w, halo_w + grid_w * tile_w - width], [0, 0]])
  tiles = [padded[:, i * tile_h:(i + 1) * tile_h + 2 * halo_h,
                  j * tile_w:(j + 1) * tile_w + 2 * halo_w, :]
           for i in range(grid_h) for j in range(grid_w)]
  # [B, gh * gw, ...] keeps each image's tiles together.
  tiles = tf.stack(tiles, axis=1)
  return tf.reshape(tiles, [-1, *tiles.shape[2:]])


def _join_tiles(tiles, grid, tile, height, width):
  """tiles [B * gh * gw, th, tw, C] -> [B, H, W, C] (cropped to H, W)."""
  (grid_h, grid_w), (tile_h, tile_w) = grid, tile
  channels = tiles.shape[-1]
  joined = tf.reshape(tiles, [-1, grid_h, grid_w, tile_h, tile_w, channels])
  joined = tf.transpose(joined, [0, 1, 3, 2, 4, 5])
  joined = tf.reshape(joined, [-1, grid_h * tile_h, grid_w * tile_w,
                               channels])
  return joined[:, :height, :width, :]


@tf_keras.utils.register_keras_serializable(package='masklab')
class HaloTiledConv2D(tf_keras.layers.Conv2D):
  """`Conv2D` that, at inference, may convolve tiles of about `tile_size` px.

  Same weights and function as Conv2D (its arguments plus `tile_size` and
  `kernel_rewrites`). Where its halo-tile rewrite is on
  (kernel_rewrites.py), at inference a stride-1 'same' conv on a map of
  known size with a side of at least 2 * tile_size is run on the map's
  tiles with their halos (see the module docstring) and the outputs
  joined; in training, on other maps and with the rewrite off it is the
  plain conv.
  """

  def __init__(self, *args, tile_size: int = 32,
               kernel_rewrites: str | None = None, **kwargs):
    """Conv2D(*args, **kwargs) that may run on tiles at inference.

    Args:
      *args: Conv2D's positional arguments (filters, kernel_size, ...).
      tile_size: side of the tiles, in pixels of the map.
      kernel_rewrites: 'auto' or 'off' (kernel_rewrites.py); None takes the
        enclosing kernel_rewrites.scope's mode ('auto' outside any).
      **kwargs: Conv2D's keyword arguments.

    Raises:
      ValueError: tile_size < 1.
    """
    super().__init__(*args, **kwargs)
    if tile_size < 1:
      raise ValueError(f'tile_size must be positive, got {tile_size}.')
    self.tile_size = tile_size
    self.kernel_rewrites, self._rewrites = rewrites_lib.for_layer(
        kernel_rewrites)

  def _grid(self, shape, training):
    """(grid_h, grid_w) or None where the plain conv runs."""
    # 'same' pads an odd kernel (k - 1) / 2 * rate on each side; even
    # kernels pad asymmetrically and keep the plain conv.
    if (training or not self._rewrites.halo_tiles or self.padding != 'same'
        or self.groups != 1 or self.data_format != 'channels_last'
        or self.rank != 2 or tuple(self.strides) != (1, 1) or shape.rank != 4
        or any(k % 2 == 0 for k in self.kernel_size)):
      return None
    height, width = shape[1], shape[2]
    if height is None or width is None:
      return None
    grid = (max(1, height // self.tile_size), max(1, width // self.tile_size))
    return None if grid == (1, 1) else grid

  def call(self, inputs, training=None):
    grid = self._grid(inputs.shape, training)
    if grid is None:
      return super().call(inputs)
    height, width = inputs.shape[1], inputs.shape[2]
    tile = (-(-height // grid[0]), -(-width // grid[1]))
    halo = tuple((k - 1) // 2 * rate
                 for k, rate in zip(self.kernel_size, self.dilation_rate))
    tiles = _split_with_halo(inputs, grid, tile, halo)
    outputs = tf.nn.conv2d(tiles, self.kernel, strides=1, padding='VALID',
                           dilations=list(self.dilation_rate))
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    if self.activation is not None:
      outputs = self.activation(outputs)
    return _join_tiles(outputs, grid, tile, height, width)

  def get_config(self):
    return {**super().get_config(), 'tile_size': self.tile_size,
            'kernel_rewrites': self.kernel_rewrites}
