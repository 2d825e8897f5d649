"""Shared builders of the model tests: a tiny config, a fixed batch, seeded
weights and a few SGD steps, handed to tests as the `tiny` fixture."""

import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf import config

MAX_INSTANCES = 4


def tiny_config(**overrides) -> config.ModelConfig:
  """A MaskLab config small enough to build and train in seconds."""
  values = dict(num_classes=3, backbone_depth=10, output_stride=8,
                anchor_sizes=(16.0, 32.0), rpn_head_channels=32,
                rpn_batch_size_per_image=64, rpn_pre_nms_top_k=300,
                num_proposals=30, test_num_proposals=30, roi_crop_size=8,
                num_sampled_rois=8, hypercolumn_channels=8,
                refine_filters=16, max_detections=5)
  values.update(overrides)
  return config.ModelConfig(**values)


def fixed_batch(batch_size=2, size=64):
  """A pipeline-like batch: two boxes per image painted dark and light,
  MAX_INSTANCES slots, mask targets filling the middle of each box."""
  rng = np.random.default_rng(0)
  boxes = np.full([batch_size, MAX_INSTANCES, 4], -1.0, np.float32)
  classes = np.full([batch_size, MAX_INSTANCES], -1, np.int32)
  image = rng.uniform(0, 255, [batch_size, size, size, 3]).astype(np.float32)
  targets = np.zeros([batch_size, MAX_INSTANCES, 41, 41], np.float32)
  for b in range(batch_size):
    for i in range(2):
      top, left = rng.integers(0, size - 30, 2)
      boxes[b, i] = [top, left, top + 24, left + 28]
      classes[b, i] = i + 1
      image[b, top:top + 24, left:left + 28] = 200 if i else 40
      targets[b, i, 8:33, 8:33] = 1.0
  return {'image': tf.constant(image),
          'image_size': tf.constant([[size, size]] * batch_size),
          'gt_boxes': tf.constant(boxes), 'gt_classes': tf.constant(classes),
          'gt_mask_targets': tf.constant(targets)}


def set_seeded_weights(model, seed):
  """Every weight from one numpy generator, in the model's weight order.

  Keras initialisers draw from state that other tests move, so values
  pinned on a model would depend on test order; these weights do not.
  """
  rng = np.random.default_rng(seed)
  values = []
  for weight in model.weights:
    name = weight.name
    if 'moving_variance' in name or 'gamma' in name:
      values.append(np.ones(weight.shape, np.float32))
    elif 'moving_mean' in name or 'beta' in name or 'bias' in name:
      values.append(np.zeros(weight.shape, np.float32))
    else:
      values.append(rng.normal(0, 0.05, weight.shape).astype(np.float32))
  model.set_weights(values)


def sgd_steps(models, batch, steps):
  """`steps` SGD steps of models.train_model on one batch; the losses of
  each."""
  model, system = models.train_model, models.system
  optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9, clipnorm=10.0)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = system.compute_losses(
          model(system.model_inputs(batch, True), training=True), batch)
    grads = tape.gradient(losses['total'], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return losses

  return [step() for _ in range(steps)]


@pytest.fixture(scope='session')
def tiny():
  """The builders above: tiny.config(**overrides), tiny.batch(batch_size,
  size), tiny.seeded_weights(model, seed), tiny.sgd_steps(models, batch,
  steps), tiny.max_instances."""
  return types.SimpleNamespace(
      config=tiny_config, batch=fixed_batch, seeded_weights=set_seeded_weights,
      sgd_steps=sgd_steps, max_instances=MAX_INSTANCES)
