"""RoI crops and deformable crop-and-resize against numpy and hand cases."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import reference
from masklab_tf.ops import roi_crop


numpy_crop = reference.crop_np


def numpy_sub_box_crop(features, box, crop_size, sub_box_size, stride,
                       offsets=None):
  """Tiles numpy crops of the (optionally shifted) sub-boxes.

  Sub-box i along an axis spans the plain crop's samples b i .. b i + b - 1,
  i.e. ymin + (b i) h / (S - 1) .. ymin + (b i + b - 1) h / (S - 1).
  """
  grid = crop_size // sub_box_size
  ymin, xmin, ymax, xmax = np.asarray(box, np.float64)
  step_h = (ymax - ymin) / (crop_size - 1)
  step_w = (xmax - xmin) / (crop_size - 1)
  span = sub_box_size - 1
  out = np.zeros((crop_size, crop_size, features.shape[-1]))
  for i in range(grid):
    for j in range(grid):
      dy, dx = (0.0, 0.0) if offsets is None else offsets[i, j]
      y0 = ymin + sub_box_size * i * step_h + dy
      x0 = xmin + sub_box_size * j * step_w + dx
      sub_box = [y0, x0, y0 + span * step_h, x0 + span * step_w]
      out[i * sub_box_size:(i + 1) * sub_box_size,
          j * sub_box_size:(j + 1) * sub_box_size] = numpy_crop(
              features, sub_box, sub_box_size, stride)
  return out


def random_features(seed, shape=(2, 9, 11, 3)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def random_boxes(seed, batch, num, image_height, image_width):
  """Non-degenerate boxes at non-integer positions, some partly outside."""
  rng = np.random.default_rng(seed)
  ys = np.sort(rng.uniform(-0.2, 1.1, size=(batch, num, 2)), axis=-1)
  xs = np.sort(rng.uniform(-0.2, 1.1, size=(batch, num, 2)), axis=-1)
  boxes = np.stack([ys[..., 0] * image_height, xs[..., 0] * image_width,
                    ys[..., 1] * image_height + 3.1,
                    xs[..., 1] * image_width + 2.7], axis=-1)
  return boxes.astype(np.float32)


def x_ramp(height, width, stride):
  """[1, H, W, 1] features whose value is the image x of the pixel centre."""
  x = (np.arange(width, dtype=np.float32) + 0.5) * stride
  return np.broadcast_to(x[None, None, :, None], (1, height, width, 1)).copy()


# ---------------------------------------------------------------- crop_rois


# gather=True: the gather path that deterministic runs take on a GPU
# (determinism.gather_crops); it must be crop_and_resize's crop.
@pytest.mark.parametrize('gather', [False, True])
@pytest.mark.parametrize('stride', [1, 8])
def test_crop_rois_matches_numpy(stride, gather):
  features = random_features(0)
  boxes = random_boxes(1, 2, 5, 9 * stride, 11 * stride)
  boxes[0, 0] = [-3.3 * stride, -2.1 * stride, 4.4 * stride, 5.2 * stride]
  boxes[1, 1] = [6.3 * stride, 8.2 * stride, 12.7 * stride, 14.1 * stride]
  got = roi_crop.crop_rois(features, boxes, 7, stride, gather=gather).numpy()
  assert got.shape == (2, 5, 7, 7, 3)
  for b in range(2):
    for n in range(5):
      np.testing.assert_allclose(
          got[b, n], numpy_crop(features[b], boxes[b, n], 7, stride),
          atol=1e-4)
  # The partly outside boxes do have zero samples.
  assert np.all(got[0, 0, 0] == 0) and np.all(got[1, 1, -1] == 0)


@pytest.mark.parametrize('stride', [1, 8])
def test_crop_rois_samples_continuous_positions(stride):
  # Value = image x of the pixel centre, so a sample reads its own image x.
  features = x_ramp(6, 10, stride)
  boxes = np.array([[[1.0, 1.5, 4.0, 7.5]]], np.float32) * stride
  got = roi_crop.crop_rois(features, boxes, 5, stride).numpy()[0, 0, ..., 0]
  expected = np.array([1.5, 3.0, 4.5, 6.0, 7.5]) * stride
  np.testing.assert_allclose(got, np.broadcast_to(expected, (5, 5)),
                             rtol=1e-6)
  # x = 0.25 px lies left of the first pixel centre: extrapolated to 0.
  boxes = np.array([[[1.0, 0.25, 4.0, 4.25]]], np.float32) * stride
  got = roi_crop.crop_rois(features, boxes, 5, stride).numpy()[0, 0, 0, :, 0]
  np.testing.assert_allclose(got, np.array([0.0, 1.25, 2.25, 3.25, 4.25]) *
                             stride, rtol=1e-6)


@pytest.mark.parametrize('gather', [False, True])
def test_crop_rois_no_boxes_and_dynamic_shapes(gather):
  fn = tf.function(
      lambda f, b: roi_crop.crop_rois(f, b, 4, 8, gather=gather),
      input_signature=[tf.TensorSpec([None, None, None, 3]),
                       tf.TensorSpec([None, None, 4])])
  features = random_features(2)
  assert fn(features, np.zeros((2, 0, 4), np.float32)).shape == (
      2, 0, 4, 4, 3)
  out = fn(features, random_boxes(3, 2, 3, 72, 88))
  assert out.shape == (2, 3, 4, 4, 3)


@pytest.mark.parametrize('gather', [False, True])
def test_crop_rois_gradients(gather):
  features = tf.constant(random_features(4))
  boxes = tf.constant(random_boxes(5, 2, 3, 9, 11))
  weights = tf.constant(np.random.default_rng(6).normal(
      size=(2, 3, 5, 5, 3)).astype(np.float32))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([features, boxes])
    loss = tf.reduce_sum(roi_crop.crop_rois(features, boxes, 5,
                                            gather=gather) * weights)
    learnt = tf.reduce_sum(roi_crop.crop_rois(
        features, boxes, 5, stop_box_gradient=False, gather=gather) * weights)
    reference = tf.reduce_sum(roi_crop.crop_rois(features, boxes, 5,
                                                 gather=False) * weights)
  assert np.any(tape.gradient(loss, features).numpy() != 0)
  np.testing.assert_allclose(tape.gradient(loss, features),
                             tape.gradient(reference, features), atol=1e-5)
  assert tape.gradient(loss, boxes) is None
  # crop_and_resize's box gradient agrees with central differences (boxes
  # are away from integer sample positions, where it is one-sided).
  grad = tape.gradient(learnt, boxes).numpy()
  eps = 1e-2
  for b, n, k in [(0, 0, 0), (0, 1, 1), (1, 2, 2), (1, 0, 3)]:
    delta = np.zeros(boxes.shape, np.float32)
    delta[b, n, k] = eps
    plus = tf.reduce_sum(roi_crop.crop_rois(features, boxes + delta, 5) *
                         weights)
    minus = tf.reduce_sum(roi_crop.crop_rois(features, boxes - delta, 5) *
                          weights)
    np.testing.assert_allclose(grad[b, n, k], (plus - minus) / (2 * eps),
                               rtol=2e-2, atol=1e-2)


def test_sub_box_grid():
  # S = 4 samples at rows 10, 12, 14, 16 and columns 20, 24, 28, 32.
  box = [[10.0, 20.0, 16.0, 32.0]]
  cells = roi_crop.sub_box_grid(box, 4, 2).numpy()[0]
  assert cells.shape == (2, 2, 4)
  np.testing.assert_allclose(cells[0, 0], [10, 20, 12, 24])
  np.testing.assert_allclose(cells[0, 1], [10, 28, 12, 32])
  np.testing.assert_allclose(cells[1, 0], [14, 20, 16, 24])
  np.testing.assert_allclose(cells[1, 1], [14, 28, 16, 32])
  # b = 1: zero-size sub-boxes on the samples themselves.
  cells = roi_crop.sub_box_grid(box, 4, 1).numpy()[0]
  assert cells.shape == (4, 4, 4)
  np.testing.assert_allclose(cells[2, 1], [14, 24, 14, 24])
  np.testing.assert_allclose(cells[3, 0], [16, 20, 16, 20])
  # S = 6, b = 3: samples 10, 12, ..., 20 split as 10..14 and 16..20.
  cells = roi_crop.sub_box_grid([[10.0, 0.0, 20.0, 5.0]], 6, 3).numpy()[0]
  np.testing.assert_allclose(cells[0, 1], [10, 3, 14, 5])
  np.testing.assert_allclose(cells[1, 0], [16, 0, 20, 2])
  # S = 1: the box itself (both crops sample its centre).
  np.testing.assert_allclose(roi_crop.sub_box_grid(box, 1, 1)[0, 0, 0],
                             box[0])
  with pytest.raises(ValueError):
    roi_crop.sub_box_grid(box, 14, 3)


# ---------------------------------------------------- deformable crop-resize


def make_layer(features, **kwargs):
  kwargs.setdefault('feature_stride', 8)
  kwargs.setdefault('offset_hidden_units', 16)
  layer = roi_crop.DeformableCropAndResize(**kwargs)
  layer.build(features.shape)
  return layer


def set_offset_bias(layer, dy, dx):
  """Every sub-box moves by (dy, dx) * offset_scale * box size."""
  kernel, bias = layer.offset_predictor.get_weights()
  bias = np.tile(np.array([dy, dx], np.float32), bias.size // 2)
  layer.offset_predictor.set_weights([np.zeros_like(kernel), bias])


def test_without_deformation_equals_crop_rois():
  features = random_features(7)
  boxes = random_boxes(8, 2, 4, 72, 88)
  layer = make_layer(features, use_deformation=False)
  assert not layer.weights
  np.testing.assert_array_equal(layer(features, boxes),
                                roi_crop.crop_rois(features, boxes, 14, 8))


@pytest.mark.parametrize('crop_size, sub_box_size',
                         [(14, 2), (6, 3), (6, 1), (1, 1)])
def test_zero_offsets_equal_crop_rois(crop_size, sub_box_size):
  features = random_features(9)
  boxes = random_boxes(10, 2, 3, 72, 88)
  layer = make_layer(features, crop_size=crop_size, sub_box_size=sub_box_size)
  got = layer(features, boxes).numpy()
  assert got.shape == (2, 3, crop_size, crop_size, 3)
  np.testing.assert_allclose(
      got, roi_crop.crop_rois(features, boxes, crop_size, 8), atol=1e-5)


def test_zero_offsets_sample_plain_positions():
  # On the x ramp every sample reads its own image x: the 14 evenly spaced
  # columns of crop_rois.
  features = x_ramp(8, 16, 8)
  boxes = np.array([[[8.0, 12.0, 50.0, 96.0]]], np.float32)
  got = make_layer(features)(features, boxes).numpy()[0, 0, 3, :, 0]
  np.testing.assert_allclose(got, 12.0 + 84.0 * np.arange(14) / 13,
                             rtol=1e-5)


@pytest.mark.parametrize('crop_size, sub_box_size', [(14, 2), (6, 3), (6, 1)])
def test_per_sub_box_offsets_match_numpy(crop_size, sub_box_size):
  # Different offsets per sub-box check the [G, G, (dy, dx)] layout and the
  # tiling order.
  features = random_features(23)
  boxes = random_boxes(24, 2, 3, 72, 88)
  layer = make_layer(features, crop_size=crop_size, sub_box_size=sub_box_size)
  grid = crop_size // sub_box_size
  kernel, bias = layer.offset_predictor.get_weights()
  raw = np.random.default_rng(25).uniform(-1, 1, size=(grid, grid, 2))
  layer.offset_predictor.set_weights(
      [np.zeros_like(kernel), raw.reshape(-1).astype(np.float32)])
  got = layer(features, boxes).numpy()
  for b in range(2):
    for n in range(3):
      box = boxes[b, n].astype(np.float64)
      size = np.array([box[2] - box[0], box[3] - box[1]])
      np.testing.assert_allclose(
          got[b, n],
          numpy_sub_box_crop(features[b], box, crop_size, sub_box_size, 8,
                             0.1 * raw * size),
          atol=1e-4)


def test_bias_offsets_shift_sub_boxes():
  features = random_features(11)
  boxes = random_boxes(12, 2, 3, 72, 88)
  width = boxes[..., 3] - boxes[..., 1]
  shifted = boxes.copy()
  shifted[..., 1] += 0.1 * width
  shifted[..., 3] += 0.1 * width

  # One sub-box (grid 1): the deformed crop is crop_rois of the moved box.
  layer = make_layer(features, crop_size=2, sub_box_size=2)
  set_offset_bias(layer, 0.0, 1.0)
  np.testing.assert_allclose(layer(features, boxes),
                             roi_crop.crop_rois(features, shifted, 2, 8),
                             atol=1e-5)

  # 7 x 7 sub-boxes: every one moves right by 0.1 box widths, which is the
  # plain crop of the moved box.
  layer = make_layer(features)
  set_offset_bias(layer, 0.0, 1.0)
  np.testing.assert_allclose(layer(features, boxes),
                             roi_crop.crop_rois(features, shifted, 14, 8),
                             atol=1e-5)

  # Hand-checkable on the x ramp: a 2 x 2 sub-box reads its moved edges.
  ramp = x_ramp(8, 16, 8)
  layer = make_layer(ramp, crop_size=2, sub_box_size=2)
  set_offset_bias(layer, 0.5, -1.0)
  box = np.array([[[8.0, 20.0, 50.0, 60.0]]], np.float32)
  got = layer(ramp, box).numpy()[0, 0, :, :, 0]
  np.testing.assert_allclose(got, [[16.0, 56.0], [16.0, 56.0]], rtol=1e-5)


def test_deformed_sub_boxes():
  features = random_features(13)
  layer = make_layer(features, offset_scale=0.2)
  set_offset_bias(layer, -1.0, 0.5)
  boxes = np.array([[[10.0, 20.0, 80.0, 55.0]], [[0.0, 0.0, 7.0, 14.0]]],
                   np.float32)
  got = layer.deformed_sub_boxes(features, boxes).numpy()
  assert got.shape == (2, 1, 7, 7, 4)
  # Sub-box (0, 0) spans samples 0..1 of 14: offset (-0.2 * 70, 0.1 * 35).
  np.testing.assert_allclose(
      got[0, 0, 0, 0], [-4.0, 23.5, -4.0 + 70 / 13, 23.5 + 35 / 13],
      rtol=1e-5)
  # Sub-box (6, 6) spans samples 12..13: offset (-0.2 * 7, 0.1 * 14).
  np.testing.assert_allclose(
      got[1, 0, 6, 6], [84 / 13 - 1.4, 168 / 13 + 1.4, 5.6, 15.4],
      rtol=1e-5)
  # Without deformation: the undeformed sub-boxes.
  plain = make_layer(features, use_deformation=False)
  np.testing.assert_allclose(plain.deformed_sub_boxes(features, boxes),
                             roi_crop.sub_box_grid(boxes, 14, 2))


@pytest.mark.parametrize('hidden, crop_size, sub_box_size',
                         [(0, 14, 2), (16, 14, 2), (16, 6, 1)])
def test_gradients_reach_features_and_offset_network(hidden, crop_size,
                                                     sub_box_size):
  features = tf.constant(random_features(14))
  boxes = random_boxes(15, 2, 3, 72, 88)
  weights = tf.constant(np.random.default_rng(16).normal(
      size=(2, 3, crop_size, crop_size, 3)).astype(np.float32))
  layer = make_layer(features, offset_hidden_units=hidden,
                     crop_size=crop_size, sub_box_size=sub_box_size)

  def gradients():
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(layer(features, boxes) * weights)
    return tape.gradient(loss, [features] + layer.trainable_variables)

  # Zero-initialised predictor: its own kernel and bias already learn.
  grads = dict(zip(['features'] + [v.name for v in layer.trainable_variables],
                   gradients()))
  for name, grad in grads.items():
    assert np.all(np.isfinite(grad)), name
  assert np.any(grads['features'] != 0)
  for name, grad in grads.items():
    if 'offset_predictor' in name:
      assert np.any(grad != 0), name

  # Once the predictor is non-zero, every variable gets a gradient.
  kernel, bias = layer.offset_predictor.get_weights()
  layer.offset_predictor.set_weights([
      np.random.default_rng(17).normal(scale=0.01, size=kernel.shape), bias])
  for var, grad in zip(layer.trainable_variables, gradients()[1:]):
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), var.name


def test_no_boxes():
  features = random_features(18)
  layer = make_layer(features)
  out = layer(features, np.zeros((2, 0, 4), np.float32))
  assert out.shape == (2, 0, 14, 14, 3)


def test_config_round_trip():
  layer = roi_crop.DeformableCropAndResize(
      crop_size=8, sub_box_size=4, feature_stride=4, offset_scale=0.2,
      offset_hidden_units=0, use_deformation=True,
      kernel_initializer='glorot_uniform', name='dcr')
  config = layer.get_config()
  for key in ['crop_size', 'sub_box_size', 'feature_stride', 'offset_scale',
              'offset_hidden_units', 'use_deformation', 'kernel_initializer']:
    assert key in config
  restored = roi_crop.DeformableCropAndResize.from_config(config)
  assert restored.get_config() == config
  restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert isinstance(restored, roi_crop.DeformableCropAndResize)
  assert restored.get_config() == config

  features = random_features(19)
  boxes = random_boxes(20, 2, 2, 36, 44)
  expected = layer(features, boxes)
  restored(features, boxes)
  restored.set_weights(layer.get_weights())
  np.testing.assert_allclose(restored(features, boxes), expected, atol=1e-6)


def test_bad_sub_box_size():
  with pytest.raises(ValueError):
    roi_crop.DeformableCropAndResize(crop_size=14, sub_box_size=3)


def test_functional_model():
  features_in = tf_keras.Input((None, None, 3))
  boxes_in = tf_keras.Input((None, 4))
  layer = roi_crop.DeformableCropAndResize(feature_stride=8,
                                           offset_hidden_units=16)
  outputs = layer(features_in, boxes_in)
  assert outputs.shape.as_list() == [None, None, 14, 14, 3]
  model = tf_keras.Model([features_in, boxes_in], outputs)
  features = random_features(21)
  boxes = random_boxes(22, 2, 4, 72, 88)
  np.testing.assert_allclose(model([features, boxes]), layer(features, boxes),
                             atol=1e-6)
  assert model([features, np.zeros((2, 0, 4), np.float32)]).shape == (
      2, 0, 14, 14, 3)
  rebuilt = tf_keras.Model.from_config(model.get_config())
  rebuilt.set_weights(model.get_weights())
  np.testing.assert_allclose(rebuilt([features, boxes]),
                             model([features, boxes]), atol=1e-6)
