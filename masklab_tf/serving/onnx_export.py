"""ONNX export: the serving model as `model.onnx`, for ONNX Runtime.

The model is the one serving/model.py builds for the SavedModel's
`serving_default` signature (uint8 images [B, H, W, 3] in, results in the
images' own pixels out), in its portable form: the inference graph of
factory.build_models(portable=True) (no XLA clusters, gathered RoI crops,
the detections' NMS in the form ONNX's NonMaxSuppression expresses,
float32), behind the resize ONNX Runtime computes bit for bit as
TensorFlow does (image_policy.resize_image). tf2onnx converts it; the graph
is then checked to hold only ONNX operators, to the last subgraph, because
tf2onnx leaves what it cannot convert in place and carries on. Batch, height and width stay dynamic (a batch is one size, as
a tensor must be; batch >= 1).

What the ONNX model returns differs from the SavedModel's outputs in one
way: `detection_masks_full` is always there (the masks pasted into the
image and thresholded, uint8 [B, D, H, W]), so that a runtime without
TensorFlow needs no pasting code of its own (serving/onnx_model.py).
With `panoptic`, the output fusion's maps too (its labelling's segment
minima in float64 there: output_fusion._components).

The class names go beside the model, in categories.json.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf import files
from masklab_tf.postprocess import test_time_augmentation as tta
from masklab_tf.serving import export as saved_model_export
from masklab_tf.serving import model as model_lib

MODEL_FILE = 'model.onnx'
INPUT = 'images'
# Opset 17: every operator the export uses is there, and ONNX Runtime
# releases since 1.13 (2022) run it.
OPSET = 17
# The ONNX model's names of the input's dynamic dimensions.
INPUT_DIMS = ('batch', 'height', 'width', 3)


class ExportError(ValueError):
  """The graph holds what ONNX cannot express."""


def non_onnx_nodes(graph) -> list[str]:
  """'op_type (node name)' of every node of `graph` (an onnx GraphProto),
  its subgraphs' (loop bodies, branches) included, that is no operator of
  ONNX's: what a converter left unconverted."""
  import onnx  # pylint: disable=g-import-not-at-top
  found = []
  for node in graph.node:
    if not onnx.defs.has(node.op_type, node.domain):
      found.append(f'{node.op_type} ({node.name})')
    for attribute in node.attribute:
      for subgraph in ([attribute.g] if attribute.HasField('g') else
                       list(attribute.graphs)):
        found.extend(non_onnx_nodes(subgraph))
  return found


def export_onnx(inference_model: tf_keras.Model,
                configs: config_lib.Configs, export_dir: str,
                categories: list[dict] | None = None,
                mask_voting: bool = False, panoptic: bool = False,
                opset: int = OPSET, verbose: bool = False) -> str:
  """Writes export_dir/model.onnx (and categories.json); returns its path.

  Args:
    inference_model: the inference model of factory.restore_models(...,
      portable=True) (another one fails with an ExportError naming the
      ops that have no ONNX form).
    configs: the model's configs (input policy, stride).
    export_dir: the folder to write (created if missing).
    categories: COCO categories [{id, name}] in class order (optional).
    mask_voting: binarise the full-image masks by mask voting.
    panoptic: add the output fusion's panoptic_category_map and
      panoptic_instance_map.
    opset: the ONNX opset to target.
    verbose: let tf2onnx log its progress.

  Raises:
    ExportError: the graph holds ops without an ONNX form, or `configs`
      ask for test-time augmentation (not given a portable form).
  """
  if tta.settings(configs) is not None:
    raise ExportError('test-time augmentation (--test_scales, --test_flip) '
                      'has no portable form: export without it, or export '
                      'a SavedModel')
  import onnx  # pylint: disable=g-import-not-at-top
  import tf2onnx  # pylint: disable=g-import-not-at-top
  if not verbose:
    logging.getLogger('tf2onnx').setLevel(logging.ERROR)
  serving_model = model_lib.build_serving_model(
      inference_model, configs, full_image_masks=True,
      mask_voting=mask_voting, panoptic=panoptic, portable=True)
  signature = [tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT)]
  serve = tf.function(lambda images: serving_model(images, training=False),
                      input_signature=signature)
  proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature,
                                           opset=opset)
  left = non_onnx_nodes(proto.graph)
  if left:
    raise ExportError(
        f'{len(left)} op(s) have no ONNX form: {", ".join(left[:5])}'
        + (' ...' if len(left) > 5 else '') + '. Export the portable graph '
        '(factory.restore_models(..., portable=True)).')
  dims = proto.graph.input[0].type.tensor_type.shape.dim
  for dim, name in zip(dims, INPUT_DIMS):
    if isinstance(name, str):
      dim.dim_param = name
  proto.producer_name = 'masklab-tf'
  onnx.checker.check_model(proto)
  os.makedirs(export_dir, exist_ok=True)
  path = os.path.join(export_dir, MODEL_FILE)
  # Atomic: a killed export leaves the previous model.onnx whole.
  with files.atomic_write(path, 'wb') as f:
    f.write(proto.SerializeToString())
  if categories:
    saved_model_export.write_categories(categories, export_dir)
  return path
