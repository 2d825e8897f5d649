"""Single-level grid anchors for the RPN on res4 (Faster R-CNN).

MaskLab's RPN runs on one feature map (res4, stride 8 or 16) with several
anchor sizes and aspect ratios at every position (paper: 5 scales), as TF
Object Detection API's grid anchor generator does.

Why not Model Garden's (tf-models-official 2.20, checked by calling both
inside a tf.function whose input has an unknown image size, as the training
graph and the SavedModel have):
  * `anchor_generator._SingleAnchorGenerator(1, sizes, aspect_ratios,
    stride)` gives exactly these boxes (max difference 0 at 480 x 640,
    stride 16) when the size is a Python number, but reshapes by the
    static shape, so an unknown size fails ("Failed to convert elements of
    [None, None, 60] to Tensor"). It is also private.
  * `anchor.Anchor` takes math.ceil of the size ("must be real number, not
    SymbolicTensor"), and puts one level's scales inside an octave
    (2 ** (i / num_scales)), where MaskLab's sizes 32..512 span four
    octaves on one map.
Here the grid is built from the feature map's run-time height and width.
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
