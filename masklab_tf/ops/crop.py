"""The project's one crop sampling convention.

Boxes are [ymin, xmin, ymax, xmax] in continuous image coordinates (COCO's
bbox runs from pixel edge to pixel edge; pixel (row, col) has its centre at
(row + 0.5, col + 0.5)). A crop of size S over a box samples S x S points that
include both box edges: sample i along an axis sits at
edge_min + i * (edge_max - edge_min) / (S - 1), i.e. at normalised offset
-1 + 2 i / (S - 1) (ops/direction.py derives the pooling index map from the
same positions).

`tf.image.crop_and_resize` measures positions in pixel-index space (the
centre of pixel k is at k) and normalises them by (size - 1); the conversion
below is the only place that knows it. Every crop in the project (mask
targets, semantic and direction crops, RoI features, hypercolumns) goes
through `to_crop_and_resize_boxes`, so targets, crops and pooling cannot
drift apart.

Why not Model Garden's crops (official.vision.ops.spatial_transform_ops):
  * They sample bin centres (RoIAlign), not both box edges, so their
    samples are not the positions the direction pooling map is built on.
  * `multilevel_crop_and_resize`, which crops features, was slower than
    tf.image.crop_and_resize on MaskLab's assembling crops (64 x 64 map,
    32 channels, 100 boxes, 41 x 41): 14.7 against 2.9 ms forward (5x),
    39.1 against 10.0 ms with the backward pass (3.9x)
    (benchmarks/RESULTS.md, "Assembling layer").
  * `crop_mask_in_target_box`, which crops mask targets, reads the masks'
    static height and width: in a tf.function with an unknown image size
    it fails ("Tried to convert 'y' to a tensor and failed. Error: None
    values not supported", tf-models-official 2.20), where the input
    pipeline's images have any size.
"""

from __future__ import annotations

import tensorflow as tf


def to_crop_and_resize_boxes(boxes: tf.Tensor, height, width) -> tf.Tensor:
  """Continuous [ymin, xmin, ymax, xmax] boxes -> crop_and_resize boxes.

  Args:
    boxes: float [..., 4] in pixels of an image (or feature map seen at
      stride 1) of size height x width.
    height: image height (int or scalar tensor).
    width: image width.

  Returns:
    float32 [..., 4], normalised so that tf.image.crop_and_resize samples the
    continuous box edges exactly.
  """
  boxes = tf.cast(boxes, tf.float32)
  # Centre of pixel k is at continuous k + 0.5 = index k.
  scale = tf.stack([tf.cast(height, tf.float32) - 1.0,
                    tf.cast(width, tf.float32) - 1.0] * 2)
  scale = tf.maximum(scale, 1.0)
  return (boxes - 0.5) / scale


def crop_masks(masks: tf.Tensor, boxes: tf.Tensor, crop_size: int,
               box_indices: tf.Tensor | None = None) -> tf.Tensor:
  """Crops each instance mask to its own box at crop_size x crop_size.

  Args:
    masks: uint8 or float [N, H, W] instance masks (0/1).
    boxes: float [N, 4] continuous [ymin, xmin, ymax, xmax], or [K, 4] with
      box_indices.
    crop_size: S.
    box_indices: optional int [K], the mask each box crops (default: box i
      crops mask i).

  Returns:
    float32 [N (or K), S, S] bilinear mask values in [0, 1].
  """
  # Edge samples of a box that touches the image border sit half a pixel
  # outside the image, where crop_and_resize would return 0; one replicated
  # border pixel makes them read the edge pixel instead.
  padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]], mode='SYMMETRIC')
  height = tf.shape(padded)[1]
  width = tf.shape(padded)[2]
  if box_indices is None:
    box_indices = tf.range(tf.shape(masks)[0])
  crops = tf.image.crop_and_resize(
      padded[..., tf.newaxis],
      to_crop_and_resize_boxes(tf.cast(boxes, tf.float32) + 1.0, height,
                               width),
      box_indices=tf.cast(box_indices, tf.int32),
      crop_size=(crop_size, crop_size),
      method='bilinear',
      extrapolation_value=0.0)
  return crops[..., 0]
