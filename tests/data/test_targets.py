"""Dense semantic and direction targets against a numpy model."""

import numpy as np
import tensorflow as tf

from masklab_tf.data import targets
from masklab_tf.ops import label_values
from reference import numpy_channel

IGNORE = label_values.IGNORE_LABEL




def numpy_targets(masks, boxes, classes, is_crowd, d=8, r=4):
  """Reference: paint regular instances largest first, crowd as ignore."""
  height, width = masks.shape[1:]
  semantic = np.zeros([height, width], np.int64)
  direction = np.full([height, width], IGNORE, np.int64)
  crowd = np.zeros([height, width], bool)
  for m, c in zip(masks, is_crowd):
    if c:
      crowd |= m > 0
  semantic[crowd] = IGNORE
  ys, xs = np.mgrid[0:height, 0:width] + 0.5
  regular = [i for i in range(len(masks)) if not is_crowd[i]]
  for i in sorted(regular, key=lambda i: -int(masks[i].sum())):
    ymin, xmin, ymax, xmax = boxes[i]
    u = (xs - (xmin + xmax) / 2) / ((xmax - xmin) / 2)
    v = (ys - (ymin + ymax) / 2) / ((ymax - ymin) / 2)
    on = masks[i] > 0
    semantic[on] = classes[i]
    direction[on] = numpy_channel(u, v, d, r)[on]
  return semantic, direction


def rectangle(height, width, top, left, bottom, right):
  mask = np.zeros([height, width], np.uint8)
  mask[top:bottom, left:right] = 1
  return mask


def compute(masks, boxes, classes, is_crowd, d=8, r=4):
  out = targets.dense_targets(tf.constant(masks), tf.constant(boxes, tf.float32),
                              tf.constant(classes, tf.int32),
                              tf.constant(is_crowd), d, r)
  return out['semantic_labels'].numpy(), out['direction_labels'].numpy()


def test_single_instance_hand_computed():
  mask = rectangle(40, 80, 10, 20, 30, 60)
  semantic, direction = compute(mask[None], [[10, 20, 30, 60]], [3], [False])
  assert semantic[20, 40] == 3 and semantic[5, 5] == 0
  # Pixel (20, 40): centre (20.5, 40.5), box centre (20, 40), half sizes
  # (10, 20): u = 0.025, v = 0.05 -> 63.4 degrees -> direction 1, ring 0.
  assert direction[20, 40] == 1 * 4 + 0
  # Pixel (29, 59), the bottom-right corner: u = 0.975, v = 0.95 -> 44.3
  # degrees, radius 1.36 -> direction 0, last ring.
  assert direction[29, 59] == 0 * 4 + 3
  # Pixel (10, 20), top-left: u = -0.975, v = -0.95 -> 224.3 degrees, just
  # short of the 225 degree border -> direction 4, last ring.
  assert direction[10, 20] == 4 * 4 + 3
  assert direction[5, 5] == IGNORE


def test_overlap_crowd_and_numpy_model():
  rng = np.random.default_rng(0)
  height, width = 48, 64
  masks, boxes = [], []
  for _ in range(6):
    top, left = rng.integers(0, 30), rng.integers(0, 40)
    bottom, right = top + rng.integers(4, 18), left + rng.integers(4, 24)
    yy, xx = np.mgrid[0:height, 0:width]
    # Ellipses inside their boxes, so boxes are tight-ish but not masks.
    cy, cx = (top + bottom) / 2, (left + right) / 2
    ry, rx = (bottom - top) / 2, (right - left) / 2
    mask = (((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1)
    masks.append(mask.astype(np.uint8))
    boxes.append([top, left, bottom, right])
  masks = np.stack(masks)
  classes = np.array([1, 2, 1, 3, 2, 1])
  is_crowd = np.array([False, False, True, False, False, False])
  semantic, direction = compute(masks, boxes, classes, is_crowd)
  want_semantic, want_direction = numpy_targets(masks, np.array(boxes, float),
                                                classes, is_crowd)
  np.testing.assert_array_equal(semantic, want_semantic)
  assert np.mean(direction != want_direction) < 1e-3
  assert (semantic == IGNORE).any()  # the crowd region shows


def test_smallest_instance_wins():
  big = rectangle(20, 20, 0, 0, 20, 20)
  small = rectangle(20, 20, 5, 5, 10, 10)
  semantic, _ = compute(np.stack([small, big]), [[5, 5, 10, 10], [0, 0, 20, 20]],
                        [2, 1], [False, False])
  assert semantic[7, 7] == 2 and semantic[15, 15] == 1


def test_no_instances():
  semantic, direction = compute(np.zeros([0, 8, 8], np.uint8),
                                np.zeros([0, 4]), np.zeros([0]),
                                np.zeros([0], bool))
  assert (semantic == 0).all() and (direction == IGNORE).all()


def test_many_instances_past_uint8():
  # 300 one-pixel instances: the owner map switches to int32 ranks.
  masks = np.zeros([300, 20, 20], np.uint8)
  for i in range(300):
    masks[i, i // 20, i % 20] = 1
  boxes = [[i // 20, i % 20, i // 20 + 1, i % 20 + 1] for i in range(300)]
  classes = np.arange(300) % 4 + 1
  semantic, _ = compute(masks, boxes, classes, np.zeros([300], bool))
  assert semantic[14, 19] == classes[299]
  assert (semantic[:15] > 0).all()
