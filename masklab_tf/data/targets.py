"""Dense training targets: the semantic map and the direction/distance map.

MaskLab trains its semantic logits (K + 1 channels) and its direction logits
(D x R channels) through the mask branch; the optional dense auxiliary losses
read the maps built here. Both are computed after augmentation, from the
final masks and boxes, so flips and resizes cannot desynchronise them.

Where instances overlap the smallest one wins (it is the one a person would
see in front, and the one whose direction layout is least disturbed);
crowd regions not covered by a regular instance are ignored by both losses;
background is class 0 for the semantic loss and ignored by the direction loss.
"""

from __future__ import annotations

import tensorflow as tf

from masklab_tf.ops import direction
from masklab_tf.ops import label_values

BACKGROUND = -1
CROWD = -2


def instance_owner_map(masks: tf.Tensor, areas: tf.Tensor) -> tf.Tensor:
  """Index of the instance that owns each pixel, -1 where none does.

  Args:
    masks: uint8 [N, H, W] (0/1).
    areas: float [N], instance areas; the smallest covering instance wins.

  Returns:
    int32 [H, W].
  """
  num = tf.shape(masks)[0]
  # Rank 1 for the largest instance ... N for the smallest; the owner is the
  # highest rank covering a pixel. A uint8 product keeps the [N, H, W]
  # intermediate as small as the masks themselves; past 254 instances int32.
  order = tf.argsort(areas, direction='DESCENDING', stable=True)
  rank = tf.scatter_nd(order[:, tf.newaxis], tf.range(1, num + 1), [num])

  def top_rank(dtype):
    ranked = tf.cast(masks, dtype) * tf.cast(rank, dtype)[:, None, None]
    return tf.cast(tf.reduce_max(
        tf.concat([ranked, tf.zeros_like(ranked[:1])], axis=0), axis=0),
                   tf.int32)

  top = tf.cond(num <= 254, lambda: top_rank(tf.uint8),
                lambda: top_rank(tf.int32))
  owner_by_rank = tf.concat([[-1], order], axis=0)
  return tf.gather(owner_by_rank, top)


def instance_map(masks: tf.Tensor, is_crowd: tf.Tensor,
                 areas: tf.Tensor | None = None) -> tf.Tensor:
  """Which instance each pixel belongs to: the map all dense targets read.

  Computing this once, at the source resolution, lets the pipeline resize
  and flip one int32 map instead of N masks (nearest resizing commutes with
  the per-pixel ownership).

  Args:
    masks: uint8 [N, H, W] instance masks (0/1), crowd ones included.
    is_crowd: bool [N].
    areas: float [N] mask areas, if the caller has them already.

  Returns:
    int32 [H, W]: the index (into all N) of the owning regular instance,
    CROWD where only crowd masks cover the pixel, BACKGROUND elsewhere.
  """
  regular = tf.cast(tf.logical_not(is_crowd), masks.dtype)
  regular_masks = masks * regular[:, tf.newaxis, tf.newaxis]
  if areas is None:
    areas = tf.reduce_sum(tf.cast(masks, tf.float32), [1, 2])
  owner = instance_owner_map(regular_masks, areas)
  crowd = tf.cast(masks, tf.bool) & is_crowd[:, tf.newaxis, tf.newaxis]
  crowd_region = tf.reduce_any(crowd, axis=0)
  crowd_region = tf.broadcast_to(crowd_region, tf.shape(owner))
  return tf.where((owner < 0) & crowd_region, CROWD, owner)


def semantic_labels(instances: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
  """Semantic class per pixel: 0 background, 1..K, IGNORE_LABEL for crowd.

  Args:
    instances: int32 [H, W] from `instance_map`.
    classes: int [N] contiguous class indices 1..K.

  Returns:
    uint8 [H, W].
  """
  labels = tf.gather(tf.concat([[0], tf.cast(classes, tf.int32)], 0),
                     tf.maximum(instances, -1) + 1)
  labels = tf.where(instances == CROWD, label_values.IGNORE_LABEL, labels)
  return tf.cast(labels, tf.uint8)


def direction_labels(instances: tf.Tensor, boxes: tf.Tensor,
                     num_directions: int = 8,
                     num_distance_bins: int = 4) -> tf.Tensor:
  """Direction x distance channel per instance pixel, IGNORE_LABEL elsewhere.

  Each pixel centre (x + 0.5, y + 0.5) is measured against the box of the
  instance that owns it (ops/direction.py).

  Args:
    instances: int32 [H, W] from `instance_map`.
    boxes: float [N, 4] continuous [ymin, xmin, ymax, xmax].
    num_directions: D.
    num_distance_bins: R.

  Returns:
    uint8 [H, W].
  """
  if num_directions * num_distance_bins >= label_values.IGNORE_LABEL:
    raise ValueError('D * R must stay below the ignore label '
                     f'{label_values.IGNORE_LABEL}')
  height, width = tf.shape(instances)[0], tf.shape(instances)[1]
  owned = instances >= 0
  boxes = tf.cast(boxes, tf.float32)
  # A dummy unit box for unowned pixels keeps the gather in range.
  boxes = tf.concat([[[0.0, 0.0, 1.0, 1.0]], boxes], axis=0)
  pixel_boxes = tf.gather(boxes, tf.where(owned, instances + 1, 0))
  ymin, xmin, ymax, xmax = tf.unstack(pixel_boxes, axis=-1)
  ys = tf.cast(tf.range(height), tf.float32)[:, tf.newaxis] + 0.5
  xs = tf.cast(tf.range(width), tf.float32)[tf.newaxis, :] + 0.5
  half_h = tf.maximum((ymax - ymin) / 2.0, 1e-6)
  half_w = tf.maximum((xmax - xmin) / 2.0, 1e-6)
  u = (xs - (xmin + xmax) / 2.0) / half_w
  v = (ys - (ymin + ymax) / 2.0) / half_h
  channel = direction.direction_channel(u, v, num_directions,
                                        num_distance_bins)
  return tf.cast(tf.where(owned, channel, label_values.IGNORE_LABEL), tf.uint8)


def dense_targets(masks: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
                  is_crowd: tf.Tensor, num_directions: int = 8,
                  num_distance_bins: int = 4) -> dict[str, tf.Tensor]:
  """Semantic and direction label maps of one image, from its masks.

  Args:
    masks: uint8 [N, H, W] instance masks (0/1), crowd ones included.
    boxes: float [N, 4] continuous [ymin, xmin, ymax, xmax].
    classes: int [N] contiguous class indices 1..K.
    is_crowd: bool [N].
    num_directions: D.
    num_distance_bins: R.

  Returns:
    {'semantic_labels': uint8 [H, W], 'direction_labels': uint8 [H, W]}.
  """
  instances = instance_map(masks, is_crowd)
  return labels_from_instance_map(instances, boxes, classes, num_directions,
                                  num_distance_bins)


def labels_from_instance_map(instances: tf.Tensor, boxes: tf.Tensor,
                             classes: tf.Tensor, num_directions: int = 8,
                             num_distance_bins: int = 4
                             ) -> dict[str, tf.Tensor]:
  """`dense_targets` from an (already resized / flipped) instance map."""
  return {
      'semantic_labels': semantic_labels(instances, classes),
      'direction_labels': direction_labels(instances, boxes, num_directions,
                                           num_distance_bins),
  }
