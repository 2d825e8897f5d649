"""Mixed precision: the networks compute in bfloat16, geometry in float32."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.modeling import factory
from hosts import EIGEN_HOST, GPU_HOST, ONEDNN_HOST, VOLTA_HOST

POLICY = 'mixed_bfloat16'


def test_masklab_trains_and_infers_in_bfloat16(tiny):
  cfg = tiny.config()
  models = factory.build_models(cfg, max_instances=tiny.max_instances,
                                precision=POLICY)
  # The policy is the model's, not the process's.
  assert tf_keras.mixed_precision.global_policy().name == 'float32'
  model = models.train_model
  assert model.get_layer('mask_head').compute_dtype == 'bfloat16'
  # bfloat16 has 8 significant bits: a 500 px box would move by pixels.
  for name in ('anchors', 'proposals', 'rpn_targets', 'roi_sampler'):
    assert model.get_layer(name).compute_dtype == 'float32', name

  batch = tiny.batch()
  with tf.GradientTape() as tape:
    outputs = model(models.system.model_inputs(batch, True), training=True)
    losses = models.system.compute_losses(outputs, batch)
  assert outputs['class_logits'].dtype == tf.bfloat16
  assert outputs['rois'].dtype == tf.float32
  for name, value in losses.items():
    assert value.dtype == tf.float32 and np.isfinite(value.numpy()), name
  grads = tape.gradient(losses['total'], model.trainable_variables)
  # Variables (and so checkpoints) stay float32.
  assert {v.dtype for v in model.trainable_variables} == {tf.float32}
  assert all(g is not None and g.dtype == tf.float32 for g in grads)

  out = models.inference_model(models.system.model_inputs(batch, False),
                               training=False)
  for name in ('detection_boxes', 'detection_scores', 'detection_masks',
               'semantic_logits'):
    assert out[name].dtype == tf.float32, name
  masks = out['detection_masks'].numpy()
  assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize('head', ['biseg', 'instancefcn'])
def test_other_systems_build_in_bfloat16(head, tiny):
  """Both met dtype clashes once (a float32 resize; float32 windows)."""
  cfg = tiny.config(mask_head=head)
  models = factory.build_models(cfg, max_instances=tiny.max_instances,
                                precision=POLICY)
  out = models.inference_model(
      models.system.model_inputs(tiny.batch(), False), training=False)
  assert out['detection_boxes'].dtype == tf.float32
  assert out['detection_masks'].dtype == tf.float32


def test_auto_precision_follows_the_host(tmp_path):
  from masklab_tf import host
  from masklab_tf.modeling import precision
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n')
  assert host.cpu_flags(str(cpuinfo)) >= host.CPU_BFLOAT16_FLAGS
  assert host.cpu_flags(str(tmp_path / 'absent')) == frozenset()
  # Named policies pass through; unknown ones name the choices.
  assert precision.resolve('mixed_float16') == 'mixed_float16'
  assert precision.resolve('') == ''
  with pytest.raises(ValueError, match="mixed_precision='bf16'.*'auto'"):
    precision.resolve('bf16')
  # 'auto' is a mixed policy exactly where the host has the units: oneDNN's
  # bfloat16 needs both the units and oneDNN on; GPUs bfloat16 from Ampere,
  # float16 from Volta, whatever the CPU; every GPU must have them.
  bf16_units = frozenset({'avx512f', 'avx512_bf16'})
  a100, v100, p100 = (host.Gpu('A100', (8, 0)), host.Gpu('V100', (7, 0)),
                      host.Gpu('P100', (6, 0)))
  for machine, expected in (
      (host.Host(cpu_flags=bf16_units, onednn=True), 'mixed_bfloat16'),
      (host.Host(cpu_flags=bf16_units, onednn=False), ''),
      (host.Host(cpu_flags=frozenset({'avx2'}), onednn=True), ''),
      (host.Host(cpu_flags=frozenset({'avx2'}), gpus=(a100,)),
       'mixed_bfloat16'),
      (host.Host(cpu_flags=bf16_units, onednn=True, gpus=(v100,)),
       'mixed_float16'),
      (host.Host(gpus=(a100, v100)), 'mixed_float16'),
      (host.Host(cpu_flags=bf16_units, onednn=True, gpus=(p100,)), ''),
      (host.Host(gpus=(host.Gpu('other vendor'),)), '')):
    assert precision.resolve('auto', machine=machine) == expected, machine
    assert precision.native_bfloat16(machine) == (
        expected == 'mixed_bfloat16'), machine


@pytest.mark.parametrize('machine, expected', [
    (ONEDNN_HOST, 'bfloat16'), (EIGEN_HOST, 'float32'),
    (GPU_HOST, 'bfloat16'), (VOLTA_HOST, 'float16')])
def test_fast_config_builds_in_the_precision_auto_picks(machine, expected,
                                                        tiny):
  from masklab_tf import config as config_lib
  configs = config_lib.from_flagfile('configs/masklab_r50_fast.flags')
  assert configs.train.mixed_precision == 'auto'
  models = factory.build_models(tiny.config(),
                                max_instances=tiny.max_instances,
                                precision=configs.train.mixed_precision,
                                machine=machine)
  assert models.train_model.get_layer('mask_head').compute_dtype == expected
  assert tf_keras.mixed_precision.global_policy().name == 'float32'
