"""InstanceFCN: windows, DeepMask's labels, assembling, proposals, learning."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.ops import windows as window_ops
from masklab_tf.postprocess import segment_proposals
from masklab_tf.postprocess import masks as masks_lib

MAX_INSTANCES = 3
WINDOWS = (32.0, 64.0)


def tiny_config(**overrides):
  values = dict(mask_head='instancefcn', num_classes=2, backbone_depth=10,
                output_stride=8, ifcn_window_sizes=WINDOWS, ifcn_channels=32,
                ifcn_crop_size=9, ifcn_windows_per_image=64,
                ifcn_pre_nms_top_k=50, max_detections=10,
                # Batch norm's moving statistics become the (one) training
                # batch's at once, so inference sees what training saw.
                norm_momentum=0.0)
  values.update(overrides)
  return config.ModelConfig(**values)


def square_batch(batch_size=2, size=64):
  """One 18 x 18 bright square per image (a 32 px window's object), at a
  different place in each image; its mask is the square."""
  rng = np.random.default_rng(1)
  image = rng.uniform(0, 60, [batch_size, size, size, 3]).astype(np.float32)
  boxes = np.full([batch_size, MAX_INSTANCES, 4], -1.0, np.float32)
  masks = np.zeros([batch_size, MAX_INSTANCES, size, size], np.uint8)
  for b in range(batch_size):
    top, left = 8 + 16 * b, 30 - 12 * b
    image[b, top:top + 18, left:left + 18] = 230
    boxes[b, 0] = [top, left, top + 18, left + 18]
    masks[b, 0, top:top + 18, left:left + 18] = 1
  return {'image': tf.constant(image),
          'image_size': tf.constant([[size, size]] * batch_size),
          'gt_boxes': tf.constant(boxes), 'gt_masks': tf.constant(masks)}


def test_window_boxes_centred_on_feature_pixels():
  boxes = window_ops.window_boxes(2, 3, 8, (16.0, 32.0)).numpy()
  assert boxes.shape == (2 * 3 * 2, 4)
  # (i=1, j=2, a=1): centre (12, 20), side 32.
  np.testing.assert_allclose(boxes[(1 * 3 + 2) * 2 + 1], [-4, 4, 28, 36])
  np.testing.assert_allclose(boxes[0], [-4, -4, 12, 12])


def test_deepmask_labels_by_hand():
  # One 18 px object centred at (28, 36): the 32 px windows fit it
  # (18 / (32 * 128 / 224) = 0.98), the 64 px ones do not (0.49).
  windows = window_ops.window_boxes(8, 8, 8, WINDOWS)
  gt = tf.constant([[[19.0, 27.0, 37.0, 45.0], [-1.0] * 4]])
  positive, negative, matched = window_ops.window_labels(
      windows, gt, tf.constant([[64, 64]]), 8, WINDOWS)
  positive = positive.numpy()[0].reshape(8, 8, 2)
  # Centre tolerance max(16/224 * 32, 8 / 2) = 4 px: window centres at
  # 4 + 8 i; rows 3 (28) only, columns 4 (36) only.
  expected = np.zeros([8, 8, 2], bool)
  expected[3, 4, 0] = True
  np.testing.assert_array_equal(positive, expected)
  assert negative.numpy().sum() == 8 * 8 * 2 - 1
  assert matched.numpy()[0].reshape(8, 8, 2)[3, 4, 0] == 0
  # No object: every window whose centre is in the valid image is negative.
  _, negative, _ = window_ops.window_labels(
      windows, -tf.ones([1, 2, 4]), tf.constant([[40, 64]]), 8, WINDOWS)
  assert negative.numpy().sum() == 5 * 8 * 2  # rows with centre < 40


def test_segment_proposals_tight_boxes_and_nms():
  # Two windows holding the same square segment (NMS keeps the better one)
  # and one elsewhere; a third window has an empty segment.
  size = 9
  logits = np.full([1, 4, size, size], -5.0, np.float32)
  logits[0, 0, 2:7, 3:6] = 5.0
  logits[0, 1, 2:7, 3:6] = 5.0
  logits[0, 2, 0:4, 0:4] = 5.0
  windows = np.array([[[0, 0, 16, 16], [0, 0, 16, 16], [32, 32, 48, 48],
                       [0, 0, 16, 16]]], np.float32)
  scores = np.array([[0.6, 0.9, 0.5, 0.99]], np.float32)
  out = segment_proposals.segment_proposals(
      tf.constant(windows), tf.constant(scores), tf.constant(logits),
      tf.constant([[64, 64]]), num_proposals=4, nms_iou=0.8, crop_size=5)
  assert int(out['num_detections'][0]) == 2
  np.testing.assert_allclose(out['detection_scores'][0].numpy(),
                             [0.9, 0.5, 0, 0])
  # Samples every 2 px, each standing for +-1 px: rows 2..6 -> [3, 13],
  # cols 3..5 -> [5, 11]; the other window's rows and cols 0..3 -> [31, 39].
  np.testing.assert_allclose(out['detection_boxes'][0, 0].numpy(),
                             [3, 5, 13, 11])
  np.testing.assert_allclose(out['detection_boxes'][0, 1].numpy(),
                             [31, 31, 39, 39])
  np.testing.assert_array_equal(out['detection_classes'][0].numpy(),
                                [1, 1, 0, 0])
  # Masks are on the tight box: pasted back, the first one is the segment
  # ([3, 13) x [5, 11) in pixels), corners cut by the bilinear paste.
  pasted = masks_lib.paste_masks(out['detection_masks'][0, :1],
                                 out['detection_boxes'][0, :1],
                                 16, 16)[0].numpy() >= 0.5
  expected = np.zeros([16, 16], bool)
  expected[3:13, 5:11] = True
  assert (pasted & expected).sum() / (pasted | expected).sum() > 0.9


@pytest.fixture(scope='module')
def tiny_models():
  tf_keras.utils.set_random_seed(0)
  return factory.build_models(tiny_config(), max_instances=MAX_INSTANCES)


def test_shapes_and_targets(tiny_models):
  cfg = tiny_config()
  batch = square_batch()
  out = tiny_models.train_model(tiny_models.system.model_inputs(batch, True),
                                training=True)
  assert out['objectness_logits'].shape == (2, 8 * 8 * 2)
  assert out['segment_logits'].shape == (2, 32, 9, 9)
  assert out['segment_targets'].shape == (2, 32, 9, 9)
  labels = out['window_labels'].numpy()
  valid = out['segment_valid'].numpy()
  assert ((labels >= 0).sum(axis=1) == 64).all()  # 256 in the paper
  assert (valid.sum(axis=1) == (labels == 1).sum(axis=1)).all()
  assert valid.sum() >= 2  # every object has a positive window
  # A positive window's target is the square, centred in the window.
  target = out['segment_targets'].numpy()[valid][0]
  assert target[4, 4] == 1.0 and target[0, 0] == 0.0
  inference = tiny_models.inference_model(
      tiny_models.system.model_inputs(batch, False))
  assert inference['detection_masks'].shape == (2, 10, 41, 41)
  assert 'semantic_map' not in inference


def test_training_learns_the_square(tiny_models):
  """A few SGD steps on one batch lower both losses and the top proposal
  of each image then covers its square."""
  cfg = tiny_config()
  batch = square_batch()
  model = tiny_models.train_model
  optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9, clipnorm=10.0)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      losses = tiny_models.system.compute_losses(
          model(tiny_models.system.model_inputs(batch, True), training=True),
          batch)
    grads = tape.gradient(losses['total'], model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return losses

  history = [{k: float(v) for k, v in step().items()} for _ in range(60)]
  for key in ('objectness', 'segment'):
    assert history[-1][key] < 0.5 * history[0][key], (key, history[0],
                                                      history[-1])
  out = tiny_models.inference_model(tiny_models.system.model_inputs(batch, False),
                                    training=False)
  for b in range(2):
    box = out['detection_boxes'][b, 0].numpy()
    gt = batch['gt_boxes'][b, 0].numpy()
    inter = np.prod(np.clip(np.minimum(box[2:], gt[2:]) -
                            np.maximum(box[:2], gt[:2]), 0, None))
    union = np.prod(box[2:] - box[:2]) + np.prod(gt[2:] - gt[:2]) - inter
    assert inter / union > 0.5, (b, box, gt)


def test_trains_evaluates_and_serves_through_the_common_tools(
    shapes_train, shapes_dir, tmp_path):
  """bin/train's Trainer (full-image masks turned on for it), the evaluator
  (AR only: proposals have no classes) and the serving model."""
  from masklab_tf.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  from masklab_tf.training import trainer as trainer_lib
  from masklab_tf.serving import model as serving_model
  annotations, images = shapes_train
  configs = config.from_flagfile('configs/shapes_cpu.flags', (
      '--mask_head=instancefcn', '--backbone_depth=10', '--ifcn_channels=32',
      '--ifcn_window_sizes=32,64', '--ifcn_crop_size=9',
      '--ifcn_pre_nms_top_k=100', '--max_detections=20', '--min_sizes=96',
      '--eval_min_size=96', '--max_size=96', '--batch_size=2',
      '--log_every=1', '--checkpoint_every=2', '--warmup_steps=2',
      '--image_summary_every=2', f'--train_annotations={annotations}',
      f'--train_images={images}'))
  trainer = trainer_lib.Trainer(configs, str(tmp_path))
  trainer.restore_or_initialise()
  losses = trainer.train(num_steps=2)
  assert set(losses) == {'objectness', 'segment', 'total', 'weight_decay'}
  assert np.isfinite(losses['total'])
  evaluator = evaluator_lib.Evaluator(
      configs, f'{shapes_dir}/val/annotations.json', f'{shapes_dir}/val/images')
  metrics = evaluator.run(trainer.models.inference_model)
  assert set(metrics) == {'proposals'}
  assert set(metrics['proposals']) == {'AR@10', 'AR@100'}
  assert 0.0 <= metrics['proposals']['AR@100'] <= 100.0
  assert 'AR@100' in evaluator_lib.format_table({'run': metrics})
  serving = serving_model.build_serving_model(trainer.models.inference_model,
                                              configs)
  image = np.zeros([1, 70, 90, 3], np.uint8)
  outputs = serving.predict(image, verbose=0)
  assert outputs['detection_masks'].shape[:2] == (1, 20)
  assert 'semantic_map' not in outputs
  with pytest.raises(ValueError, match='semantic map'):
    serving_model.build_serving_model(trainer.models.inference_model,
                                      configs, panoptic=True)
