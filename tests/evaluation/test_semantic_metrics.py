"""Mean IoU of semantic maps against numpy-counted examples."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf.evaluation import semantic_metrics


def test_confusion_counts_truth_by_prediction_and_skips_ignored():
  labels = np.array([[0, 1], [1, 255]])
  predicted = np.array([[0, 1], [0, 1]])
  counts = semantic_metrics.confusion(predicted, labels, 1)
  # Rows: truth; columns: prediction; the ignored pixel counts nowhere.
  np.testing.assert_array_equal(counts, [[1, 0], [1, 1]])
  assert semantic_metrics.mean_iou(counts) == pytest.approx(
      (1 / 2 + 1 / 2) * 50)
  assert semantic_metrics.mean_iou(
      semantic_metrics.confusion(labels, labels, 1)) == 100


def test_a_class_never_labelled_nor_predicted_is_left_out_of_the_mean():
  counts = semantic_metrics.confusion(np.array([0, 2]), np.array([0, 2]), 3)
  iou = semantic_metrics.intersection_over_union(counts)
  assert iou[0] == iou[2] == 100 and np.isnan(iou[1]) and np.isnan(iou[3])
  assert semantic_metrics.mean_iou(counts) == 100


def test_semantic_metrics_of_a_model_over_batches():
  """A 'model' that returns fixed maps, scored over two padded batches as
  a numpy count of the same pixels gives."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, [2, 2, 6, 5]).astype(np.uint8)
  labels[:, :, 4:] = 255  # Padding rows.
  maps = rng.integers(0, 3, [2, 2, 6, 5]).astype(np.int32)
  batches = [{'image': tf.constant(float(b), shape=[2, 6, 5, 3]),
              'image_size': tf.constant([[4, 5]] * 2),
              'semantic_labels': tf.constant(labels[b])} for b in range(2)]

  def model(inputs, training=False):
    del training
    b = tf.cast(inputs['image'][0, 0, 0, 0], tf.int32)  # Traced.
    return {'semantic_map': tf.gather(tf.constant(maps), b)}

  got = semantic_metrics.semantic_metrics(model, batches, 2, ['a', 'b'])
  valid = labels != 255
  expected = []
  for k in range(3):
    truth, guess = (labels == k) & valid, (maps == k) & valid
    expected.append((truth & guess).sum() / (truth | guess).sum() * 100)
  assert list(got['IoU']) == ['background', 'a', 'b']
  np.testing.assert_allclose(list(got['IoU'].values()), expected)
  assert got['mIoU'] == pytest.approx(np.mean(expected))
