"""Anchors, RPN target assignment and proposals."""

import numpy as np
import tensorflow as tf
import tf_keras

from masklab_tf.modeling.heads import rpn_head
from masklab_tf.modeling.layers import rpn
from masklab_tf.ops import anchors as anchor_ops


def test_anchor_shapes_keep_area_and_ratio():
  shapes = anchor_ops.anchor_shapes((32.0, 64.0), (0.5, 1.0, 2.0)).numpy()
  assert shapes.shape == (6, 2)
  np.testing.assert_allclose(shapes.prod(axis=1),
                             [32 ** 2] * 3 + [64 ** 2] * 3, rtol=1e-5)
  np.testing.assert_allclose(shapes[:3, 1] / shapes[:3, 0], [0.5, 1, 2],
                             rtol=1e-5)


def test_grid_anchors_centres_and_layout():
  anchors = anchor_ops.grid_anchors(3, 4, 16, (32.0,), (1.0,)).numpy()
  assert anchors.shape == (3, 4, 4)
  # Cell (1, 2) of a stride-16 map is centred at (24, 40).
  np.testing.assert_allclose(anchors[1, 2], [8, 24, 40, 56])
  many = anchor_ops.grid_anchors(2, 2, 8, (16.0, 32.0), (0.5, 1.0, 2.0))
  assert many.shape == (2, 2, 24)


def test_rpn_targets_rules():
  anchors = tf.constant([[[0, 0, 10, 10, 0, 0, 20, 20],
                          [50, 50, 60, 60, 0, 0, 4, 4]]], tf.float32)
  # Anchors: a (0,0,10,10), b (0,0,20,20), c (50,50,60,60), d (0,0,4,4).
  gt = tf.constant([[[0, 0, 10, 10], [49, 49, 61, 61], [-1, -1, -1, -1]]],
                   tf.float32)
  labels, targets = rpn.rpn_targets(anchors, gt, batch_size_per_image=4,
                                    positive_fraction=0.5)
  labels = labels.numpy()[0]
  # a: IoU 1 -> positive; c: best anchor of box 2 (IoU 0.69) -> positive;
  # d: IoU 0.16 with box 1 -> negative; b: IoU 0.25 -> negative.
  assert labels[0] == 1 and labels[2] == 1
  assert labels[1] == 0 and labels[3] == 0
  np.testing.assert_allclose(targets.numpy()[0, 0], 0.0, atol=1e-6)
  assert np.abs(targets.numpy()[0, 2]).sum() > 0


def test_rpn_sampling_budget():
  anchors = anchor_ops.grid_anchors(20, 20, 8, (16.0, 32.0), (1.0,))
  gt = tf.constant([[[8, 8, 40, 40], [80, 80, 120, 140]]] * 2, tf.float32)
  labels, _ = rpn.rpn_targets(anchors, gt, batch_size_per_image=64,
                              positive_fraction=0.25)
  labels = labels.numpy()
  for row in labels:
    assert (row >= 0).sum() == 64
    assert 1 <= (row == 1).sum() <= 16


def test_rpn_targets_without_boxes():
  anchors = anchor_ops.grid_anchors(4, 4, 8, (16.0,), (1.0,))
  gt = -tf.ones([1, 3, 4])
  labels, _ = rpn.rpn_targets(anchors, gt, batch_size_per_image=8)
  labels = labels.numpy()
  assert (labels == 1).sum() == 0 and (labels == 0).sum() == 8


def test_proposals_decode_and_clip():
  anchors_layer = rpn.RpnAnchors(8, (16.0, 32.0), (1.0,))
  features = tf.zeros([2, 6, 6, 4])
  anchors = anchors_layer(features)
  scores = tf.random.normal([2, 6, 6, 2], seed=1)
  deltas = tf.zeros([2, 6, 6, 8])
  layer = rpn.ProposalGenerator(pre_nms_top_k=50, num_proposals=10,
                                test_pre_nms_top_k=50, test_num_proposals=10)
  boxes, box_scores = layer(scores, deltas, anchors,
                            tf.constant([[48, 40], [48, 48]]), training=False)
  assert boxes.shape == (2, 10, 4) and box_scores.shape == (2, 10)
  boxes = boxes.numpy()
  assert boxes[0, :, 3].max() <= 40.0 + 1e-4  # clipped to the valid width
  assert boxes.min() >= 0.0


def test_layers_round_trip_config():
  for layer in (rpn_head.RpnHead(6, 32), rpn.RpnAnchors(8, (16.0,), (1.0, 2.0)),
                rpn.ProposalGenerator(100, 0.6, 20, 50, 10)):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    assert type(restored) is type(layer)
