"""The detections' two NMS forms (postprocess/detections.py): the portable
one, over class boxes flattened into shared ones, selects what the fast one
selects."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf.postprocess import detections


def _inputs(seed, batch=2, num=60, classes=5, spread=6.0):
  """Crowded RoIs (many overlaps within and across classes) and logits
  whose softmax leaves several classes competitive per RoI."""
  rng = np.random.default_rng(seed)
  centre = rng.uniform(20, 80, [batch, num, 2])
  half = rng.uniform(5, 25, [batch, num, 2])
  rois = np.concatenate([centre - half, centre + half], -1)
  logits = rng.normal(0, 1.5, [batch, num, classes + 1])
  deltas = rng.normal(0, 0.3, [batch, num, 4 * (classes + 1)]) * spread / 6
  size = np.array([[100, 100], [90, 70]][:batch], np.int32)
  return (tf.constant(logits, tf.float32), tf.constant(deltas, tf.float32),
          tf.constant(rois, tf.float32), tf.constant(size))


@pytest.mark.parametrize('seed,score_threshold', [(0, 0.0), (1, 0.0),
                                                  (2, 0.3)])
def test_portable_nms_selects_what_the_fast_nms_selects(seed,
                                                        score_threshold):
  inputs = _inputs(seed)
  fast = detections.detect(*inputs, max_detections=40, nms_iou=0.5,
                           score_threshold=score_threshold)
  portable = detections.detect(*inputs, max_detections=40, nms_iou=0.5,
                               score_threshold=score_threshold,
                               portable=True)
  # The test means something: NMS dropped boxes and several classes stay.
  assert 0 < int(fast['num_detections'][0]) <= 40
  assert len(np.unique(fast['detection_classes'].numpy())) > 3
  for key, value in fast.items():
    np.testing.assert_array_equal(portable[key].numpy(), value.numpy(),
                                  err_msg=key)


def test_no_box_scores_for_another_class():
  """The flattened scores: each box keeps its own class's probability and
  scores below the threshold for the others, so it is never their
  candidate."""
  boxes = tf.reshape(tf.range(2 * 3 * 4, dtype=tf.float32), [1, 2, 3, 4])
  probs = tf.constant([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
  shared, scores = detections._shared_boxes(boxes, probs, 0.25)
  assert shared.shape == (1, 6, 1, 4)
  np.testing.assert_array_equal(shared.numpy()[0, :, 0],
                                boxes.numpy().reshape(6, 4))
  want = np.full([6, 3], -0.75, np.float32)
  want[np.arange(6), np.arange(6) % 3] = probs.numpy().reshape(6)
  np.testing.assert_allclose(scores.numpy()[0], want)
