"""MaskLab on raw images: a tf_keras Model for `model.predict` and export.

`build_serving_model` wraps the inference graph with the input policy and
maps its detections back to each image's own pixels; `load_model` builds it
from a training directory (its configs.json and latest checkpoint).

Outputs (D = max_detections, S = mask size; padding rows are zero):
  num_detections     int32 [B]
  detection_boxes    float32 [B, D, 4] ymin, xmin, ymax, xmax, original
                     image pixels
  detection_classes  int32 [B, D] contiguous class indices 1..K
  detection_scores   float32 [B, D]
  detection_masks    float32 [B, D, S, S] box-relative probabilities
  semantic_map       int32 [B, H, W] class per original pixel (-1 beyond an
                     image smaller than the batch's largest); not for
                     InstanceFCN, which has none (its detections are
                     class-agnostic segment proposals, class 1)
  detection_masks_full  uint8 [B, D, H, W] (with full_image_masks or
                     mask_voting): masks pasted into the image, thresholded
                     at 0.5 or voted
  panoptic_category_map, panoptic_instance_map  int32 [B, H, W] (with
                     panoptic): the output fusion's maps (0 = background /
                     no instance; instance ids 1..num_detections, then new
                     instances grown from unclaimed semantic segments)
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.data import pipeline
from masklab_tf.modeling import factory
from masklab_tf.postprocess import mask_voting as mask_voting_lib
from masklab_tf.postprocess import output_fusion
from masklab_tf.postprocess import detections as detections_lib
from masklab_tf.serving import preprocess

def to_original(outputs: dict, image_size, scale, original_size,
                full_image_masks: bool = False, mask_voting: bool = False,
                panoptic: bool = False) -> dict:
  """Inference outputs (model-input pixels) -> original image pixels.

  Args:
    outputs: the inference model's outputs.
    image_size: int32 [B, 2] resized (valid) size of each image.
    scale: float32 [B, 2] image_size / original_size.
    original_size: int32 [B, 2].
    full_image_masks: also output the masks pasted into the images.
    mask_voting: binarise the pasted masks by mask voting (BiSeg / MNC,
      modeling/mask_voting.py) instead of at 0.5 each.
    panoptic: also output the output fusion's (Costea et al.,
      modeling/output_fusion.py) panoptic_category_map and
      panoptic_instance_map, int32 [B, H, W].
  """
  scale = tf.cast(scale, tf.float32)
  largest = tf.reduce_max(original_size, axis=0)
  limits = tf.cast(tf.tile(original_size, [1, 2]), tf.float32)
  boxes = outputs['detection_boxes'] / tf.tile(scale, [1, 2])[:, None]
  boxes = tf.clip_by_value(boxes, 0.0, limits[:, None])
  boxes = tf.where(tf.range(tf.shape(boxes)[1])[None, :, None] <
                   outputs['num_detections'][:, None, None], boxes, 0.0)

  def semantic(args):
    class_map, size, original = args
    class_map = pipeline._resize_nearest(  # pylint: disable=protected-access
        class_map[:size[0], :size[1]], original)
    return tf.pad(class_map, [[0, largest[0] - original[0]],
                              [0, largest[1] - original[1]]],
                  constant_values=-1)

  result = {
      'num_detections': outputs['num_detections'],
      'detection_boxes': boxes,
      'detection_classes': outputs['detection_classes'],
      'detection_scores': outputs['detection_scores'],
      'detection_masks': outputs['detection_masks'],
  }
  if 'semantic_map' in outputs:
    result['semantic_map'] = tf.map_fn(
        semantic, (outputs['semantic_map'], image_size, original_size),
        fn_output_signature=tf.TensorSpec([None, None], tf.int32))
  elif panoptic:
    raise ValueError('panoptic output needs a semantic map; this model '
                     '(InstanceFCN) has none')
  if full_image_masks or mask_voting or panoptic:
    # Without a semantic map (panoptic is off then) a placeholder per image.
    semantic_maps = result.get(
        'semantic_map', tf.zeros([tf.shape(boxes)[0], 0, 0], tf.int32))
    full = tf.map_fn(
        lambda args: _full_image(*args, largest, mask_voting, panoptic),
        (outputs['detection_masks'], boxes, outputs['detection_classes'],
         outputs['detection_scores'], outputs['num_detections'],
         semantic_maps, original_size),
        fn_output_signature=(
            tf.TensorSpec([None, None, None], tf.uint8),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32)))
    if full_image_masks or mask_voting:
      result['detection_masks_full'] = full[0]
    if panoptic:
      result['panoptic_category_map'] = full[1]
      result['panoptic_instance_map'] = full[2]
  return result


def _full_image(masks, boxes, classes, scores, num, semantic_map, original,
                largest, mask_voting, panoptic):
  """One image: pasted binary masks [D, H, W] (voted or at 0.5) and, with
  `panoptic`, the fused category and instance maps [H, W]."""
  probabilities = detections_lib.paste_masks_tf(masks, boxes, largest[0],
                                             largest[1])
  valid = tf.range(tf.shape(classes)[0]) < num
  classes = tf.where(valid, tf.cast(classes, tf.int32), 0)
  if mask_voting:
    binary = mask_voting_lib.vote_masks(probabilities, boxes, scores,
                                        classes) > 0
  else:
    binary = probabilities >= 0.5
  inside = ((tf.range(largest[0])[:, None] < original[0]) &
            (tf.range(largest[1])[None, :] < original[1]))
  binary = binary & inside & valid[:, None, None]
  if panoptic:
    category, instance, _ = output_fusion.fuse(
        semantic_map, binary[:num], classes[:num], scores[:num])
  else:
    category = instance = tf.zeros([0, 0], tf.int32)
  return tf.cast(binary, tf.uint8), category, instance


@tf_keras.utils.register_keras_serializable(package='masklab')
class ToOriginal(tf_keras.layers.Layer):
  """Layer form of `to_original` for the functional serving model."""

  def __init__(self, full_image_masks: bool = False,
               mask_voting: bool = False, panoptic: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.full_image_masks = full_image_masks
    self.mask_voting = mask_voting
    self.panoptic = panoptic

  def call(self, outputs, image_size, scale, original_size):
    return to_original(outputs, image_size, scale, original_size,
                       self.full_image_masks, self.mask_voting,
                       self.panoptic)

  def get_config(self):
    return {**super().get_config(), 'full_image_masks': self.full_image_masks,
            'mask_voting': self.mask_voting, 'panoptic': self.panoptic}


def build_serving_model(inference_model: tf_keras.Model,
                        configs: config_lib.Configs,
                        full_image_masks: bool = False,
                        mask_voting: bool = False,
                        panoptic: bool = False) -> tf_keras.Model:
  """uint8 images [B, H, W, 3] (any size, one per batch) -> detections."""
  data = configs.data
  images = tf_keras.Input([None, None, 3], dtype=tf.uint8, name='images')
  resized, size, scale, original = preprocess.ResizeAndPad(
      data.eval_min_size, data.max_size, configs.model.output_stride,
      data.pad_to, name='resize_and_pad')(images)
  outputs = inference_model({'image': resized, 'image_size': size})
  outputs = ToOriginal(full_image_masks, mask_voting, panoptic,
                       name='to_original')(
      outputs, size, scale, original)
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
    mask_voting, panoptic: see `to_original`.

  Returns:
    A tf_keras Model: `model.predict(uint8 images [B, H, W, 3])` returns the
    dict of outputs described in this module's docstring.
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
