"""serving/preprocess: what a served model does to raw images equals what the
evaluation pipeline (data/pipeline.Preprocessor, through ops/image_policy)
does to them."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf.data import pipeline
from masklab_tf.ops import image_policy
from masklab_tf.serving import preprocess

MIN_SIZE, MAX_SIZE, STRIDE = 40, 64, 8


def evaluation_example(image):
  """The evaluation pipeline's example for `image` (one dummy instance):
  its image (padded), image_size, scale and original_size."""
  cfg = config.DataConfig(eval_min_size=MIN_SIZE, max_size=MAX_SIZE,
                          max_instances=2)
  preprocessor = pipeline.Preprocessor(cfg, config.GeometryConfig(), False,
                                       output_stride=STRIDE, seed=0)
  height, width = image.shape[:2]
  masks = np.zeros([1, height, width], np.uint8)
  masks[0, 2:8, 3:9] = 1
  example = {'image': tf.constant(image), 'masks': tf.constant(masks),
             'boxes': tf.constant([[2.0, 3.0, 8.0, 9.0]]),
             'is_crowd': tf.constant([False]), 'classes': tf.constant([1]),
             'image_id': tf.constant(1, tf.int64)}
  return {k: v.numpy() for k, v in
          preprocessor(tf.constant(0, tf.int64), example).items()}


@pytest.mark.parametrize('original_size, resized, padded_size', [
    # The longest side caps the scale at 64 / 50.
    ((30, 50), (38, 64), (40, 64)),
    # The shortest side goes to 40.
    ((30, 37), (40, 49), (40, 56)),
])
def test_resize_and_pad_equals_the_evaluation_pipeline(original_size,
                                                       resized, padded_size):
  """A uint8 batch of one size: each image resized exactly as the
  evaluation pipeline resizes it, padded with zeros to a multiple of the
  stride; sizes, scale and original size per image."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, [2, *original_size, 3]).astype(np.uint8)
  layer = preprocess.ResizeAndPad(MIN_SIZE, MAX_SIZE, STRIDE)
  padded, sizes, scale, original = (t.numpy() for t in layer(images))

  assert padded.dtype == np.uint8
  assert padded.shape == (2, *padded_size, 3)
  for b in range(2):
    expected = evaluation_example(images[b])
    np.testing.assert_array_equal(padded[b], expected['image'])
    np.testing.assert_array_equal(sizes[b], expected['image_size'])
    np.testing.assert_allclose(scale[b], expected['scale'], rtol=1e-6)
    np.testing.assert_array_equal(original[b], expected['original_size'])
  np.testing.assert_array_equal(sizes, [resized] * 2)
  np.testing.assert_array_equal(original, [original_size] * 2)
  np.testing.assert_allclose(
      scale, [np.divide(resized, original_size)] * 2, rtol=1e-6)
  assert not padded[:, resized[0]:].any()
  assert not padded[:, :, resized[1]:].any()


def test_resize_and_pad_to_a_fixed_size():
  """pad_to replaces the stride's rounding."""
  images = np.full([1, 30, 50, 3], 7, np.uint8)
  padded, sizes, _, _ = preprocess.ResizeAndPad(
      MIN_SIZE, MAX_SIZE, STRIDE, pad_to=(48, 72))(images)
  assert padded.shape == (1, 48, 72, 3)
  np.testing.assert_array_equal(sizes, [[38, 64]])
  assert (padded.numpy()[0, :38, :64] == 7).all()
  assert not padded.numpy()[0, 38:].any()
  assert not padded.numpy()[0, :, 64:].any()


@pytest.mark.parametrize('dtype', [tf.float32, tf.int32])
def test_resize_and_pad_refuses_non_uint8(dtype):
  """Float or int images are refused with a TypeError naming the dtype
  (a float 0..1 image would otherwise pass silently as near-black)."""
  layer = preprocess.ResizeAndPad(MIN_SIZE, MAX_SIZE, STRIDE)
  with pytest.raises(TypeError, match=dtype.name):
    layer(tf.zeros([1, 30, 50, 3], dtype))


def png_batch():
  """PNG strings of three images of different sizes (RGB, grayscale and
  RGBA) and the RGB pixels each decodes to."""
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, [30, 50, 3]).astype(np.uint8)
  gray = rng.integers(0, 256, [45, 20, 1]).astype(np.uint8)
  rgba = rng.integers(0, 256, [24, 24, 4]).astype(np.uint8)
  encoded = [tf.io.encode_png(x).numpy() for x in (rgb, gray, rgba)]
  pixels = [rgb, np.repeat(gray, 3, axis=2), rgba[..., :3]]
  return tf.constant(encoded), pixels


def test_decode_images_each_image_its_own_size():
  """Images of any sizes in one request: each gets its own image_size,
  scale and original_size, and the pixels of decoding and resizing it
  alone (image_policy), padded to the batch's largest size rounded up to
  the stride."""
  encoded, pixels = png_batch()
  images, sizes, scale, original = (
      t.numpy() for t in preprocess.decode_images(encoded, MIN_SIZE,
                                                  MAX_SIZE, STRIDE))
  expected_sizes = []
  for b, image in enumerate(pixels):
    height, width = image.shape[:2]
    size = image_policy.resized_size(height, width, MIN_SIZE, MAX_SIZE)
    expected_sizes.append(size.numpy())
    np.testing.assert_array_equal(original[b], [height, width])
    np.testing.assert_array_equal(sizes[b], size)
    np.testing.assert_allclose(scale[b], size.numpy() / [height, width],
                               rtol=1e-6)
    resized = image_policy.resize_image(tf.constant(image), size).numpy()
    h, w = size.numpy()
    np.testing.assert_array_equal(images[b, :h, :w], resized,
                                  err_msg=f'image {b}')
    assert not images[b, h:].any() and not images[b, :, w:].any()
  # 30 x 50 -> 38 x 64, 45 x 20 -> 64 x 28, 24 x 24 -> 40 x 40: padded to
  # 64 x 64 (the largest of each side, rounded up to 8).
  np.testing.assert_array_equal(expected_sizes,
                                [[38, 64], [64, 28], [40, 40]])
  assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8


def test_decode_images_padding_only_to_the_largest_image():
  """A batch of small images pads to their largest size, not max_size."""
  encoded, _ = png_batch()
  images, sizes, _, _ = preprocess.decode_images(encoded[2:], MIN_SIZE,
                                                 MAX_SIZE, STRIDE)
  np.testing.assert_array_equal(sizes, [[40, 40]])
  assert images.shape == (1, 40, 40, 3)
