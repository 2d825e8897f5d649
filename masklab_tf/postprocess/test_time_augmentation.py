"""Test-time augmentation: several passes over rescaled and mirrored copies
of each image, merged into one set of detections and one semantic map.

FCIS and InstanceFCN report multi-scale testing, and Detectron2 offers it
(GeneralizedRCNNWithTTA): one network sees small objects better when the
image is enlarged and large ones when it is shrunk, and a mirrored pass
averages away the left/right bias of a few training steps.

Each pass resamples the model-input image (the image already resized to
--eval_min_size) by a factor of `scales` and mirrors it if asked; its
detections are mapped back to the model-input pixels of the unaugmented
pass, so the merged result is an inference output like any other and
`image_results.to_original` takes it to image pixels unchanged. Resampling
the model input rather than the original file keeps one path for every
tool (the evaluation pipeline's batches hold the resized image only); it
costs detail when a pass enlarges an image that was shrunk on input.

Merging (per image and class, as Detectron2 does): NMS over the
detections of all passes at the model's detection NMS IoU keeps the best
of each cluster; the masks of a kept detection's cluster (same class, box
IoU >= that threshold, itself included) are averaged in image space,
weighted by score: each member's box-relative mask is read at the kept
box's sample positions (the crop convention, ops/crop.py), which is
pasting it into the image and cropping it back at the kept box without
building any full-image mask. With box voting the kept box becomes the
cluster's score-weighted mean box first, and the masks are read at it. Scores stay the NMS winner's.
The semantic map is the argmax of the passes' mean class probabilities
(DeepLab's multi-scale inference).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tf_keras

from masklab_tf.ops import image_policy
from masklab_tf.postprocess import mask_voting

# Box-relative distance (in box sizes) under which a target edge past the
# source box's edge counts as on it, in resample_masks.
EDGE_TOLERANCE = 1e-3


class Settings(NamedTuple):
  """What a TestTimeAugmentation layer does (`settings(configs)`).

  Attributes:
    scales: factors of the model-input size, one pass each.
    flip: also a mirrored pass at every scale.
    box_voting: kept boxes become their cluster's score-weighted mean box.
    padding_multiple: each pass pads its images to a multiple of this (the
      model's output stride).
    max_detections: detections kept per image.
    nms_iou: NMS and cluster IoU threshold.
  """
  scales: tuple[float, ...]
  flip: bool
  box_voting: bool
  padding_multiple: int
  max_detections: int
  nms_iou: float


def settings(configs) -> Settings | None:
  """The Settings a run's configs (config.Configs) ask for; None when they
  ask for one plain pass (no --test_scales beyond 1, no --test_flip).

  Raises:
    ValueError: --test_box_voting without passes to merge.
  """
  data, model = configs.data, configs.model
  scales = tuple(float(s) for s in data.test_scales) or (1.0,)
  if scales == (1.0,) and not data.test_flip:
    if data.test_box_voting:
      raise ValueError('--test_box_voting merges the passes of --test_scales '
                       'or --test_flip; give one of them')
    return None
  return Settings(scales, bool(data.test_flip), bool(data.test_box_voting),
                  int(model.output_stride), int(model.max_detections),
                  float(model.detection_nms_iou))


def augment_images(images, image_size, scale: float, flip: bool,
                   padding_multiple: int):
  """One pass's input: each image's valid area resampled by `scale`
  (image_policy.resize_image: bilinear, rounded to uint8) and mirrored if
  `flip`, padded with zeros to a common multiple of `padding_multiple`.

  Args:
    images: uint8 [B, Hp, Wp, 3], the valid area of image b at the top left.
    image_size: int32 [B, 2] valid sizes.

  Returns:
    (uint8 [B, H', W', 3], int32 [B, 2] the pass's valid sizes).
  """
  image_size = tf.cast(image_size, tf.int32)
  sizes = tf.maximum(tf.cast(tf.round(
      tf.cast(image_size, tf.float32) * scale), tf.int32), 1)
  padded = image_policy.padded_size(sizes, padding_multiple)

  def one(args):
    image, size, new_size = args
    image = image[:size[0], :size[1]]
    if flip:
      image = image[:, ::-1]
    if scale != 1.0:
      image = image_policy.resize_image(image, new_size)
    return tf.pad(image, [[0, padded[0] - new_size[0]],
                          [0, padded[1] - new_size[1]], [0, 0]])

  augmented = tf.map_fn(one, (images, image_size, sizes),
                        fn_output_signature=tf.TensorSpec([None, None, 3],
                                                          tf.uint8))
  return augmented, sizes


def unaugment_boxes(boxes, pass_size, image_size, flip: bool):
  """Boxes [B, D, 4] in a pass's pixels -> the unaugmented model input's:
  scaled per axis by image_size / pass_size, then mirrored about the
  image's width (continuous coordinates: x -> width - x, as the training
  flip does)."""
  ratio = (tf.cast(image_size, tf.float32) /
           tf.cast(pass_size, tf.float32))[:, None, :]
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  ymin, ymax = ymin * ratio[..., 0], ymax * ratio[..., 0]
  xmin, xmax = xmin * ratio[..., 1], xmax * ratio[..., 1]
  if flip:
    width = tf.cast(image_size[:, 1:2], tf.float32)
    xmin, xmax = width - xmax, width - xmin
  return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def semantic_probabilities(logits, pass_image_shape, pass_size, image_size,
                           padded_size, flip: bool, padding_multiple: int):
  """A pass's semantic logits [B, h, w, C] -> class probabilities [B, Hp,
  Wp, C] over the unaugmented model input (zero beyond each image).

  Each image's logits are cut to the cells of its own padded area (what
  the network saw of it when it ran alone: EachImageAlone leaves zero
  cells beyond) and upsampled to that area as SemanticMap does, then
  cropped to the image, mirrored back and resized to its unaugmented size,
  all bilinearly, before the softmax."""
  logits = tf.cast(logits, tf.float32)
  cells_per_pixel = (tf.cast(tf.shape(logits)[1:3], tf.float32) /
                     tf.cast(pass_image_shape, tf.float32))

  def one(args):
    logit, size, original = args
    own = tf.minimum(image_policy.own_padded_size(size, padding_multiple),
                     pass_image_shape)
    cells = tf.cast(tf.round(tf.cast(own, tf.float32) * cells_per_pixel),
                    tf.int32)
    logit = tf.image.resize(logit[:cells[0], :cells[1]], own,
                            method='bilinear')
    logit = logit[:size[0], :size[1]]
    if flip:
      logit = logit[:, ::-1]
    probabilities = tf.nn.softmax(
        tf.image.resize(logit, original, method='bilinear'), axis=-1)
    return tf.pad(probabilities, [[0, padded_size[0] - original[0]],
                                  [0, padded_size[1] - original[1]], [0, 0]])

  return tf.map_fn(one, (logits, pass_size, tf.cast(image_size, tf.int32)),
                   fn_output_signature=tf.TensorSpec(
                       [None, None, logits.shape[-1]], tf.float32))


def resample_masks(masks, boxes, target_boxes):
  """Masks [N, S, S] over `boxes` [N, 4] read at the S x S sample positions
  of `target_boxes` [N, 4] (the crop convention: sample i of a box at
  min + i (max - min) / (S - 1)); 0 outside the source box. Equals pasting
  each mask into the image (postprocess/masks.py, bilinear) and cropping
  it at the target box, without the image."""
  size = masks.shape[-1] or tf.shape(masks)[-1]
  boxes = tf.cast(boxes, tf.float32)
  target_boxes = tf.cast(target_boxes, tf.float32)
  extent = tf.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
  starts = (target_boxes[:, :2] - boxes[:, :2]) / extent
  ends = (target_boxes[:, 2:] - boxes[:, :2]) / extent
  normalised = tf.concat([starts, ends], axis=-1)
  # A target edge past the source edge by float rounding only (a voted box
  # of one member is (w b) / w) reads the edge, not crop_and_resize's 0 for
  # positions outside.
  normalised = tf.where((normalised < 0.0) & (normalised > -EDGE_TOLERANCE),
                        0.0, normalised)
  normalised = tf.where((normalised > 1.0) &
                        (normalised < 1.0 + EDGE_TOLERANCE), 1.0, normalised)
  crops = tf.image.crop_and_resize(
      tf.cast(masks, tf.float32)[..., tf.newaxis], normalised,
      tf.range(tf.shape(masks)[0]), [size, size], extrapolation_value=0.0)
  return crops[..., 0]


def merge_detections(boxes, scores, classes, masks, max_detections: int,
                     iou_threshold: float, box_voting: bool = False):
  """Detections of all passes of one image -> the merged detections.

  Args:
    boxes: float32 [M, 4] (ymin, xmin, ymax, xmax; one pixel frame).
    scores: float32 [M].
    classes: int32 [M] 1..K (<= 0: padding, never kept or voting).
    masks: float32 [M, S, S] box-relative probabilities.
    max_detections: D, the most detections kept.
    iou_threshold: per-class NMS IoU, and the IoU a cluster member needs
      with the kept detection.
    box_voting: kept boxes become their cluster's score-weighted mean box.

  Returns:
    (boxes [D, 4], scores [D], classes int32 [D], masks [D, S, S],
    num_detections int32 []), by descending score, padding rows zero.
  """
  boxes = tf.cast(boxes, tf.float32)
  scores = tf.cast(scores, tf.float32)
  classes = tf.cast(classes, tf.int32)
  valid = classes > 0
  # Per-class NMS in one call: each class's boxes moved to a region of
  # their own, so boxes of two classes never overlap.
  offset = (tf.reduce_max(tf.abs(boxes)) + 1.0) * tf.cast(classes,
                                                          tf.float32)
  candidates = tf.where(valid, scores, -1.0)
  keep, num = tf.image.non_max_suppression_padded(
      boxes + offset[:, None], candidates, max_detections,
      iou_threshold=iou_threshold, score_threshold=-0.5,
      pad_to_max_output_size=True)
  kept = tf.range(max_detections) < num
  keep = tf.where(kept, keep, 0)
  kept_boxes = tf.gather(boxes, keep)
  kept_classes = tf.where(kept, tf.gather(classes, keep), 0)
  weights = mask_voting.vote_weights(kept_boxes, kept_classes, boxes,
                                     tf.where(valid, scores, 0.0), classes,
                                     iou_threshold)  # [D, M]
  total = tf.reduce_sum(weights, axis=1)
  if box_voting:
    voted = tf.matmul(weights, boxes) / tf.maximum(total, 1e-12)[:, None]
    kept_boxes = tf.where((total > 0.0)[:, None], voted, kept_boxes)
  # Masks are read at the final boxes (voted or not): a mask is relative to
  # the box it is output with.
  pairs = tf.where(weights > 0.0)  # [P, 2] (kept, member)
  member_masks = resample_masks(tf.gather(masks, pairs[:, 1]),
                                tf.gather(boxes, pairs[:, 1]),
                                tf.gather(kept_boxes, pairs[:, 0]))
  pair_weights = tf.gather_nd(weights, pairs)
  averaged = tf.math.unsorted_segment_sum(
      member_masks * pair_weights[:, None, None], pairs[:, 0],
      max_detections) / tf.maximum(total, 1e-12)[:, None, None]
  zero = tf.zeros_like
  return (tf.where(kept[:, None], kept_boxes, zero(kept_boxes)),
          tf.where(kept, tf.gather(scores, keep), 0.0),
          kept_classes,
          tf.where(kept[:, None, None], averaged, zero(averaged)),
          tf.cast(num, tf.int32))


@tf_keras.utils.register_keras_serializable(package='masklab')
class TestTimeAugmentation(tf_keras.layers.Wrapper):
  """Runs an inference graph once per scale and mirror, and merges.

  Args:
    layer: the inference graph ((image, image_size) -> outputs,
      modeling/systems/base.py), possibly inside EachImageAlone.
    scales, flip, box_voting, padding_multiple, max_detections, nms_iou:
      see Settings.
    **kwargs: tf_keras Layer arguments.

  Call: {'image': uint8 [B, Hp, Wp, 3], 'image_size': int32 [B, 2]} ->
    the inference outputs (num_detections, detection_boxes,
    detection_classes, detection_scores, detection_masks and, where the
    graph has one, semantic_map), merged, in the input's pixels.
  """

  def __init__(self, layer: tf_keras.layers.Layer, scales=(1.0,),
               flip: bool = False, box_voting: bool = False,
               padding_multiple: int = 8, max_detections: int = 100,
               nms_iou: float = 0.6, **kwargs):
    super().__init__(layer, **kwargs)
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0.0:
      raise ValueError(f'--test_scales={",".join(map(str, scales))}: '
                       'give positive factors of --eval_min_size')
    self.scales = scales
    self.flip = bool(flip)
    self.box_voting = bool(box_voting)
    self.padding_multiple = int(padding_multiple)
    self.max_detections = int(max_detections)
    self.nms_iou = float(nms_iou)

  def passes(self) -> list[tuple[float, bool]]:
    return [(scale, flip) for scale in self.scales
            for flip in ((False, True) if self.flip else (False,))]

  def call(self, inputs, training=None):
    images, image_size = inputs['image'], tf.cast(inputs['image_size'],
                                                  tf.int32)
    padded = tf.shape(images)[1:3]
    detections = {'boxes': [], 'scores': [], 'classes': [], 'masks': []}
    probabilities = []
    for scale, flip in self.passes():
      pass_images, pass_size = augment_images(
          images, image_size, scale, flip, self.padding_multiple)
      outputs = self.layer({'image': pass_images, 'image_size': pass_size},
                           training=training)
      width = tf.shape(outputs['detection_classes'])[1]
      valid = tf.range(width)[None] < outputs['num_detections'][:, None]
      detections['boxes'].append(unaugment_boxes(
          outputs['detection_boxes'], pass_size, image_size, flip))
      detections['scores'].append(outputs['detection_scores'])
      detections['classes'].append(
          tf.where(valid, tf.cast(outputs['detection_classes'], tf.int32), 0))
      masks = outputs['detection_masks']
      detections['masks'].append(masks[..., ::-1] if flip else masks)
      if 'semantic_logits' in outputs:
        probabilities.append(semantic_probabilities(
            outputs['semantic_logits'], tf.shape(pass_images)[1:3],
            pass_size, image_size, padded, flip, self.padding_multiple))
    joined = {name: tf.concat(values, axis=1)
              for name, values in detections.items()}

    def one(args):
      return merge_detections(*args, self.max_detections, self.nms_iou,
                              self.box_voting)

    boxes, scores, classes, masks, num = tf.map_fn(
        one, (joined['boxes'], joined['scores'], joined['classes'],
              joined['masks']),
        fn_output_signature=(tf.float32, tf.float32, tf.int32, tf.float32,
                             tf.int32))
    merged = {'num_detections': num, 'detection_boxes': boxes,
              'detection_classes': classes, 'detection_scores': scores,
              'detection_masks': masks}
    if probabilities:
      merged['semantic_map'] = tf.cast(
          tf.argmax(tf.add_n(probabilities), axis=-1), tf.int32)
    return merged

  def get_config(self):
    return {**super().get_config(), 'scales': self.scales,
            'flip': self.flip, 'box_voting': self.box_voting,
            'padding_multiple': self.padding_multiple,
            'max_detections': self.max_detections, 'nms_iou': self.nms_iou}
