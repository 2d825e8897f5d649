"""AtrousConv2D / AtrousBottleneckBlock: Keras's function, native kernels."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import nn_blocks
from masklab_tf.modeling.layers import atrous_conv
from masklab_tf.modeling.layers import resnet_blocks
from masklab_tf.modeling.layers import kernel_rewrites
from masklab_tf.modeling.backbones import resnet as backbone_lib
from hosts import EIGEN_HOST
from hosts import ONEDNN_HOST

requires_native = pytest.mark.skipif(
    not kernel_rewrites.resolve('auto').native_dilation,
    reason='no native dilated kernels under kernel_rewrites=auto here '
    '(no oneDNN, or a GPU): AtrousConv2D keeps the SpaceToBatchND path')


def _value_and_grads(layer, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    loss = tf.reduce_sum(y * tf.sin(y))
  return [y] + tape.gradient(loss, [x, layer.kernel])


def _layer_and_reference(input_shape, **kwargs):
  """AtrousConv2D(**kwargs) and Keras's Conv2D(**kwargs), same weights."""
  reference = tf_keras.layers.Conv2D(**kwargs)
  layer = atrous_conv.AtrousConv2D(**kwargs)
  reference.build(input_shape)
  layer.build(input_shape)
  layer.set_weights(reference.get_weights())
  return layer, reference


def _assert_same_as_keras_conv2d(x, **kwargs):
  """AtrousConv2D(**kwargs) with Conv2D's weights: same values, gradients."""
  layer, reference = _layer_and_reference(x.shape, **kwargs)
  for actual, expected in zip(_value_and_grads(layer, x),
                              _value_and_grads(reference, x)):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
  return layer


def _op_types(function, *args):
  graph = tf.function(function).get_concrete_function(*args).graph
  return {op.type for op in graph.get_operations()}


def _train_graph_ops(conv, spec):
  def step(images):
    with tf.GradientTape() as tape:
      tape.watch(images)
      loss = tf.reduce_sum(conv(images, training=True))
    return tape.gradient(loss, [images, conv.kernel])
  return _op_types(step, spec)


@pytest.mark.parametrize('rate, padding, strides', [
    (2, 'same', 1), (4, 'same', 1), (3, 'valid', 1), (1, 'same', 2)])
def test_same_values_and_gradients_as_keras_conv2d(rate, padding, strides):
  x = tf.random.stateless_normal([2, 13, 11, 5], seed=[1, 2])
  _assert_same_as_keras_conv2d(x, filters=4, kernel_size=3, padding=padding,
                               strides=strides, dilation_rate=rate)


@requires_native
def test_dilated_conv_and_its_gradients_skip_space_to_batch():
  # Rate 2 on 7 x 7: 4 px SpaceToBatchND tiles, 66 % of the taps inside
  # the map (sparse taps take rate 4 there).
  layer = atrous_conv.AtrousConv2D(4, 3, padding='same', dilation_rate=2)
  reference = tf_keras.layers.Conv2D(4, 3, padding='same', dilation_rate=2)
  x = tf.TensorSpec([2, 7, 7, 5], tf.float32)
  for conv in (layer, reference):
    conv.build(x.shape)

  # The reference proves the check can fail: Keras goes through
  # SpaceToBatchND.
  assert 'SpaceToBatchND' in _train_graph_ops(reference, x)
  ops = _train_graph_ops(layer, x)
  assert not ops & {'SpaceToBatchND', 'BatchToSpaceND'}
  assert {'Conv2DBackpropFilter', 'Conv2DBackpropInput'} <= ops


@pytest.mark.parametrize('size, kernel_size, rate', [
    ((7, 7), (3, 3), (4, 4)), ((7, 7), (3, 3), (8, 8)),
    ((7, 5), (3, 5), (4, 2)), ((13, 11), (5, 5), (3, 3))])
def test_sparse_taps_equal_the_dilated_conv(size, kernel_size, rate):
  """Values and both gradients, where padding holds most of the taps."""
  assert atrous_conv.tap_coverage(*size, kernel_size, rate) <= (
      kernel_rewrites.ONEDNN_X86.max_sparse_tap_coverage)
  x = tf.random.stateless_normal([2, *size, 5], seed=[7, 8])
  # Sparse taps are matmuls: they run on any host, whichever it is said to
  # be.
  with kernel_rewrites.scope('auto', ONEDNN_HOST):
    layer = _assert_same_as_keras_conv2d(
        x, filters=4, kernel_size=kernel_size, padding='same',
        dilation_rate=rate)
  ops = _train_graph_ops(layer, tf.TensorSpec([None, *size, 5]))
  assert 'MatMul' in ops
  assert not ops & {'Conv2D', 'Conv2DBackpropFilter', 'Conv2DBackpropInput',
                    'SpaceToBatchND'}


def test_tap_coverage_counts_the_taps_inside_the_map():
  # 7 px, 3 taps at rate 4: the centre reads 7 outputs, each side 3.
  assert atrous_conv.tap_coverage(7, 7, (3, 3), (4, 4)) == pytest.approx(
      (13 / 21)**2)
  assert atrous_conv.tap_coverage(7, 7, (3, 3), (8, 8)) == pytest.approx(
      1 / 9)
  # 64 px at rate 1: only the border rows and columns read padding.
  assert atrous_conv.tap_coverage(64, 64, (3, 3), (1, 1)) == pytest.approx(
      (190 / 192)**2)


def test_dense_taps_and_unknown_sizes_keep_the_conv():
  layer = atrous_conv.AtrousConv2D(4, 3, padding='same', dilation_rate=2)
  layer.build([None, None, None, 5])
  # 32 x 32 at rate 2: 92 % of the taps read the map.
  for spec in ([2, 32, 32, 5], [2, None, None, 5]):
    assert 'MatMul' not in _train_graph_ops(layer, tf.TensorSpec(spec))


@pytest.mark.parametrize('native', [True, False])
def test_sparse_taps_reach_further_without_native_dilated_kernels(native):
  """On 7 x 7 crops rate 2 (66 % of the taps in the map) runs as taps only
  where the conv would take SpaceToBatchND, rate 4 (38 %) on both; 32 x 32
  at rate 2 (92 %) and undilated convs keep the conv on both."""
  machine = ONEDNN_HOST if native else EIGEN_HOST
  with kernel_rewrites.scope('auto', machine):
    for size, rate, taps in ((7, 2, not native), (7, 4, True),
                             (7, 1, False), (32, 2, False)):
      layer = atrous_conv.AtrousConv2D(4, 3, padding='same',
                                       dilation_rate=rate)
      layer.build([None, size, size, 5])
      ops = _train_graph_ops(layer, tf.TensorSpec([2, size, size, 5]))
      assert ('Conv2D' not in ops) == taps, (size, rate)
    if not native:  # (faking native kernels on a host without them fails)
      x = tf.random.stateless_normal([2, 7, 7, 5], seed=[3, 4])
      _assert_same_as_keras_conv2d(x, filters=4, kernel_size=3,
                                   padding='same', dilation_rate=2)


@pytest.mark.parametrize('use_bias, activation', [(False, None),
                                                  (True, 'relu')])
def test_pointwise_conv_trains_as_a_matmul(use_bias, activation):
  """Same values and gradients as Conv2D; matmul in training only."""
  x = tf.random.stateless_normal([3, 7, 7, 6], seed=[9, 10])
  # Matmuls run anywhere: the rewrite is tested whatever this host is.
  with kernel_rewrites.scope('auto', ONEDNN_HOST):
    layer, reference = _layer_and_reference(
        x.shape, filters=4, kernel_size=1, use_bias=use_bias,
        activation=activation, bias_initializer='random_normal')
    strided = atrous_conv.AtrousConv2D(4, 1, strides=2)
  for training in (True, False):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      actual = layer(x, training=training)
      expected = reference(x, training=training)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(tape.gradient(actual, [x] + layer.weights),
                    tape.gradient(expected, [x] + reference.weights)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  spec = tf.TensorSpec([None, 7, 7, 6])
  train_ops = _train_graph_ops(layer, spec)
  assert 'MatMul' in train_ops and 'Conv2D' not in train_ops
  assert 'Conv2D' in _op_types(lambda x: layer(x, training=False), spec)
  # The training flag reaches it from an enclosing model's call.
  model = tf_keras.Sequential([tf_keras.Input([7, 7, 6]), layer])
  assert 'MatMul' in _op_types(lambda x: model(x, training=True), spec)
  strided.build(x.shape)
  assert 'MatMul' not in _op_types(lambda x: strided(x, training=True), spec)


def test_conv_config_round_trip():
  layer = atrous_conv.AtrousConv2D(8, 3, padding='same', dilation_rate=2,
                                   name='conv')
  config = layer.get_config()
  assert config['kernel_rewrites'] == 'auto'  # outside any scope
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert isinstance(clone, atrous_conv.AtrousConv2D)
  assert clone.get_config() == config


@pytest.mark.parametrize('rate', [1, 2])
def test_bottleneck_block_is_model_garden_block(rate):
  """Same variables, names and order, same function as nn_blocks'
  BottleneckBlock: what lets its checkpoints load."""
  x = tf.random.stateless_normal([2, 9, 9, 16], seed=[3, 4])
  kwargs = dict(filters=8, strides=1, dilation_rate=rate,
                use_projection=True, norm_epsilon=1e-5)
  reference = nn_blocks.BottleneckBlock(**kwargs)
  block = resnet_blocks.AtrousBottleneckBlock(**kwargs)
  reference(x)
  block(x)
  assert [(w.name.split('/')[-1], w.shape) for w in reference.weights] == [
      (w.name.split('/')[-1], w.shape) for w in block.weights]
  rng = np.random.default_rng(5)
  weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
             for w in reference.get_weights()]
  reference.set_weights(weights)
  block.set_weights(weights)
  np.testing.assert_allclose(block(x, training=False),
                             reference(x, training=False),
                             rtol=1e-4, atol=1e-4)
  clone = resnet_blocks.AtrousBottleneckBlock.from_config(block.get_config())
  assert clone.get_config() == block.get_config()


@requires_native
def test_only_small_static_maps_skip_space_to_batch():
  model = backbone_lib.build_backbone(50, 8, (1, 2, 4))
  call = lambda images: model(images, training=False)
  # 64 px: res4 and res5 are 8 x 8 (tiles of 4, 2, 1, 1 px at rates 2, 4,
  # 8, 16).
  assert 'SpaceToBatchND' not in _op_types(
      call, tf.TensorSpec([1, 64, 64, 3], tf.float32))
  # 256 px: 32 x 32 at rate 2 leaves 16 px tiles; unknown sizes keep the
  # detour too.
  for spec in ([1, 256, 256, 3], [1, None, None, 3]):
    assert 'SpaceToBatchND' in _op_types(call, tf.TensorSpec(spec))


def test_bottleneck_block_refuses_what_it_does_not_rebuild():
  block = resnet_blocks.AtrousBottleneckBlock(filters=8, strides=1,
                                            se_ratio=0.25)
  with pytest.raises(ValueError, match='se_ratio=0.25'):
    block(tf.zeros([1, 4, 4, 32]))
