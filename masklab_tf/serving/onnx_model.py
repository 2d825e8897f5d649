"""An exported model.onnx in ONNX Runtime, without TensorFlow.

This module imports numpy and onnxruntime only, so that a deployment (and
`bin/predict --onnx`) runs where TensorFlow is not installed. The model
takes uint8 images [B, H, W, 3] of one size and returns the outputs of
postprocess/image_results.py in their pixels, `detection_masks_full`
always among them (serving/onnx_export.py).
"""

from __future__ import annotations

import json
import os

import numpy as np

CATEGORIES_FILE = 'categories.json'  # Beside model.onnx (onnx_export.py).


class ModelError(RuntimeError):
  """ONNX Runtime failed on a batch; the message says why."""


class OnnxModel:
  """model.onnx in an ONNX Runtime session, called on numpy images."""

  def __init__(self, path: str, threads: int = 0):
    """Args: path: a model.onnx of bin/export --format=onnx; threads:
    ONNX Runtime's intra-op threads (0: its default, one per core).

    Raises FileNotFoundError, or ValueError when ONNX Runtime cannot load
    the file (the message names it and says why)."""
    import onnxruntime  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such ONNX model file')
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Quiet unless something fails (ONNX Runtime's warnings name graph
    # rewrites it skipped, not problems of the results).
    options.log_severity_level = 3
    try:
      self.session = onnxruntime.InferenceSession(
          path, options, providers=['CPUExecutionProvider'])
    except Exception as e:  # ONNX Runtime's errors derive from Exception.
      raise ValueError(f'{path}: ONNX Runtime cannot load it ({e})') from e
    self.path = path
    self.input_name = self.session.get_inputs()[0].name
    self.output_names = [o.name for o in self.session.get_outputs()]
    self.categories = read_categories(path)

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 images [B, H, W, 3] (B >= 1) -> {output name: array}."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ModelError(f'images must be uint8 [batch, height, width, 3], '
                       f'got {images.dtype} {list(images.shape)}')
    try:
      outputs = self.session.run(self.output_names,
                                 {self.input_name: images})
    except Exception as e:  # ONNX Runtime's errors derive from Exception.
      raise ModelError(f'ONNX Runtime failed: {e}') from e
    return dict(zip(self.output_names, outputs))


def read_categories(model_path: str) -> list[dict] | None:
  """The [{id, name}] beside `model_path`, or None where there is none."""
  path = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                      CATEGORIES_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
