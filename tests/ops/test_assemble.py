"""Position-sensitive assembling against numpy, crop_and_resize and XLA."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.data import targets
from masklab_tf.ops import assemble
from masklab_tf.ops import crop
from masklab_tf.ops import direction

CROP = 41


def numpy_bilinear(image, y, x):
  """Sample of image [H, W] at pixel-index (y, x); 0 off the pixel centres."""
  height, width = image.shape
  if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
    return 0.0
  y0, x0 = int(np.floor(y)), int(np.floor(x))
  y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
  dy, dx = y - y0, x - x0
  top = (1 - dx) * image[y0, x0] + dx * image[y0, x1]
  bottom = (1 - dx) * image[y1, x0] + dx * image[y1, x1]
  return (1 - dy) * top + dy * bottom


def numpy_assemble(features, boxes, channel_map, offsets, stride):
  """Independent float64 model of the op, straight from its definition."""
  batch, _, _, channels = features.shape
  crop_height, crop_width = channel_map.shape
  out = np.zeros([batch, boxes.shape[1], crop_height, crop_width])
  for b in range(batch):
    for n in range(boxes.shape[1]):
      ymin, xmin, ymax, xmax = np.asarray(boxes[b, n], np.float64) / stride
      for i in range(crop_height):
        # Continuous position of sample i; pixel k's centre is at k + 0.5.
        y = ymin + i * (ymax - ymin) / (crop_height - 1) - 0.5
        for j in range(crop_width):
          x = xmin + j * (xmax - xmin) / (crop_width - 1) - 0.5
          c = np.clip(offsets[b, n] + channel_map[i, j], 0, channels - 1)
          out[b, n, i, j] = numpy_bilinear(features[b, :, :, c], y, x)
  return out


def crop_and_select(features, boxes, channel_map, offsets, stride):
  """The definition in TF: crop all C channels, then pick one per pixel."""
  shape = tf.shape(features)
  batch, num = tf.shape(boxes)[0], tf.shape(boxes)[1]
  crops = tf.image.crop_and_resize(
      features,
      tf.reshape(crop.to_crop_and_resize_boxes(boxes / stride, shape[1],
                                               shape[2]), [-1, 4]),
      tf.repeat(tf.range(batch), num), channel_map.shape,
      extrapolation_value=0.0)
  crops = tf.reshape(crops, tf.concat([[batch, num], tf.shape(crops)[1:]], 0))
  selected = offsets[:, :, None, None] + channel_map
  return tf.gather(crops, selected, batch_dims=4)


def random_boxes(rng, batch, num, image_height, image_width):
  """Boxes of 1..60 % of the image, some partly or wholly outside it."""
  size = rng.uniform(0.01, 0.6, [batch, num, 2]) * [image_height, image_width]
  corner = rng.uniform(-0.3, 1.0, [batch, num, 2]) * [image_height,
                                                      image_width]
  return np.concatenate([corner, corner + size], -1).astype(np.float32)


def random_inputs(rng, batch=2, num=5, height=9, width=11, channels=32,
                  stride=8, crop_size=(CROP, CROP), max_offset=0):
  features = rng.normal(size=[batch, height, width, channels])
  boxes = random_boxes(rng, batch, num, height * stride, width * stride)
  channel_map = rng.integers(0, channels - max_offset, crop_size)
  offsets = rng.integers(0, max_offset + 1, [batch, num])
  return (features.astype(np.float32), boxes, channel_map.astype(np.int32),
          offsets.astype(np.int32))


@pytest.mark.parametrize('stride', [1, 8, 16])
@pytest.mark.parametrize('op', [assemble.assemble, assemble.assemble_xla],
                         ids=['plain', 'xla'])
def test_matches_numpy(op, stride):
  rng = np.random.default_rng(stride)
  features, boxes, channel_map, offsets = random_inputs(
      rng, crop_size=(7, 5), max_offset=8, stride=stride)
  got = op(features, boxes, channel_map, offsets, stride)
  assert got.shape == (2, 5, 7, 5)
  want = numpy_assemble(features, boxes, channel_map, offsets, stride)
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize('op', [assemble.assemble, assemble.assemble_xla],
                         ids=['plain', 'xla'])
def test_special_boxes_match_numpy(op):
  rng = np.random.default_rng(0)
  features = rng.normal(size=[1, 6, 7, 3]).astype(np.float32)
  boxes = np.array([[
      [10.0, 12.0, 10.0, 12.0],    # zero size: every sample at one point
      [10.0, 12.0, 10.0, 30.0],    # zero height
      [20.0, 20.0, 21.5, 20.9],    # much smaller than one feature pixel
      [-40.0, -40.0, 80.0, 90.0],  # covers the map and beyond on all sides
      [-30.0, 60.0, -2.0, 90.0],   # wholly outside: all zeros
      [4.0, 4.0, 44.0, 52.0],      # edges on the border pixel centres
  ]], np.float32)
  channel_map = rng.integers(0, 3, [5, 6]).astype(np.int32)
  offsets = np.zeros([1, 6], np.int32)
  got = op(features, boxes, channel_map, offsets, 8).numpy()
  want = numpy_assemble(features, boxes, channel_map, offsets, 8)
  np.testing.assert_allclose(got, want, atol=1e-4)
  assert np.all(got[0, 4] == 0)
  # Box 5 samples the border pixel centres exactly, so its corners are
  # the corner pixels themselves.
  assert got[0, 5, 0, 0] == pytest.approx(
      features[0, 0, 0, channel_map[0, 0]], abs=1e-6)
  assert got[0, 5, -1, -1] == pytest.approx(
      features[0, -1, -1, channel_map[-1, -1]], abs=1e-6)


@pytest.mark.parametrize('num', [0, 1, 3])
def test_box_count_varies(num):
  rng = np.random.default_rng(num)
  features, boxes, channel_map, offsets = random_inputs(
      rng, num=num, crop_size=(4, 4))
  for op in (assemble.assemble, assemble.assemble_xla):
    got = op(features, boxes, channel_map, offsets, 8)
    assert got.shape == (2, num, 4, 4)
    np.testing.assert_allclose(
        got, numpy_assemble(features, boxes, channel_map, offsets, 8),
        atol=1e-4)


def test_single_sample_is_the_box_centre():
  rng = np.random.default_rng(2)
  features, boxes, channel_map, offsets = random_inputs(
      rng, crop_size=(1, 1), max_offset=4)
  want = crop_and_select(features, boxes, channel_map, offsets, 8)
  for op in (assemble.assemble, assemble.assemble_xla):
    np.testing.assert_allclose(op(features, boxes, channel_map, offsets, 8),
                               want, atol=1e-4)


def test_out_of_range_channels_are_clamped():
  features = np.arange(2 * 2 * 3, dtype=np.float32).reshape([1, 2, 2, 3])
  boxes = np.array([[[0.5, 0.5, 1.5, 1.5]]] * 2, np.float32).reshape(1, 2, 4)
  channel_map = np.zeros([2, 2], np.int32)
  offsets = np.array([[-5, 7]], np.int32)
  for op in (assemble.assemble, assemble.assemble_xla):
    got = op(features, boxes, channel_map, offsets, 1).numpy()
    np.testing.assert_allclose(got[0, 0], features[0, :, :, 0])
    np.testing.assert_allclose(got[0, 1], features[0, :, :, 2])


def loss_and_gradient(op, features, boxes, channel_map, offsets, stride):
  """Value and d(sum(out * w)) / d features for a fixed random w."""
  weights = tf.constant(np.random.default_rng(7).normal(
      size=[boxes.shape[0], boxes.shape[1], *channel_map.shape]), tf.float32)
  features = tf.convert_to_tensor(features)
  with tf.GradientTape() as tape:
    tape.watch(features)
    out = op(features, boxes, channel_map, offsets, stride)
    loss = tf.reduce_sum(out * weights)
  return out, tape.gradient(loss, features)


@tf.function(jit_compile=True)
def xla_value_and_gradient(features, boxes, channel_map, offsets):
  """Forward and backward in one XLA cluster: the gradient compiles too."""
  return loss_and_gradient(assemble.assemble, features, boxes, channel_map,
                           offsets, 8)


def test_values_and_gradients_match_crop_and_resize():
  rng = np.random.default_rng(3)
  features, boxes, _, offsets = random_inputs(rng, max_offset=0)
  channel_map = direction.pooling_index_map(CROP).numpy()
  want, want_grad = loss_and_gradient(crop_and_select, features, boxes,
                                      channel_map, offsets, 8)
  assert np.abs(want_grad.numpy()).sum() > 0
  for op in (assemble.assemble, assemble.assemble_xla):
    got, got_grad = loss_and_gradient(op, features, boxes, channel_map,
                                      offsets, 8)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-4)
  got, got_grad = xla_value_and_gradient(features, boxes, channel_map,
                                         offsets)
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got_grad, want_grad, atol=1e-4)


def test_grid_offsets_match_crop_and_resize():
  # FCIS-style: class c reads maps c * k^2 ... c * k^2 + k^2 - 1.
  rng = np.random.default_rng(4)
  grid = 3
  features, boxes, _, _ = random_inputs(rng, channels=4 * grid * grid,
                                        crop_size=(14, 14))
  channel_map = assemble.grid_channel_map(14, grid).numpy()
  offsets = rng.integers(0, 4, [2, 5]).astype(np.int32) * grid * grid
  want = crop_and_select(features, boxes, channel_map, offsets, 8)
  for op in (assemble.assemble, assemble.assemble_xla):
    np.testing.assert_allclose(
        op(features, boxes, channel_map, offsets, 8), want, atol=1e-4)


def test_half_precision_is_computed_in_float32():
  rng = np.random.default_rng(5)
  features, boxes, channel_map, offsets = random_inputs(rng,
                                                        crop_size=(6, 6))
  want = assemble.assemble(features, boxes, channel_map, offsets, 8)
  for dtype in (tf.bfloat16, tf.float16):
    half = tf.cast(features, dtype)
    got = assemble.assemble_xla(half, boxes, channel_map, offsets, 8)
    assert got.dtype == dtype
    np.testing.assert_allclose(tf.cast(got, tf.float32), want, atol=0.05)


def test_grid_channel_map():
  np.testing.assert_array_equal(
      assemble.grid_channel_map(4, 2),
      [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  cells = assemble.grid_channel_map(41, 7).numpy()
  assert cells.dtype == np.int32
  assert cells[0, 0] == 0 and cells[-1, -1] == 48 and cells[0, -1] == 6
  # Every cell is used, by 5 or 6 rows and columns of the crop.
  counts = np.bincount(cells.ravel(), minlength=49)
  assert set(counts) <= {25, 30, 36}


@pytest.mark.parametrize('kind', ['direction', 'constant', 'grid'])
def test_layer_config_round_trip(kind):
  layer = assemble.PositionSensitiveAssemble(
      crop_size=9, feature_stride=8, channel_map_kind=kind, grid_size=3,
      use_xla=False, name='pool')
  config = layer.get_config()
  for key in ('crop_size', 'feature_stride', 'channel_map_kind',
              'num_directions', 'num_distance_bins', 'grid_size', 'use_xla'):
    assert key in config
  clone = assemble.PositionSensitiveAssemble.from_config(config)
  assert clone.get_config() == config
  restored = tf_keras.layers.deserialize(
      tf_keras.layers.serialize(layer))
  assert isinstance(restored, assemble.PositionSensitiveAssemble)
  assert restored.get_config() == config
  np.testing.assert_array_equal(restored.channel_map, layer.channel_map)


@pytest.mark.parametrize('kind, expected_map', [
    ('direction', lambda: direction.pooling_index_map(9, 8, 4)),
    ('constant', lambda: np.zeros([9, 9], np.int32)),
    ('grid', lambda: assemble.grid_channel_map(9, 3)),
])
def test_layer_uses_its_channel_map(kind, expected_map):
  rng = np.random.default_rng(6)
  features, boxes, _, _ = random_inputs(rng, crop_size=(9, 9))
  offsets = rng.integers(0, 4, [2, 5]).astype(np.int32)
  np.testing.assert_array_equal(
      assemble.PositionSensitiveAssemble(9, 8, kind, grid_size=3).channel_map,
      expected_map())
  for use_xla in (True, False):
    layer = assemble.PositionSensitiveAssemble(9, 8, kind, grid_size=3,
                                               use_xla=use_xla)
    want = assemble.assemble(features, boxes, layer.channel_map, offsets, 8)
    np.testing.assert_allclose(layer(features, boxes, offsets), want,
                               atol=1e-5)
    zero = assemble.assemble(features, boxes, layer.channel_map,
                             np.zeros_like(offsets), 8)
    np.testing.assert_allclose(layer(features, boxes), zero, atol=1e-5)


def test_layer_in_functional_model():
  features = tf_keras.Input([None, None, 32])
  boxes = tf_keras.Input([None, 4])
  classes = tf_keras.Input([None], dtype=tf.int32)
  direction_pool = assemble.PositionSensitiveAssemble(
      CROP, 8, 'direction', name='direction_pool')
  semantic_pick = assemble.PositionSensitiveAssemble(
      CROP, 8, 'constant', use_xla=False, name='semantic_pick')
  outputs = [direction_pool(features, boxes),
             semantic_pick(features, boxes, classes)]
  model = tf_keras.Model([features, boxes, classes], outputs)
  assert model.output_shape == [(None, None, CROP, CROP)] * 2

  rng = np.random.default_rng(8)
  inputs = [rng.normal(size=[2, 12, 10, 32]).astype(np.float32),
            random_boxes(rng, 2, 3, 96, 80),
            rng.integers(0, 32, [2, 3]).astype(np.int32)]
  pooled, picked = model(inputs)
  assert pooled.shape == picked.shape == (2, 3, CROP, CROP)
  np.testing.assert_allclose(
      picked, crop_and_select(inputs[0], inputs[1],
                              np.zeros([CROP, CROP], np.int32), inputs[2], 8),
      atol=1e-4)

  clone = tf_keras.models.model_from_json(model.to_json())
  for a, b in zip(clone(inputs), model(inputs)):
    np.testing.assert_allclose(a, b)


def test_layer_mixed_precision_autocasts_features_only():
  layer = assemble.PositionSensitiveAssemble(5, 8, 'direction',
                                             dtype='mixed_bfloat16')
  rng = np.random.default_rng(9)
  features, boxes, _, _ = random_inputs(rng, crop_size=(5, 5))
  got = layer(features, boxes)
  assert got.dtype == tf.bfloat16
  want = assemble.assemble(features, boxes, layer.channel_map,
                           np.zeros([2, 5], np.int32), 8)
  np.testing.assert_allclose(tf.cast(got, tf.float32), want, atol=0.05)


def test_layer_rejects_unknown_kind():
  with pytest.raises(ValueError, match='channel_map_kind'):
    assemble.PositionSensitiveAssemble(9, 8, 'diagonal')


# Geometry (docs/design.md, "One geometry"): pooling one-hot "ideal" direction
# logits of an isolated instance over its own box must reproduce its mask.

def ellipse_mask(size, centre_y, centre_x, radius_y, radius_x):
  ys, xs = np.mgrid[0:size, 0:size] + 0.5
  return (((ys - centre_y) / radius_y) ** 2 +
          ((xs - centre_x) / radius_x) ** 2 <= 1).astype(np.uint8)


def tight_box(mask):
  ys, xs = np.nonzero(mask)
  return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1],
                  np.float32)


def pooled_mask_iou(masks, boxes, logit=10.0):
  """IoU per instance of thresholded pooled ideal logits vs the mask crop.

  Args:
    masks: uint8 [K, H, W], one isolated instance per image.
    boxes: float32 [K, 4], the box that targets and pooling both use.
  """
  logits = []
  for mask, box in zip(masks, boxes):
    labels = targets.dense_targets(mask[None], box[None], tf.constant([1]),
                                   tf.constant([False]))['direction_labels']
    # The ignore label 255 one-hots to all zeros: background is -logit.
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), 32)
    logits.append(logit * (2.0 * one_hot - 1.0))
  pool = assemble.PositionSensitiveAssemble(CROP, 1, 'direction')
  pooled = pool(tf.stack(logits), boxes[:, None]).numpy()[:, 0]
  # Ties (a sample exactly half inside) count as inside on both sides.
  got = pooled >= 0.0
  want = crop.crop_masks(masks, boxes, CROP).numpy() >= 0.5
  return (got & want).sum((1, 2)) / (got | want).sum((1, 2))


def test_ideal_direction_logits_reproduce_pixel_aligned_mask():
  # A mask of exactly S x S pixels pooled over the box through its border
  # pixels' centres: the S samples per axis sit on the S pixel centres, so
  # no sample mixes two pixels and only float ties at exact bin borders
  # (targets.py and direction.py round differently there) can miss.
  circle = ellipse_mask(64, 30.5, 32.5, 20.5, 20.5)
  square = np.zeros([64, 64], np.uint8)
  square[5:5 + CROP, 7:7 + CROP] = 1
  masks = np.stack([circle, square])
  boxes = np.stack([tight_box(m) for m in masks])
  np.testing.assert_array_equal(boxes[:, 2:] - boxes[:, :2], CROP)
  aligned = boxes + np.array([0.5, 0.5, -0.5, -0.5], np.float32)
  iou = pooled_mask_iou(masks, aligned)
  print('pixel-aligned S x S IoU (circle, square):', iou)
  assert np.all(iou > 0.99)
  # With the tight edge-to-edge box the samples step 41/40 pixels and drift
  # from pixel centres to pixel edges, so bin borders mix channels.
  iou = pooled_mask_iou(masks, boxes)
  print('tight S x S IoU (circle, square):', iou)
  assert np.all(iou > 0.9)


def test_ideal_direction_logits_reproduce_random_ellipses():
  rng = np.random.default_rng(0)
  masks = []
  for _ in range(20):
    radius_y, radius_x = rng.uniform(10, 45, 2)
    centre_y = rng.uniform(radius_y + 1, 99 - radius_y)
    centre_x = rng.uniform(radius_x + 1, 99 - radius_x)
    masks.append(ellipse_mask(100, centre_y, centre_x, radius_y, radius_x))
  masks = np.stack(masks)
  boxes = np.stack([tight_box(m) for m in masks])
  iou = pooled_mask_iou(masks, boxes)
  print(f'random ellipses IoU: mean {iou.mean():.4f} min {iou.min():.4f}')
  # Every miss is a sample near a bin border, where bilinear sampling of
  # one-hot logits mixes channels.
  assert iou.mean() > 0.9
  assert iou.min() > 0.85


@pytest.mark.parametrize('height, width, num, crop_size', [
    (9, 11, 5, 41),    # small map, many samples
    (48, 64, 1, 3),    # large map, few samples
], ids=['small_map', 'large_map'])
def test_map_and_crop_sizes_match_crop_and_resize(height, width, num,
                                                  crop_size):
  rng = np.random.default_rng(11)
  features, boxes, channel_map, offsets = random_inputs(
      rng, num=num, height=height, width=width, crop_size=(crop_size,) * 2)
  want, want_grad = loss_and_gradient(crop_and_select, features, boxes,
                                      channel_map, offsets, 8)
  for op in (assemble.assemble, assemble.assemble_xla):
    got, got_grad = loss_and_gradient(op, features, boxes, channel_map,
                                      offsets, 8)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-4)
