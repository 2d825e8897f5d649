"""Models from configs and checkpoints, for every system of the registry.

Code that trains, restores or evaluates a model comes through here and
holds the returned `Models` (with their `system`) without knowing which
system it is.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf import determinism
from masklab_tf import host as host_lib
from masklab_tf.modeling import precision as precision_lib
from masklab_tf.modeling.layers import kernel_rewrites
from masklab_tf.modeling.systems import base
from masklab_tf.modeling.systems import registry


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
                 precision: str = '',
                 machine: host_lib.Host | None = None,
                 deterministic: bool = False,
                 portable: bool = False) -> base.Models:
  """The models of the system cfg.mask_head names.

  Args:
    cfg: the model config.
    geometry: direction geometry and mask crop size.
    max_instances: ground-truth slots per image.
    image_shape: static padded (height, width), or Nones for any size.
    use_xla: compile the assembling layer's core with XLA.
    precision: '', 'mixed_bfloat16', 'mixed_float16' or 'auto'
      (TrainConfig.mixed_precision; precision.resolve decides 'auto' for
      the host). Geometry (anchors, proposals, sampling, NMS, box decoding)
      stays float32 under the mixed policies.
    machine: the host 'auto' precision, 'auto' kernel rewrites and
      deterministic crops decide for; None: this one. Tests describe other
      hosts (a GPU's) with it.
    deterministic: build for repeatable training (TrainConfig.deterministic,
      determinism.py): the assembling layers without XLA, and on a GPU host
      RoI crops by gathering.
    portable: build the export graph of the ONNX export (serving/
      onnx_export.py): the assembling layers without XLA (tf2onnx cannot
      convert an XLA cluster), RoI crops by gathering (tf2onnx converts
      CropAndResize into a loop of one Resize per box, which was 46 % of
      ONNX Runtime's time on masklab_r50_fast at 512 px), the detections'
      portable NMS, float32 whatever `precision` says (ONNX Runtime's CPU
      kernels have no bfloat16), and no kernel rewrites (measured for TensorFlow's kernels, not ONNX Runtime's,
      which fuses plain convolutions with their batch norms). Same weights,
      same detections as the fast graph (tested).

  The convolution layers take cfg.kernel_rewrites (kernel_rewrites.scope).
  """
  system = registry.get_system(cfg, geometry)
  # Keras runs every custom layer's call through AutoGraph while it builds
  # the functional graphs; none of them needs it (their loops and branches
  # are tf.while_loop / tf.cond / tf.where), and converting them was most
  # of the time a process took to build shapes_cpu.
  build = tf.autograph.experimental.do_not_convert(system.build)
  gather_crops = determinism.gather_crops(deterministic, machine) or portable
  use_xla = use_xla and determinism.use_xla(deterministic) and not portable
  policy = '' if portable else precision_lib.resolve(precision,
                                                      machine=machine)
  with (precision_scope(policy),
        kernel_rewrites.scope('off' if portable else cfg.kernel_rewrites,
                              machine)):
    return build(max_instances, image_shape, use_xla, gather_crops, portable)


def restore_models(configs: config_lib.Configs, checkpoint: str,
                   portable: bool = False) -> base.Models:
  """The models of `configs` with a bin/train checkpoint's weights (the
  optimizer's and the step's are left out), computing in
  configs.train.mixed_precision (bin/evaluate / bin/export
  --mixed_precision=mixed_bfloat16). The assembling layers keep XLA even
  for a deterministic run: only their gradient differed between processes
  (determinism.py). `portable`: the ONNX export graph (build_models)."""
  models = build_models(configs.model, configs.geometry,
                        configs.data.max_instances,
                        precision=configs.train.mixed_precision,
                        portable=portable)
  tf.train.Checkpoint(model=models.train_model).restore(
      checkpoint).expect_partial().assert_existing_objects_matched()
  return models
