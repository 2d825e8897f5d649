"""Box-relative masks pasted into image coordinates.

The inverse of the crop convention (ops/crop.py): pixel centre (x + 0.5)
maps to sample position (x + 0.5 - xmin) / (xmax - xmin) * (S - 1) of the
box's S samples, read bilinearly; pixels outside the box are 0. Serving,
evaluation, bin/predict and the training pictures all paste through here.
"""

from __future__ import annotations

import tensorflow as tf


def _interpolation_matrix(boxes_min, boxes_max, length: int, size: int):
  """[N, length, size] bilinear weights of `paste_masks`' sample positions
  for one axis: row p of box n reads position (p + 0.5 - min) / (max - min)
  * (size - 1), clipped to the samples; rows outside [floor(min),
  ceil(max)) and empty boxes get zero weights."""
  extent = boxes_max - boxes_min
  pixels = tf.cast(tf.range(length), tf.float32)[tf.newaxis, :]
  position = ((pixels + 0.5 - boxes_min[:, tf.newaxis]) /
              tf.maximum(extent, 1e-12)[:, tf.newaxis] * (size - 1))
  position = tf.clip_by_value(position, 0.0, size - 1.0)
  low = tf.minimum(tf.floor(position), size - 2.0)
  weight = position - low
  low = tf.cast(low, tf.int32)
  matrix = (tf.one_hot(low, size) * (1.0 - weight)[..., tf.newaxis] +
            tf.one_hot(low + 1, size) * weight[..., tf.newaxis])
  inside = ((pixels >= tf.floor(boxes_min)[:, tf.newaxis]) &
            (pixels < tf.math.ceil(boxes_max)[:, tf.newaxis]) &
            (extent > 0)[:, tf.newaxis])
  return matrix * tf.cast(inside, tf.float32)[..., tf.newaxis]


def paste_masks(masks, boxes, height, width):
  """Box-relative masks -> full-image probabilities, [N, height, width].

  Bilinear reading is separable, so each pasted mask is Wy @ mask @ Wx^T
  with [height, S] and [width, S] interpolation matrices: no per-box loop.

  Args:
    masks: [N, S, S] probabilities.
    boxes: [N, 4] [ymin, xmin, ymax, xmax] image pixels.
    height, width: image size (ints or scalar tensors).

  Returns:
    float32 [N, height, width].
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  size = masks.shape[-1]
  rows = _interpolation_matrix(boxes[:, 0], boxes[:, 2], height, size)
  cols = _interpolation_matrix(boxes[:, 1], boxes[:, 3], width, size)
  return tf.einsum('nys,nst,nxt->nyx', rows, masks, cols)
