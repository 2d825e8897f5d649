"""The whole MaskLab model: configs build, shapes, learning, pinned losses."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.modeling.heads import masklab_head
from masklab_tf.modeling.systems import masklab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
MAX_INSTANCES = 4


def tiny_config(**overrides):
  values = dict(num_classes=3, backbone_depth=10, output_stride=8,
                anchor_sizes=(16.0, 32.0), rpn_head_channels=32,
                rpn_batch_size_per_image=64, rpn_pre_nms_top_k=300,
                num_proposals=30, test_num_proposals=30, roi_crop_size=8,
                num_sampled_rois=8, hypercolumn_channels=8,
                refine_filters=16, max_detections=5)
  values.update(overrides)
  return config.ModelConfig(**values)


def fixed_batch(batch_size=2, size=64):
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


@pytest.fixture(scope='module')
def tiny_models():
  tf_keras.utils.set_random_seed(0)
  return masklab.build_masklab(tiny_config(), max_instances=MAX_INSTANCES)


def test_train_outputs_shapes(tiny_models):
  out = tiny_models.train_model(masklab.model_inputs(fixed_batch(), True),
                                training=True)
  assert out['rpn_scores'].shape == (2, 8, 8, 6)
  assert out['rois'].shape == (2, 8, 4)
  assert out['class_logits'].shape == (2, 8, 4)
  assert out['box_deltas'].shape == (2, 8, 16)
  assert out['semantic_logits'].shape == (2, 8, 8, 4)
  assert out['direction_logits'].shape == (2, 8, 8, 32)
  # Every slot: 4 is under TrimInstancePadding.MIN_SLOTS.
  assert out['mask_logits'].shape == (2, MAX_INSTANCES, 41, 41)


@pytest.mark.parametrize('last, kept', [
    (3, 4), (2, 2),  # up to MIN_SLOTS (here 2)
    (5, 8), (8, 8),  # a power of two, exactly one too
    (9, 12),  # 16, capped at the 12 slots
    (0, 2),  # image 0 empty: image 1's instance in slot 1
])
def test_trim_instance_padding(last, kept, monkeypatch):
  monkeypatch.setattr(masklab.TrimInstancePadding, 'MIN_SLOTS', 2)
  # Image 0 holds instances up to slot `last`, with a gap; image 1 one.
  classes = np.full([2, 12], -1, np.int32)
  classes[0, :last] = 1
  classes[0, 1:last - 1] = -1
  classes[1, 0] = 2
  classes = tf.constant(classes)
  boxes = tf.reshape(tf.range(2 * 12 * 4, dtype=tf.float32), [2, 12, 4])
  trimmed_boxes, trimmed_classes = masklab.TrimInstancePadding()(boxes,
                                                                 classes)
  np.testing.assert_array_equal(trimmed_boxes, boxes[:, :kept])
  np.testing.assert_array_equal(trimmed_classes, classes[:, :kept])


def test_inference_outputs_any_size(tiny_models):
  for size in (64, 96):
    batch = fixed_batch(size=size)
    out = tiny_models.inference_model(masklab.model_inputs(batch, False),
                                      training=False)
    assert out['detection_boxes'].shape == (2, 5, 4)
    assert out['detection_masks'].shape == (2, 5, 41, 41)
    assert out['semantic_map'].shape == (2, size, size)
    masks = out['detection_masks'].numpy()
    assert masks.min() >= 0 and masks.max() <= 1
    num = out['num_detections'].numpy()
    classes = out['detection_classes'].numpy()
    for b in range(2):
      assert (classes[b, :num[b]] >= 1).all()
      assert (classes[b, num[b]:] == 0).all()


def sgd_steps(model, cfg, batch, steps):
  """`steps` SGD steps on one batch; the losses of each."""
  optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9, clipnorm=10.0)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = masklab.compute_losses(
          model(masklab.model_inputs(batch, True), training=True), batch,
          cfg)
    grads = tape.gradient(losses['total'], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return losses

  return [step() for _ in range(steps)]


def test_training_steps_lower_the_loss():
  tf_keras.utils.set_random_seed(1)
  cfg = tiny_config()
  models = masklab.build_masklab(cfg, max_instances=MAX_INSTANCES)
  history = sgd_steps(models.train_model, cfg, fixed_batch(), 12)
  first, last = history[0], history[-1]
  assert float(last['total']) < 0.8 * float(first['total'])
  assert float(last['mask_refined']) < float(first['mask_refined'])
  assert all(np.isfinite(float(h['total'])) for h in history)


def set_seeded_weights(model, seed):
  """Every weight from one numpy generator, in the model's weight order.

  Keras initialisers draw from state that other tests move, so the pinned
  values below would depend on test order; these weights do not.
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


def test_pinned_losses_at_initialisation():
  """Regression pin: losses on a fixed input with fixed weights.

  If a change to targets, heads or losses moves these, it must be on
  purpose: update the numbers and say why in the commit.
  """
  cfg = tiny_config(semantic_loss_weight=1.0, direction_loss_weight=1.0)
  models = masklab.build_masklab(cfg, max_instances=MAX_INSTANCES)
  set_seeded_weights(models.train_model, 1234)
  batch = fixed_batch()
  batch['semantic_labels'] = tf.zeros([2, 64, 64], tf.uint8)
  batch['direction_labels'] = tf.fill([2, 64, 64], tf.constant(3, tf.uint8))
  losses = masklab.compute_losses(
      models.train_model(masklab.model_inputs(batch, True), training=False),
      batch, cfg)
  got = {k: round(float(v), 4) for k, v in losses.items()}
  # Values that depend on random anchor and RoI sampling are not pinned.
  for key, value in PINNED.items():
    assert got[key] == pytest.approx(value, rel=2e-3), (key, got)


PINNED = {'mask_coarse': 0.6775, 'mask_refined': 0.6943, 'semantic': 2.8577,
          'direction': 11.1443}


@pytest.mark.parametrize('name', ['masklab', 'masklab_semantic_only',
                                  'masklab_direction_only'])
def test_mask_head_registry_and_config_round_trip(name):
  head = masklab_head.build_mask_head(name, num_classes=3, output_stride=8)
  clone = head.__class__.from_config(head.get_config())
  assert clone.get_config() == head.get_config()
  assert tf_keras.layers.deserialize(
      tf_keras.layers.serialize(head)).get_config() == head.get_config()


def test_unknown_head_is_a_clear_error():
  with pytest.raises(ValueError, match='unknown mask head'):
    masklab_head.build_mask_head('nope', num_classes=3)


def test_ablation_switches_change_the_fuse_conv():
  for features, channels in (('both', 2), ('semantic', 1), ('direction', 1)):
    models = masklab.build_masklab(
        tiny_config(mask_features=features, refine=False),
        max_instances=MAX_INSTANCES)
    head = models.train_model.get_layer('mask_head')
    kernel = head.fuse.kernel.numpy().ravel()
    assert len(kernel) == channels
    expected = {'both': [0.5, 1.0], 'semantic': [0.5],
                'direction': [1.0]}[features]
    np.testing.assert_allclose(kernel, expected)
    assert not hasattr(head, 'refine_convs')


@pytest.mark.parametrize('flagfile', ['shapes_cpu', 'masklab_r50_coco',
                                      'masklab_r101_coco',
                                      'masklab_r50_fast'])
def test_configs_build(flagfile):
  _, geometry, model_cfg, train_cfg = config.from_flagfile(
      os.path.join(REPO, 'configs', f'{flagfile}.flags'))
  models = factory.build_models(model_cfg, geometry, max_instances=8,
                                precision=train_cfg.mixed_precision)
  params = models.inference_model.count_params()
  assert params > 1e6
  if flagfile == 'shapes_cpu':
    batch = fixed_batch(size=64)
    batch['gt_boxes'] = tf.pad(batch['gt_boxes'], [[0, 0], [0, 4], [0, 0]],
                               constant_values=-1)
    batch['gt_classes'] = tf.pad(batch['gt_classes'], [[0, 0], [0, 4]],
                                 constant_values=-1)
    batch['gt_mask_targets'] = tf.pad(batch['gt_mask_targets'],
                                      [[0, 0], [0, 4], [0, 0], [0, 0]])
    with tf.GradientTape() as tape:
      losses = masklab.compute_losses(
          models.train_model(masklab.model_inputs(batch, True),
                             training=True), batch, model_cfg)
    grads = tape.gradient(losses['total'],
                          models.train_model.trainable_variables)
    assert all(g is not None for g in grads)


def test_imagenet_checkpoint_initialises_backbone_and_box_classifier(
    tmp_path):
  from official.vision.modeling import backbones
  tf_keras.utils.set_random_seed(3)
  resnet = backbones.ResNet(model_id=10, input_specs=tf_keras.layers.InputSpec(
      shape=[None, None, None, 3]))
  path = tf.train.Checkpoint(backbone=resnet).save(str(tmp_path / 'ckpt'))
  cfg = tiny_config()
  models = masklab.build_masklab(cfg, max_instances=MAX_INSTANCES)
  report = masklab.load_imagenet_checkpoint(models, path, cfg)
  assert report['matched'] and not report['unmatched_ours']
  classifier = models.train_model.get_layer('box_classifier')
  # The duplicated conv5 block now holds res5's ImageNet weights.
  res5_kernels = sorted(v.numpy().sum() for v in models.backbone.weights
                        if 'kernel' in v.name)
  conv5_kernels = [v.numpy().sum() for v in classifier.conv5.weights
                   if 'kernel' in v.name]
  for value in conv5_kernels:
    assert min(abs(value - k) for k in res5_kernels) < 1e-3


@pytest.mark.parametrize('layer', [
    masklab.ImageNormalization(), masklab.RpnTargets(128, 0.25, 0.6, 0.2),
    masklab.SemanticMap()], ids=lambda l: type(l).__name__)
def test_model_layers_round_trip_config(layer):
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert type(clone) is type(layer)
  assert clone.get_config() == layer.get_config()


def test_head_and_classifier_layers_round_trip(tiny_models):
  from masklab_tf.postprocess import detections as detections_lib
  from masklab_tf.modeling.layers import roi_sampler
  layers = [tiny_models.train_model.get_layer('box_classifier'),
            tiny_models.train_model.get_layer('roi_sampler'),
            tiny_models.inference_model.get_layer('detections')]
  assert isinstance(layers[1], roi_sampler.RoiSampler)
  assert isinstance(layers[2], detections_lib.Detections)
  for layer in layers:
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_whole_inference_model_rebuilds_from_config(tiny_models):
  model = tiny_models.inference_model
  clone = tf_keras.Model.from_config(model.get_config())
  clone.set_weights(model.get_weights())
  batch = masklab.model_inputs(fixed_batch(), False)
  want = model(batch, training=False)
  got = clone(batch, training=False)
  np.testing.assert_allclose(got['semantic_logits'].numpy(),
                             want['semantic_logits'].numpy(), atol=1e-5)
  np.testing.assert_allclose(got['detection_boxes'].numpy(),
                             want['detection_boxes'].numpy(), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize('flagfile', ['masklab_r50_coco', 'masklab_r101_coco'])
def test_paper_configs_forward_backward(flagfile):
  """The paper's configs train on the CPU (slow: run with -m slow)."""
  _, geometry, model_cfg, _ = config.from_flagfile(
      os.path.join(REPO, 'configs', f'{flagfile}.flags'))
  models = masklab.build_masklab(model_cfg, geometry,
                                 max_instances=MAX_INSTANCES)
  batch = fixed_batch(batch_size=1, size=128)
  with tf.GradientTape() as tape:
    losses = masklab.compute_losses(
        models.train_model(masklab.model_inputs(batch, True), training=True),
        batch, model_cfg)
  grads = tape.gradient(losses['total'],
                        models.train_model.trainable_variables)
  assert np.isfinite(float(losses['total']))
  assert sum(g is None for g in grads) == 0
  out = models.inference_model(masklab.model_inputs(batch, False))
  assert out['detection_masks'].shape[1:] == (100, 41, 41)
