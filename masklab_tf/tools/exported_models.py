"""A model as bin/predict runs it: an exported SavedModel's
`serving_encoded` signature in TensorFlow, model.onnx in ONNX Runtime, or
a training directory's checkpoint in TensorFlow (where test-time
augmentation is chosen at run time).

This module imports no TensorFlow at its top: the ONNX path runs without
it (tests/serving/test_golden_checkpoint.py blocks its import); the SavedModel path
imports it when it loads one.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os

import numpy as np
from absl import app

from masklab_tf import visualize
from masklab_tf.serving import onnx_model
from masklab_tf.tools import image_files

SIGNATURE = 'serving_encoded'
MASK_THRESHOLD = 0.5
ONNX_CATEGORIES = onnx_model.CATEGORIES_FILE
# What bin/train writes beside its checkpoints (training/trainer.py, which
# this TensorFlow-free module does not import), in a TFRecord set's layout.
CATEGORIES_FILE = 'categories.json'
# One decoded input: its path, raw bytes, uint8 [H, W, 3] pixels, image id.
Item = collections.namedtuple('Item', ['path', 'data', 'image', 'image_id'])
# An exported model: run(items) -> one prediction dict per item (raises
# ModelFailed), its categories [{id, name}] or None, and whether files are
# decoded by TensorFlow (the SavedModel's decoder) or Pillow.
Model = collections.namedtuple('Model', ['run', 'categories',
                                         'tensorflow_decoder'])


class ModelFailed(Exception):
  """The model failed on a batch; the message says why."""


def load_saved_model(path: str) -> Model:
  """The SavedModel's `serving_encoded` signature as a Model."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not (os.path.exists(os.path.join(path, 'saved_model.pb')) or
          os.path.exists(os.path.join(path, 'saved_model.pbtxt'))):
    raise app.UsageError(f'--saved_model={path}: no SavedModel there '
                         '(no saved_model.pb)')
  loaded = tf.saved_model.load(path)
  if SIGNATURE not in loaded.signatures:
    raise app.UsageError(
        f'--saved_model={path}: no {SIGNATURE} signature (has '
        f'{", ".join(loaded.signatures.keys())}); export it with bin/export')
  categories = None
  if hasattr(loaded, 'categories'):
    with open(loaded.categories.asset_path.numpy().decode()) as f:
      categories = json.load(f)
  # The signature function keeps `loaded` (its variables) alive.
  signature = loaded.signatures[SIGNATURE]

  def run(items):
    try:
      outputs = signature(encoded=tf.constant([item.data for item in items]))
    except tf.errors.OpError as e:
      raise ModelFailed(image_files.error_message(e)) from e
    return split_outputs({k: v.numpy() for k, v in outputs.items()}, items)

  return Model(run, categories, tensorflow_decoder=True)


def load_onnx(path: str) -> Model:
  """model.onnx in ONNX Runtime as a Model; images of one size share a
  call (a tensor holds one size)."""
  try:
    model = onnx_model.OnnxModel(path)
  except (OSError, ValueError) as e:
    raise app.UsageError(f'--onnx={path}: {e}') from e
  if 'detection_masks_full' not in model.output_names:
    raise app.UsageError(f'--onnx={path}: no detection_masks_full output '
                         '(not a bin/export --format=onnx model?)')

  def call(pixels):
    try:
      return model(pixels)
    except onnx_model.ModelError as e:
      raise ModelFailed(str(e)) from e

  return Model(by_image_shape(call), model.categories,
               tensorflow_decoder=False)


def load_checkpoint(model_dir: str, checkpoint: str = '',
                    test_scales=(), test_flip: bool = False,
                    test_box_voting: bool = False) -> Model:
  """A bin/train directory's serving model (serving/model.load_model:
  its configs.json and the latest checkpoint, or `checkpoint`) as a Model,
  with the test-time augmentation asked for (postprocess/
  test_time_augmentation.py); images of one size share a call."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf import config  # pylint: disable=g-import-not-at-top
  from masklab_tf.data import tfrecord  # pylint: disable=g-import-not-at-top
  from masklab_tf.modeling.systems import registry  # pylint: disable=g-import-not-at-top
  from masklab_tf.serving import model as model_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, config.CONFIGS_FILE)
  if not os.path.exists(path):
    raise app.UsageError(f'--model_dir={model_dir}: no {config.CONFIGS_FILE}'
                         ' (not a bin/train model directory?)')
  try:
    configs = config.from_json(path)
  except (OSError, ValueError, TypeError) as e:
    raise app.UsageError(f'{path}: cannot read the run\'s configs: {e}')
  configs = configs._replace(data=dataclasses.replace(
      configs.data, test_scales=tuple(float(s) for s in test_scales),
      test_flip=test_flip, test_box_voting=test_box_voting))
  checkpoint = checkpoint or tf.train.latest_checkpoint(model_dir)
  if not checkpoint:
    raise app.UsageError(f'--model_dir={model_dir}: no checkpoint')
  try:
    serving = model_lib.load_model(model_dir, checkpoint, configs,
                                   full_image_masks=True)
  except ValueError as e:  # E.g. --test_scales out of range.
    raise app.UsageError(str(e)) from e
  serve = tf.function(lambda images: serving(images, training=False),
                      autograph=False, reduce_retracing=True)
  categories = None
  recorded = os.path.join(model_dir, CATEGORIES_FILE)
  if registry.get_system(configs.model, configs.geometry).class_agnostic:
    categories = [{'id': 1, 'name': 'object'}]  # InstanceFCN: any object.
  elif os.path.exists(recorded):
    try:
      categories = tfrecord.read_categories(recorded)
    except ValueError as e:
      raise app.UsageError(str(e)) from e

  def call(pixels):
    try:
      return {k: v.numpy() for k, v in serve(tf.constant(pixels)).items()}
    except tf.errors.OpError as e:
      raise ModelFailed(image_files.error_message(e)) from e

  return Model(by_image_shape(call), categories, tensorflow_decoder=True)


def by_image_shape(call):
  """run(items) for a model of uint8 pixels [B, H, W, 3] -> numpy
  outputs: consecutive items of one shape share a call (a tensor holds one
  size), and each call's outputs are split per item."""
  def run(items):
    predictions = []
    for _, group in itertools.groupby(items, key=lambda i: i.image.shape):
      group = list(group)
      predictions.extend(split_outputs(
          call(np.stack([item.image for item in group])), group))
    return predictions

  return run


def split_outputs(outputs: dict, items: list[Item]) -> list[dict]:
  """A batch's outputs (numpy) -> one prediction per image, cropped to its
  size; masks pasted into the image and thresholded at 0.5."""
  results = []
  for i, item in enumerate(items):
    height, width = item.image.shape[:2]
    num = int(outputs['num_detections'][i])
    boxes = outputs['detection_boxes'][i, :num]
    if 'detection_masks_full' in outputs:
      masks = outputs['detection_masks_full'][i, :num, :height, :width]
    else:
      # Pasted here: the SavedModel may have been exported without them.
      from masklab_tf.postprocess import masks as masks_lib  # pylint: disable=g-import-not-at-top
      masks = masks_lib.paste_masks(outputs['detection_masks'][i, :num],
                                    boxes, height, width).numpy()
      masks = masks >= MASK_THRESHOLD
    results.append({
        'image_id': item.image_id, 'boxes': boxes,
        'scores': outputs['detection_scores'][i, :num],
        'classes': outputs['detection_classes'][i, :num],
        'masks': masks.astype(np.uint8),
    })
    if 'semantic_map' in outputs:  # Not InstanceFCN's.
      # Padding beyond a smaller image of the batch is cropped off.
      results[-1]['semantic_map'] = outputs['semantic_map'][i, :height,
                                                            :width]
    if 'panoptic_category_map' in outputs:
      results[-1]['panoptic'] = visualize.panoptic_png(
          outputs['panoptic_category_map'][i, :height, :width],
          outputs['panoptic_instance_map'][i, :height, :width])
  return results
