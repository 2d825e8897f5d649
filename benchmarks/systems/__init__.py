"""The systems the benchmarks compare, behind one interface.

An adapter module (masklab.py, model_garden.py) has
  inference(system, size, settings) -> {function, make_args(batch) -> its
    arguments, backbone, backbone_args(args) -> the backbone's, info,
    count_detections(outputs) -> valid detections of image 0};
  training(system, size, settings, pattern, scratch_dir) -> {dataset,
    step(batch) -> total loss, image_shape(batch), info};
on random weights (speed depends on shapes, not values), 80 object classes,
at most 100 detections; `flops` below counts a function's FLOPs. Optional
settings the adapters read: 'precision' (a tf_keras policy name, 'float32'
included) over the system's own, 'train_batch' (default TRAIN_BATCH),
'use_xla' (MaskLab's assembling layers, default on) and 'extra_flags'
(MaskLab) / 'model_overrides' (Model Garden): smaller models for smoke
tests.
torchvision.py does the same in its own process, under another interpreter
(`python -m benchmarks.systems.torchvision`): this module imports only the
standard library at its top.
"""

from __future__ import annotations

import importlib

NAMES = {
    'masklab_os16': 'MaskLab R50, OS 16',
    'masklab_os8': 'MaskLab R50, OS 8',
    'masklab_fast_fp32': 'MaskLab R50 fast, float32',
    'masklab_fast': 'MaskLab R50 fast, bfloat16',
    'model_garden': 'Model Garden R50-FPN',
    'model_garden_bf16': 'Model Garden R50-FPN, bfloat16',
    'torchvision': 'torchvision Mask R-CNN R50-FPN (PyTorch)',
    'torchvision_finetune': 'torchvision Mask R-CNN R50-FPN, fine-tuning '
                            'recipe (frozen BN, stem, layer1)',
}
DEFAULT = ('masklab_os16', 'masklab_os8', 'masklab_fast', 'model_garden')
# Run by torchvision.py, each with the arguments that make it.
TORCHVISION = {'torchvision': (), 'torchvision_finetune': ('--fine_tune',)}
TRAIN_BATCH = 2
# Op types that only move shapes and handles: not worth naming among the
# ops the profiler leaves out.
_METADATA_OPS = frozenset((
    'Const Identity IdentityN NoOp Placeholder ReadVariableOp Shape ShapeN '
    'Size Rank Reshape StridedSlice Slice Pack Unpack ExpandDims Squeeze '
    'Range Fill StopGradient BroadcastArgs Prod').split())
# Counted op types doing the bulk of the work: one without a static shape
# would silently lose its FLOPs.
_HEAVY_OPS = frozenset(('Conv2D', 'MatMul', 'BatchMatMulV2',
                        'DepthwiseConv2dNative'))


def adapter(system: str):
  """The module that builds `system` (not the torchvision ones)."""
  if system not in NAMES or system in TORCHVISION:
    raise ValueError(f'no TensorFlow adapter for {system!r}')
  name = 'masklab' if system.startswith('masklab') else 'model_garden'
  return importlib.import_module(f'benchmarks.systems.{name}')


def profile_flops(concrete_function) -> dict:
  """FLOPs of a concrete function's graph by the TF profiler (multiply-add
  = 2 FLOPs; only op types with a registered count, mostly convolutions and
  matmuls; nested function calls such as XLA clusters hide their bodies).

  Returns:
    {gflops, by_op: {op type: GFLOPs}, uncounted: {op type: million output
    elements} of the op types it does not count, unknown_shape_ops: heavy
    ops whose count may be missing for want of a static shape}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph = concrete_function.graph
  builder = tf.compat.v1.profiler.ProfileOptionBuilder
  options = builder(builder.float_operation()).with_empty_output().build()
  profile = tf.compat.v1.profiler.profile(graph, cmd='op', options=options)
  # The 'op' view nests types; each type's own count is its float_ops.
  by_op, pending = {}, list(profile.children)
  while pending:
    node = pending.pop()
    pending.extend(node.children)
    if node.float_ops:
      by_op[node.name] = by_op.get(node.name, 0.0) + node.float_ops / 1e9
  uncounted, unknown = {}, []
  for op in graph.get_operations():
    if op.type in _HEAVY_OPS and not all(
        output.shape.is_fully_defined() for output in op.outputs):
      unknown.append(op.name)
    if op.type not in by_op and op.type not in _METADATA_OPS:
      uncounted[op.type] = uncounted.get(op.type, 0.0) + sum(
          output.shape.num_elements() for output in op.outputs
          if output.shape.is_fully_defined()) / 1e6
  return {'gflops': profile.total_float_ops / 1e9, 'by_op': by_op,
          'uncounted': uncounted, 'unknown_shape_ops': unknown}


def flops(function) -> dict:
  """`profile_flops` of a tf.function, condensed for a speed row."""
  profile = profile_flops(function.get_concrete_function())
  uncounted = sorted(profile['uncounted'].items(), key=lambda kv: -kv[1])
  return {'gflops': profile['gflops'],
          'unknown_shape_ops': len(profile['unknown_shape_ops']),
          'uncounted_top': uncounted[:6]}
