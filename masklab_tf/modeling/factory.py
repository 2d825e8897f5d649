"""The systems of the seed papers behind one interface for training,
evaluation and export.

MaskLab, FCIS and BiSeg are one Faster R-CNN model whose mask head comes
from the registry (modeling/mask_heads.py); InstanceFCN has no box branch
and is a model of its own (modeling/instancefcn.py). Both build the same
pair of functional graphs (MaskLabModels): a training graph whose outputs
`compute_losses` reads, and an inference graph with the detection outputs
(num_detections, detection_boxes / classes / scores / masks). Code that
trains, restores or evaluates a model goes through here and never needs to
know which system it holds.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling.layers import kernel_rewrites
from masklab_tf.modeling.systems import instancefcn
from masklab_tf.modeling.systems import masklab
from masklab_tf.modeling import precision as precision_lib

INSTANCEFCN = 'instancefcn'


def is_instancefcn(cfg: config_lib.ModelConfig) -> bool:
  return cfg.mask_head == INSTANCEFCN


def class_agnostic(cfg: config_lib.ModelConfig) -> bool:
  """Whether the model makes class-agnostic segment proposals (evaluate by
  average recall) rather than class-labelled detections (COCO AP)."""
  return is_instancefcn(cfg)


def needs_full_masks(cfg: config_lib.ModelConfig) -> bool:
  """Whether training reads full-image instance masks (gt_masks): InstanceFCN
  crops its targets from them over windows no box fixes in advance."""
  return is_instancefcn(cfg)


@contextlib.contextmanager
def precision_scope(policy: str):
  """Keras layers built inside compute in `policy` ('' = float32 / the
  global policy as it is); the global policy is put back afterwards.

  A layer keeps the policy it was built with, so the model runs in it
  while code built later (another model in the same process, a test) is
  untouched. Variables stay float32 under the mixed policies, so
  checkpoints are the same whatever policy trained or restores them.
  """
  if not policy:
    yield
    return
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def build_models(cfg: config_lib.ModelConfig,
                 geometry: config_lib.GeometryConfig | None = None,
                 max_instances: int = 100, image_shape: tuple = (None, None),
                 use_xla: bool = True,
                 precision: str = '') -> masklab.MaskLabModels:
  """The system's models; `precision`: '', 'mixed_bfloat16',
  'mixed_float16' or 'auto' (TrainConfig.mixed_precision; precision.resolve
  decides 'auto' for this host). Geometry (anchors, proposals, sampling,
  NMS, box decoding) stays float32 under the mixed policies. The
  convolution layers take cfg.kernel_rewrites (kernel_rewrites.scope)."""
  build = (instancefcn.build_instancefcn if is_instancefcn(cfg)
           else masklab.build_masklab)
  # Keras runs every custom layer's call through AutoGraph while it builds
  # the functional graphs; none of them needs it (their loops and branches
  # are tf.while_loop / tf.cond / tf.where), and converting them was ~5 of
  # the ~7.5 s a process took to build shapes_cpu.
  build = tf.autograph.experimental.do_not_convert(build)
  with (precision_scope(precision_lib.resolve(precision)),
        kernel_rewrites.scope(cfg.kernel_rewrites)):
    return build(cfg, geometry, max_instances, image_shape, use_xla)


def compute_losses(outputs: dict, batch: dict,
                   cfg: config_lib.ModelConfig) -> dict:
  module = instancefcn if is_instancefcn(cfg) else masklab
  return module.compute_losses(outputs, batch, cfg)


def model_inputs(batch: dict, training: bool,
                 cfg: config_lib.ModelConfig) -> dict:
  module = instancefcn if is_instancefcn(cfg) else masklab
  return module.model_inputs(batch, training)


def restore_models(configs: config_lib.Configs,
                   checkpoint: str) -> masklab.MaskLabModels:
  """The models of `configs` with a bin/train checkpoint's weights (the
  optimizer's and the step's are left out), computing in
  configs.train.mixed_precision (bin/evaluate / bin/export
  --mixed_precision=mixed_bfloat16)."""
  models = build_models(configs.model, configs.geometry,
                        configs.data.max_instances,
                        precision=configs.train.mixed_precision)
  tf.train.Checkpoint(model=models.train_model).restore(
      checkpoint).expect_partial().assert_existing_objects_matched()
  return models
