"""postprocess/image_results.to_original on hand-built model outputs, against
numpy: boxes, padding rows, the semantic map and full-image masks in each
image's own pixels."""

import numpy as np
import pytest
import tensorflow as tf

import reference
from masklab_tf.postprocess import image_results

# Two images of a batch padded to 48 x 64 model-input pixels: the first
# (30 x 40 originally) resized by 1.5, the second (21 x 25) by other factors
# per axis, as rounding gives them (32 / 21 and 37 / 25).
ORIGINAL = np.array([[30, 40], [21, 25]], np.int32)
IMAGE_SIZE = np.array([[45, 60], [32, 37]], np.int32)
PADDED = (48, 64)
D, S = 4, 6


def model_outputs(seed=0, semantic=True):
  """Inference outputs in model-input pixels (what a system returns)."""
  rng = np.random.default_rng(seed)
  boxes = np.array([
      # Inside; over the bottom-right edge; over the top-left; padding row
      # (junk that must come back zero).
      [[6.0, 9.0, 30.0, 42.0], [30.0, 45.0, 55.0, 70.0],
       [-6.0, -3.0, 12.0, 15.0], [1.0, 2.0, 40.0, 50.0]],
      # Beyond the second image's own size but inside the first's; then
      # three padding rows.
      [[10.0, 12.0, 44.0, 58.0], [3.0, 3.0, 20.0, 20.0],
       [5.0, 5.0, 9.0, 9.0], [0.0, 0.0, 30.0, 30.0]]], np.float32)
  outputs = {
      'num_detections': tf.constant([3, 1], tf.int32),
      'detection_boxes': tf.constant(boxes),
      'detection_classes': tf.constant([[1, 2, 3, 0], [2, 0, 0, 0]],
                                       tf.int32),
      'detection_scores': tf.constant([[0.9, 0.8, 0.7, 0.0],
                                       [0.6, 0.0, 0.0, 0.0]], tf.float32),
      'detection_masks': tf.constant(
          rng.uniform(0, 1, [2, D, S, S]).astype(np.float32)),
  }
  if semantic:
    # Classes inside each image's valid size; 99 in the padding, which
    # must never reach the result.
    semantic_map = np.full([2, *PADDED], 99, np.int32)
    for b, (h, w) in enumerate(IMAGE_SIZE):
      semantic_map[b, :h, :w] = rng.integers(0, 4, [h, w])
    outputs['semantic_map'] = tf.constant(semantic_map)
  return outputs


def expected_boxes(outputs):
  """Boxes / scale, clipped to each image's own size, padding rows 0."""
  boxes = outputs['detection_boxes'].numpy().astype(np.float64)
  scale = IMAGE_SIZE / ORIGINAL
  boxes = boxes / np.concatenate([scale, scale], axis=1)[:, None]
  limits = np.concatenate([ORIGINAL, ORIGINAL], axis=1)[:, None]
  boxes = np.clip(boxes, 0, limits)
  num = outputs['num_detections'].numpy()
  boxes[np.arange(D)[None, :] >= num[:, None]] = 0
  return boxes.astype(np.float32)


def nearest_np(class_map, height, width):
  """Nearest-neighbour resize with half-pixel centres, numpy."""
  in_h, in_w = class_map.shape
  rows = np.minimum(((np.arange(height) + 0.5) * in_h / height).astype(int),
                    in_h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * in_w / width).astype(int),
                    in_w - 1)
  return class_map[rows][:, cols]


def call(outputs, **kwargs):
  return image_results.to_original(
      outputs, tf.constant(IMAGE_SIZE),
      tf.constant(IMAGE_SIZE / ORIGINAL, tf.float32), tf.constant(ORIGINAL),
      **kwargs)


def test_boxes_divided_by_scale_and_clipped_to_each_image():
  """Boxes in original pixels of their own image (the second's clipped to
  21 x 25, not the batch's 30 x 40); padding rows zero; the rest passes
  through."""
  outputs = model_outputs()
  result = call(outputs)
  np.testing.assert_allclose(result['detection_boxes'].numpy(),
                             expected_boxes(outputs), rtol=1e-6, atol=1e-5)
  # The clipping is real: the second image's box reaches its own edges.
  np.testing.assert_allclose(result['detection_boxes'].numpy()[1, 0, 2:],
                             [21, 25])
  for key in ('num_detections', 'detection_classes', 'detection_scores',
              'detection_masks'):
    np.testing.assert_array_equal(result[key].numpy(), outputs[key].numpy(),
                                  err_msg=key)
  assert 'detection_masks_full' not in result


def test_semantic_map_resized_back_nearest_and_padded_with_minus_one():
  """Each image's valid part resized nearest to its original size, then
  padded with -1 to the batch's largest original size."""
  outputs = model_outputs()
  got = call(outputs)['semantic_map'].numpy()
  largest = ORIGINAL.max(axis=0)
  assert got.shape == (2, *largest)
  assert got.dtype == np.int32
  semantic_map = outputs['semantic_map'].numpy()
  for b, ((h, w), (oh, ow)) in enumerate(zip(IMAGE_SIZE, ORIGINAL)):
    expected = np.full(largest, -1, np.int32)
    expected[:oh, :ow] = nearest_np(semantic_map[b, :h, :w], oh, ow)
    np.testing.assert_array_equal(got[b], expected, err_msg=f'image {b}')
  assert (got[1, 21:] == -1).all() and (got[1, :, 25:] == -1).all()
  assert 99 not in got


def test_full_image_masks_threshold_pasted_probabilities():
  """detection_masks_full: uint8, the pasted probabilities (on the original
  -pixel boxes, into the batch's largest original size) >= 0.5, zero
  outside each image and for padding rows."""
  outputs = model_outputs(seed=1)
  got = call(outputs, full_image_masks=True)['detection_masks_full'].numpy()
  largest = ORIGINAL.max(axis=0)
  assert got.dtype == np.uint8
  assert got.shape == (2, D, *largest)
  boxes = expected_boxes(outputs)
  masks = outputs['detection_masks'].numpy()
  num = outputs['num_detections'].numpy()
  for b in range(2):
    probabilities = reference.paste_masks_np(masks[b], boxes[b], *largest)
    expected = (probabilities >= 0.5).astype(np.uint8)
    expected[num[b]:] = 0
    expected[:, ORIGINAL[b, 0]:] = 0
    expected[:, :, ORIGINAL[b, 1]:] = 0
    # Float rounding may tip a pixel within 1e-4 of the threshold.
    settled = np.abs(probabilities - 0.5) > 1e-4
    np.testing.assert_array_equal(got[b][settled], expected[settled],
                                  err_msg=f'image {b}')
    assert settled.mean() > 0.99
  assert got[0, :3].any() and got[1, 0].any()
  assert not got[0, 3:].any() and not got[1, 1:].any()
  assert not got[1, :, 21:].any() and not got[1, :, :, 25:].any()


def test_panoptic_without_semantic_map_raises():
  """InstanceFCN's outputs (no semantic_map) cannot give panoptic maps."""
  with pytest.raises(ValueError, match='semantic map'):
    call(model_outputs(semantic=False), panoptic=True)
