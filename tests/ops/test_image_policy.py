"""ops/image_policy: the resize rule, bilinear uint8 images, nearest labels
(against tf.image.resize) and the batch's padded size."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf.ops import image_policy


@pytest.mark.parametrize('height, width, min_size, max_size, expected', [
    # Shortest side to min_size; the longest stays under max_size.
    (480, 640, 800, 1333, (800, 1067)),
    (640, 480, 800, 1333, (1067, 800)),
    (100, 100, 160, 192, (160, 160)),
    # The longest would pass max_size: it goes to max_size instead.
    (400, 1000, 800, 1333, (533, 1333)),
    (1000, 300, 160, 192, (192, 58)),
    # Shrinking works the same way.
    (900, 1200, 600, 1000, (600, 800)),
])
def test_resized_size_rule(height, width, min_size, max_size, expected):
  """Detectron2's rule, by hand: scale = min(min_size / shortest,
  max_size / longest), sides rounded."""
  got = image_policy.resized_size(tf.constant(height), tf.constant(width),
                                  tf.constant(min_size), max_size).numpy()
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, expected)


def test_resized_size_matches_numpy_on_random_sizes():
  rng = np.random.default_rng(0)
  for _ in range(50):
    height, width = rng.integers(20, 2000, 2)
    min_size, max_size = int(rng.integers(100, 900)), int(rng.integers(
        900, 1400))
    scale = min(min_size / min(height, width), max_size / max(height, width))
    expected = np.round(np.array([height, width]) * scale)
    got = image_policy.resized_size(height, width, min_size, max_size)
    # float32 against float64: a side may differ by one where the product
    # lands within rounding of .5.
    np.testing.assert_allclose(got.numpy(), expected, atol=1)
    assert max(got.numpy()) <= max_size
    assert min(got.numpy()) <= min_size + 1


def test_resize_image_is_bilinear_rounded_to_uint8():
  """Equal to tf.image.resize(bilinear) rounded (not truncated) to uint8,
  for a batch and for a single image, up and down."""
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, [2, 13, 17, 3]).astype(np.uint8)
  for size in ((20, 9), (5, 31), (13, 17)):
    got = image_policy.resize_image(tf.constant(images), size).numpy()
    resized = tf.image.resize(images.astype(np.float32), size,
                              method='bilinear').numpy()
    expected = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    single = image_policy.resize_image(tf.constant(images[1]), size).numpy()
    np.testing.assert_array_equal(single, expected[1])
  # Rounding is real: truncation would differ somewhere.
  resized = tf.image.resize(images.astype(np.float32), (20, 9)).numpy()
  assert (np.round(resized) != np.floor(resized)).any()


def test_the_portable_resize_is_resize_bilinear_bit_for_bit():
  """image_policy._bilinear_elementwise against tf.image.resize in float32,
  exactly, on random sizes up and down (1 pixel to 3x; batched and
  single). Exactness is the point: ONNX Runtime computes these elementwise
  ops bit for bit as well (tests/serving/test_golden_checkpoint.py)."""
  rng = np.random.default_rng(2)
  for _ in range(40):
    height, width, out_height, out_width = rng.integers(1, 120, 4)
    images = rng.integers(0, 256, [2, height, width, 3]).astype(np.float32)
    size = tf.constant([out_height, out_width])
    want = tf.image.resize(images, size, method='bilinear').numpy()
    got = image_policy._bilinear_elementwise(tf.constant(images), size)
    np.testing.assert_array_equal(got.numpy(), want)
    single = image_policy._bilinear_elementwise(tf.constant(images[0]), size)
    np.testing.assert_array_equal(single.numpy(), want[0])
  uint8 = rng.integers(0, 256, [1, 37, 51, 3]).astype(np.uint8)
  np.testing.assert_array_equal(
      image_policy.resize_image(uint8, [23, 80], portable=True).numpy(),
      image_policy.resize_image(uint8, [23, 80]).numpy())


@pytest.mark.parametrize('size', [(7, 5), (13, 17), (26, 40), (9, 31)])
def test_resize_nearest_matches_tf_image_resize(size):
  """On floats: equal to tf.image.resize(method='nearest') over dims
  (0, 1) of [H, W, C] and dims (1, 2) of [N, H, W]."""
  rng = np.random.default_rng(2)
  image = rng.normal(size=[13, 17, 2]).astype(np.float32)
  expected = tf.image.resize(image, size, method='nearest').numpy()
  got = image_policy.resize_nearest(tf.constant(image), size).numpy()
  np.testing.assert_array_equal(got, expected)

  masks = rng.normal(size=[3, 13, 17]).astype(np.float32)
  expected = tf.image.resize(masks[..., None], size,
                             method='nearest').numpy()[..., 0]
  got = image_policy.resize_nearest(tf.constant(masks), size, axis=1).numpy()
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('dtype', [np.uint8, np.int32, np.int64])
def test_resize_nearest_int_dtypes(dtype):
  """Integer label maps keep their dtype and values (nearest picks one of
  the source values), matching the float resize cast back."""
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 200, [11, 14]).astype(dtype)
  got = image_policy.resize_nearest(tf.constant(labels), (23, 6)).numpy()
  expected = tf.image.resize(labels.astype(np.float32)[..., None], (23, 6),
                             method='nearest').numpy()[..., 0].astype(dtype)
  assert got.dtype == dtype
  np.testing.assert_array_equal(got, expected)


def test_resize_nearest_empty_leading_dimension():
  """No instances: [0, H, W] masks resize to [0, h, w]."""
  got = image_policy.resize_nearest(tf.zeros([0, 13, 17], tf.uint8), (20, 9),
                                    axis=1)
  assert got.shape == (0, 20, 9)
  assert got.dtype == tf.uint8


def test_padded_size():
  """The largest resized size of the batch rounded up to the stride;
  exact multiples stay; pad_to wins when set."""
  sizes = tf.constant([[45, 60], [32, 37]])
  np.testing.assert_array_equal(image_policy.padded_size(sizes, 8), [48, 64])
  np.testing.assert_array_equal(
      image_policy.padded_size(tf.constant([[33, 17]]), 16), [48, 32])
  np.testing.assert_array_equal(
      image_policy.padded_size(tf.constant([[48, 64]]), 8), [48, 64])
  np.testing.assert_array_equal(
      image_policy.padded_size(sizes, 8, pad_to=(64, 96)), [64, 96])


@pytest.mark.parametrize('height, width, min_size, max_size, expected', [
    # The short side would round to 0 (2 * 192 / 1000 = 0.38): it keeps 1.
    (2, 1000, 160, 192, (1, 192)),
    (1000, 2, 160, 192, (192, 1)),
    (1, 4000, 160, 192, (1, 192)),
    (1, 4000, 800, 1333, (1, 1333)),
    # A 1x1 image grows as usual.
    (1, 1, 160, 192, (160, 160)),
])
def test_resized_size_keeps_every_side_at_least_one_pixel(
    height, width, min_size, max_size, expected):
  """Extreme aspect ratios: no side reaches 0 (tf.image.resize refuses
  'output dimensions must be positive'), the long side still obeys
  max_size, and the image resizes and pads to the stride."""
  size = image_policy.resized_size(tf.constant(height), tf.constant(width),
                                   tf.constant(min_size), max_size)
  np.testing.assert_array_equal(size.numpy(), expected)
  image = tf.zeros([height, width, 3], tf.uint8)
  assert image_policy.resize_image(image, size).shape == (*expected, 3)
  padded = image_policy.padded_size(size[tf.newaxis], 8).numpy()
  assert (padded >= 8).all() and (padded % 8 == 0).all()
