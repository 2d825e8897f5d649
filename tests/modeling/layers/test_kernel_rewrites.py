"""kernel_rewrites: 'off' is plain Keras, 'auto' follows the host it is told.

Hosts are described (masklab_tf.host.Host), not patched into TensorFlow:
`kernel_rewrites.scope(mode, host)` makes layers decide for that host.
"""
# pylint: disable=protected-access

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import nn_blocks
from masklab_tf import config as config_lib
from masklab_tf import host as host_lib
from masklab_tf.modeling import factory
from masklab_tf.modeling import precision
from masklab_tf.modeling.heads import rpn_head
from masklab_tf.modeling.layers import atrous_conv
from masklab_tf.modeling.layers import resnet_blocks
from masklab_tf.modeling.layers import kernel_rewrites
from masklab_tf.modeling.layers import tiled_conv

from hosts import EIGEN_HOST
from hosts import GPU_HOST
from hosts import ONEDNN_HOST
from hosts import VOLTA_HOST

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


# --- The host description -------------------------------------------------


def test_host_reads_cpuinfo(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text(
      'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n'
      'model\t\t: 17\nmodel name\t: AMD EPYC 9R14\n'
      'flags\t\t: fpu avx2 avx512f avx512_bf16\n\n'
      'processor\t: 1\nvendor_id\t: Other\n')
  info = host_lib.cpuinfo(str(cpuinfo))
  machine = host_lib.from_cpuinfo(info, onednn=True)
  assert machine == host_lib.Host(
      cpu_vendor='AuthenticAMD', cpu_family=25, cpu_model=17,
      cpu_model_name='AMD EPYC 9R14',
      cpu_flags=frozenset({'fpu', 'avx2', 'avx512f', 'avx512_bf16'}),
      onednn=True)
  assert machine.x86 and machine.cpu_bfloat16 and not machine.accelerators
  assert host_lib.cpu_flags(str(cpuinfo)) == machine.cpu_flags
  assert host_lib.cpuinfo(str(tmp_path / 'absent')) == {}
  assert host_lib.from_cpuinfo({}) == host_lib.Host()
  # The benchmarks word the same facts, in their own format.
  from benchmarks.harness import machine as machine_lib
  assert machine_lib.cpu_details(info) == (
      'family 25 model 17; avx512f, avx512_bf16')


def test_this_host_is_described():
  machine = host_lib.current()
  assert machine is host_lib.current()  # read once
  assert machine.gpus == host_lib.gpus()
  assert isinstance(machine.onednn, bool)
  if sys.platform == 'linux':
    assert machine.cpu_flags == host_lib.cpu_flags()


def test_describing_the_cpu_does_not_import_tensorflow():
  # The benchmark reports describe the machine without TensorFlow.
  code = ('import sys; from masklab_tf import host; host.cpuinfo(); '
          'from benchmarks.harness import machine; machine.describe(); '
          'assert "tensorflow" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


@pytest.mark.parametrize('machine, expected', [
    (ONEDNN_HOST, True),  # AMX
    (host_lib.Host(cpu_flags=frozenset({'avx512_bf16'}), onednn=True), True),
    (host_lib.Host(cpu_flags=frozenset({'avx512_bf16'})), False),
    (GPU_HOST, True),
    (host_lib.Host(gpus=(host_lib.Gpu('A', (8, 0)), host_lib.Gpu('V', (7, 0)))
                   ), False),
    (host_lib.Host(gpus=(host_lib.Gpu('unknown'),)), False),
])
def test_native_bfloat16_reads_the_host(machine, expected):
  assert precision.native_bfloat16(machine) == expected


# --- What 'auto' decides --------------------------------------------------


@pytest.mark.parametrize('machine, expected', [
    (ONEDNN_HOST, kernel_rewrites.ONEDNN_X86),
    (EIGEN_HOST, kernel_rewrites.EIGEN_X86),
    (GPU_HOST, kernel_rewrites.NONE),
    (host_lib.Host(cpu_vendor='GenuineIntel', onednn=True, tpu=True,
                   cpu_flags=frozenset({'avx512f'})), kernel_rewrites.NONE),
    # oneDNN was measured on AVX-512 CPUs only.
    (host_lib.Host(cpu_vendor='AuthenticAMD', onednn=True,
                   cpu_flags=frozenset({'avx2'})), kernel_rewrites.NONE),
    # Not x86 (ARM: no vendor_id), or nothing known.
    (host_lib.Host(onednn=True, cpu_flags=frozenset({'asimd'})),
     kernel_rewrites.NONE),
    (host_lib.Host(), kernel_rewrites.NONE),
])
def test_auto_applies_rewrites_only_where_measured(machine, expected):
  assert kernel_rewrites.resolve('auto', machine) == expected
  assert kernel_rewrites.resolve('off', machine) == kernel_rewrites.NONE


@pytest.mark.parametrize('machine, rewritten', [
    (ONEDNN_HOST, True), (EIGEN_HOST, True), (GPU_HOST, False),
    (VOLTA_HOST, False)])
def test_cpu_rewrites_never_reach_an_accelerator_model(machine, rewritten,
                                                       tiny):
  """The whole model built for a host with a GPU, whatever its CPU, runs
  no CPU kernel rewrite: they were measured on CPUs only. The CPU hosts
  show that the walk finds the layers that would run one."""
  models = factory.build_models(tiny.config(), max_instances=tiny.max_instances,
                                machine=machine)
  found = [module.name for module in models.train_model.submodules
           if getattr(module, '_rewrites', kernel_rewrites.NONE)
           != kernel_rewrites.NONE]
  assert bool(found) == rewritten, found


def test_modes_are_checked():
  for call in (lambda: kernel_rewrites.resolve('on', ONEDNN_HOST),
               lambda: kernel_rewrites.scope('on').__enter__(),
               lambda: atrous_conv.AtrousConv2D(4, 3, kernel_rewrites='on')):
    with pytest.raises(ValueError, match="kernel_rewrites='on'.*'off'"):
      call()
  with pytest.raises(ValueError, match="kernel_rewrites='fast'"):
    factory.build_models(config_lib.ModelConfig(kernel_rewrites='fast'))


def test_scopes_nest_and_unwind():
  assert kernel_rewrites.current_mode() == 'auto'
  with kernel_rewrites.scope('off'):
    assert kernel_rewrites.current_mode() == 'off'
    with kernel_rewrites.scope('auto', GPU_HOST):
      assert kernel_rewrites.for_layer(None) == ('auto', kernel_rewrites.NONE)
      # A layer's own mode wins; 'auto' still decides for the scope's host.
      assert kernel_rewrites.for_layer('off') == ('off', kernel_rewrites.NONE)
    assert kernel_rewrites.current_mode() == 'off'
    with pytest.raises(RuntimeError):
      with kernel_rewrites.scope('auto'):
        raise RuntimeError
    assert kernel_rewrites.current_mode() == 'off'
  assert kernel_rewrites.current_mode() == 'auto'


def test_the_flag_sets_the_mode():
  configs = config_lib.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'),
      ('--kernel_rewrites=off',))
  assert configs.model.kernel_rewrites == 'off'
  assert config_lib.ModelConfig().kernel_rewrites == 'auto'


# --- The layers: 'off' is Keras, 'auto' on a GPU host is Keras ------------


def _op_types(function, spec):
  graph = tf.function(function).get_concrete_function(spec).graph
  return sorted(op.type for op in graph.get_operations())


def _train_step(layer):
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * tf.sin(y))
    return [y] + tape.gradient(loss, [x] + layer.trainable_weights)
  return step


def _same_weights(layer, reference, shape):
  layer.build(shape)
  reference.build(shape)
  rng = np.random.default_rng(3)
  weights = [rng.normal(0, 0.5, w.shape).astype(np.float32)
             for w in reference.get_weights()]
  reference.set_weights(weights)
  layer.set_weights(weights)


def _assert_computes_keras(layer, reference, x, training=True):
  """Same graph ops and exactly the same values and gradients."""
  spec = tf.TensorSpec(x.shape)
  if training:
    actual, expected = _train_step(layer), _train_step(reference)
  else:
    actual = lambda t: layer(t, training=False)
    expected = lambda t: reference(t, training=False)
  assert _op_types(actual, spec) == _op_types(expected, spec)
  for a, e in zip(tf.nest.flatten(actual(x)), tf.nest.flatten(expected(x))):
    np.testing.assert_array_equal(a, e)


# Where ONEDNN_X86 rewrites each layer: sparse taps (7 x 7 at rate 4), the
# native dilated kernel (7 x 7 at rate 2), a pointwise matmul (1x1 in
# training), halo tiles (16 x 16 with 8 px tiles at inference).
CONV_CASES = [
    pytest.param('max_sparse_tap_coverage', [2, 7, 7, 5],
                 dict(kernel_size=3, dilation_rate=4, padding='same'), True,
                 id='sparse_taps'),
    pytest.param('native_dilation', [2, 7, 7, 5],
                 dict(kernel_size=3, dilation_rate=2, padding='same'), True,
                 id='native_dilation'),
    pytest.param('pointwise_matmul', [2, 7, 7, 5],
                 dict(kernel_size=1, use_bias=True, activation='relu'), True,
                 id='pointwise_matmul'),
    pytest.param('halo_tiles', [1, 16, 16, 5],
                 dict(kernel_size=3, padding='same', activation='relu'),
                 False, id='halo_tiles'),
]


def _make(kind, kwargs, filters=4):
  if kind == 'halo':
    return tiled_conv.HaloTiledConv2D(filters, tile_size=8, **kwargs)
  return atrous_conv.AtrousConv2D(filters, **kwargs)


MODES_WITHOUT_REWRITES = pytest.mark.parametrize(
    'mode, machine', [('off', ONEDNN_HOST), ('auto', GPU_HOST)],
    ids=['off', 'auto_with_gpu'])


@MODES_WITHOUT_REWRITES
@pytest.mark.parametrize('name, shape, kwargs, training', CONV_CASES)
def test_conv_layers_compute_keras_conv2d(mode, machine, name, shape, kwargs,
                                          training):
  kind = 'halo' if name == 'halo_tiles' else 'atrous'
  x = tf.random.stateless_normal(shape, seed=[1, 2])
  # The check can fail: on the oneDNN host 'auto' rewrites this call.
  with kernel_rewrites.scope('auto', ONEDNN_HOST):
    rewritten = _make(kind, kwargs)
  assert getattr(rewritten._rewrites, name)
  reference = tf_keras.layers.Conv2D(4, **kwargs)
  _same_weights(rewritten, reference, shape)
  spec = tf.TensorSpec(shape)
  step = (_train_step if training else
          lambda l: (lambda t: l(t, training=False)))
  assert _op_types(step(rewritten), spec) != _op_types(step(reference), spec)

  with kernel_rewrites.scope(mode, machine):
    layer = _make(kind, kwargs)
  assert layer.kernel_rewrites == mode
  assert layer._rewrites == kernel_rewrites.NONE
  _same_weights(layer, reference, shape)
  _assert_computes_keras(layer, reference, x, training)


@MODES_WITHOUT_REWRITES
@pytest.mark.parametrize('training', [True, False])
def test_bottleneck_block_is_model_garden_block(mode, machine, training):
  # 16 x 16: ONEDNN_X86 would run the 1x1 triplets on pixel tiles.
  x = tf.random.stateless_normal([2, 16, 16, 16], seed=[3, 4])
  kwargs = dict(filters=8, strides=1, dilation_rate=2, use_projection=True)
  reference = nn_blocks.BottleneckBlock(**kwargs)
  with kernel_rewrites.scope(mode, machine):
    block = resnet_blocks.AtrousBottleneckBlock(**kwargs)
  reference(x)
  with kernel_rewrites.scope('off' if mode == 'auto' else 'auto'):
    block(x)  # its convs take the block's mode, not the scope's
  convs = [block._shortcut, block._conv1, block._conv2, block._conv3]
  assert {conv.kernel_rewrites for conv in convs} == {mode}
  rng = np.random.default_rng(5)
  weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
             for w in reference.get_weights()]
  reference.set_weights(weights)
  block.set_weights(weights)
  _assert_computes_keras(block, reference, x, training)


def test_rpn_conv_off_is_keras_conv2d():
  features = tf.random.stateless_normal([1, 64, 64, 4], seed=[5, 6])
  heads = {}
  for mode in ('auto', 'off'):
    with kernel_rewrites.scope(mode, ONEDNN_HOST):
      heads[mode] = rpn_head.RpnHead(num_anchors=3, channels=8)
      heads[mode](features)
  assert heads['off'].conv.kernel_rewrites == 'off'
  heads['off'].set_weights(heads['auto'].get_weights())
  reference = tf_keras.layers.Conv2D(8, 3, padding='same', activation='relu')
  reference.build(features.shape)
  reference.set_weights(heads['off'].conv.get_weights())
  _assert_computes_keras(heads['off'].conv, reference, features,
                         training=False)
  # 'auto' on the oneDNN host tiled the 64 x 64 map at inference: same
  # function, other round-off.
  spec = tf.TensorSpec(features.shape)
  assert _op_types(lambda t: heads['auto'].conv(t, training=False),
                   spec) != _op_types(reference, spec)
  for got, want in zip(heads['auto'](features, training=False),
                       heads['off'](features, training=False)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- The mode survives serialization --------------------------------------


@pytest.mark.parametrize('make', [
    lambda **kw: atrous_conv.AtrousConv2D(4, 3, dilation_rate=2, **kw),
    lambda **kw: tiled_conv.HaloTiledConv2D(4, 3, padding='same', **kw),
    lambda **kw: resnet_blocks.AtrousBottleneckBlock(filters=4, strides=1,
                                                   **kw),
], ids=['AtrousConv2D', 'HaloTiledConv2D', 'AtrousBottleneckBlock'])
def test_mode_survives_get_config(make):
  explicit = make(kernel_rewrites='off')
  with kernel_rewrites.scope('off'):
    scoped = make()
  with kernel_rewrites.scope('auto', GPU_HOST):
    auto = make()
  for layer, mode in ((explicit, 'off'), (scoped, 'off'), (auto, 'auto')):
    config = layer.get_config()
    assert config['kernel_rewrites'] == mode
    # Outside any scope, in another scope: the clone keeps its mode, and
    # 'auto' decides again for the host it is made on.
    with kernel_rewrites.scope('auto', ONEDNN_HOST):
      clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    assert clone._rewrites == (kernel_rewrites.NONE if mode == 'off'
                               else kernel_rewrites.ONEDNN_X86)


# --- Checkpoints move between the modes -----------------------------------


def test_off_model_restores_an_auto_checkpoint(tmp_path, tiny):
  models = {}
  for mode in ('auto', 'off'):
    tf_keras.utils.set_random_seed(len(mode))  # other initial weights
    models[mode] = factory.build_models(tiny.config(kernel_rewrites=mode),
                                        max_instances=tiny.max_instances)
  for mode, m in models.items():
    convs = [layer for layer in m.train_model.submodules
             if isinstance(layer, (atrous_conv.AtrousConv2D,
                                   tiled_conv.HaloTiledConv2D))]
    assert convs and {conv.kernel_rewrites for conv in convs} == {mode}
  # Same checkpoint keys, shapes and dtypes...
  paths = {mode: tf.train.Checkpoint(model=m.train_model).save(
      str(tmp_path / mode)) for mode, m in models.items()}
  keys = {mode: [(name, shape) for name, shape in tf.train.list_variables(
      path) if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')]
          for mode, path in paths.items()}
  assert keys['off'] == keys['auto']
  # ... so each restores the other's, every object matched.
  tf.train.Checkpoint(model=models['off'].train_model).restore(
      paths['auto']).assert_consumed()
  for got, want in zip(models['off'].train_model.weights,
                       models['auto'].train_model.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy())
  batch = models['off'].system.model_inputs(tiny.batch(), False)
  got = models['off'].inference_model(batch, training=False)
  want = models['auto'].inference_model(batch, training=False)
  # The backbone and semantic head: same function, other round-off where
  # 'auto' rewrites on this host.
  np.testing.assert_allclose(got['semantic_logits'], want['semantic_logits'],
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('machine, deterministic, gather', [
    (GPU_HOST, True, True), (GPU_HOST, False, False),
    (EIGEN_HOST, True, False)])
def test_deterministic_models_gather_their_crops_on_a_gpu_host(
    machine, deterministic, gather, tiny):
  """CropAndResize's GPU image gradient raises under op determinism
  (determinism.gather_crops): a deterministic model built for a GPU host
  crops RoIs by gathering, and trains without XLA on any host."""
  models = factory.build_models(tiny.config(), max_instances=tiny.max_instances,
                                machine=machine, deterministic=deterministic)
  model = models.train_model
  assert model.get_layer('box_classifier').crop.get_config()['gather'] == gather
  head = model.get_layer('mask_head')
  assert head.gather_crops == gather
  assert head.get_config()['use_xla'] == (not deterministic)
