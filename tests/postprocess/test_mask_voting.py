"""Mask voting on hand-checkable toys, and TF against the numpy reference
(tests/reference.py)."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf.postprocess import mask_voting
from reference import box_iou_np
from reference import vote_masks_np
from reference import vote_weights_np


def _box_mask(box, value, size=6):
  """A [size, size] mask that is `value` inside an integer box, 0 outside."""
  mask = np.zeros([size, size], np.float32)
  ymin, xmin, ymax, xmax = box
  mask[ymin:ymax, xmin:xmax] = value
  return mask


# A and B: class 1, box IoU 12 / 20 = 0.6. C: A's box but class 2. D: class 1
# at IoU 0 with A and B. E: a padding row.
BOXES = np.array([[0, 0, 4, 4], [0, 1, 4, 5], [0, 0, 4, 4], [4, 4, 6, 6],
                  [0, 0, 0, 0]], np.float32)
CLASSES = np.array([1, 1, 2, 1, 0])
SCORES = np.array([0.5, 0.5, 0.9, 0.3, 0.0], np.float32)
MASKS = np.stack([_box_mask([0, 0, 4, 4], 0.4),   # alone below 0.5
                  _box_mask([0, 1, 4, 5], 0.9),
                  _box_mask([0, 0, 4, 4], 0.4),
                  _box_mask([4, 4, 6, 6], 0.7),
                  np.zeros([6, 6], np.float32)])


def test_box_iou():
  iou = box_iou_np(BOXES[:2], BOXES)
  np.testing.assert_allclose(iou, [[1, 0.6, 1, 0, 0], [0.6, 1, 0.6, 0, 0]],
                             rtol=1e-6)


def test_tf_box_iou_is_model_gardens_and_equals_numpy():
  np.testing.assert_allclose(mask_voting.box_iou(BOXES[:2], BOXES),
                             box_iou_np(BOXES[:2], BOXES), rtol=1e-6)
  rng = np.random.default_rng(0)
  corners = rng.uniform(0, 50, [40, 2, 2])
  boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
  boxes[:5, 2] = boxes[:5, 0]  # empty: zero height
  boxes[5:8] = boxes[8:11]     # repeated
  boxes = boxes.astype(np.float32)
  np.testing.assert_allclose(mask_voting.box_iou(boxes, boxes[10:]),
                             box_iou_np(boxes, boxes[10:]), atol=1e-6)


def test_tf_box_iou_conventions():
  # Model Garden's bbox_overlap: a box with every coordinate negative is
  # padding (IoU -1, never a voter); empty boxes overlap nothing.
  boxes = np.array([[0, 0, 4, 4], [-1, -1, -1, -1], [2, 2, 2, 6]],
                   np.float32)
  np.testing.assert_allclose(mask_voting.box_iou(boxes, boxes), [
      [1, -1, 0], [-1, -1, -1], [0, -1, 0]], atol=1e-6)
  masks = np.stack([_box_mask([0, 0, 4, 4], 0.9)] * 3)
  voted = mask_voting.vote_masks(masks, boxes, [0.5, 0.9, 0.5], [1, 1, 1])
  # Each votes only for itself: the padding box for its own row only
  # (include_self), as the numpy model, which has no padding, agrees.
  np.testing.assert_array_equal(
      voted, vote_masks_np(masks, boxes, [0.5, 0.9, 0.5], [1, 1, 1]))


def test_who_votes():
  weights = vote_weights_np(BOXES, CLASSES, BOXES, SCORES,
                                        CLASSES, include_self=True)
  np.testing.assert_allclose(weights, [
      [0.5, 0.5, 0, 0, 0],     # A: itself and B; not C (other class)
      [0.5, 0.5, 0, 0, 0],     # B: itself and A
      [0, 0, 0.9, 0, 0],       # C: alone in class 2
      [0, 0, 0, 0.3, 0],       # D: too far from A and B
      [0, 0, 0, 0, 0],         # padding: nobody
  ])


def test_voted_masks_are_the_weighted_average_binarized():
  voted = vote_masks_np(MASKS, BOXES, SCORES, CLASSES)
  assert voted.dtype == np.uint8 and voted.shape == (5, 6, 6)
  # A and B average to 0.5 * 0.4 + 0.5 * 0.9 = 0.65 where both boxes are,
  # 0.2 on A's own column 0 and 0.45 on B's own column 4.
  both = _box_mask([0, 1, 4, 4], 1).astype(np.uint8)
  np.testing.assert_array_equal(voted[0], both)
  np.testing.assert_array_equal(voted[1], both)
  # C, alone, is its own 0.4 mask: nothing survives; A's 0.4 did only
  # through B's vote.
  np.testing.assert_array_equal(voted[2], 0)
  np.testing.assert_array_equal(voted[3], MASKS[3] >= 0.5)
  np.testing.assert_array_equal(voted[4], 0)


def test_a_pre_nms_pool_votes_instead():
  # An extra class 1 candidate on A's box, confident and sure of its mask,
  # pulls A's column 0 to (0.5 * 0.4 + 2 * 1.0) / 3 > 0.5 as well.
  pool = (np.concatenate([MASKS, _box_mask([0, 0, 4, 4], 1.0)[None]]),
          np.concatenate([BOXES, [[0, 0, 4, 4]]]),
          np.concatenate([SCORES, [2.0]]), np.concatenate([CLASSES, [1]]))
  voted = vote_masks_np(MASKS[:1], BOXES[:1], SCORES[:1],
                                    CLASSES[:1], pool=pool)
  np.testing.assert_array_equal(voted[0], _box_mask([0, 0, 4, 4], 1))


def test_tf_matches_numpy_on_the_toy():
  want = vote_masks_np(MASKS, BOXES, SCORES, CLASSES)
  voted = tf.function(mask_voting.vote_masks, input_signature=[
      tf.TensorSpec([None, None, None], tf.float32),
      tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.float32),
      tf.TensorSpec([None], tf.int32)])
  got = voted(MASKS, BOXES, SCORES, CLASSES.astype(np.int32))
  assert got.dtype == tf.uint8
  np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tf_matches_numpy_on_random_detections(seed):
  rng = np.random.default_rng(seed)
  num, size = 12, 24
  # Jittered copies of three boxes, so that many pairs overlap near 0.5.
  centres = rng.uniform(4, 20, [3, 2])
  base = np.concatenate([centres - 4, centres + 4], axis=1)
  boxes = (base[rng.integers(0, 3, num)] +
           rng.uniform(-2, 2, [num, 4])).astype(np.float32)
  classes = rng.integers(0, 3, num)
  scores = rng.uniform(0, 1, num).astype(np.float32)
  masks = rng.uniform(0, 1, [num, size, size]).astype(np.float32)
  want = vote_masks_np(masks, boxes, scores, classes)
  got = mask_voting.vote_masks(masks, boxes, scores, classes)
  np.testing.assert_array_equal(got.numpy(), want)
  weights = vote_weights_np(boxes, classes, boxes, scores,
                                        classes, include_self=True)
  assert (np.count_nonzero(weights, axis=1) > 1).any()  # voting happened
