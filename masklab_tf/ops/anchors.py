"""Single-level grid anchors for the RPN on res4 (Faster R-CNN).

MaskLab's RPN runs on one feature map (res4, stride 8 or 16) with several
anchor sizes and aspect ratios at every position (paper: 5 scales), as TF
Object Detection API's grid anchor generator does; Model Garden's `Anchor`
spreads scales over pyramid levels instead, so it does not fit.
"""

from __future__ import annotations

import math

import tensorflow as tf


def anchor_shapes(sizes, aspect_ratios) -> tf.Tensor:
  """[A, 2] (height, width) of the A = len(sizes) * len(aspect_ratios) anchors.

  Aspect ratio is width / height; every anchor of one size has its area.
  """
  shapes = []
  for size in sizes:
    for ratio in aspect_ratios:
      shapes.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))
  return tf.constant(shapes, tf.float32)


def grid_anchors(feature_height, feature_width, stride, sizes,
                 aspect_ratios) -> tf.Tensor:
  """Anchors centred on every feature cell.

  Cell (i, j) of a stride-s map covers image pixels [i s, (i + 1) s), so its
  centre is ((i + 0.5) s, (j + 0.5) s) in continuous image coordinates.

  Returns:
    float32 [feature_height, feature_width, A * 4], boxes
    [ymin, xmin, ymax, xmax] in image pixels, anchors of a cell in the order
    of `anchor_shapes` (sizes major).
  """
  shapes = anchor_shapes(sizes, aspect_ratios)
  ys = (tf.cast(tf.range(feature_height), tf.float32) + 0.5) * stride
  xs = (tf.cast(tf.range(feature_width), tf.float32) + 0.5) * stride
  cy, cx = tf.meshgrid(ys, xs, indexing='ij')
  centres = tf.stack([cy, cx], axis=-1)[:, :, tf.newaxis, :]
  half = shapes / 2.0
  boxes = tf.concat([centres - half, centres + half], axis=-1)
  return tf.reshape(boxes, [feature_height, feature_width, -1])
