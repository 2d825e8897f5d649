"""Hostile and unusual requests to the SavedModel's two signatures:
extreme aspect ratios are served; decompression bombs are refused from
their headers, before decoding; every error names what was expected and,
for encoded images, the element of the batch."""

import io
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import hostile_images as hostile
from masklab_tf.serving import export
from masklab_tf.serving import model as model_lib
from masklab_tf.serving import preprocess


@pytest.fixture(scope='module')
def signatures(exported_model):
  loaded = tf.saved_model.load(exported_model['export_dir'])
  return loaded.signatures['serving_default'], loaded.signatures[
      'serving_encoded']


def error_of(call, **inputs):
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    call(**inputs)
  return error.value.message


@pytest.mark.parametrize('height, width', [(2, 1000), (1, 4000), (4000, 1)])
def test_extreme_aspect_ratios_are_served(signatures, height, width):
  """Both signatures serve an image whose short side would resize to 0
  pixels: outputs in its own pixels, boxes inside it."""
  images, encoded = signatures
  pixels = np.asarray(Image.open(io.BytesIO(hostile.encode(height, width))))
  alone = images(images=tf.constant(pixels[np.newaxis]))
  batch = encoded(encoded=tf.constant([hostile.encode(height, width),
                                       hostile.encode(30, 40)]))
  assert alone['semantic_map'].shape == (1, height, width)
  assert batch['semantic_map'].shape == (2, max(height, 30), max(width, 40))
  for outputs in (alone, batch):
    boxes = outputs['detection_boxes'].numpy()[0]
    assert np.isfinite(boxes).all()
    assert (boxes[:, 2] <= height).all() and (boxes[:, 3] <= width).all()
  # The same image alone through either signature: the same detections.
  np.testing.assert_allclose(
      alone['detection_boxes'],
      encoded(encoded=tf.constant([hostile.encode(height, width)]))[
          'detection_boxes'], atol=1e-3)


def test_decompression_bomb_is_refused_before_decoding(signatures):
  """A 10000 x 10000 PNG (100 megapixels, 1.2 GB decoded with its outputs,
  a 100 KB file) in a batch: the request fails naming element 1 and its
  size, over the default limit of 40 megapixels; the image was never
  decoded (peak memory grows by far less than its 300 MB of pixels)."""
  _, encoded = signatures
  bomb = hostile.png_bomb(10000, 10000)
  assert len(bomb) < 1_000_000
  batch = tf.constant([hostile.encode(20, 30), bomb, hostile.encode(30, 20)])
  measured = hostile.peak_memory_reset()
  before = hostile.peak_memory_mb()
  message = error_of(encoded, encoded=batch)
  assert ('serving_encoded: element 1 of the batch: 10000 x 10000 = '
          '100000000 pixels, over the limit of 40000000 pixels per image'
          in message), message
  if measured:
    assert hostile.peak_memory_mb() - before < 150
  # The model still serves.
  assert encoded(encoded=batch[:1])['semantic_map'].shape == (1, 20, 30)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG', 'GIF', 'BMP', 'WEBP'])
def test_every_format_is_sized_from_its_header(signatures, fmt):
  """A header claiming 9000 x 8000 is refused whatever the format (the
  data behind it never decodes), and the real image of each format runs."""
  _, encoded = signatures
  small = hostile.encode(21, 37, fmt)
  assert encoded(encoded=tf.constant([small]))[
      'semantic_map'].shape == (1, 21, 37)
  message = error_of(encoded, encoded=tf.constant(
      [small, small, hostile.with_header_size(small, fmt, 9000, 8000)]))
  assert ('element 2 of the batch: 9000 x 8000 = 72000000 pixels, over the '
          'limit of 40000000' in message), message


def test_one_bad_element_is_named_with_its_reason(signatures):
  """In a batch of 16 mixed images, one bad string fails the request with
  a message naming its index and what is wrong with it."""
  _, encoded = signatures
  good = [hostile.encode(20 + i, 30, ('PNG', 'JPEG', 'GIF', 'BMP')[i % 4])
          for i in range(16)]
  png, jpeg = hostile.encode(25, 25), hostile.encode(25, 25, 'JPEG')
  cases = [
      (b'not an image', 'is not a JPEG, PNG, GIF, BMP or WebP image'),
      (b'', 'is not a JPEG, PNG, GIF, BMP or WebP image'),
      (png[:20], 'its PNG header is truncated or corrupt'),
      (jpeg[:30], 'its JPEG header is truncated or corrupt'),
      (png[:len(png) // 2], 'its PNG data is truncated or corrupt'),
      (jpeg[:-100], 'its JPEG data is truncated or corrupt'),
  ]
  for index, (bad, reason) in zip((11, 0, 15, 7, 3, 9), cases):
    batch = list(good)
    batch[index] = bad
    message = error_of(encoded, encoded=tf.constant(batch))
    assert f'serving_encoded: element {index} of the batch' in message, (
        reason, message)
    assert reason in message, message
  # The good ones alone run.
  assert encoded(encoded=tf.constant(good))['semantic_map'].shape[0] == 16


def test_wrong_rank_and_shape_say_what_was_expected(signatures):
  images, encoded = signatures
  for value, shape in [('abc', r'\[\]'), ([['abc']], r'\[1 1\]')]:
    message = error_of(encoded, encoded=tf.constant(value))
    assert re.search(r'serving_encoded: encoded must be a \[batch\] vector '
                     r'of JPEG, PNG, GIF, BMP or WebP strings, got shape '
                     + shape, message), message
  for shape in [(5, 5, 3), (1, 1, 5, 5, 3)]:
    message = error_of(images, images=tf.zeros(shape, tf.uint8))
    assert ('serving_default: images must be uint8 [batch, height, width, '
            f'3], got shape [{" ".join(map(str, shape))}]') in message
  message = error_of(images, images=tf.zeros([1, 5, 5, 4], tf.uint8))
  assert 'images must be uint8 [batch, height, width, 3] (RGB), got shape ' \
         '[1 5 5 4]' in message
  message = error_of(images, images=tf.zeros([1, 0, 5, 3], tf.uint8))
  assert 'images must be at least 1x1 pixels, got shape [1 0 5 3]' in message
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='expected to be a uint8 tensor'):
    images(images=tf.zeros([1, 5, 5, 3], tf.float32))


def test_max_image_pixels_is_an_export_option(exported_model):
  """The limit the export is given is the one both signatures apply (here
  in process, without a second export)."""
  module = export.ServingModule(
      model_lib.build_serving_model(exported_model['inference_model'],
                                    exported_model['configs']),
      max_image_pixels=600)
  assert module.serve_images(tf.zeros([2, 20, 30, 3], tf.uint8))[
      'semantic_map'].shape == (2, 20, 30)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'serving_default: images of 20 x 31 = 620 '
                     r'pixels are over the limit of 600 pixels per image'):
    module.serve_images(tf.zeros([2, 20, 31, 3], tf.uint8))
  with pytest.raises(ValueError, match='max_image_pixels must be >= 1'):
    export.ServingModule(module.serving_model, max_image_pixels=0)


@pytest.mark.parametrize('fmt, kwargs', [
    ('JPEG', {}), ('JPEG', {'progressive': True}), ('PNG', {}), ('GIF', {}),
    ('BMP', {}), ('WEBP', {}), ('WEBP', {'lossless': True})])
def test_header_size_of_every_format(fmt, kwargs):
  """preprocess.header_size reads (height, width) as the decoder will
  find it, without decoding; a lying header's size is what it says."""
  data = hostile.encode(21, 37, fmt, **kwargs)
  (code,) = preprocess.image_formats(tf.constant([data])).numpy()
  assert preprocess.FORMATS[code].upper() == fmt
  size = preprocess.header_size(tf.constant(data), tf.constant(code)).numpy()
  np.testing.assert_array_equal(size, [21, 37])
  if not kwargs:
    lying = hostile.with_header_size(data, fmt, 9000, 8000)
    np.testing.assert_array_equal(
        preprocess.header_size(tf.constant(lying), tf.constant(code)),
        [9000, 8000])


def test_header_sizes_are_never_negative():
  """PNG sizes are unsigned 32-bit: 0xFFFFFFFF is 4294967295 (a signed
  read would say -1, and -1 x -1 pixels would pass any limit)."""
  data = bytearray(hostile.encode(5, 5))
  data[16:24] = b'\xff' * 8
  size = preprocess.header_size(tf.constant(bytes(data)),
                                tf.constant(1)).numpy()
  np.testing.assert_array_equal(size, [2 ** 32 - 1, 2 ** 32 - 1])
