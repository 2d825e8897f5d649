"""Atrous ResNet backbone, duplicate conv5 block and checkpoint loading.

The weight mapping is proven against Model Garden's own ResNet: randomly
initialised ones (random BN statistics too) are written in both checkpoint
layouts, loaded into our backbone at output stride 32, and both models must
give the same features. Depths stay small (10, 18, 26) and images 64 px so
the file runs in well under a minute on 2 CPU cores.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling import backbones as mg_backbones
from official.vision.modeling import classification_model
from official.vision.modeling.layers import nn_blocks
from masklab_tf.modeling import checkpoints as checkpoints_lib
from masklab_tf.modeling.backbones import resnet as backbone_lib
from masklab_tf.modeling.layers import resnet_blocks

EPSILON = 1e-5  # Our default; Model Garden's ResNet must use the same.
LEVELS = {'res2': '2', 'res3': '3', 'res4': '4', 'res5': '5'}


def _randomize(model, seed):
  """Random weights, with positive BN variances, so no mapping is trivial."""
  rng = np.random.default_rng(seed)
  for w in model.weights:
    values = rng.normal(0.0, 0.1, w.shape)
    if 'moving_variance' in w.name:
      values = rng.uniform(0.5, 1.5, w.shape)
    elif 'gamma' in w.name:
      values = rng.uniform(0.8, 1.2, w.shape)
    w.assign(values.astype(np.float32))


def _dilations(model, unit_prefix):
  """[[dilation of each 3x3 conv] for each unit f'{unit_prefix}_unit{i}']."""
  return [[sub.dilation_rate[0] for sub in layer._flatten_layers()
           if isinstance(sub, tf_keras.layers.Conv2D)
           and sub.kernel_size == (3, 3)]
          for layer in model.layers
          if layer.name.startswith(unit_prefix + '_unit')]


def _images(seed, size=64):
  return tf.random.stateless_normal([2, size, size, 3], seed=[seed, 0])


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """{depth: (Model Garden ResNet, checkpoint path)} for depths 18 and 26.

  Depth 18 is written as Model Garden's image classification trainer writes
  it (Checkpoint(model=ClassificationModel)); depth 26 holds the ResNet
  directly as Checkpoint(backbone=...), saved into a directory (the path
  given to the loader is the directory).
  """
  root = tmp_path_factory.mktemp('resnet_ckpt')
  resnet18 = mg_backbones.ResNet(model_id=18, norm_epsilon=EPSILON)
  _randomize(resnet18, seed=1)
  classifier = classification_model.ClassificationModel(
      resnet18, num_classes=7,
      input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]))
  path18 = tf.train.Checkpoint(model=classifier).write(
      str(root / 'classification' / 'ckpt'))
  resnet26 = mg_backbones.ResNet(model_id=26, norm_epsilon=EPSILON)
  _randomize(resnet26, seed=2)
  tf.train.Checkpoint(backbone=resnet26).save(str(root / 'backbone' / 'ckpt'))
  return {18: (resnet18, path18), 26: (resnet26, str(root / 'backbone'))}


@pytest.fixture(scope='module')
def loaded18(checkpoints):
  """Depth-18 backbone (output stride 8, multi-grid (1, 2, 4)) and two
  duplicate conv5 blocks, rates (1, 2, 4) and (1,), all loaded at once."""
  backbone = backbone_lib.build_backbone(18, 8, (1, 2, 4))
  conv5 = backbone_lib.build_conv5_block(18, rates=(1, 2, 4))
  second = backbone_lib.build_conv5_block(18, rates=(1,), name='second_res5')
  report = checkpoints_lib.load_resnet_checkpoint(
      backbone, checkpoints[18][1], 18, conv5_blocks=[conv5, second])
  return backbone, conv5, second, report


@pytest.mark.parametrize('depth, output_stride', [
    (10, 8), (10, 16), (10, 32), (18, 16)])
def test_endpoint_strides_and_channels(depth, output_stride):
  model = backbone_lib.build_backbone(depth, output_stride)
  outputs = model(tf.zeros([2, 64, 96, 3]), training=False)
  expected_strides = {'conv1': 2, 'res2': 4, 'res3': 8,
                      'res4': min(16, output_stride), 'res5': output_stride}
  expected_channels = {'conv1': 64, 'res2': 64, 'res3': 128, 'res4': 256,
                       'res5': 512}
  assert backbone_lib.endpoint_strides(output_stride) == expected_strides
  assert backbone_lib.endpoint_channels(depth) == expected_channels
  assert set(outputs) == set(expected_strides)
  for name, tensor in outputs.items():
    stride = expected_strides[name]
    assert tensor.shape == (2, 64 // stride, 96 // stride,
                            expected_channels[name]), name
  # Atrous rates replace the strides given up: res4 at rate 2 for output
  # stride 8, res5 at 32 / output_stride.
  assert set(np.ravel(_dilations(model, 'res4'))) == {
      2 if output_stride == 8 else 1}
  assert set(np.ravel(_dilations(model, 'res5'))) == {32 // output_stride}


@pytest.mark.parametrize('depth, output_stride, multigrid, expected', [
    (26, 8, (1, 2, 4), [[4, 4], [8, 8], [16, 16]]),   # MaskLab Table 5
    (18, 32, (1, 2, 1), [[1, 1], [2, 2]]),  # plain strides, 2 units
])
def test_multigrid_rates(depth, output_stride, multigrid, expected):
  model = backbone_lib.build_backbone(depth, output_stride, multigrid)
  # Basic blocks: both 3x3 convs of a unit take its rate.
  assert _dilations(model, 'res5') == expected
  first_unit_strides = [layer._strides for layer in model.layers
                        if layer.name.endswith('_unit1')]
  assert first_unit_strides == [1, 2, 1 if output_stride == 8 else 2,
                                2 if output_stride == 32 else 1]


def test_unsupported_arguments():
  with pytest.raises(ValueError, match='depth 12'):
    backbone_lib.build_backbone(12)
  with pytest.raises(ValueError, match='output_stride'):
    backbone_lib.build_backbone(10, output_stride=4)
  with pytest.raises(ValueError, match='stride and dilate'):
    resnet_blocks.AtrousResidualBlock(filters=8, strides=2, dilation_rate=2)


@pytest.mark.parametrize('depth', [18, 26])
def test_loaded_backbone_matches_model_garden(checkpoints, depth):
  resnet, path = checkpoints[depth]
  ours = backbone_lib.build_backbone(depth, output_stride=32)
  report = checkpoints_lib.load_resnet_checkpoint(ours, path, depth)
  assert not report['unmatched_ours']
  assert not report['unmatched_checkpoint']
  assert len(report['matched']) == len(ours.weights) == len(resnet.weights)
  images = _images(depth)
  expected = resnet(images, training=False)
  actual = ours(images, training=False)
  for stage, level in LEVELS.items():
    np.testing.assert_allclose(actual[stage], expected[level], atol=1e-4,
                               rtol=1e-4, err_msg=stage)


def test_atrous_backbone_loads_same_weights(checkpoints, loaded18):
  """Atrous rates do not change shapes: output stride 8 gets the same
  weights, and features before the first dilated stage are unchanged."""
  resnet, _ = checkpoints[18]
  backbone, _, _, report = loaded18
  assert len(backbone.weights) == len(resnet.weights)
  for ours, theirs in zip(backbone.weights, resnet.weights):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  assert report['matched'][:2] == [f'{backbone.name}/conv1_conv/kernel:0',
                                   f'{backbone.name}/conv1_bn/gamma:0']
  images = _images(0)
  actual = backbone(images, training=False)
  expected = resnet(images, training=False)
  for stage in ('res2', 'res3'):
    np.testing.assert_allclose(actual[stage], expected[LEVELS[stage]],
                               atol=1e-4, rtol=1e-4)
  assert actual['res5'].shape == (2, 8, 8, 512)


def test_conv5_blocks_load_res5_weights(checkpoints, loaded18):
  resnet, _ = checkpoints[18]
  backbone, conv5, second, report = loaded18
  assert not report['unmatched_ours']
  assert not report['unmatched_checkpoint']
  assert len(report['matched']) == (
      len(backbone.weights) + len(conv5.weights) + len(second.weights))
  res5_weights = [w for layer in backbone.layers
                  if layer.name.startswith('res5_unit') for w in layer.weights]
  for block in (conv5, second):
    assert len(block.weights) == len(res5_weights)
    for ours, theirs in zip(block.weights, res5_weights):
      assert ours is not theirs  # Own variables, same initial values.
      np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  assert _dilations(conv5, 'box_classifier_res5') == [[1, 1], [2, 2]]
  assert _dilations(second, 'second_res5') == [[1, 1], [1, 1]]
  assert [w.shape for w in resnet.layers[-3].weights + resnet.layers[-2].weights
         ] == [w.shape for w in conv5.weights]


def test_conv5_block_shapes():
  conv5 = backbone_lib.build_conv5_block(10, rates=(1, 2, 4))
  crops = tf.random.stateless_normal([3, 7, 7, 256], seed=[0, 1])
  assert conv5(crops, training=False).shape == (3, 7, 7, 512)
  conv5 = backbone_lib.build_conv5_block(50, name='r50_res5')
  assert conv5.input_shape == (None, None, None, 1024)
  assert conv5.output_shape == (None, None, None, 2048)
  assert len(_dilations(conv5, 'r50_res5')) == 3


def test_load_errors(checkpoints, tmp_path):
  model = backbone_lib.build_backbone(10, 32)
  missing = str(tmp_path / 'no_such_ckpt')
  with pytest.raises(FileNotFoundError, match='no_such_ckpt'):
    checkpoints_lib.load_resnet_checkpoint(model, missing, 10)
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    checkpoints_lib.load_resnet_checkpoint(model, str(tmp_path), 10)
  # A depth-18 checkpoint holds no ResNet-10.
  with pytest.raises(ValueError, match='ResNet-10'):
    checkpoints_lib.load_resnet_checkpoint(model, checkpoints[18][1], 10)


def test_residual_block_config_round_trip():
  block = resnet_blocks.AtrousResidualBlock(
      filters=32, strides=1, dilation_rate=2, use_projection=True,
      kernel_regularizer=tf_keras.regularizers.L2(1e-4), norm_epsilon=1e-5,
      name='block')
  config = block.get_config()
  clone = resnet_blocks.AtrousResidualBlock.from_config(config)
  assert clone.get_config() == config
  x = tf.random.stateless_normal([2, 9, 9, 16], seed=[1, 2])
  y = block(x, training=False)
  assert y.shape == (2, 9, 9, 32)
  clone(x)
  clone.set_weights(block.get_weights())
  np.testing.assert_allclose(clone(x, training=False), y, atol=1e-6)


@pytest.mark.parametrize('strides', [1, 2])
def test_residual_block_at_rate_1_is_model_garden_block(strides):
  """Same variables, in the same order, and the same function as
  nn_blocks.ResidualBlock: what lets checkpoints map layer by layer."""
  x = tf.random.stateless_normal([2, 10, 10, 16], seed=[3, 4])
  reference = nn_blocks.ResidualBlock(filters=32, strides=strides,
                                      use_projection=True)
  reference(x)
  _randomize(reference, seed=5)
  block = resnet_blocks.AtrousResidualBlock(filters=32, strides=strides,
                                           use_projection=True)
  block(x)
  assert [w.shape for w in reference.weights] == [
      w.shape for w in block.weights]
  assert [w.name.split('/')[-1] for w in reference.weights] == [
      w.name.split('/')[-1] for w in block.weights]
  block.set_weights(reference.get_weights())
  np.testing.assert_allclose(block(x, training=False),
                             reference(x, training=False), atol=1e-5)


def test_model_json_round_trip():
  model = backbone_lib.build_backbone(10, 8, (1, 2, 4))
  clone = tf_keras.models.model_from_json(model.to_json())
  clone.set_weights(model.get_weights())
  images = _images(7)
  expected = model(images, training=False)
  actual = clone(images, training=False)
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)
  assert _dilations(clone, 'res4') == _dilations(model, 'res4') == [[2, 2]]


def test_resnet50_parameter_count():
  # Model Garden's ResNet-50 backbone has 23,561,152 parameters (BN
  # statistics included); atrous rates add none.
  model = backbone_lib.build_backbone(50, 8)
  assert model.count_params() == 23_561_152
  assert model.output_shape['res4'] == (None, None, None, 1024)
  assert model.output_shape['res5'] == (None, None, None, 2048)
