"""Image files for the tools: sized from their headers before decoding,
then decoded by TensorFlow's decoder (or Pillow's, where TensorFlow is not
used: bin/predict --onnx), with errors that name the file.

A small file can decode to gigabytes (a 388 KB PNG of 20000 x 20000
pixels), so a tool that takes image files from users reads each one's size
from its header (PIL's Image.open does not decode) and refuses it over a
pixel limit before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
from PIL import Image


@contextlib.contextmanager
def _without_pil_bomb_check():
  """PIL's decompression-bomb check off inside: the caller's pixel limit,
  read from the header, replaces it (PIL would refuse a large image at
  open, before it could be named)."""
  pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
  try:
    yield
  finally:
    Image.MAX_IMAGE_PIXELS = pil_limit


def header_size(path: str) -> tuple[int, int] | None:
  """(height, width) from the image's header, without decoding it; None
  when PIL cannot read the header (TensorFlow's decoder then says why)."""
  try:
    with _without_pil_bomb_check(), Image.open(path) as image:
      width, height = image.size
    return height, width
  except (OSError, ValueError):
    return None


def error_message(error: Exception) -> str:
  """TensorFlow's error without its graph boilerplate: the reason, as a
  SavedModel's assertion or a kernel states it."""
  message = getattr(error, 'message', str(error))
  # '{{function_node ...}}', '[[{{node ...}}]]', '[Op:...]'.
  message = re.sub(r'\[\[.*?\]\]|\{\{.*?\}\}|\[Op:[^\]]*\]', '', message)
  lines = [line.strip() for line in message.splitlines()]
  lines = [line for line in lines if line and not line.startswith((
      'Graph execution error', 'Detected at node', '<stack traces'))]
  message = ' '.join(lines)
  match = re.search(r'assertion failed: \[(.*)\]', message)
  return match.group(1) if match else message


def decode(path: str, max_pixels: int, tensorflow: bool = True
           ) -> tuple[bytes, np.ndarray]:
  """Raw bytes and RGB pixels of a file; ValueError naming the problem.

  The size comes from the header first: an image over `max_pixels` is
  refused before its pixels are decoded. Then TensorFlow's decoder, the one
  inside the SavedModel's signature, so that the picture drawn is the image
  the model saw and a file is rejected here exactly when the model would
  reject it; with `tensorflow=False`, Pillow's, for a model fed decoded
  pixels (ONNX). Both decode 8-bit PNG, BMP and GIF to the same pixels;
  JPEG decoders may differ by a grey level here and there.
  """
  size = header_size(path)
  if size is not None and size[0] * size[1] > max_pixels:
    raise ValueError(
        f'{path}: {size[0]} x {size[1]} = {size[0] * size[1]} pixels, over '
        f'the limit of {max_pixels} (--max_image_pixels; not decoded)')
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'{path}: cannot read ({e.strerror})') from e
  return data, (_decode_tf(path, data) if tensorflow else
                _decode_pil(path, data))


def _decode_tf(path: str, data: bytes) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise ValueError(f'{path}: cannot decode as an image '
                     f'({error_message(e)})') from e
  return image.numpy()


def _decode_pil(path: str, data: bytes) -> np.ndarray:
  """RGB as TensorFlow's decode_image(channels=3) gives it: grey repeated,
  alpha dropped, an animation's first frame, a 16-bit PNG's high byte."""
  if not data:
    raise ValueError(f'{path}: cannot decode as an image (the file is '
                     'empty)')
  try:
    # The header was checked against the caller's limit (decode).
    with _without_pil_bomb_check(), Image.open(io.BytesIO(data)) as image:
      if image.mode.startswith('I;16'):
        high = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(high[..., np.newaxis], 3, axis=-1)
      return np.asarray(image.convert('RGB'))
  except Image.UnidentifiedImageError as e:
    raise ValueError(f'{path}: cannot decode as an image (not a format '
                     'Pillow reads)') from e
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f'{path}: cannot decode as an image ({e})') from e
