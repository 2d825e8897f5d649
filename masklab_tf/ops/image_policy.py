"""The input policy: how an image of any size becomes the model's input.

One module for the data pipeline (training and evaluation batches) and for
serving (the SavedModel's signatures), so that what a served model sees is
what it was trained and evaluated on:

- the shortest side goes to `min_size` unless the longest would pass
  `max_size` (Detectron2's and Model Garden's rule), and no side goes
  below 1 pixel;
- images resize bilinearly and round back to uint8, as a JPEG the model
  will see later would be;
- label maps and masks resize nearest-neighbour (`resize_nearest`);
- the batch pads to a multiple of the output stride (or a fixed size).
"""

from __future__ import annotations

import tensorflow as tf


def resized_size(height: tf.Tensor, width: tf.Tensor, min_size: tf.Tensor,
                 max_size: int) -> tf.Tensor:
  """int32 [2]: shortest side to min_size unless the longest would exceed
  max_size; each side at least 1.

  An extreme aspect ratio (2 x 1000 with max_size 192) would round its
  short side to 0 pixels, which no resize can produce; it keeps 1 pixel
  instead (its scale on that axis differs, which every caller handles: the
  scale is per axis). Padding to the output stride then gives the network
  at least one feature cell.
  """
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  scale = tf.minimum(
      tf.cast(min_size, tf.float32) / tf.minimum(height, width),
      float(max_size) / tf.maximum(height, width))
  size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
  return tf.maximum(size, 1)


def resize_image(image: tf.Tensor, size: tf.Tensor,
                 portable: bool = False) -> tf.Tensor:
  """uint8 [..., H, W, 3] -> uint8 [..., size[0], size[1], 3], bilinear,
  rounded and clipped back to 0..255.

  `portable` computes the same pixels (bit for bit; tests/ops) from
  gathers and elementwise ops, for the ONNX export: ONNX's Resize, which
  ResizeBilinear converts to, rounds its arithmetic differently, and after
  rounding to uint8 ~0.03 % of the pixels of a downscaled photo came out
  one grey level apart; the elementwise ops give ONNX Runtime exactly
  TensorFlow's pixels. It costs about 4x ResizeBilinear's time (15 ms more
  on an 800 x 1066 output on a 2-core CPU), which is why it is not the
  pipeline's form.
  """
  if portable:
    resized = _bilinear_elementwise(tf.cast(image, tf.float32), size)
  else:
    # Cast first: ResizeBilinear computes in float32 either way, and
    # tf2onnx maps a uint8 ResizeBilinear to a Resize that outputs uint8.
    resized = tf.image.resize(tf.cast(image, tf.float32), size,
                              method='bilinear')
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _bilinear_elementwise(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """tf.image.resize(image, size, 'bilinear') in float32 [..., H, W, C]
  with ResizeBilinear's arithmetic in its order (half-pixel centres:
  source position (i + 0.5) * in / out - 0.5, its floor and ceil clamped
  to the image, lerp along x, then along y)."""
  def axis(in_size, out_size):
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(position)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(position), tf.int32),
                       in_size - 1)
    return lower, upper, position - floor

  shape = tf.shape(image)
  rows = axis(shape[-3], size[0])
  cols = axis(shape[-2], size[1])
  x_lerp = cols[2][:, tf.newaxis]

  def along_x(lines):
    left = tf.gather(lines, cols[0], axis=-2)
    right = tf.gather(lines, cols[1], axis=-2)
    return left + (right - left) * x_lerp

  top = along_x(tf.gather(image, rows[0], axis=-3))
  bottom = along_x(tf.gather(image, rows[1], axis=-3))
  return top + (bottom - top) * rows[2][:, tf.newaxis, tf.newaxis]


def resize_nearest(tensor: tf.Tensor, size, axis: int = 0) -> tf.Tensor:
  """Nearest-neighbour resize of dims (axis, axis + 1) to `size`.

  Gathers source rows and columns at the half-pixel-centred positions that
  tf.image.resize(method='nearest') uses; unlike it, this works for any
  dtype and for an empty leading dimension (images without instances).
  """
  def source_indices(in_size, out_size):
    ratio = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * ratio
    return tf.minimum(tf.cast(tf.floor(position), tf.int32), in_size - 1)

  shape = tf.shape(tensor)
  rows = source_indices(shape[axis], size[0])
  cols = source_indices(shape[axis + 1], size[1])
  return tf.gather(tf.gather(tensor, rows, axis=axis), cols, axis=axis + 1)


def round_up(value: tf.Tensor, multiple: int) -> tf.Tensor:
  """`value` rounded up to a multiple of `multiple`."""
  return (value + multiple - 1) // multiple * multiple


def own_padded_size(image_size: tf.Tensor, multiple: int) -> tf.Tensor:
  """int32 [..., 2]: what an image of resized size `image_size` is padded
  to when it is alone: each side rounded up to `multiple` (a batch pads
  further, to its largest image)."""
  return round_up(tf.cast(image_size, tf.int32), multiple)


def padded_size(sizes: tf.Tensor, stride: int, pad_to=()) -> tf.Tensor:
  """int32 [2]: the batch's padded size for resized sizes [B, 2]: the
  largest rounded up to a multiple of `stride`, or `pad_to` when set."""
  if pad_to:
    return tf.constant(pad_to, tf.int32)
  return round_up(tf.reduce_max(sizes, axis=0), stride)
