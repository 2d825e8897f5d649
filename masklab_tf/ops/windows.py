"""InstanceFCN's sliding windows: their boxes and DeepMask's labels.

Windows of several sizes are centred on every feature pixel (the image
pyramid of the paper folded into window sizes: modeling/systems/
instancefcn.py). A window is positive under DeepMask's rule: an object is
centred in it (within 16/224 of the window width, and at least half the
window stride, so every object has a positive window) and its larger box
side is 128/224 of the window width, within a factor 2^(1/4) (each object
also counts at the window size nearest to that fit, within a factor 2, so
the folded pyramid leaves no object without a size). Everything else whose
centre lies in the image is negative.
"""

from __future__ import annotations

import math

import tensorflow as tf

# DeepMask's positive windows: a 224 px input with a 128 px object centred
# within 16 px, at scale tolerance 2^(+-1/4).
OBJECT_TO_WINDOW = 128.0 / 224.0
CENTRE_TOLERANCE = 16.0 / 224.0
SCALE_TOLERANCE = 2.0 ** 0.25


def window_boxes(height, width, stride, window_sizes) -> tf.Tensor:
  """Square windows centred on every feature pixel, one per size.

  Feature pixel (i, j) of a stride-s map has its centre at image
  ((i + 0.5) s, (j + 0.5) s), as the assembling layer samples it.

  Returns:
    float32 [height * width * A, 4] image-pixel boxes, ordered (i, j, a),
    the order of the objectness map [B, h, w, A] flattened.
  """
  ys = (tf.cast(tf.range(height), tf.float32) + 0.5) * stride
  xs = (tf.cast(tf.range(width), tf.float32) + 0.5) * stride
  shape = [height, width, len(window_sizes)]
  cy = tf.broadcast_to(ys[:, tf.newaxis, tf.newaxis], shape)
  cx = tf.broadcast_to(xs[tf.newaxis, :, tf.newaxis], shape)
  half = tf.broadcast_to(tf.constant(window_sizes, tf.float32) / 2.0, shape)
  boxes = tf.stack([cy - half, cx - half, cy + half, cx + half], axis=-1)
  return tf.reshape(boxes, [-1, 4])


def window_labels(windows, gt_boxes, image_size, stride, window_sizes):
  """DeepMask's positive / negative windows (see the module docstring).

  Args:
    windows: [N, 4] from window_boxes (N = h * w * A, sizes cycling fastest).
    gt_boxes: [B, M, 4], padded with -1.
    image_size: int [B, 2] valid (height, width).
    stride: feature stride.
    window_sizes: the A window sides in pixels.

  Returns:
    positive, negative: bool [B, N]; matched: int32 [B, N], the index of the
    object a positive window is centred on (0 elsewhere).
  """
  num_sizes = len(window_sizes)
  sizes = tf.constant(window_sizes, tf.float32)
  window_size = tf.tile(sizes, [tf.shape(windows)[0] // num_sizes])  # [N]
  centre = (windows[:, :2] + windows[:, 2:]) / 2.0  # [N, 2]
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  valid_gt = gt_boxes[..., 0] >= 0  # [B, M]
  gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0
  gt_scale = tf.reduce_max(gt_boxes[..., 2:] - gt_boxes[..., :2], axis=-1)

  # Scale: log ratio of the object to each window size's fit.
  log_ratio = tf.math.log(tf.maximum(gt_scale, 1e-3)[..., tf.newaxis] /
                          (OBJECT_TO_WINDOW * sizes))  # [B, M, A]
  nearest = tf.one_hot(tf.argmin(tf.abs(log_ratio), axis=-1), num_sizes,
                       on_value=True, off_value=False)
  size_ok = ((tf.abs(log_ratio) <= math.log(SCALE_TOLERANCE)) |
             (nearest & (tf.abs(log_ratio) <= math.log(2.0))))
  size_ok = tf.tile(size_ok, [1, 1, tf.shape(windows)[0] // num_sizes])
  size_ok = tf.transpose(size_ok, [0, 2, 1])  # [B, N, M]

  offset = tf.reduce_max(tf.abs(centre[tf.newaxis, :, tf.newaxis, :] -
                                gt_centre[:, tf.newaxis, :, :]), axis=-1)
  tolerance = tf.maximum(CENTRE_TOLERANCE * window_size, stride / 2.0)
  centred = offset <= tolerance[tf.newaxis, :, tf.newaxis]  # [B, N, M]
  match = centred & size_ok & valid_gt[:, tf.newaxis, :]
  positive = tf.reduce_any(match, axis=-1)
  matched = tf.argmin(tf.where(match, offset, float('inf')), axis=-1,
                      output_type=tf.int32)
  matched = tf.where(positive, matched, 0)

  inside = windows_inside(windows, image_size)
  return positive & inside, ~positive & inside, matched


def windows_inside(windows, image_size):
  """bool [B, N]: whether each window's centre lies in the valid image.

  Args: windows [N, 4]; image_size int [B, 2] valid (height, width).
  """
  centre = (windows[:, :2] + windows[:, 2:]) / 2.0
  limits = tf.cast(image_size, tf.float32)[:, tf.newaxis, :]  # [B, 1, 2]
  return tf.reduce_all((centre[tf.newaxis] >= 0) &
                       (centre[tf.newaxis] < limits), axis=-1)
