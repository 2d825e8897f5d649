"""Hostile and unusual image files for the serving and bin/predict tests:
real encodings, decompression bombs, headers that lie about the size."""

import io
import struct

import numpy as np
from PIL import Image

from benchmarks.harness import timing
from benchmarks.suites import hostile_inputs

# The peak memory a request adds, measured as the hostile_inputs benchmark
# measures it (VmHWM after a reset).
peak_memory_reset = timing.reset_peak_rss
peak_memory_mb = timing.rss_mib
# The benchmark's bomb, at any size.
png_bomb = hostile_inputs.png_bomb


def encode(height, width, fmt='PNG', **kwargs):
  pixels = np.random.default_rng(height * width).integers(
      0, 256, (height, width, 3)).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def with_header_size(data, fmt, height, width):
  """`data` of format `fmt` with the size in its header replaced: what a
  decompression bomb's header says, at the cost of a small file."""
  data = bytearray(data)
  if fmt == 'JPEG':
    # The frame header: FFC0 length(2) precision(1) height(2) width(2).
    at = data.index(b'\xff\xc0') + 5
    data[at:at + 4] = struct.pack('>HH', height, width)
  elif fmt == 'PNG':
    data[16:24] = struct.pack('>II', width, height)
  elif fmt == 'GIF':
    data[6:10] = struct.pack('<HH', width, height)
  elif fmt == 'BMP':
    data[18:26] = struct.pack('<ii', width, height)
  elif fmt == 'WEBP':  # Lossy VP8: 14-bit sizes after the start code.
    data[26:30] = struct.pack('<HH', width, height)
  return bytes(data)
