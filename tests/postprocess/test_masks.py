"""postprocess/masks.paste_masks against reference.paste_masks_np, the
one-box-one-pixel numpy model of the crop convention's inverse."""

import numpy as np
import tensorflow as tf

import reference
from masklab_tf.postprocess import masks as masks_lib

HEIGHT, WIDTH, SIZE = 20, 24, 7


def awkward_boxes(rng):
  """[N, 4] boxes of every kind paste_masks meets: ordinary ones, ones
  partly (or wholly) outside the image, sub-pixel ones inside one pixel or
  across a pixel edge, and empty ones (zero or negative extent)."""
  ordinary = []
  for _ in range(6):
    top, left = rng.uniform(0, 12, 2)
    ordinary.append([top, left, top + rng.uniform(2, 8),
                     left + rng.uniform(2, 11)])
  outside = [
      [-5.3, -2.7, 6.2, 9.9],                        # over the top-left
      [14.4, 17.8, 26.1, 31.5],                      # over the bottom-right
      [-3.0, 4.0, 25.0, 8.5],                        # taller than the image
      [22.0, 3.0, 30.0, 9.0],                        # wholly below it
      [2.0, -9.0, 7.0, -1.0],                        # wholly left of it
  ]
  sub_pixel = [
      [3.2, 5.1, 3.7, 5.8],                          # inside one pixel
      [7.6, 10.9, 8.3, 11.2],                        # across pixel edges
      [0.0, 0.0, 0.4, 23.9],                         # a thin strip
  ]
  empty = [
      [5.0, 5.0, 5.0, 12.0],                         # zero height
      [4.0, 9.0, 10.0, 9.0],                         # zero width
      [12.0, 12.0, 6.0, 15.0],                       # inverted
      [5.5, 3.0, 5.5, 9.0],                          # zero height in
                                                     # mid-pixel
      [0.0, 0.0, 0.0, 0.0],                          # padding
  ]
  return np.array(ordinary + outside + sub_pixel + empty, np.float32)


def test_paste_masks_matches_numpy_reference():
  """Random probabilities on awkward boxes: equal to the numpy model within
  1e-5, pixel by pixel, including zeros outside each box."""
  rng = np.random.default_rng(0)
  boxes = awkward_boxes(rng)
  # Not symmetric, so a transposed read would show.
  masks = rng.uniform(0, 1, [len(boxes), SIZE, SIZE]).astype(np.float32)

  got = masks_lib.paste_masks(tf.constant(masks), tf.constant(boxes), HEIGHT,
                              WIDTH).numpy()

  expected = reference.paste_masks_np(masks, boxes, HEIGHT, WIDTH)
  assert got.shape == (len(boxes), HEIGHT, WIDTH)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  # The cases are real: ordinary, clipped and sub-pixel boxes paste
  # something, empty and wholly outside ones nothing.
  painted = (expected > 0).any(axis=(1, 2))
  np.testing.assert_array_equal(
      painted, [True] * 6 + [True, True, True, False, False] +
      [True] * 3 + [False] * 5)


def test_paste_masks_many_random_boxes_in_a_tf_function():
  """A hundred random boxes anywhere around the image (any size from
  sub-pixel up), with the image size as run-time tensors."""
  rng = np.random.default_rng(1)
  num = 100
  centre = rng.uniform(-4, [HEIGHT + 4, WIDTH + 4], [num, 2])
  sides = np.exp(rng.uniform(np.log(0.2), np.log(30), [num, 2]))
  boxes = np.concatenate([centre - sides / 2, centre + sides / 2],
                         axis=1).astype(np.float32)
  masks = rng.uniform(0, 1, [num, SIZE, SIZE]).astype(np.float32)

  paste = tf.function(masks_lib.paste_masks, input_signature=[
      tf.TensorSpec([None, SIZE, SIZE], tf.float32),
      tf.TensorSpec([None, 4], tf.float32),
      tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
  got = paste(masks, boxes, tf.constant(HEIGHT), tf.constant(WIDTH)).numpy()

  np.testing.assert_allclose(
      got, reference.paste_masks_np(masks, boxes, HEIGHT, WIDTH), atol=1e-5,
      rtol=0)


def test_paste_masks_constant_mask_fills_exactly_its_box():
  """By hand: an all-ones mask on a box with integer edges is 1 on the
  box's pixels and 0 elsewhere."""
  got = masks_lib.paste_masks(tf.ones([1, SIZE, SIZE]),
                              tf.constant([[3.0, 5.0, 9.0, 16.0]]), HEIGHT,
                              WIDTH).numpy()[0]
  expected = np.zeros([HEIGHT, WIDTH], np.float32)
  expected[3:9, 5:16] = 1.0
  np.testing.assert_allclose(got, expected, atol=1e-6)

