"""Raw images -> the model's inputs, inside the graph (the input policy of
ops/image_policy.py, as the evaluation pipeline applies it).

Being layers and tf functions, they travel inside an exported SavedModel,
so clients send images as they are.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf.ops import image_policy
from masklab_tf.serving import limits


@tf_keras.utils.register_keras_serializable(package='masklab')
class ResizeAndPad(tf_keras.layers.Layer):
  """uint8 images [B, H, W, 3] (one size) -> the model's inputs.

  Returns (images uint8 [B, Hp, Wp, 3], image_size int32 [B, 2] resized
  valid size, scale float32 [B, 2] = image_size / original size,
  original_size int32 [B, 2]).
  """

  def __init__(self, min_size: int, max_size: int, stride: int,
               pad_to: tuple[int, ...] = (), portable: bool = False,
               **kwargs):
    """Args: min_size, max_size: the resize rule (image_policy.
    resized_size); stride: pad to a multiple of it; pad_to: or to these
    sizes; portable: the resize ONNX computes exactly (image_policy.
    resize_image)."""
    super().__init__(**kwargs)
    self.min_size, self.max_size = min_size, max_size
    self.stride, self.pad_to = stride, tuple(pad_to)
    self.portable = portable

  def call(self, images):
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
      raise TypeError(f'{self.name}: images must be uint8 RGB, got '
                      f'{images.dtype.name}')
    original = tf.shape(images)[1:3]
    size = image_policy.resized_size(original[0], original[1],
                                     self.min_size, self.max_size)
    resized = image_policy.resize_image(images, size, self.portable)
    padded = image_policy.padded_size(size[tf.newaxis], self.stride,
                                      self.pad_to)
    resized = tf.pad(resized, [[0, 0], [0, padded[0] - size[0]],
                               [0, padded[1] - size[1]], [0, 0]])
    batch = tf.shape(images)[0]
    scale = tf.cast(size, tf.float32) / tf.cast(original, tf.float32)
    return (resized, tf.tile(size[tf.newaxis], [batch, 1]),
            tf.tile(scale[tf.newaxis], [batch, 1]),
            tf.tile(original[tf.newaxis], [batch, 1]))

  def get_config(self):
    return {**super().get_config(), 'min_size': self.min_size,
            'max_size': self.max_size, 'stride': self.stride,
            'pad_to': self.pad_to, 'portable': self.portable}


MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

# The formats tf.io.decode_image reads, in the order of their codes below.
FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'WebP')
_UNKNOWN = -1
# Images decoded at once (tf.map_fn's default in a graph, which this
# replaced).
_PARALLEL_DECODES = 10


def request_shape(tensor: tf.Tensor) -> tf.Tensor:
  """int32 [rank]: the shape of `tensor` as the request has it.

  A signature's declared shape is not enforced by the serving runtime,
  and Grappler folds tf.rank and size of a shape from it: checks on those
  would test the declaration, not the request. A serialize / parse round
  trip hides the shape's length from the optimiser (it costs a few bytes).
  """
  shape = tf.io.serialize_tensor(tf.raw_ops.Shape(input=tensor))
  return tf.io.parse_tensor(shape, tf.int32)


def first_failing(ok: tf.Tensor) -> tf.Tensor:
  """int64 []: the index of the first False in `ok` [B] (-1 if none)."""
  return tf.concat([tf.where(tf.logical_not(ok))[:, 0],
                    tf.constant([-1], tf.int64)], 0)[0]


def check_rank(tensor: tf.Tensor, rank: int, what: str):
  """An assert op: `tensor` has `rank` dims in the request, else an error
  `what` (which says the expected shape) and the shape received."""
  shape = request_shape(tensor)
  return tf.debugging.Assert(
      tf.equal(tf.size(shape), rank),
      [tf.strings.format(what + ', got shape {}', shape, summarize=-1)])


def check_images(images: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS):
  """uint8 images [B, H, W, 3] as a request sent them -> the same images,
  once checked: rank, 3 channels, at least 1x1 and at most max_pixels per
  image. Errors say what was expected and what came (the signature itself
  refuses a dtype other than uint8, naming it)."""
  expected = 'serving_default: images must be uint8 [batch, height, width, 3]'
  with tf.control_dependencies([check_rank(images, 4, expected)]):
    shape = tf.identity(request_shape(images))
  height, width = tf.cast(shape[1], tf.int64), tf.cast(shape[2], tf.int64)
  pixels = height * width
  checks = [
      tf.debugging.Assert(tf.equal(shape[3], 3), [tf.strings.format(
          expected + ' (RGB), got shape {}', shape, summarize=-1)]),
      tf.debugging.Assert(tf.reduce_all(shape[1:3] > 0), [tf.strings.format(
          'serving_default: images must be at least 1x1 pixels, got shape '
          '{}', shape, summarize=-1)]),
      tf.debugging.Assert(pixels <= max_pixels, [tf.strings.format(
          'serving_default: images of {} x {} = {} pixels are over the '
          f'limit of {max_pixels} pixels per image of this model (export '
          'option max_image_pixels)', (height, width, pixels))]),
  ]
  with tf.control_dependencies(checks):
    return tf.ensure_shape(tf.identity(images), [None, None, None, 3])


def check_encoded(encoded: tf.Tensor) -> tf.Tensor:
  """The request's strings, once checked to be a vector [B]."""
  with tf.control_dependencies([check_rank(
      encoded, 1, 'serving_encoded: encoded must be a [batch] vector of '
      'JPEG, PNG, GIF, BMP or WebP strings')]):
    return tf.identity(encoded)


def image_formats(encoded: tf.Tensor) -> tf.Tensor:
  """int32 [B]: each string's format (an index of FORMATS, or -1) from its
  first bytes, as tf.io.decode_image tells them apart."""
  # The first 16 bytes, zero-padded so that short strings slice safely.
  head = tf.strings.join([tf.strings.substr(encoded, 0, 16), '\0' * 16])

  def starts(prefix, pos=0):
    return tf.equal(tf.strings.substr(head, pos, len(prefix)), prefix)

  tests = [starts(b'\xff\xd8\xff'), starts(b'\x89PNG\r\n\x1a\n'),
           starts(b'GIF8'), starts(b'BM'),
           tf.logical_and(starts(b'RIFF'), starts(b'WEBP', 8))]
  codes = tf.fill(tf.shape(encoded), _UNKNOWN)
  for code in reversed(range(len(FORMATS))):
    codes = tf.where(tests[code], code, codes)
  return codes


def _bytes(data, pos, length):
  """`length` bytes of `data` from `pos`; an error where it is shorter."""
  with tf.control_dependencies([tf.debugging.Assert(
      tf.strings.length(data) >= pos + length, ['header cut short'])]):
    return tf.strings.substr(data, pos, length)


def _uint(data, pos, length, big_endian=False):
  """int64: `length` bytes of `data` from `pos` as an unsigned integer
  (so that no header's size can come out negative and pass the limit)."""
  raw = tf.cast(tf.io.decode_raw(_bytes(data, pos, length), tf.uint8),
                tf.int64)
  if big_endian:
    raw = tf.reverse(raw, [0])
  return tf.reduce_sum(tf.bitwise.left_shift(raw, 8 * tf.range(
      length, dtype=tf.int64)))


def header_size(data: tf.Tensor, code: tf.Tensor) -> tf.Tensor:
  """int64 [2] (height, width) of one encoded image, from its header only.

  Where each format keeps it: JPEG's frame header (tf.io.extract_jpeg_shape
  finds it), PNG's IHDR (big-endian at bytes 16..24), GIF's logical screen
  (little-endian 16-bit at 6..10), BMP's info header (little-endian 32-bit
  at 18..26; negative heights are top-down) and WebP's first chunk (lossy
  VP8, lossless VP8L or extended VP8X). A header cut short or malformed
  raises an error (the caller drops and names the image).
  """
  def jpeg():
    return tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)

  def png():
    return tf.stack([_uint(data, 20, 4, big_endian=True),
                     _uint(data, 16, 4, big_endian=True)])

  def gif():
    return tf.stack([_uint(data, 8, 2), _uint(data, 6, 2)])

  def bmp():
    # Signed: a negative height is a top-down bitmap, as tall.
    size = tf.cast(tf.io.decode_raw(_bytes(data, 18, 8), tf.int32), tf.int64)
    return tf.abs(tf.reverse(size, [0]))

  def webp():
    chunk = _bytes(data, 12, 4)
    mask = tf.constant(0x3fff, tf.int64)

    def lossy():
      return tf.bitwise.bitwise_and(
          tf.stack([_uint(data, 28, 2), _uint(data, 26, 2)]), mask)

    def lossless():
      bits = _uint(data, 21, 4)
      return tf.stack([tf.bitwise.bitwise_and(
          tf.bitwise.right_shift(bits, 14), mask),
                       tf.bitwise.bitwise_and(bits, mask)]) + 1

    def extended():
      return tf.stack([_uint(data, 27, 3), _uint(data, 24, 3)]) + 1

    def unknown():
      with tf.control_dependencies([tf.debugging.Assert(False, [chunk])]):
        return tf.zeros([2], tf.int64)

    return tf.case([(tf.equal(chunk, 'VP8 '), lossy),
                    (tf.equal(chunk, 'VP8L'), lossless),
                    (tf.equal(chunk, 'VP8X'), extended)], default=unknown)

  return tf.switch_case(code, [jpeg, png, gif, bmp, webp])


def _first_error(ok, *parts):
  """An assert op: every element of `ok` [B] holds, else a message naming
  the first failing element: `parts` joined, each a string or a [B]
  tensor (its value at that element)."""
  index = first_failing(ok)
  at = tf.maximum(index, 0)
  pieces = [tf.strings.format('serving_encoded: element {} of the batch',
                              index)]
  for part in parts:
    if isinstance(part, str):
      pieces.append(part)
    else:
      value = tf.gather(part, at)
      pieces.append(value if value.dtype == tf.string else
                    tf.strings.as_string(value))
  # Joined, not formatted: tf.strings.format would quote the strings.
  return tf.debugging.Assert(tf.reduce_all(ok), [tf.strings.join(pieces)])


def _collect(dataset, batch, initial):
  """The elements of `dataset` (some dropped by errors), batched: its
  tensors with a first dimension <= batch."""
  return dataset.batch(tf.cast(tf.maximum(batch, 1), tf.int64)).reduce(
      initial, lambda _, element: element)


def _received(indices, batch):
  """bool [batch]: which indices came through."""
  return tf.scatter_nd(indices[:, tf.newaxis],
                       tf.ones_like(indices, tf.bool), [batch])


def decode_images(encoded, min_size: int, max_size: int, stride: int,
                  pad_to=(), max_pixels: int = MAX_IMAGE_PIXELS):
  """JPEG / PNG / GIF / BMP / WebP strings [B] -> the model's inputs, images
  of any sizes.

  Returns (images uint8 [B, Hp, Wp, 3], image_size int32 [B, 2], scale
  float32 [B, 2], original_size int32 [B, 2]). Grayscale and RGBA decode
  to RGB. Before anything is decoded, each image's size is read from its
  header; a request with an image of another format, an unreadable header
  or more than `max_pixels` pixels fails with a message naming that image
  ("serving_encoded: element 3 of the batch: ..."), as does one whose data
  then does not decode (truncated or corrupt). Failing the request is TF
  Serving's way; the message is all its client sees, so it says which
  element and why.
  """
  limit = (max(pad_to) if pad_to else
           (max_size + stride - 1) // stride * stride)
  encoded = check_encoded(encoded)
  batch = tf.shape(encoded)[0]
  indices = tf.range(batch)
  codes = image_formats(encoded)
  names = tf.gather(FORMATS, tf.maximum(codes, 0))
  known = _first_error(codes >= 0, ' is not a JPEG, PNG, GIF, BMP or WebP '
                       'image (its first bytes are none of theirs)')

  # Sizes from the headers; errors (a header cut short) drop an element.
  with tf.control_dependencies([known]):
    headers = tf.data.Dataset.from_tensor_slices(
        (indices, tf.identity(encoded), codes)).map(
            lambda i, data, code: (i, header_size(data, code))).ignore_errors()
  read, sizes = _collect(headers, batch, (tf.zeros([0], tf.int32),
                                          tf.zeros([0, 2], tf.int64)))
  readable = _received(read, batch)
  header_error = _first_error(readable, ': its ', names,
                              ' header is truncated or corrupt')
  with tf.control_dependencies([header_error]):
    pixels = tf.scatter_nd(read[:, tf.newaxis], tf.reduce_prod(sizes, 1),
                           [batch])
    heights = tf.scatter_nd(read[:, tf.newaxis], sizes[:, 0], [batch])
    widths = tf.scatter_nd(read[:, tf.newaxis], sizes[:, 1], [batch])
  too_large = _first_error(
      pixels <= max_pixels, ': ', heights, ' x ', widths, ' = ', pixels,
      f' pixels, over the limit of {max_pixels} pixels per image of this '
      'model (export option max_image_pixels)')

  def one(index, data):
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    original = tf.shape(image)[:2]
    size = image_policy.resized_size(original[0], original[1], min_size,
                                     max_size)
    resized = image_policy.resize_image(image, size)
    # Pad to the largest possible size; the batch is cropped below.
    resized = tf.pad(resized, [[0, limit - size[0]], [0, limit - size[1]],
                               [0, 0]])
    return index, resized, size, original

  # Only images within the limit get here: the checks above come first.
  with tf.control_dependencies([too_large]):
    decoded = tf.data.Dataset.from_tensor_slices(
        (indices, tf.identity(encoded))).map(
            one, num_parallel_calls=_PARALLEL_DECODES,
            deterministic=True).ignore_errors()
  done, images, sizes, originals = _collect(decoded, batch, (
      tf.zeros([0], tf.int32), tf.zeros([0, limit, limit, 3], tf.uint8),
      tf.zeros([0, 2], tf.int32), tf.zeros([0, 2], tf.int32)))
  decode_error = _first_error(
      _received(done, batch), ': its ', names,
      ' data is truncated or corrupt (cannot decode it)')
  with tf.control_dependencies([decode_error]):
    # In order: every index came, and the map keeps their order.
    images = tf.ensure_shape(tf.identity(images), [None, limit, limit, 3])
  padded = image_policy.padded_size(sizes, stride, pad_to)
  images = images[:, :padded[0], :padded[1]]
  scale = tf.cast(sizes, tf.float32) / tf.cast(originals, tf.float32)
  return images, sizes, scale, originals
