"""Limits of the served model that code without TensorFlow reads too
(bin/predict --onnx): plain Python."""

# Serving refuses images over this many pixels unless the export says
# otherwise: decoding is what costs memory (a 388 KB PNG of 20000 x 20000
# decodes to 1.2 GB, and its outputs in image pixels are larger still), so
# the limit is read from each image's header, before it is decoded.
MAX_IMAGE_PIXELS = 40_000_000
