"""modeling/layers/roi_sampler: sampled RoIs and their targets, checked
against numpy IoU (reference.box_iou_np), and the layer's config."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import reference
from masklab_tf.modeling.layers import roi_sampler

NUM_SAMPLES = 8
FRACTION = 0.25
FOREGROUND_IOU = 0.5


def batch_of_three(seed=0):
  """Proposals, gt boxes and classes of three images:

  0: two objects among many proposals (plenty of both kinds);
  1: one object, every proposal a zero (padding) box;
  2: no object at all (every gt slot padding).
  """
  rng = np.random.default_rng(seed)
  num_proposals, max_gt = 40, 4
  gt_boxes = np.full([3, max_gt, 4], -1.0, np.float32)
  gt_classes = np.full([3, max_gt], -1, np.int32)
  gt_boxes[0, :2] = [[10, 10, 40, 50], [50, 60, 90, 80]]
  gt_classes[0, :2] = [3, 1]
  gt_boxes[1, 0] = [20, 30, 60, 45]
  gt_classes[1, 0] = 2

  proposals = np.zeros([3, num_proposals, 4], np.float32)
  # Image 0: jittered copies of the objects (mostly foreground) and random
  # boxes (mostly background), then a few zero boxes.
  for i in range(12):
    box = gt_boxes[0, i % 2]
    proposals[0, i] = box + rng.uniform(-4, 4, 4)
  corner = rng.uniform(0, 80, [24, 2])
  proposals[0, 12:36] = np.concatenate(
      [corner, corner + rng.uniform(5, 30, [24, 2])], axis=1)
  corner = rng.uniform(0, 80, [num_proposals, 2])
  proposals[2] = np.concatenate(
      [corner, corner + rng.uniform(5, 30, [num_proposals, 2])], axis=1)
  return proposals, gt_boxes, gt_classes


def sample(proposals, gt_boxes, gt_classes, **kwargs):
  values = dict(num_samples=NUM_SAMPLES, foreground_fraction=FRACTION,
                foreground_iou=FOREGROUND_IOU,
                uniform=lambda shape: tf.random.stateless_uniform(shape,
                                                                  [1, 0]))
  values.update(kwargs)
  rois, boxes, classes = roi_sampler.sample_rois(
      tf.constant(proposals), tf.constant(gt_boxes), tf.constant(gt_classes),
      **values)
  return rois.numpy(), boxes.numpy(), classes.numpy()


def test_targets_match_numpy_iou():
  """Per image: num_samples RoIs, at most the foreground fraction
  foreground; a foreground RoI has IoU >= foreground_iou with its matched
  box, which is its best-overlapping ground truth, and that box's class;
  a background RoI (class 0) overlaps every ground truth less and is its
  own matched box; every RoI is a candidate, none twice."""
  proposals, gt_boxes, gt_classes = batch_of_three()
  rois, matched, classes = sample(proposals, gt_boxes, gt_classes)
  assert rois.shape == matched.shape == (3, NUM_SAMPLES, 4)
  assert classes.shape == (3, NUM_SAMPLES) and classes.dtype == np.int32
  for b in range(3):
    valid = gt_classes[b] > 0
    candidates = np.concatenate([proposals[b], gt_boxes[b]])
    used = classes[b] >= 0
    assert (classes[b] > 0).sum() <= int(FRACTION * NUM_SAMPLES)
    for roi, box, cls in zip(rois[b][used], matched[b][used],
                             classes[b][used]):
      assert (np.abs(candidates - roi).max(axis=1) == 0).any(), roi
      assert roi[2] > roi[0] and roi[3] > roi[1], roi
      iou = (reference.box_iou_np(roi, gt_boxes[b][valid])[0]
             if valid.any() else np.zeros([0]))
      if cls > 0:
        best = np.argmax(iou)
        assert iou[best] >= FOREGROUND_IOU
        np.testing.assert_array_equal(box, gt_boxes[b][valid][best])
        assert cls == gt_classes[b][valid][best]
      else:
        assert (iou < FOREGROUND_IOU).all(), iou
        np.testing.assert_array_equal(box, roi)
    used_rois = rois[b][used]
    assert len(np.unique(used_rois, axis=0)) == len(used_rois)


def test_counts_per_image():
  """Image 0 (plenty of both kinds): exactly int(0.25 * 8) = 2 foreground
  and 6 background. Image 1 (zero-box proposals only): its ground truth is
  the one candidate, foreground, and the other 7 slots are -1. Image 2 (no
  object): every RoI background."""
  proposals, gt_boxes, gt_classes = batch_of_three()
  rois, matched, classes = sample(proposals, gt_boxes, gt_classes)
  assert (classes[0] > 0).sum() == 2 and (classes[0] == 0).sum() == 6
  assert sorted(classes[1]) == [-1] * 7 + [2]
  only = np.flatnonzero(classes[1] == 2)[0]
  np.testing.assert_array_equal(rois[1, only], gt_boxes[1, 0])
  np.testing.assert_array_equal(matched[1, only], gt_boxes[1, 0])
  assert (classes[2] == 0).all()


def test_foreground_threshold_is_inclusive():
  """IoU exactly foreground_iou is foreground, just below is background
  (all candidates taken: fraction 1 and room for them)."""
  gt_boxes = np.array([[[0, 0, 10, 10], [-1, -1, -1, -1]]], np.float32)
  gt_classes = np.array([[1, -1]], np.int32)
  # IoU 50 / 100 = 0.5 and 49 / 100 = 0.49 with the object.
  proposals = np.array([[[0, 0, 10, 5], [0, 0, 10, 4.9]]], np.float32)
  rois, _, classes = sample(proposals, gt_boxes, gt_classes, num_samples=4,
                            foreground_fraction=1.0)
  by_width = {round(float(r[3] - r[1]), 1): c for r, c in
              zip(rois[0], classes[0]) if c >= 0}
  assert by_width == {5.0: 1, 4.9: 0, 10.0: 1}


def test_dynamic_batch_in_a_tf_function():
  """Unknown batch, proposal and ground-truth counts at trace time."""
  sample_fn = tf.function(
      lambda p, g, c: roi_sampler.sample_rois(p, g, c, NUM_SAMPLES, FRACTION,
                                              FOREGROUND_IOU),
      input_signature=[tf.TensorSpec([None, None, 4]),
                       tf.TensorSpec([None, None, 4]),
                       tf.TensorSpec([None, None], tf.int32)])
  proposals, gt_boxes, gt_classes = batch_of_three()
  for b in (slice(0, 1), slice(0, 3)):
    rois, _, classes = sample_fn(proposals[b], gt_boxes[b], gt_classes[b])
    assert rois.shape == (b.stop, NUM_SAMPLES, 4)
    assert classes.shape == (b.stop, NUM_SAMPLES)


@pytest.mark.parametrize('seed', [None, 7])
def test_layer_config_round_trip(seed):
  """RoiSampler's config (seed included) survives from_config and Keras'
  serialize / deserialize, and the layer samples as sample_rois does."""
  layer = roi_sampler.RoiSampler(num_samples=6, foreground_fraction=0.5,
                                 foreground_iou=0.6, seed=seed,
                                 name='roi_sampler')
  config = layer.get_config()
  assert config['seed'] == seed
  assert (config['num_samples'], config['foreground_fraction'],
          config['foreground_iou']) == (6, 0.5, 0.6)
  copy = roi_sampler.RoiSampler.from_config(config)
  assert copy.get_config() == config
  assert copy.seed == seed
  revived = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert type(revived) is roi_sampler.RoiSampler
  assert revived.get_config() == config

  proposals, gt_boxes, gt_classes = batch_of_three()
  _, _, classes = layer(tf.constant(proposals), tf.constant(gt_boxes),
                        tf.constant(gt_classes))
  classes = classes.numpy()
  assert classes.shape == (3, 6)
  assert (classes[0] > 0).sum() == 3        # int(0.5 * 6)


def test_layer_seed_decides_the_sample():
  """A layer revived from another's config (same seed) draws the same
  RoIs, and a layer with another seed other ones: the config's seed
  reaches the sampling."""
  proposals, gt_boxes, gt_classes = batch_of_three()
  inputs = (tf.constant(proposals), tf.constant(gt_boxes),
            tf.constant(gt_classes))

  def draw(layer):
    return layer(*inputs)[0].numpy()

  layer = roi_sampler.RoiSampler(num_samples=NUM_SAMPLES, seed=7)
  same = roi_sampler.RoiSampler.from_config(layer.get_config())
  other = roi_sampler.RoiSampler(num_samples=NUM_SAMPLES, seed=8)
  first = draw(layer)
  np.testing.assert_array_equal(draw(same), first)
  assert not np.array_equal(draw(other), first)
