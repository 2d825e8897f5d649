"""The one direction geometry, shared by dense targets and direction pooling.

MaskLab (sec. 3, Fig. 3 and 6) quantises each instance pixel's position
relative to its instance's box centre into D directions x R distance bins.
The direction targets (data/targets.py) and the direction pooling of the mask
head (which copies, at each position of a box crop, the logit channel that
position would have as a target) must use exactly the same quantisation, so
both come from here.

Convention (docs/design.md, "One geometry"): for a box with centre
(cx, cy), width w and height h, a point (x, y) has normalised offsets u = (x - cx) / (w / 2) and
v = (y - cy) / (h / 2). Its direction bin is
d = floor(((atan2(v, u) mod 2 pi) / (2 pi)) * D) and its distance bin is
r = min(floor(sqrt(u^2 + v^2) * R), R - 1); the channel is d * R + r.
Image y points down, so angles grow clockwise on screen. A pixel's position is
its centre (x + 0.5, y + 0.5) in continuous coordinates. Crops sample S
positions that include both box edges (ops/crop.py), so crop sample i sits at
u = -1 + 2 i / (S - 1).
"""

from __future__ import annotations

import math

import tensorflow as tf


def direction_channel(u: tf.Tensor, v: tf.Tensor, num_directions: int = 8,
                      num_distance_bins: int = 4) -> tf.Tensor:
  """Direction x distance channel of normalised box offsets.

  Args:
    u: float [...], horizontal offset from the box centre in half-widths.
    v: float [...], vertical offset from the box centre in half-heights.
    num_directions: D.
    num_distance_bins: R.

  Returns:
    int32 [...], channel d * R + r in [0, D * R).
  """
  u = tf.convert_to_tensor(u, tf.float32)
  v = tf.convert_to_tensor(v, tf.float32)
  angle = tf.math.floormod(tf.math.atan2(v, u), 2.0 * math.pi)
  direction = tf.cast(tf.floor(angle / (2.0 * math.pi) * num_directions),
                      tf.int32)
  # floormod can return exactly 2 pi for tiny negative angles in float32.
  direction = tf.minimum(direction, num_directions - 1)
  radius = tf.sqrt(u * u + v * v)
  distance = tf.minimum(
      tf.cast(tf.floor(radius * num_distance_bins), tf.int32),
      num_distance_bins - 1)
  return direction * num_distance_bins + distance


def crop_sample_offsets(crop_size: int) -> tf.Tensor:
  """Normalised offsets of the S samples of a box crop: -1 + 2 i / (S - 1).

  Returns:
    float32 [S]; from -1 (one box edge) to 1 (the other), both included.
  """
  if crop_size < 2:
    raise ValueError(f'crop_size must be >= 2, got {crop_size}')
  return tf.linspace(-1.0, 1.0, crop_size)


def pooling_index_map(crop_size: int = 41, num_directions: int = 8,
                      num_distance_bins: int = 4) -> tf.Tensor:
  """Channel read by direction pooling at each position of an S x S crop.

  It depends only on S, D and R, so the mask head computes it once.

  Returns:
    int32 [S, S] (row = v, column = u), values in [0, D * R).
  """
  offsets = crop_sample_offsets(crop_size)
  v, u = tf.meshgrid(offsets, offsets, indexing='ij')
  return direction_channel(u, v, num_directions, num_distance_bins)


def mirror_channel_permutation(num_directions: int = 8,
                               num_distance_bins: int = 4) -> list[int]:
  """Channel each channel becomes under a horizontal flip (u -> -u).

  A flip maps angle a to pi - a, so direction bin d becomes D/2 - 1 - d
  (mod D) for even D; distance bins are unchanged. Points exactly on a bin
  border are the exception (measure zero), which tests account for.
  """
  if num_directions % 2:
    raise ValueError('a horizontal flip maps direction bins onto bins only '
                     f'for an even number of directions, got {num_directions}')
  permutation = []
  for channel in range(num_directions * num_distance_bins):
    direction, distance = divmod(channel, num_distance_bins)
    mirrored = (num_directions // 2 - 1 - direction) % num_directions
    permutation.append(mirrored * num_distance_bins + distance)
  return permutation
