"""The serving model: raw uint8 images in, results in each image's pixels.

`build_serving_model` is the one door from a trained inference graph to
users: the input policy (serving/preprocess.py), the inference graph, and
the path back to image pixels (postprocess/image_results.py, whose
docstring lists the outputs). The SavedModel (serving/export.py) wraps it;
`load_model` builds it from a training directory (its configs.json and
latest checkpoint).
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling import factory
from masklab_tf.modeling.systems import registry
from masklab_tf.postprocess import image_results
from masklab_tf.postprocess import test_time_augmentation as tta
from masklab_tf.serving import preprocess

RESIZE_AND_PAD = 'resize_and_pad'
DETECT = image_results.RESULTS_MODEL


def check_servable(configs: config_lib.Configs) -> None:
  """Raises ValueError for a system that returns no detections: a
  pretraining stage, whose checkpoint initialises another system."""
  cfg = configs.model
  if not registry.get_system(cfg, configs.geometry).has_detections:
    raise ValueError(
        f'--mask_head={cfg.mask_head} is a pretraining stage: it returns a '
        'semantic map and no detections, so it is neither exported nor '
        'served; train a system from its checkpoint (bin/train '
        '--init_checkpoint=ITS_MODEL_DIR) and serve that')


def build_serving_model(inference_model: tf_keras.Model,
                        configs: config_lib.Configs,
                        full_image_masks: bool = False,
                        mask_voting: bool = False,
                        panoptic: bool = False,
                        portable: bool = False) -> tf_keras.Model:
  """uint8 images [B, H, W, 3] (any size, one per batch) -> results.

  Args:
    inference_model: Models.inference_model (modeling/systems/base.py).
    configs: the run's configs (the input policy, the output stride and
      test-time augmentation: --test_scales, --test_flip).
    full_image_masks, mask_voting, panoptic: optional outputs
      (image_results.to_original).
    portable: the resize in the ops ONNX computes exactly and the fusion in
      ops tf2onnx converts (the ONNX export, with an inference model of
      factory.build_models(portable=True)).

  Returns:
    A functional tf_keras Model whose layers 'resize_and_pad' and 'detect'
    (image_results.build_results_model) the SavedModel's signatures
    reuse.

  Raises:
    ValueError: the system returns no detections (check_servable).
  """
  check_servable(configs)
  data = configs.data
  images = tf_keras.Input([None, None, 3], dtype=tf.uint8, name='images')
  resized, size, scale, original = preprocess.ResizeAndPad(
      data.eval_min_size, data.max_size, configs.model.output_stride,
      data.pad_to, portable, name=RESIZE_AND_PAD)(images)
  detect = image_results.build_results_model(
      inference_model, full_image_masks, mask_voting, panoptic,
      portable=portable, test_time=tta.settings(configs))
  outputs = detect({'image': resized, 'image_size': size, 'scale': scale,
                    'original_size': original})
  return tf_keras.Model(images, outputs, name='masklab_serving')


def load_model(model_dir: str, checkpoint: str | None = None,
               configs: config_lib.Configs | None = None,
               full_image_masks: bool = False, mask_voting: bool = False,
               panoptic: bool = False) -> tf_keras.Model:
  """The serving model of a training directory, ready for `predict`.

  Args:
    model_dir: a bin/train --model_dir (configs.json + checkpoints).
    checkpoint: a checkpoint path (default: the latest in model_dir).
    configs: override configs.json (e.g. config.from_flagfile(...)).
    full_image_masks: add `detection_masks_full`.
    mask_voting, panoptic: see image_results.to_original.

  Returns:
    A tf_keras Model: `model.predict(uint8 images [B, H, W, 3])` returns the
    dict of outputs of postprocess/image_results.py.
  """
  if configs is None:
    path = os.path.join(model_dir, config_lib.CONFIGS_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{path}: no configs.json (not a bin/train model directory?); '
          'pass configs=config.from_flagfile(...)')
    configs = config_lib.from_json(path)
  checkpoint = checkpoint or tf.train.latest_checkpoint(model_dir)
  if not checkpoint:
    raise FileNotFoundError(f'{model_dir}: no checkpoint')
  models = factory.restore_models(configs, checkpoint)
  return build_serving_model(models.inference_model, configs,
                             full_image_masks, mask_voting, panoptic)
