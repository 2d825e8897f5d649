"""InstanceFCN (Dai et al., ECCV 2016): class-agnostic segment proposals.

A model of its own beside MaskLab (no box branch), built on the same atrous
ResNet, assembling layer, data pipeline, training loop and evaluator
(modeling/factory.py picks it with --mask_head=instancefcn):

- On res5 (stride 8 as the paper's modified VGG-16), a 1x1 512 conv + ReLU
  and a 3x3 conv give k x k instance-sensitive score maps (k = 5); a 3x3 512
  conv + ReLU and a 1x1 conv give the objectness of the window centred at
  each position (paper sec. 3.3, Fig. 4).
- A window's segment is assembled from the k x k maps (cell (i, j) of the
  window copies the same cell of map i k + j): the assembling layer's
  'grid' channel map (ops/assemble.py), sampled at S x S over the window.
- The paper covers scales with an image pyramid (shorter side
  600 x 1.5^{-4..1}) and one 21 x 21 window (168 px at stride 8). Here the
  pyramid is folded into the windows: one objectness channel per window
  size, windows of several sizes assembled from the same maps (defaults:
  168 px seen at those six scales). The assembled S x S segment of a window
  w px wide equals the paper's 21 x 21 one resampled, without running the
  network six times.
- Training (sec. 3.3): 256 windows sampled per image, positives : negatives
  = 1 : 1; a window is positive under DeepMask's rule [8]: an object is
  centred in it (within 16/224 of the window width, and at least half the
  window stride, so every object has a positive window) and its larger box
  side is 128/224 of the window width, within a factor 2^(1/4) (each object
  also counts at the window size nearest to that fit, within a factor 2, so
  the folded pyramid leaves no object without a size). Everything else
  whose centre lies in the image is negative. Loss: logistic loss on the
  objectness of the sampled windows plus per-pixel logistic loss of the
  positive windows' segments against the object's mask cropped to the
  window (eq. 1).
- Inference: every window is scored; the best `pre_nms_top_k` are
  assembled, binarised at 0.5 and boxed tightly; NMS at box IoU 0.8 on
  those boxes (the paper's), keeping `max_detections` proposals. Masks are
  returned box-relative on their tight boxes, like MaskLab's detections,
  with class 1 ("object"): evaluate them as proposals (average recall,
  masklab_tf/proposal_recall.py).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling.backbones import resnet as backbone_lib
from masklab_tf.modeling import losses as losses_lib
from masklab_tf.modeling.systems import masklab
from masklab_tf.modeling.heads import rpn_head
from masklab_tf.ops import assemble
from masklab_tf.ops import crop

# DeepMask's positive windows: a 224 px input with a 128 px object centred
# within 16 px, at scale tolerance 2^(+-1/4).
OBJECT_TO_WINDOW = 128.0 / 224.0
CENTRE_TOLERANCE = 16.0 / 224.0
SCALE_TOLERANCE = 2.0 ** 0.25


def window_boxes(height, width, stride, window_sizes) -> tf.Tensor:
  """Square windows centred on every feature pixel, one per size.

  Feature pixel (i, j) of a stride-s map has its centre at image
  ((i + 0.5) s, (j + 0.5) s), as the assembling layer samples it.

  Returns:
    float32 [height * width * A, 4] image-pixel boxes, ordered (i, j, a),
    the order of the objectness map [B, h, w, A] flattened.
  """
  ys = (tf.cast(tf.range(height), tf.float32) + 0.5) * stride
  xs = (tf.cast(tf.range(width), tf.float32) + 0.5) * stride
  shape = [height, width, len(window_sizes)]
  cy = tf.broadcast_to(ys[:, tf.newaxis, tf.newaxis], shape)
  cx = tf.broadcast_to(xs[tf.newaxis, :, tf.newaxis], shape)
  half = tf.broadcast_to(tf.constant(window_sizes, tf.float32) / 2.0, shape)
  boxes = tf.stack([cy - half, cx - half, cy + half, cx + half], axis=-1)
  return tf.reshape(boxes, [-1, 4])


def window_labels(windows, gt_boxes, image_size, stride, window_sizes):
  """DeepMask's positive / negative windows (see the module docstring).

  Args:
    windows: [N, 4] from window_boxes (N = h * w * A, sizes cycling fastest).
    gt_boxes: [B, M, 4], padded with -1.
    image_size: int [B, 2] valid (height, width).
    stride: feature stride.
    window_sizes: the A window sides in pixels.

  Returns:
    positive, negative: bool [B, N]; matched: int32 [B, N], the index of the
    object a positive window is centred on (0 elsewhere).
  """
  num_sizes = len(window_sizes)
  sizes = tf.constant(window_sizes, tf.float32)
  window_size = tf.tile(sizes, [tf.shape(windows)[0] // num_sizes])  # [N]
  centre = (windows[:, :2] + windows[:, 2:]) / 2.0  # [N, 2]
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  valid_gt = gt_boxes[..., 0] >= 0  # [B, M]
  gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0
  gt_scale = tf.reduce_max(gt_boxes[..., 2:] - gt_boxes[..., :2], axis=-1)

  # Scale: log ratio of the object to each window size's fit.
  log_ratio = tf.math.log(tf.maximum(gt_scale, 1e-3)[..., tf.newaxis] /
                          (OBJECT_TO_WINDOW * sizes))  # [B, M, A]
  nearest = tf.one_hot(tf.argmin(tf.abs(log_ratio), axis=-1), num_sizes,
                       on_value=True, off_value=False)
  size_ok = ((tf.abs(log_ratio) <= math.log(SCALE_TOLERANCE)) |
             (nearest & (tf.abs(log_ratio) <= math.log(2.0))))
  size_ok = tf.tile(size_ok, [1, 1, tf.shape(windows)[0] // num_sizes])
  size_ok = tf.transpose(size_ok, [0, 2, 1])  # [B, N, M]

  offset = tf.reduce_max(tf.abs(centre[tf.newaxis, :, tf.newaxis, :] -
                                gt_centre[:, tf.newaxis, :, :]), axis=-1)
  tolerance = tf.maximum(CENTRE_TOLERANCE * window_size, stride / 2.0)
  centred = offset <= tolerance[tf.newaxis, :, tf.newaxis]  # [B, N, M]
  match = centred & size_ok & valid_gt[:, tf.newaxis, :]
  positive = tf.reduce_any(match, axis=-1)
  matched = tf.argmin(tf.where(match, offset, float('inf')), axis=-1,
                      output_type=tf.int32)
  matched = tf.where(positive, matched, 0)

  inside = windows_inside(windows, image_size)
  return positive & inside, ~positive & inside, matched


def windows_inside(windows, image_size):
  """bool [B, N]: whether each window's centre lies in the valid image.

  Args: windows [N, 4]; image_size int [B, 2] valid (height, width).
  """
  centre = (windows[:, :2] + windows[:, 2:]) / 2.0
  limits = tf.cast(image_size, tf.float32)[:, tf.newaxis, :]  # [B, 1, 2]
  return tf.reduce_all((centre[tf.newaxis] >= 0) &
                       (centre[tf.newaxis] < limits), axis=-1)


@tf_keras.utils.register_keras_serializable(package='masklab')
class SlidingWindows(tf_keras.layers.Layer):
  """Feature map [B, h, w, C] -> its windows [h * w * A, 4] (window_boxes)."""

  def __init__(self, stride: int, window_sizes, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.window_sizes = tuple(float(s) for s in window_sizes)

  def call(self, features):
    shape = tf.shape(features)
    return window_boxes(shape[1], shape[2], self.stride, self.window_sizes)

  def get_config(self):
    return {**super().get_config(), 'stride': self.stride,
            'window_sizes': self.window_sizes}


@tf_keras.utils.register_keras_serializable(package='masklab')
class InstanceFcnHead(tf_keras.layers.Layer):
  """res5 -> (k^2 instance-sensitive score maps, objectness per window size).

  Score maps: 1x1 conv (512, ReLU) then 3x3 conv to k^2 channels;
  objectness: 3x3 conv (512, ReLU) then 1x1 conv to A channels (paper
  Fig. 4). New layers start from N(0, 0.01) as the paper's.
  """

  def __init__(self, grid_size: int = 5, num_window_sizes: int = 1,
               channels: int = 512, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.grid_size = grid_size
    self.num_window_sizes = num_window_sizes
    self.channels = channels
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    def conv(filters, size, name, activation=None):
      return tf_keras.layers.Conv2D(
          filters, size, padding='same', activation=activation, name=name,
          kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
          kernel_regularizer=self.kernel_regularizer)
    self.score_reduce = conv(self.channels, 1, 'score_reduce', 'relu')
    self.score_maps = conv(self.grid_size ** 2, 3, 'score_maps')
    self.objectness_conv = conv(self.channels, 3, 'objectness_conv', 'relu')
    self.objectness = conv(self.num_window_sizes, 1, 'objectness')
    super().build(input_shape)

  def call(self, features):
    return (self.score_maps(self.score_reduce(features)),
            self.objectness(self.objectness_conv(features)))

  def get_config(self):
    return {
        **super().get_config(), 'grid_size': self.grid_size,
        'num_window_sizes': self.num_window_sizes, 'channels': self.channels,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer) if self.kernel_regularizer else None}


@tf_keras.utils.register_keras_serializable(package='masklab')
class WindowSampler(tf_keras.layers.Layer):
  """Labels and samples windows; picks the positive ones to assemble.

  Call: (windows [N, 4], gt_boxes [B, M, 4], image_size [B, 2]) ->
    labels int32 [B, N] (1 positive, 0 negative, -1 not sampled),
    positive_boxes [B, P, 4] (P = sample_size * positive_fraction),
    positive_objects int32 [B, P] (object index), positive_valid [B, P].
  """

  def __init__(self, stride: int, window_sizes, sample_size: int = 256,
               positive_fraction: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    self.stride = stride
    self.window_sizes = tuple(float(s) for s in window_sizes)
    self.sample_size = sample_size
    self.positive_fraction = positive_fraction

  @property
  def max_positives(self) -> int:
    return int(self.sample_size * self.positive_fraction)

  def call(self, windows, gt_boxes, image_size):
    positive, negative, matched = window_labels(
        windows, gt_boxes, image_size, self.stride, self.window_sizes)
    labels = rpn_head.sample_labels(positive, negative, self.sample_size,
                               self.positive_fraction)
    # Sampled positives first (stable order), then the rest as padding.
    order = tf.argsort(tf.cast(labels == 1, tf.int32), axis=1,
                       direction='DESCENDING', stable=True)
    order = order[:, :self.max_positives]
    valid = tf.gather(labels, order, batch_dims=1) == 1
    boxes = tf.gather(windows, order)
    objects = tf.gather(matched, order, batch_dims=1)
    return (tf.stop_gradient(labels), tf.stop_gradient(boxes),
            tf.stop_gradient(objects), valid)

  def get_config(self):
    return {**super().get_config(), 'stride': self.stride,
            'window_sizes': self.window_sizes,
            'sample_size': self.sample_size,
            'positive_fraction': self.positive_fraction}


@tf_keras.utils.register_keras_serializable(package='masklab')
class WindowMaskTargets(tf_keras.layers.Layer):
  """The object's mask cropped to each positive window (S x S, ops/crop.py).

  Call: (gt_masks [B, M, H, W], objects int [B, P], boxes [B, P, 4]) ->
  float32 [B, P, S, S] in [0, 1]; outside the image it is 0.
  """

  def __init__(self, crop_size: int, **kwargs):
    super().__init__(**kwargs)
    self.crop_size = crop_size

  def call(self, gt_masks, objects, boxes):
    shape = tf.shape(gt_masks)
    batch, num_objects = shape[0], shape[1]
    flat = tf.reshape(gt_masks, tf.concat([[-1], shape[2:]], 0))
    index = (tf.range(batch)[:, tf.newaxis] * num_objects +
             tf.cast(objects, tf.int32))
    num = tf.shape(objects)[1]
    crops = crop.crop_masks(flat, tf.reshape(boxes, [-1, 4]),
                            self.crop_size,
                            box_indices=tf.reshape(index, [-1]))
    return tf.stop_gradient(
        tf.reshape(crops, [batch, num, self.crop_size, self.crop_size]))

  def get_config(self):
    return {**super().get_config(), 'crop_size': self.crop_size}


@tf_keras.utils.register_keras_serializable(package='masklab')
class TopWindows(tf_keras.layers.Layer):
  """The `top_k` best-scored windows whose centre is in the image.

  Call: (objectness [B, h, w, A], windows [N, 4], image_size [B, 2]) ->
  boxes [B, T, 4], scores [B, T] (probabilities; -1 for windows outside).
  """

  def __init__(self, top_k: int = 2000, **kwargs):
    super().__init__(**kwargs)
    self.top_k = top_k

  def call(self, objectness, windows, image_size):
    batch = tf.shape(objectness)[0]
    scores = tf.sigmoid(tf.reshape(tf.cast(objectness, tf.float32),
                                   [batch, -1]))
    scores = tf.where(windows_inside(windows, image_size), scores, -1.0)
    k = tf.minimum(self.top_k, tf.shape(scores)[1])
    top_scores, top_index = tf.math.top_k(scores, k=k)
    return tf.gather(windows, top_index), top_scores

  def get_config(self):
    return {**super().get_config(), 'top_k': self.top_k}


def segment_proposals(window_boxes_, scores, segment_logits, image_size,
                      num_proposals=100, nms_iou=0.8, crop_size=41,
                      mask_threshold=0.5):
  """Assembled window segments -> NMS'd proposals on their tight boxes.

  Args:
    window_boxes_: [B, T, 4] windows (image pixels).
    scores: [B, T] objectness probabilities (-1: not a candidate).
    segment_logits: [B, T, S, S] window-relative segment logits.
    image_size: int [B, 2] valid size.
    num_proposals, nms_iou: proposals kept per image; NMS threshold on the
      tight boxes of the binarised segments (paper: 0.8).
    crop_size: side of the returned box-relative masks.
    mask_threshold: binarisation of the segments (paper: 0.5).

  Returns:
    The detection dict of MaskLab's inference model: detection_boxes
    [B, D, 4] (tight, clipped to the image), detection_scores [B, D],
    detection_classes int32 [B, D] (1; 0 for padding), num_detections [B],
    detection_masks [B, D, crop_size, crop_size] probabilities on the boxes.
  """
  probs = tf.sigmoid(tf.cast(segment_logits, tf.float32))
  shape = tf.shape(probs)
  batch, size = shape[0], shape[2]
  binary = probs >= mask_threshold
  rows = tf.reduce_any(binary, axis=3)  # [B, T, S]
  cols = tf.reduce_any(binary, axis=2)
  nonempty = tf.reduce_any(rows, axis=-1)

  def extent(hits):
    index = tf.range(size, dtype=tf.float32)
    first = tf.reduce_min(tf.where(hits, index, float(1e9)), axis=-1)
    last = tf.reduce_max(tf.where(hits, index, -1.0), axis=-1)
    return first, last

  y0, y1 = extent(rows)
  x0, x1 = extent(cols)
  step_y = (window_boxes_[..., 2] - window_boxes_[..., 0]) / tf.cast(
      size - 1, tf.float32)
  step_x = (window_boxes_[..., 3] - window_boxes_[..., 1]) / tf.cast(
      size - 1, tf.float32)
  # A sample stands for the half step around it.
  tight = tf.stack([
      window_boxes_[..., 0] + (y0 - 0.5) * step_y,
      window_boxes_[..., 1] + (x0 - 0.5) * step_x,
      window_boxes_[..., 0] + (y1 + 0.5) * step_y,
      window_boxes_[..., 1] + (x1 + 0.5) * step_x], axis=-1)
  limits = tf.tile(tf.cast(image_size, tf.float32), [1, 2])[:, tf.newaxis]
  tight = tf.clip_by_value(tight, 0.0, limits)
  tight = tf.where(nonempty[..., tf.newaxis], tight, 0.0)
  scores = tf.where(nonempty & (scores >= 0), scores, -1.0)

  selected, valid = tf.image.non_max_suppression_padded(
      tight, scores, num_proposals, iou_threshold=nms_iou,
      score_threshold=0.0, pad_to_max_output_size=True)
  keep = tf.range(num_proposals)[tf.newaxis] < valid[:, tf.newaxis]
  boxes = tf.where(keep[..., tf.newaxis],
                   tf.gather(tight, selected, batch_dims=1), 0.0)
  windows = tf.gather(window_boxes_, selected, batch_dims=1)
  kept_probs = tf.gather(probs, selected, batch_dims=1)  # [B, D, S, S]

  # Re-sample each segment on its tight box: normalised crop_and_resize
  # coordinates of the box inside its window's S x S samples.
  window_size = tf.maximum(windows[..., 2:] - windows[..., :2], 1e-6)
  relative = (boxes - tf.tile(windows[..., :2], [1, 1, 2])) / tf.tile(
      window_size, [1, 1, 2])
  masks = tf.image.crop_and_resize(
      tf.reshape(kept_probs, [-1, size, size, 1]),
      tf.reshape(relative, [-1, 4]),
      tf.range(batch * num_proposals), [crop_size, crop_size])
  masks = tf.reshape(masks, [batch, num_proposals, crop_size, crop_size])
  masks = tf.where(keep[..., tf.newaxis, tf.newaxis], masks, 0.0)
  return {
      'num_detections': valid,
      'detection_boxes': boxes,
      'detection_classes': tf.cast(keep, tf.int32),
      'detection_scores': tf.where(keep, tf.gather(scores, selected,
                                                   batch_dims=1), 0.0),
      'detection_masks': masks,
  }


@tf_keras.utils.register_keras_serializable(package='masklab')
class SegmentProposals(tf_keras.layers.Layer):
  """Layer form of `segment_proposals`."""

  def __init__(self, num_proposals: int = 100, nms_iou: float = 0.8,
               crop_size: int = 41, mask_threshold: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    self.num_proposals = num_proposals
    self.nms_iou = nms_iou
    self.crop_size = crop_size
    self.mask_threshold = mask_threshold

  def call(self, windows, scores, segment_logits, image_size):
    return segment_proposals(windows, scores, segment_logits, image_size,
                             self.num_proposals, self.nms_iou,
                             self.crop_size, self.mask_threshold)

  def get_config(self):
    return {**super().get_config(), 'num_proposals': self.num_proposals,
            'nms_iou': self.nms_iou, 'crop_size': self.crop_size,
            'mask_threshold': self.mask_threshold}


def build_instancefcn(cfg: config_lib.ModelConfig,
                      geometry: config_lib.GeometryConfig | None = None,
                      max_instances: int = 100,
                      image_shape: tuple = (None, None),
                      use_xla: bool = True) -> masklab.MaskLabModels:
  """InstanceFCN's training and inference graphs over shared layers.

  train_model(image, image_size, gt_boxes, gt_masks) returns
  objectness_logits [B, N], window_labels [B, N], segment_logits
  [B, P, S, S], segment_targets [B, P, S, S] and segment_valid [B, P];
  inference_model(image, image_size) returns segment proposals in the
  detection format of MaskLab's inference model (no semantic map).
  """
  geometry = geometry or config_lib.GeometryConfig()
  stride = cfg.output_stride
  image = tf_keras.Input(shape=(*image_shape, 3), name='image')
  image_size = tf_keras.Input(shape=(2,), dtype=tf.int32, name='image_size')
  gt_boxes = tf_keras.Input(shape=(max_instances, 4), name='gt_boxes')
  gt_masks = tf_keras.Input(shape=(max_instances, *image_shape),
                            dtype=tf.uint8, name='gt_masks')

  backbone = backbone_lib.build_backbone(
      cfg.backbone_depth, stride, tuple(cfg.backbone_multigrid),
      norm_momentum=cfg.norm_momentum, norm_epsilon=cfg.norm_epsilon,
      use_sync_bn=cfg.use_sync_bn)
  window_sizes = tuple(cfg.ifcn_window_sizes)
  head = InstanceFcnHead(cfg.ifcn_grid_size, len(window_sizes),
                         cfg.ifcn_channels, name='instancefcn_head')
  # Window geometry, sampling, targets and NMS stay float32 under a mixed
  # precision policy (bfloat16 has 8 significant bits: pixels, not boxes).
  windows_layer = SlidingWindows(stride, window_sizes, dtype='float32',
                                 name='windows')
  assembler = assemble.PositionSensitiveAssemble(
      crop_size=cfg.ifcn_crop_size, feature_stride=stride,
      channel_map_kind='grid', grid_size=cfg.ifcn_grid_size,
      use_xla=use_xla, name='assemble')

  normalized = masklab.ImageNormalization(name='normalize')(image)
  res5 = backbone(normalized)['res5']
  score_maps, objectness = head(res5)
  windows = windows_layer(res5)

  labels, positive_boxes, positive_objects, positive_valid = WindowSampler(
      stride, window_sizes, cfg.ifcn_windows_per_image, 0.5,
      dtype='float32', name='window_sampler')(
          windows, gt_boxes, image_size)
  train_model = tf_keras.Model(
      inputs={'image': image, 'image_size': image_size,
              'gt_boxes': gt_boxes, 'gt_masks': gt_masks},
      outputs={
          'objectness_logits': tf_keras.layers.Reshape(
              (-1,), name='flat_objectness')(objectness),
          'window_labels': labels,
          'segment_logits': assembler(score_maps, positive_boxes),
          'segment_targets': WindowMaskTargets(
              cfg.ifcn_crop_size, dtype='float32', name='segment_targets')(
                  gt_masks, positive_objects, positive_boxes),
          'segment_valid': positive_valid,
      }, name='instancefcn_train')

  top_windows, top_scores = TopWindows(cfg.ifcn_pre_nms_top_k,
                                       dtype='float32', name='top_windows')(
                                           objectness, windows, image_size)
  proposals = SegmentProposals(
      cfg.max_detections, cfg.ifcn_nms_iou, geometry.mask_crop_size,
      dtype='float32', name='segment_proposals')(
          top_windows, top_scores, assembler(score_maps, top_windows),
          image_size)
  inference_model = tf_keras.Model(
      inputs={'image': image, 'image_size': image_size},
      outputs=proposals, name='instancefcn')
  return masklab.MaskLabModels(train_model, inference_model, backbone)


def compute_losses(outputs: dict, batch: dict, cfg: config_lib.ModelConfig
                   ) -> dict[str, tf.Tensor]:
  """Eq. 1: logistic loss on the sampled windows' objectness, plus the
  per-pixel logistic loss of the positive windows' segments (mean over
  their pixels); 'total' is the sum."""
  del batch, cfg  # The targets were made in the graph.
  labels = outputs['window_labels']
  sampled = labels >= 0
  ce = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.cast(labels > 0, tf.float32),
      logits=tf.cast(outputs['objectness_logits'], tf.float32))
  objectness = losses_lib.safe_mean(
      tf.reduce_sum(tf.where(sampled, ce, 0.0)),
      tf.reduce_sum(tf.cast(sampled, tf.float32)))
  segment = losses_lib.mask_loss(
      outputs['segment_logits'], outputs['segment_targets'],
      tf.cast(outputs['segment_valid'], tf.int32))
  return {'objectness': objectness, 'segment': segment,
          'total': objectness + segment}


def model_inputs(batch: dict, training: bool) -> dict:
  keys = ('image', 'image_size', 'gt_boxes', 'gt_masks') if training else (
      'image', 'image_size')
  return {k: batch[k] for k in keys}
