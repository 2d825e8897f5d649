"""modeling/heads/box_head.BoxClassifier: output shapes for any number of
RoIs, its config round trip, and the deformable crop switch."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.modeling.heads import box_head

NUM_CLASSES = 3
CHANNELS = 256   # ResNet-10's res4 channels (what its conv5 block takes).


def classifier(deformable=False, **kwargs):
  values = dict(num_classes=NUM_CLASSES, backbone_depth=10,
                multigrid=(1, 2, 1), crop_size=4, feature_stride=8,
                deformable=deformable)
  values.update(kwargs)
  return box_head.BoxClassifier(**values, name='box_classifier')


def res4_and_rois(batch, num, seed=0):
  rng = np.random.default_rng(seed)
  res4 = rng.normal(size=[batch, 6, 7, CHANNELS]).astype(np.float32)
  corner = rng.uniform(0, 30, [batch, num, 2])
  rois = np.concatenate([corner, corner + rng.uniform(6, 20, [batch, num, 2])],
                        axis=-1).astype(np.float32)
  return tf.constant(res4), tf.constant(rois)


@pytest.fixture(scope='module')
def traced():
  """A plain classifier called through a tf.function whose batch and RoI
  count are unknown at trace time."""
  layer = classifier()
  call = tf.function(
      lambda res4, rois: layer(res4, rois, training=False),
      input_signature=[tf.TensorSpec([None, None, None, CHANNELS]),
                       tf.TensorSpec([None, None, 4])])
  return layer, call


@pytest.mark.parametrize('batch, num', [(2, 3), (1, 5), (3, 1)])
def test_output_shapes_for_dynamic_rois(traced, batch, num):
  """logits [B, N, K+1] and class-specific deltas [B, N, 4 (K+1)]."""
  _, call = traced
  logits, deltas = call(*res4_and_rois(batch, num))
  assert logits.shape == (batch, num, NUM_CLASSES + 1)
  assert deltas.shape == (batch, num, 4 * (NUM_CLASSES + 1))
  assert np.isfinite(logits.numpy()).all()
  assert np.isfinite(deltas.numpy()).all()


def test_each_roi_is_classified_on_its_own(traced):
  """Row (b, n) of the outputs depends on image b and RoI n only: RoIs in
  another order give the same rows in that order, and one image with one
  RoI alone gives its row (the reshapes keep B and N apart, nothing is
  pooled across RoIs)."""
  _, call = traced
  res4, rois = res4_and_rois(2, 4, seed=1)
  logits, deltas = (t.numpy() for t in call(res4, rois))
  assert not np.allclose(logits[0, 0], logits[0, 1])
  order = [2, 0, 3, 1]
  permuted_logits, permuted_deltas = call(res4, tf.gather(rois, order,
                                                          axis=1))
  np.testing.assert_allclose(permuted_logits.numpy(), logits[:, order],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(permuted_deltas.numpy(), deltas[:, order],
                             rtol=1e-5, atol=1e-6)
  alone_logits, alone_deltas = call(res4[1:], rois[1:, 2:3])
  np.testing.assert_allclose(alone_logits.numpy()[0, 0], logits[1, 2],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(alone_deltas.numpy()[0, 0], deltas[1, 2],
                             rtol=1e-5, atol=1e-6)


def test_config_round_trip():
  """from_config(get_config()) is the same layer: equal config, the same
  weights' shapes, and with the weights copied the same outputs; Keras
  finds the class by its registered name."""
  layer = classifier(deformable=True, crop_size=6, feature_stride=4,
                     norm_momentum=0.9, norm_epsilon=1e-3, use_sync_bn=False)
  res4, rois = res4_and_rois(1, 3)
  expected = layer(res4, rois, training=False)
  config = layer.get_config()
  assert config['deformable'] is True
  assert config['multigrid'] == [1, 2, 1]
  assert config['crop_size'] == 6 and config['feature_stride'] == 4

  copy = box_head.BoxClassifier.from_config(config)
  assert copy.get_config() == config
  copy(res4, rois, training=False)
  assert ([w.shape for w in copy.weights] ==
          [w.shape for w in layer.weights])
  copy.set_weights(layer.get_weights())
  for got, want in zip(copy(res4, rois, training=False), expected):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                               atol=1e-6)

  revived = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert type(revived) is box_head.BoxClassifier
  assert revived.get_config() == config


@pytest.mark.parametrize('deformable', [True, False])
def test_deformable_builds_the_offset_network(deformable):
  """deformable=True builds the deformable crop's offset network (its
  weights exist and are trainable); False has no offset weights at all."""
  layer = classifier(deformable=deformable)
  layer(*res4_and_rois(1, 2), training=False)
  offset = [w.name for w in layer.weights if 'offset' in w.name]
  trainable = [w.name for w in layer.trainable_weights if 'offset' in w.name]
  if deformable:
    assert any('offset_predictor' in name for name in offset), offset
    assert any('offset_hidden' in name for name in offset), offset
  else:
    assert not offset, offset
  assert trainable == offset
