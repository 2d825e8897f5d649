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
from masklab_tf.postprocess import test_time_augmentation as tta

MASK_THRESHOLD = 0.5
RESULTS_MODEL = 'detect'
TO_ORIGINAL = 'to_original'
TEST_TIME = 'test_time_augmentation'


def to_original(outputs: dict, image_size, scale, original_size,
                full_image_masks: bool = False, mask_voting: bool = False,
                panoptic: bool = False, portable: bool = False) -> dict:
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
    portable: the fusion in the ops ONNX export takes (output_fusion.fuse).
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
        lambda args: _full_image(*args, largest, mask_voting, panoptic,
                                 portable),
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
                largest, mask_voting, panoptic, portable):
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
        semantic_map, binary[:num], classes[:num], scores[:num],
        portable=portable)
  else:
    category = instance = tf.zeros([0, 0], tf.int32)
  return tf.cast(binary, tf.uint8), category, instance


@tf_keras.utils.register_keras_serializable(package='masklab')
class ToOriginal(tf_keras.layers.Layer):
  """Layer form of `to_original` for the functional serving model."""

  def __init__(self, full_image_masks: bool = False,
               mask_voting: bool = False, panoptic: bool = False,
               portable: bool = False, **kwargs):
    """Args: full_image_masks, mask_voting, panoptic, portable: as in
    `to_original`."""
    super().__init__(**kwargs)
    self.full_image_masks = full_image_masks
    self.mask_voting = mask_voting
    self.panoptic = panoptic
    self.portable = portable

  def call(self, outputs, image_size, scale, original_size):
    return to_original(outputs, image_size, scale, original_size,
                       self.full_image_masks, self.mask_voting,
                       self.panoptic, self.portable)

  def get_config(self):
    return {**super().get_config(), 'full_image_masks': self.full_image_masks,
            'mask_voting': self.mask_voting, 'panoptic': self.panoptic,
            'portable': self.portable}


@tf_keras.utils.register_keras_serializable(package='masklab')
class EachImageAlone(tf_keras.layers.Wrapper):
  """Runs an inference graph on each image of a batch alone.

  A batch of images of different sizes is padded to its largest member;
  the network then sees that padding (through its receptive field, the
  anchors over it, the normalisation of padded pixels), and an image's
  detections would change with its batch companions. Run here, each image
  goes through the network cropped to its own padded area, the size it
  has when it is the only image (image_policy.own_padded_size), so its
  results are those it gets alone, whatever shares its batch. The outputs
  are stacked again; maps over the image (the semantic map and logits) are
  zero-padded back to the batch's padded size, which `to_original` crops.

  Costs the batching of the network (images run one after another); on
  CPUs, where one image already fills the cores, little.

  Args:
    layer: the inference model ((image, image_size) -> outputs,
      modeling/systems/base.py).
    padding_multiple: what images are padded to a multiple of (the model's
      output stride).
    **kwargs: tf_keras Layer arguments.

  Call: {'image': [B, Hp, Wp, 3], 'image_size': int32 [B, 2]} -> the
    inference model's outputs for the batch.
  """

  def __init__(self, layer: tf_keras.Model, padding_multiple: int,
               **kwargs):
    super().__init__(layer, **kwargs)
    self.padding_multiple = padding_multiple

  def call(self, inputs, training=None):
    images, image_size = inputs['image'], inputs['image_size']
    padded = tf.shape(images)[1:3]
    own = tf.minimum(
        image_policy.own_padded_size(image_size, self.padding_multiple),
        padded)
    specs = {name: tf.TensorSpec(output.shape[1:], output.dtype)
             for name, output in self.layer.output.items()}

    def one(i):
      outputs = self.layer(
          {'image': images[i:i + 1, :own[i, 0], :own[i, 1]],
           'image_size': image_size[i:i + 1]}, training=training)
      return {name: self._pad_map(outputs[name][0], specs[name], own[i],
                                  padded) for name in specs}

    return tf.map_fn(one, tf.range(tf.shape(images)[0]),
                     fn_output_signature=specs)

  @staticmethod
  def _pad_map(value, spec, own, padded):
    """A map over the image (size-dependent dims 0 and 1) at the scale of
    the image's own padded area -> the same scale of the batch's."""
    if spec.shape.rank < 2 or spec.shape[0] is not None:
      return value
    size = tf.shape(value)[:2]
    target = size * padded // own
    paddings = [[0, target[0] - size[0]], [0, target[1] - size[1]]]
    paddings += [[0, 0]] * (spec.shape.rank - 2)
    return tf.pad(value, paddings)

  def get_config(self):
    return {**super().get_config(), 'padding_multiple': self.padding_multiple}


def build_results_model(inference_model: tf_keras.Model,
                        full_image_masks: bool = False,
                        mask_voting: bool = False,
                        panoptic: bool = False,
                        padding_multiple: int = 0,
                        portable: bool = False,
                        test_time: tta.Settings | None = None
                        ) -> tf_keras.Model:
  """An inference graph followed by `to_original`, as one Keras model.

  Inputs: image uint8 [B, Hp, Wp, 3] resized and padded, image_size int32
  [B, 2], scale float32 [B, 2] and original_size int32 [B, 2], as
  preprocess.ResizeAndPad or preprocess.decode_images return them (and as
  the evaluation pipeline's batches hold them).

  Args:
    inference_model: Models.inference_model (modeling/systems/base.py).
    full_image_masks, mask_voting, panoptic: optional outputs
      (to_original).
    padding_multiple: when images of different sizes share batches, the
      multiple they are padded to (the model's output stride): each image
      then runs alone (EachImageAlone), so that its results do not depend
      on its companions. 0 runs the batch at once: for batches of one size
      or a fixed pad_to, where every image is padded as it is alone.
    portable: the fusion in the ops an ONNX export takes (to_original).
    test_time: test-time augmentation (postprocess/
      test_time_augmentation.py; tta.settings(configs)): the network runs
      once per scale and mirror, each image alone (EachImageAlone, whatever
      `padding_multiple` says), and the passes are merged; None: once.
  """
  inputs = {
      'image': tf_keras.Input([None, None, 3], dtype=tf.uint8, name='image'),
      'image_size': tf_keras.Input([2], dtype=tf.int32, name='image_size'),
      'scale': tf_keras.Input([2], dtype=tf.float32, name='scale'),
      'original_size': tf_keras.Input([2], dtype=tf.int32,
                                      name='original_size')}
  network = inference_model
  if test_time is not None and not padding_multiple:
    # A pass pads each image by its own scaled size, not the batch's or
    # pad_to's: run each alone, so that companions change nothing.
    padding_multiple = test_time.padding_multiple
  if padding_multiple:
    network = EachImageAlone(inference_model, padding_multiple,
                             name='each_image_alone')
  if test_time is not None:
    network = tta.TestTimeAugmentation(network, **test_time._asdict(),
                                       name=TEST_TIME)
  outputs = network({'image': inputs['image'],
                     'image_size': inputs['image_size']})
  outputs = ToOriginal(
      full_image_masks, mask_voting, panoptic, portable, name=TO_ORIGINAL)(
          outputs, inputs['image_size'], inputs['scale'],
          inputs['original_size'])
  return tf_keras.Model(inputs, outputs, name=RESULTS_MODEL)


def each_image_alone(results_model: tf_keras.Model,
                     padding_multiple: int) -> tf_keras.Model:
  """A results model (build_results_model) over the same inference graph
  and options, running each image alone (EachImageAlone): for batches
  that mix image sizes, beside one built for batches of one size."""
  to_original = results_model.get_layer(TO_ORIGINAL)
  networks = [layer for layer in results_model.layers
              if isinstance(layer, tf_keras.Model)]
  test_time = None
  if any(layer.name == TEST_TIME for layer in results_model.layers):
    augmentation = results_model.get_layer(TEST_TIME)
    networks = [augmentation.layer.layer
                if isinstance(augmentation.layer, EachImageAlone)
                else augmentation.layer]
    test_time = tta.Settings(
        augmentation.scales, augmentation.flip, augmentation.box_voting,
        augmentation.padding_multiple, augmentation.max_detections,
        augmentation.nms_iou)
  if len(networks) != 1:
    raise ValueError(f'{results_model.name}: not a build_results_model '
                     'model (one inference graph)')
  return build_results_model(networks[0], to_original.full_image_masks,
                             to_original.mask_voting, to_original.panoptic,
                             padding_multiple, to_original.portable,
                             test_time)
