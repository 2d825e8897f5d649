"""tiled_conv: pixel-tile views and halo-tiled convs compute what Keras does."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import nn_blocks
from masklab_tf.modeling.layers import resnet_blocks
from masklab_tf.modeling.layers import kernel_rewrites
from masklab_tf.modeling.layers import tiled_conv
from hosts import ONEDNN_HOST


def _conv_input_shapes(function, spec):
  graph = tf.function(function).get_concrete_function(spec).graph
  return [tuple(op.inputs[0].shape.as_list())
          for op in graph.get_operations() if op.type == 'Conv2D']


@pytest.mark.parametrize('shape, tiled', [
    ([2, 16, 16, 4], [8, 8, 8, 4]),
    ([1, 24, 8, 4], [3, 8, 8, 4]),
    ([1, 8, 8, 4], None),       # one tile: nothing to gain.
    ([1, 10, 10, 4], None),     # 100 pixels: no whole tiles.
    ([None, 16, 16, 4], None),  # unknown batch.
])
def test_pixel_tiles_view(shape, tiled):
  static = tf.TensorSpec(shape, tf.float32)

  def view(x):
    tiles = tiled_conv.to_pixel_tiles(x)
    if tiled is None:
      assert tiles is None
      return x
    assert tiles.shape.as_list() == tiled
    restored = tiled_conv.from_pixel_tiles(tiles, x)
    assert restored.shape.as_list() == x.shape.as_list()
    return restored

  function = tf.function(view).get_concrete_function(static)
  if None not in shape:
    value = tf.random.stateless_normal(shape, seed=[1, 1])
    np.testing.assert_array_equal(function(value), value)


def _block_outputs_and_grads(block, x, training):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = block(x, training=training)
    loss = tf.reduce_sum(y * tf.sin(y))
  return [y, *tape.gradient(loss, [x] + block.trainable_weights)]


@pytest.mark.parametrize('strides, training', [
    (1, True), (1, False), (2, True), (2, False)])
def test_bottleneck_block_on_pixel_tiles_is_model_garden_block(strides,
                                                               training):
  # 16 x 16: the 1x1 convs see 8 x 8 tiles (checked below), and at stride
  # 2 the 8 x 8 output after conv2 keeps conv3 on the map.
  x = tf.random.stateless_normal([2, 16, 16, 16], seed=[3, 4])
  kwargs = dict(filters=8, strides=strides, use_projection=True)
  reference = nn_blocks.BottleneckBlock(**kwargs)
  # Tiles are reshapes: the rewrite is tested whatever this host is.
  with kernel_rewrites.scope('auto', ONEDNN_HOST):
    block = resnet_blocks.AtrousBottleneckBlock(**kwargs)
    block(x)
  reference(x)
  rng = np.random.default_rng(5)
  weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
             for w in reference.get_weights()]
  reference.set_weights(weights)
  block.set_weights(weights)
  for actual, expected in zip(
      _block_outputs_and_grads(block, x, training),
      _block_outputs_and_grads(reference, x, training)):
    # Sums over 512 pixels in another order: tolerance against the scale.
    scale = max(1.0, float(tf.reduce_max(tf.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=1e-4,
                               atol=2e-5 * scale)
  # Batch norm's moving statistics moved alike.
  for actual, expected in zip(block.get_weights(), reference.get_weights()):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  shapes = _conv_input_shapes(lambda t: block(t, training=training),
                              tf.TensorSpec(x.shape))
  # conv1 (and the stride-1 shortcut) on 2 * 16 * 16 / 64 tiles, conv2 on
  # the map; at stride 2 the shortcut strides the map and conv3 sees 8 x 8.
  if training:
    # The stride-1 1x1 convs train as matmuls (AtrousConv2D); conv2 and a
    # strided shortcut stay convs on the map.
    assert sorted(shapes) == ([(2, 16, 16, 8)] if strides == 1 else
                              [(2, 16, 16, 8), (2, 16, 16, 16)])
    return
  assert shapes.count((8, 8, 8, 16)) == (2 if strides == 1 else 1)
  assert (2, 16, 16, 8) in shapes
  assert ((8, 8, 8, 8) if strides == 1 else (2, 8, 8, 8)) in shapes


def _tiled_and_reference(x_shape, **kwargs):
  """HaloTiledConv2D(tile_size=8, **kwargs) with the halo-tile rewrite on,
  whatever this host is, and Keras's Conv2D(**kwargs), same weights."""
  reference = tf_keras.layers.Conv2D(**kwargs)
  with kernel_rewrites.scope('auto', ONEDNN_HOST):
    layer = tiled_conv.HaloTiledConv2D(tile_size=8, **kwargs)
  reference.build(x_shape)
  layer.build(x_shape)
  rng = np.random.default_rng(6)
  layer.set_weights([rng.normal(size=w.shape).astype(np.float32)
                     for w in reference.get_weights()])
  reference.set_weights(layer.get_weights())
  return layer, reference


@pytest.mark.parametrize('shape, kwargs, tiles', [
    # 2 x 2 tiles of 8 px, halo 1.
    ([1, 16, 16, 3], dict(kernel_size=3), (4, 10, 10, 3)),
    # 21 x 35: 2 x 4 tiles of 11 x 9 (padded to 22 x 36), halo 2 x 1.
    ([2, 21, 35, 3], dict(kernel_size=(5, 3), activation='relu'),
     (16, 15, 11, 3)),
    # Dilated: halo 1 * rate 2 = 2 on 2 x 3 tiles of 8 px.
    ([1, 16, 24, 3], dict(kernel_size=3, dilation_rate=2), (6, 12, 12, 3)),
])
def test_halo_tiled_conv_is_keras_conv_at_inference(shape, kwargs, tiles):
  layer, reference = _tiled_and_reference(shape, filters=5, padding='same',
                                          **kwargs)
  x = tf.random.stateless_normal(shape, seed=[7, 8])
  np.testing.assert_allclose(layer(x, training=False),
                             reference(x, training=False),
                             rtol=1e-4, atol=1e-4)
  spec = tf.TensorSpec(shape)
  assert _conv_input_shapes(lambda t: layer(t, training=False),
                            spec) == [tiles]
  # Training, unknown sizes and one-tile maps run Keras's conv (a dilated
  # one through SpaceToBatchND).
  for call_spec, training in ((spec, True), (tf.TensorSpec([1, None, None, 3]),
                                             False),
                              (tf.TensorSpec([1, 15, 15, 3]), False)):
    assert _conv_input_shapes(
        lambda t, training=training: layer(t, training=training),
        call_spec) == _conv_input_shapes(reference, call_spec)


def test_halo_tiled_conv_keeps_the_plain_conv_where_tiles_do_not_fit():
  for kwargs in (dict(kernel_size=2, padding='same'),
                 dict(kernel_size=3, padding='valid'),
                 dict(kernel_size=3, padding='same', strides=2)):
    layer, _ = _tiled_and_reference([1, 16, 16, 3], filters=4, **kwargs)
    assert _conv_input_shapes(lambda t, layer=layer: layer(t, training=False),
                              tf.TensorSpec([1, 16, 16, 3])) == [
                                  (1, 16, 16, 3)]


def test_halo_tiled_conv_config_round_trip():
  layer = tiled_conv.HaloTiledConv2D(8, 3, padding='same', tile_size=24,
                                     name='conv')
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert isinstance(clone, tiled_conv.HaloTiledConv2D)
  assert clone.get_config() == layer.get_config()
  assert clone.tile_size == 24
  assert clone.kernel_rewrites == 'auto'  # outside any scope
  with pytest.raises(ValueError, match='tile_size'):
    tiled_conv.HaloTiledConv2D(8, 3, tile_size=0)
