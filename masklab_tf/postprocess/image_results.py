"""Model outputs in model-input pixels -> results in each image's own pixels.

The one path from an inference graph's detections (modeling/systems/
base.py) to what a user gets: boxes divided by the resize scale and
clipped to the image, the semantic map resized back, and optionally masks
pasted into the image (binarised at 0.5 or by mask voting) and the output
fusion's panoptic maps. The serving model, the SavedModel, the evaluator
and bin/predict all run it, so evaluation scores what serving returns.

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

import tensorflow as tf
import tf_keras

from masklab_tf.ops import image_policy
from masklab_tf.postprocess import mask_voting as mask_voting_lib
from masklab_tf.postprocess import masks as masks_lib
from masklab_tf.postprocess import output_fusion

MASK_THRESHOLD = 0.5
RESULTS_MODEL = 'detect'


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
      postprocess/mask_voting.py) instead of at 0.5 each.
    panoptic: also output the output fusion's (Costea et al.,
      postprocess/output_fusion.py) panoptic_category_map and
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
    class_map = image_policy.resize_nearest(class_map[:size[0], :size[1]],
                                            original)
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
  probabilities = masks_lib.paste_masks(masks, boxes, largest[0], largest[1])
  valid = tf.range(tf.shape(classes)[0]) < num
  classes = tf.where(valid, tf.cast(classes, tf.int32), 0)
  if mask_voting:
    binary = mask_voting_lib.vote_masks(probabilities, boxes, scores,
                                        classes) > 0
  else:
    binary = probabilities >= MASK_THRESHOLD
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


def build_results_model(inference_model: tf_keras.Model,
                        full_image_masks: bool = False,
                        mask_voting: bool = False,
                        panoptic: bool = False) -> tf_keras.Model:
  """An inference graph followed by `to_original`, as one Keras model.

  Inputs: image uint8 [B, Hp, Wp, 3] resized and padded, image_size int32
  [B, 2], scale float32 [B, 2] and original_size int32 [B, 2], as
  preprocess.ResizeAndPad or preprocess.decode_images return them (and as
  the evaluation pipeline's batches hold them).
  """
  inputs = {
      'image': tf_keras.Input([None, None, 3], dtype=tf.uint8, name='image'),
      'image_size': tf_keras.Input([2], dtype=tf.int32, name='image_size'),
      'scale': tf_keras.Input([2], dtype=tf.float32, name='scale'),
      'original_size': tf_keras.Input([2], dtype=tf.int32,
                                      name='original_size')}
  outputs = inference_model({'image': inputs['image'],
                             'image_size': inputs['image_size']})
  outputs = ToOriginal(
      full_image_masks, mask_voting, panoptic, name='to_original')(
          outputs, inputs['image_size'], inputs['scale'],
          inputs['original_size'])
  return tf_keras.Model(inputs, outputs, name=RESULTS_MODEL)
