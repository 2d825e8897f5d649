"""RoI crop-and-resize and MaskLab's deformable crop-and-resize.

MaskLab (sec. 3, Fig. 5) classifies boxes from conv4 features cropped by
TensorFlow's "crop and resize" (the RoIAlign analogue) and adds a deformable
variant: the crop is divided into sub-boxes, a small network predicts one
offset per sub-box, and each shifted sub-box is cropped again. Fig. 8 uses 49
sub-boxes (a 7 x 7 grid) of 2 x 2 samples, i.e. a 14 x 14 crop, which the TF
Object Detection API's ResNet Faster R-CNN max-pools 2x2 to 7 x 7 before the
conv5 box classifier.

All crops follow the one convention of ops/crop.py: boxes are continuous
[ymin, xmin, ymax, xmax] image coordinates, a crop of S samples per axis
includes both box edges, and the conversion to tf.image.crop_and_resize's
normalised boxes happens only in `crop.to_crop_and_resize_boxes`. A feature
map at stride s sees image coordinate y at feature coordinate y / s (feature
pixel k covers image pixels [k s, (k + 1) s), centre at (k + 0.5) s), so
boxes are divided by the stride and then converted like image boxes.

Two properties of tf.image.crop_and_resize matter here:
  * A sample whose position lies outside the hull of the pixel centres
    (continuous < 0.5 or > size - 0.5 in feature coordinates) is the
    extrapolation value 0 as a whole; it is not a bilinear blend with zero
    padding. A box edge on the image border therefore gives a zero edge row.
  * It has a gradient w.r.t. boxes (CropAndResizeGradBoxes), which is what
    lets the offset network learn. That gradient is the one-sided slope
    ceil - floor of the bilinear interpolation, so it is exactly zero along
    an axis where a sample sits on an integer pixel-index position (a pixel
    centre). Real offsets are almost never there; hand-made test boxes can be.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from masklab_tf.ops import assemble
from masklab_tf.ops import crop


def crop_rois(features: tf.Tensor,
              boxes: tf.Tensor,
              crop_size: int,
              feature_stride: float = 1.0,
              stop_box_gradient: bool = True,
              gather: bool = False) -> tf.Tensor:
  """Crops every box of every image from a strided feature map.

  Args:
    features: float [B, H, W, C] features at stride `feature_stride` of the
      input image. B, H and W may be dynamic; C should be static.
    boxes: float [B, N, 4] continuous [ymin, xmin, ymax, xmax] boxes in input
      image pixels; box n of row b is cropped from image b. N may be 0.
    crop_size: S, samples per axis (including both box edges).
    feature_stride: stride of `features` w.r.t. the image.
    stop_box_gradient: RoI features do not train the proposals, so the box
      gradient is stopped by default. Deformable crop-and-resize turns it off
      for its sub-boxes, whose positions are learnt.
    gather: sample by gathering the four neighbours of each sample
      (`gather_crops`) instead of tf.image.crop_and_resize: the same values
      and gradients; the model is built with it for deterministic runs on a
      GPU (determinism.gather_crops).

  Returns:
    [B, N, S, S, C] bilinear crops in the dtype of `features`; samples
    outside the feature map are 0. Differentiable w.r.t. `features` (and
    w.r.t. `boxes` when `stop_box_gradient` is False).
  """
  features = tf.convert_to_tensor(features)
  dtype = features.dtype
  if dtype == tf.bfloat16:
    # crop_and_resize has no bfloat16 kernel.
    features = tf.cast(features, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  if stop_box_gradient:
    boxes = tf.stop_gradient(boxes)

  feature_shape = tf.shape(features)
  height, width = feature_shape[1], feature_shape[2]
  channels = features.shape[-1]
  if channels is None:
    channels = feature_shape[3]
  if gather:
    return tf.cast(gather_crops(features, boxes, crop_size, feature_stride,
                                channels), dtype)
  box_shape = tf.shape(boxes)
  batch, num_boxes = box_shape[0], box_shape[1]

  flat_boxes = tf.reshape(boxes, [batch * num_boxes, 4])
  flat_boxes = crop.to_crop_and_resize_boxes(
      flat_boxes / tf.cast(feature_stride, tf.float32), height, width)
  box_indices = tf.repeat(tf.range(batch), num_boxes)
  crops = tf.image.crop_and_resize(
      features,
      flat_boxes,
      box_indices=box_indices,
      crop_size=(crop_size, crop_size),
      method='bilinear',
      extrapolation_value=0.0)
  crops = tf.reshape(crops,
                     [batch, num_boxes, crop_size, crop_size, channels])
  return tf.cast(crops, dtype)


def gather_crops(features: tf.Tensor, boxes: tf.Tensor, crop_size: int,
                 feature_stride: float, channels) -> tf.Tensor:
  """crop_rois' crops as gathers: float32 [B, N, S, S, C].

  The samples and weights are assemble.sample_neighbours', which equal
  crop_and_resize's (zero outside the hull of the pixel centres); the
  gradient w.r.t. features is a gather's, which has a deterministic GPU
  kernel where CropAndResize's image gradient has none.
  """
  batch, height, width = tf.unstack(tf.shape(features)[:3])
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  top, bottom, top_weight, bottom_weight = assemble.sample_neighbours(
      ymin, ymax, crop_size, height, feature_stride)
  left, right, left_weight, right_weight = assemble.sample_neighbours(
      xmin, xmax, crop_size, width, feature_stride)
  pixels = tf.reshape(features, [-1, channels])
  first = (tf.range(batch) * height * width)[:, tf.newaxis, tf.newaxis,
                                              tf.newaxis]

  def at(rows, cols):  # [B, N, S] rows and cols -> [B, N, S, S, C]
    index = (first + (rows * width)[..., :, tf.newaxis]
             + cols[..., tf.newaxis, :])
    return tf.gather(pixels, index)

  top_weight = top_weight[..., :, tf.newaxis, tf.newaxis]
  bottom_weight = bottom_weight[..., :, tf.newaxis, tf.newaxis]
  left_weight = left_weight[..., tf.newaxis, :, tf.newaxis]
  right_weight = right_weight[..., tf.newaxis, :, tf.newaxis]
  return (top_weight * (left_weight * at(top, left) +
                        right_weight * at(top, right)) +
          bottom_weight * (left_weight * at(bottom, left) +
                           right_weight * at(bottom, right)))


def sub_box_grid(boxes: tf.Tensor, crop_size: int,
                 sub_box_size: int) -> tf.Tensor:
  """The G x G sub-boxes whose b x b crops tile the plain S x S crop.

  A plain crop of S samples per axis (`crop_rois`) samples
  ymin + k h / (S - 1), k = 0 .. S - 1, both box edges included. With
  b = sub_box_size and G = S // b, sub-box i along an axis spans that crop's
  samples b i .. b i + b - 1, i.e. rows
  ymin + (b i) h / (S - 1) .. ymin + (b i + b - 1) h / (S - 1) (columns
  likewise). A b x b crop of sub-box (i, j) therefore reproduces the plain
  crop's samples [b i : b i + b, b j : b j + b] exactly, so undeformed
  sub-boxes tile back into the plain crop. Neighbouring sub-boxes are one
  sample step h / (S - 1) apart, not touching. For b = 1 each sub-box is a
  zero-size box on its sample, which a 1 x 1 crop samples at that point. For
  S = 1 the one sub-box is the box itself (both crops sample its centre).

  Args:
    boxes: float [..., 4] continuous [ymin, xmin, ymax, xmax].
    crop_size: S, samples per axis of the plain crop.
    sub_box_size: b, samples per axis of each sub-box; must divide S.

  Returns:
    float32 [..., G, G, 4], sub-box (i, j) at [..., i, j, :].
  """
  if crop_size < 1 or sub_box_size < 1 or crop_size % sub_box_size:
    raise ValueError(
        f'sub_box_size {sub_box_size} must divide crop_size {crop_size}.')
  boxes = tf.cast(boxes, tf.float32)
  if crop_size == 1:
    return boxes[..., tf.newaxis, tf.newaxis, :]
  grid = crop_size // sub_box_size
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  first = tf.range(grid, dtype=tf.float32) * float(sub_box_size)
  # Fractions of the box extent at each sub-box's first and last sample.
  start = first / float(crop_size - 1)
  stop = (first + float(sub_box_size - 1)) / float(crop_size - 1)
  height = (ymax - ymin)[..., tf.newaxis]
  width = (xmax - xmin)[..., tf.newaxis]
  y0 = (ymin[..., tf.newaxis] + height * start)[..., :, tf.newaxis]
  y1 = (ymin[..., tf.newaxis] + height * stop)[..., :, tf.newaxis]
  x0 = (xmin[..., tf.newaxis] + width * start)[..., tf.newaxis, :]
  x1 = (xmin[..., tf.newaxis] + width * stop)[..., tf.newaxis, :]
  ones = tf.ones_like(y0 * x0)  # [..., G, G]
  return tf.stack([y0 * ones, x0 * ones, y1 * ones, x1 * ones], axis=-1)


@tf_keras.utils.register_keras_serializable(package='masklab')
class DeformableCropAndResize(tf_keras.layers.Layer):
  """MaskLab's deformable crop-and-resize ("crop and resize" used twice).

  1. `plain` = crop_rois(features, boxes, crop_size): the usual RoI crop.
  2. A small network reads `plain`, average-pooled over each sub-box's
     b x b samples ([G, G, C] with b = sub_box_size, G = crop_size // b),
     flattened, through fc(offset_hidden_units, relu) (skipped when 0) and
     fc(G * G * 2), and predicts one (dy, dx) per sub-box. As in the
     deformable RoI pooling of Dai et al. (gamma = 0.1), the prediction is
     relative to the box size: offset = offset_scale * raw * (box height,
     box width), so it does not depend on the box's scale.
  3. Each of the G x G sub-boxes of the box (see `sub_box_grid`: sub-box
     (i, j) spans the plain crop's samples [b i : b i + b, b j : b j + b])
     is shifted by its offset and cropped again at b x b; the crops are
     tiled back into a crop_size x crop_size map.

  With zero offsets the result is exactly `plain`: every b x b crop of an
  undeformed sub-box reproduces its b x b plain samples. The last fc layer
  is zero-initialised (`kernel_initializer`, bias zeros), so training starts
  from plain crop-and-resize, as deformable RoI pooling does, and each
  offset moves one group of b x b samples. For b = 1 every sample moves on
  its own (its sub-box is a zero-size box on the sample).

  Gradients reach the features through both crops and the offset network
  through crop_and_resize's box gradient. The input boxes themselves get no
  gradient. The offset network's first fc layer has G * G * C * hidden
  weights (12.8M for C = 1024, hidden = 256).
  """

  def __init__(self,
               crop_size: int = 14,
               sub_box_size: int = 2,
               feature_stride: float = 16,
               offset_scale: float = 0.1,
               offset_hidden_units: int = 256,
               use_deformation: bool = True,
               kernel_initializer: Any = 'zeros',
               gather: bool = False,
               **kwargs):
    """Initialises the layer.

    Args:
      crop_size: S, output crop size per axis (14 for Fig. 8).
      sub_box_size: samples per axis of each sub-box (2 in the paper); must
        divide crop_size.
      feature_stride: stride of the cropped features w.r.t. the image.
      offset_scale: gamma, offsets are offset_scale * prediction * box size.
      offset_hidden_units: units of the hidden fc layer of the offset
        network; 0 makes the offset network a single linear layer.
      use_deformation: False returns the plain crop (no offset network).
      kernel_initializer: initializer of the offset predictor's (last fc
        layer's) kernel; zeros starts from undeformed sub-boxes.
      gather: crop by gathering (crop_rois' `gather`).
      **kwargs: keyword arguments of tf_keras.layers.Layer.
    """
    super().__init__(**kwargs)
    if crop_size < 1 or sub_box_size < 1 or crop_size % sub_box_size:
      raise ValueError(
          f'sub_box_size {sub_box_size} must divide crop_size {crop_size}.')
    if offset_hidden_units < 0:
      raise ValueError(
          f'offset_hidden_units must be >= 0, got {offset_hidden_units}.')
    self._crop_size = crop_size
    self._sub_box_size = sub_box_size
    self._grid = crop_size // sub_box_size
    self._feature_stride = feature_stride
    self._offset_scale = offset_scale
    self._offset_hidden_units = offset_hidden_units
    self._use_deformation = use_deformation
    self._gather = gather
    self._kernel_initializer = tf_keras.initializers.get(kernel_initializer)
    self._offset_hidden = None
    self._offset_predictor = None

  def build(self, input_shape):
    """Creates the offset network for features of shape [B, H, W, C]."""
    if self._use_deformation:
      channels = tf.TensorShape(input_shape)[-1]
      if channels is None:
        raise ValueError('DeformableCropAndResize needs a static channel '
                         f'count, got features of shape {input_shape}.')
      in_units = self._grid * self._grid * channels
      if self._offset_hidden_units:
        self._offset_hidden = tf_keras.layers.Dense(
            self._offset_hidden_units,
            activation='relu',
            name='offset_hidden')
        with tf.name_scope(self._offset_hidden.name):
          self._offset_hidden.build([None, in_units])
        in_units = self._offset_hidden_units
      self._offset_predictor = tf_keras.layers.Dense(
          self._grid * self._grid * 2,
          kernel_initializer=self._kernel_initializer,
          bias_initializer='zeros',
          name='offset_predictor')
      with tf.name_scope(self._offset_predictor.name):
        self._offset_predictor.build([None, in_units])
    super().build(input_shape)

  @property
  def offset_predictor(self):
    """The last fc layer (G * G * 2 outputs, ordered [G, G, (dy, dx)])."""
    return self._offset_predictor

  def _offsets(self, plain: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Offsets in image pixels, float32 [B, N, G, G, 2] (dy, dx)."""
    shape = tf.shape(plain)
    batch, num_boxes = shape[0], shape[1]
    channels = plain.shape[-1]
    size = self._crop_size
    flat = tf.reshape(plain, [batch * num_boxes, size, size, channels])
    if self._sub_box_size > 1:
      flat = tf.nn.avg_pool2d(flat, self._sub_box_size, self._sub_box_size,
                              'VALID')
    flat = tf.reshape(flat,
                      [batch * num_boxes, self._grid * self._grid * channels])
    if self._offset_hidden is not None:
      flat = self._offset_hidden(flat)
    raw = tf.cast(self._offset_predictor(flat), tf.float32)
    raw = tf.reshape(raw, [batch, num_boxes, self._grid, self._grid, 2])
    box_size = tf.stack([boxes[..., 2] - boxes[..., 0],
                         boxes[..., 3] - boxes[..., 1]], axis=-1)
    return (self._offset_scale * raw *
            box_size[:, :, tf.newaxis, tf.newaxis, :])

  def _deformed_sub_boxes(self, plain, boxes):
    offsets = self._offsets(plain, boxes)
    return (sub_box_grid(boxes, self._crop_size, self._sub_box_size) +
            tf.tile(offsets, [1, 1, 1, 1, 2]))

  def deformed_sub_boxes(self, features: tf.Tensor,
                         boxes: tf.Tensor) -> tf.Tensor:
    """The shifted sub-boxes (for visualisation, cf. Fig. 8).

    Args:
      features: [B, H, W, C] as in call.
      boxes: [B, N, 4] image pixels.

    Returns:
      float32 [B, N, G, G, 4] image-pixel sub-boxes, cell (i, j) at [i, j].
    """
    if not self.built:
      self.build(features.shape)
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    if not self._use_deformation:
      return sub_box_grid(boxes, self._crop_size, self._sub_box_size)
    plain = crop_rois(features, boxes, self._crop_size, self._feature_stride,
                      gather=self._gather)
    return self._deformed_sub_boxes(plain, boxes)

  def call(self, features: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Deformable crop of each box.

    Args:
      features: float [B, H, W, C] at stride feature_stride (static C).
      boxes: float [B, N, 4] continuous [ymin, xmin, ymax, xmax] in image
        pixels (no gradient flows back to them).

    Returns:
      [B, N, crop_size, crop_size, C].
    """
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    plain = crop_rois(features, boxes, self._crop_size, self._feature_stride,
                      gather=self._gather)
    if not self._use_deformation:
      return plain

    grid, sub = self._grid, self._sub_box_size
    shape = tf.shape(boxes)
    batch, num_boxes = shape[0], shape[1]
    channels = plain.shape[-1]
    sub_boxes = self._deformed_sub_boxes(plain, boxes)
    sub_crops = crop_rois(
        features,
        tf.reshape(sub_boxes, [batch, num_boxes * grid * grid, 4]),
        sub, self._feature_stride, stop_box_gradient=False,
        gather=self._gather)
    # [B, N, G(i), G(j), s(k), s(l), C] -> [B, N, G(i), s(k), G(j), s(l), C].
    sub_crops = tf.reshape(
        sub_crops, [batch, num_boxes, grid, grid, sub, sub, channels])
    sub_crops = tf.transpose(sub_crops, [0, 1, 2, 4, 3, 5, 6])
    return tf.reshape(sub_crops, [batch, num_boxes, self._crop_size,
                                  self._crop_size, channels])

  def get_config(self):
    config = {
        'crop_size': self._crop_size,
        'sub_box_size': self._sub_box_size,
        'feature_stride': self._feature_stride,
        'offset_scale': self._offset_scale,
        'offset_hidden_units': self._offset_hidden_units,
        'use_deformation': self._use_deformation,
        'gather': self._gather,
        'kernel_initializer':
            tf_keras.initializers.serialize(self._kernel_initializer),
    }
    base_config = super().get_config()
    return dict(list(base_config.items()) + list(config.items()))
