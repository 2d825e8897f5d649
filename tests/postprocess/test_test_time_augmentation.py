"""Test-time augmentation (postprocess/test_time_augmentation.py): the merge
against numpy, and on a tiny model what each pass does to the outputs."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import reference
from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.postprocess import image_results
from masklab_tf.postprocess import test_time_augmentation as tta


def _resample_np(mask, box, target):
  """Mask [S, S] over `box` read at `target`'s S x S sample positions
  (sample i at min + i (max - min) / (S - 1)), bilinear, 0 outside: the
  crop convention's numpy model on the mask as a map whose cell k sits at
  k + 0.5."""
  size = mask.shape[0]
  extent = np.maximum(np.asarray(box[2:], np.float64) - box[:2], 1e-12)
  start = (np.asarray(target[:2], np.float64) - box[:2]) / extent * (
      size - 1) + 0.5
  end = start + (np.asarray(target[2:], np.float64) - target[:2]) / extent * (
      size - 1)
  return reference.crop_np(mask[..., None], np.concatenate([start, end]),
                           size, 1)[..., 0]


def _merge_np(boxes, scores, classes, masks, max_detections, iou):
  """Greedy per-class NMS, then each kept detection's score-weighted mean
  of its cluster's masks read at its box."""
  order = [int(i) for i in np.argsort(-scores, kind='stable')
           if classes[i] > 0]
  kept = []
  for i in order:
    if all(classes[k] != classes[i] or
           reference.box_iou_np(boxes[k], boxes[i])[0, 0] <= iou
           for k in kept):
      kept.append(i)
  kept = kept[:max_detections]
  weights = reference.vote_weights_np(boxes[kept], classes[kept], boxes,
                                      np.where(classes > 0, scores, 0),
                                      classes, iou)
  merged = []
  for row, k in zip(weights, kept):
    total = sum(w * _resample_np(masks[m], boxes[m], boxes[k])
                for m, w in enumerate(row) if w > 0)
    merged.append(total / row.sum())
  return kept, np.array(merged)


def _passes(seed, passes=3, num=6, size=9):
  """Detections of `passes` passes over the same few objects: jittered
  boxes, 2 classes, and padding rows."""
  rng = np.random.default_rng(seed)
  centres = rng.uniform(20, 60, [3, 2])
  boxes, scores, classes = [], [], []
  for _ in range(passes):
    for j in range(num):
      centre = centres[j % 3] + rng.normal(0, 2, 2)
      half = rng.uniform(8, 14, 2)
      boxes.append(np.concatenate([centre - half, centre + half]))
      scores.append(rng.uniform(0.1, 1.0))
      classes.append(1 + j % 2 if j < num - 1 else 0)  # One padding row.
  boxes = np.array(boxes, np.float32)
  masks = rng.uniform(0, 1, [len(boxes), size, size]).astype(np.float32)
  return boxes, np.array(scores, np.float32), np.array(classes), masks


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_merge_keeps_the_nms_winners_with_their_clusters_mean_mask(seed):
  boxes, scores, classes, masks = _passes(seed)
  out_boxes, out_scores, out_classes, out_masks, num = (
      t.numpy() for t in tta.merge_detections(boxes, scores, classes, masks,
                                               max_detections=8,
                                               iou_threshold=0.5))
  kept, merged = _merge_np(boxes, scores, classes, masks, 8, 0.5)
  # The test means something: passes were merged (clusters of several).
  assert 0 < len(kept) < int((classes > 0).sum())
  assert num == len(kept)
  np.testing.assert_array_equal(out_boxes[:num], boxes[kept])
  np.testing.assert_array_equal(out_scores[:num], scores[kept])
  np.testing.assert_array_equal(out_classes[:num], classes[kept])
  np.testing.assert_allclose(out_masks[:num], merged, atol=1e-5)
  assert not out_classes[num:].any() and not out_masks[num:].any()


def test_box_voting_gives_the_clusters_mean_box():
  boxes, scores, classes, masks = _passes(0)
  plain = tta.merge_detections(boxes, scores, classes, masks, 8, 0.5)
  voted = tta.merge_detections(boxes, scores, classes, masks, 8, 0.5,
                               box_voting=True)
  num = int(plain[4])
  weights = reference.vote_weights_np(
      plain[0].numpy()[:num], plain[2].numpy()[:num], boxes,
      np.where(classes > 0, scores, 0), classes, 0.5)
  want = weights @ boxes / weights.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(voted[0].numpy()[:num], want, rtol=1e-5)
  assert np.abs(want - plain[0].numpy()[:num]).max() > 0.5
  # Selection and scores are the NMS winners' either way; masks are read
  # at the box they come with.
  np.testing.assert_array_equal(voted[1].numpy(), plain[1].numpy())
  for k in range(num):
    mean = sum(w * _resample_np(masks[m], boxes[m], want[k])
               for m, w in enumerate(weights[k]) if w > 0) / weights[k].sum()
    np.testing.assert_allclose(voted[3].numpy()[k], mean, atol=1e-5)


def test_a_lone_detection_keeps_its_mask_under_box_voting():
  """A cluster of one: its voted box is (w b) / w, equal to b up to float
  rounding, and its mask must come back whole, not with an edge row read
  as outside the box."""
  rng = np.random.default_rng(0)
  # 200 boxes of 3-40 px apart on a 2000 x 2000 px image.
  corners = np.stack(np.meshgrid(np.arange(20), np.arange(10)), -1).reshape(
      -1, 2) * [190.0, 95.0] + rng.uniform(0, 50, [200, 2])
  sides = rng.uniform(3, 40, [200, 2])
  boxes = np.concatenate([corners, corners + sides], -1).astype(np.float32)
  scores = rng.uniform(0.1, 1, 200).astype(np.float32)
  masks = np.ones([200, 7, 7], np.float32)
  out = tta.merge_detections(boxes, scores, np.ones(200, np.int32), masks,
                             200, 0.5, box_voting=True)
  np.testing.assert_allclose(out[0].numpy(), boxes[np.argsort(-scores)],
                             rtol=1e-6)
  np.testing.assert_allclose(out[3].numpy(), 1.0, atol=1e-5)


def test_box_voting_needs_passes_to_merge(shapes_configs):
  with pytest.raises(ValueError, match='--test_box_voting merges'):
    tta.settings(shapes_configs('--test_box_voting'))


def test_a_mask_read_at_its_own_box_is_itself():
  rng = np.random.default_rng(0)
  masks = rng.uniform(0, 1, [4, 11, 11]).astype(np.float32)
  boxes = np.array([[0, 0, 10, 10], [3.5, 2, 40, 9], [1, 1, 2, 30],
                    [5, 5, 5.5, 5.5]], np.float32)
  np.testing.assert_allclose(tta.resample_masks(masks, boxes, boxes),
                             masks, atol=1e-6)


def test_augmented_images_and_boxes_map_back():
  """A bright pixel block's position through scale and mirror: the box
  of the block in a pass, mapped back, is the block's box."""
  image = np.zeros([2, 40, 48, 3], np.uint8)
  image[0, 10:20, 4:12] = 255
  image[1, 5:15, 30:34] = 255
  size = tf.constant([[40, 48], [36, 40]])
  for scale, flip in [(1.0, True), (2.0, False), (0.5, True)]:
    augmented, pass_size = tta.augment_images(image, size, scale, flip, 8)
    augmented = augmented.numpy()
    assert augmented.shape[1] % 8 == 0 and augmented.shape[2] % 8 == 0
    boxes = []
    for b in range(2):
      assert (augmented[b, pass_size[b, 0]:] == 0).all()
      assert (augmented[b, :, pass_size[b, 1]:] == 0).all()
      ys, xs = np.nonzero(augmented[b, ..., 0] > 127)
      boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    back = tta.unaugment_boxes(tf.constant([boxes], tf.float32)[0][:, None],
                               pass_size, size, flip).numpy()[:, 0]
    # Exact without resampling (an off-by-one mirror would be 1 px off);
    # within a source pixel of the rounded resize otherwise.
    np.testing.assert_allclose(back, [[10, 4, 20, 12], [5, 30, 15, 34]],
                               atol=1e-3 if scale == 1.0 else 1.0 / scale)


@pytest.fixture(scope='module')
def tiny_model():
  """A tiny shapes_cpu inference graph (random weights: many spread
  detections) and an image batch padded with zeros."""
  import conftest  # pylint: disable=g-import-not-at-top
  configs = config.from_flagfile(
      'configs/shapes_cpu.flags',
      conftest.TINY_TRAINING + ('--max_detections=8',))
  tf_keras.utils.set_random_seed(0)  # The same weights in every run.
  models = factory.build_models(configs.model, configs.geometry)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, [2, 96, 96, 3]).astype(np.uint8)
  image[1, 80:] = image[1, :, 72:] = 0
  size = np.array([[96, 96], [80, 72]], np.int32)
  return configs, models.inference_model, image, size


def _results(inference_model, configs, image, size, scales, flip):
  settings = tta.Settings(tuple(scales), flip, False, 8,
                          configs.model.max_detections,
                          configs.model.detection_nms_iou)
  model = image_results.build_results_model(
      inference_model, full_image_masks=True, padding_multiple=8,
      test_time=settings)
  outputs = model({'image': image, 'image_size': size,
                   'scale': tf.ones([len(size), 2]), 'original_size': size})
  return {k: v.numpy() for k, v in outputs.items()}


def test_one_pass_is_the_plain_graph(tiny_model):
  configs, inference_model, image, size = tiny_model
  plain = image_results.build_results_model(
      inference_model, full_image_masks=True, padding_multiple=8)(
          {'image': image, 'image_size': size, 'scale': tf.ones([2, 2]),
           'original_size': size})
  one = _results(inference_model, configs, image, size, [1.0], False)
  for key, value in plain.items():
    np.testing.assert_allclose(one[key], value.numpy(), atol=1e-6,
                               err_msg=key)


def test_the_flip_pass_makes_results_mirror_symmetric(tiny_model):
  """With --test_flip the passes over an image and over its mirror image
  are the same two images: the results mirror exactly. A plain pass of
  random weights is far from symmetric (shown first)."""
  configs, inference_model, image, size = tiny_model
  image, size = image[:1], size[:1]
  mirrored = image[:, :, ::-1].copy()

  def mirror(results):
    boxes = results['detection_boxes'].copy()
    boxes[..., 1], boxes[..., 3] = (96 - results['detection_boxes'][..., 3],
                                    96 - results['detection_boxes'][..., 1])
    return {**results, 'detection_boxes': boxes,
            'detection_masks': results['detection_masks'][..., ::-1],
            'detection_masks_full': results['detection_masks_full'][...,
                                                                    ::-1],
            'semantic_map': results['semantic_map'][..., ::-1]}

  plain = [_results(inference_model, configs, x, size, [1.0], False)
           for x in (image, mirrored)]
  assert np.abs(mirror(plain[1])['detection_boxes'] -
                plain[0]['detection_boxes']).max() > 1.0
  flipped = [_results(inference_model, configs, x, size, [1.0], True)
             for x in (image, mirrored)]
  want = mirror(flipped[1])
  assert flipped[0]['num_detections'][0] == 8
  for key in ('detection_scores', 'detection_classes', 'detection_boxes',
              'detection_masks'):
    np.testing.assert_allclose(flipped[0][key], want[key], atol=1e-4,
                               err_msg=key)
  assert (flipped[0]['semantic_map'] == want['semantic_map']).mean() > 0.999
  # And the mirrored pass changed the outputs.
  assert not np.allclose(flipped[0]['detection_scores'],
                         plain[0]['detection_scores'])


def test_scales_merge_the_detections_of_each_pass(tiny_model):
  """--test_scales=1.2,1.5: the layer's detections are those of the two
  passes run apart (the scaled images through the graph, boxes mapped back
  to the input's pixels) merged by merge_detections (tested against numpy
  above): some from each pass (these weights' scores of the two passes
interleave)."""
  configs, inference_model, image, size = tiny_model
  results_model = image_results.build_results_model(
      inference_model, padding_multiple=8, test_time=tta.Settings(
          (1.2, 1.5), False, False, 8, configs.model.max_detections,
          configs.model.detection_nms_iou))
  merged = results_model({'image': image, 'image_size': size,
                          'scale': tf.ones([2, 2]), 'original_size': size})
  passes = []
  for scale in (1.2, 1.5):
    pass_image, pass_size = tta.augment_images(image, size, scale, False, 8)
    outputs = image_results.EachImageAlone(inference_model, 8)(
        {'image': pass_image, 'image_size': pass_size})
    valid = (np.arange(8)[None] <
             outputs['num_detections'].numpy()[:, None])
    passes.append((tta.unaugment_boxes(outputs['detection_boxes'],
                                       pass_size, size, False).numpy(),
                   outputs['detection_scores'].numpy(),
                   np.where(valid, outputs['detection_classes'].numpy(), 0),
                   outputs['detection_masks'].numpy()))
  for b in range(2):
    want = tta.merge_detections(
        *(np.concatenate([p[k][b] for p in passes]) for k in range(4)),
        max_detections=8, iou_threshold=configs.model.detection_nms_iou)
    num = int(want[4])
    assert int(merged['num_detections'][b]) == num
    np.testing.assert_allclose(merged['detection_boxes'][b, :num],
                               want[0][:num], atol=1e-3)
    np.testing.assert_allclose(merged['detection_scores'][b, :num],
                               want[1][:num], atol=1e-6)
    np.testing.assert_allclose(merged['detection_masks'][b, :num],
                               want[3][:num], atol=1e-4)
    for _, scores, _, _ in passes:
      assert np.isin(merged['detection_scores'][b, :num], scores[b]).any()


def test_settings_come_from_the_test_flags(shapes_configs):
  assert tta.settings(shapes_configs()) is None
  assert tta.settings(shapes_configs('--test_scales=1')) is None
  got = tta.settings(shapes_configs('--test_scales=0.8,1.2', '--test_flip',
                                    '--test_box_voting'))
  assert got.scales == (0.8, 1.2) and got.flip and got.box_voting
  assert got.padding_multiple == 8
  with pytest.raises(ValueError, match='--test_scales=0.0,1.0'):
    tta.TestTimeAugmentation(tf_keras.layers.Layer(), scales=(0, 1))


def test_the_savedmodel_signatures_run_the_passes(tiny_model):
  """bin/export --test_flip: both signatures of the serving module (traced
  here, not written: serving/export.py) merge the passes; an encoded image
  beside a larger one gets what the uint8 signature gives it alone."""
  from masklab_tf.serving import export  # pylint: disable=g-import-not-at-top
  from masklab_tf.serving import model as model_lib  # pylint: disable=g-import-not-at-top
  configs, inference_model, image, _ = tiny_model
  flipped = configs._replace(data=dataclasses.replace(
      configs.data, test_flip=True))
  serving = model_lib.build_serving_model(inference_model, flipped)
  assert serving.get_layer(model_lib.DETECT).get_layer(
      image_results.TEST_TIME).passes() == [(1.0, False), (1.0, True)]
  module = export.ServingModule(serving)
  small, large = image[0, :70, :90], image[0]
  alone = module.serve_images(small[np.newaxis])
  encoded = module.serve_encoded(tf.stack(
      [tf.io.encode_png(small), tf.io.encode_png(large)]))
  num = int(alone['num_detections'][0])
  assert int(encoded['num_detections'][0]) == num
  for key in ('detection_boxes', 'detection_scores', 'detection_classes'):
    np.testing.assert_allclose(encoded[key][0, :num], alone[key][0, :num],
                               atol=1e-4, err_msg=key)
