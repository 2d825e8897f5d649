"""Mixed precision: the networks compute in bfloat16, geometry in float32."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.modeling import factory
from modeling.test_masklab import MAX_INSTANCES
from modeling.test_masklab import fixed_batch
from modeling.test_masklab import tiny_config

POLICY = 'mixed_bfloat16'


def test_masklab_trains_and_infers_in_bfloat16():
  cfg = tiny_config()
  models = factory.build_models(cfg, max_instances=MAX_INSTANCES,
                                precision=POLICY)
  # The policy is the model's, not the process's.
  assert tf_keras.mixed_precision.global_policy().name == 'float32'
  model = models.train_model
  assert model.get_layer('mask_head').compute_dtype == 'bfloat16'
  # bfloat16 has 8 significant bits: a 500 px box would move by pixels.
  for name in ('anchors', 'proposals', 'rpn_targets', 'roi_sampler'):
    assert model.get_layer(name).compute_dtype == 'float32', name

  batch = fixed_batch()
  with tf.GradientTape() as tape:
    outputs = model(factory.model_inputs(batch, True, cfg), training=True)
    losses = factory.compute_losses(outputs, batch, cfg)
  assert outputs['class_logits'].dtype == tf.bfloat16
  assert outputs['rois'].dtype == tf.float32
  for name, value in losses.items():
    assert value.dtype == tf.float32 and np.isfinite(value.numpy()), name
  grads = tape.gradient(losses['total'], model.trainable_variables)
  # Variables (and so checkpoints) stay float32.
  assert {v.dtype for v in model.trainable_variables} == {tf.float32}
  assert all(g is not None and g.dtype == tf.float32 for g in grads)

  out = models.inference_model(factory.model_inputs(batch, False, cfg),
                               training=False)
  for name in ('detection_boxes', 'detection_scores', 'detection_masks',
               'semantic_logits'):
    assert out[name].dtype == tf.float32, name
  masks = out['detection_masks'].numpy()
  assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize('head', ['biseg', 'instancefcn'])
def test_other_systems_build_in_bfloat16(head):
  """Both met dtype clashes once (a float32 resize; float32 windows)."""
  cfg = tiny_config(mask_head=head)
  models = factory.build_models(cfg, max_instances=MAX_INSTANCES,
                                precision=POLICY)
  out = models.inference_model(
      factory.model_inputs(fixed_batch(), False, cfg), training=False)
  assert out['detection_boxes'].dtype == tf.float32
  assert out['detection_masks'].dtype == tf.float32
