"""Where MaskLab's inference time and FLOPs go, part by part.

Usage:
  python benchmarks/model_cost.py [--flagfile_path=configs/...flags]
      [--image_size=512] [--num_detections=100] [--repeats=3]
      [--output_stride=16]

The per-box parts (the duplicated conv5 block on every proposal, the
hypercolumn refinement on every detection) are where MaskLab's cost lies, so
an optimisation of the assembling layer alone (benchmarks/assemble.py) has to
be read against this split. The model is built from a config flags file
(max_detections overridden; test_num_proposals as configured) with random
weights: time and FLOPs depend on shapes, not on values. Four tf.functions
over the inference model's own layers, hence the same weights, each run one
part on the outputs of the parts before it, at static shapes, batch 1:

  backbone:        image -> normalised -> endpoints (conv1 ... res5);
  RPN:             rpn_head on res4, anchors, proposals (test settings);
  box classifier:  conv5 on res4 crops of every proposal + 'detections';
  mask branch:     mask_head(endpoints, boxes, classes) on random valid
                   boxes of realistic sizes, one per detection.

The whole inference model is timed as well; it adds what no part holds (the
mask sigmoid, the semantic map's upsampling and argmax). Timings are medians
of interleaved calls after one warm-up (tracing and XLA compilation
excluded). FLOPs come from the TF profiler on each function's graph, which
counts a multiply-add as 2 FLOPs and only op types with a registered FLOP
count (convolutions, matmuls, a few element-wise ops); the ops it leaves out
(crop_and_resize, gathers, batch norm, NMS, XLA-compiled calls, ...) are
listed under the table with the size of their outputs.
"""

import os
import statistics
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from masklab_tf import config as config_lib
from masklab_tf.modeling import factory
from masklab_tf.modeling import precision as precision_lib

PARTS = ('backbone', 'RPN', 'box classifier', 'mask branch')

# Op types that only move shapes and handles around: no arithmetic, no
# memory traffic worth naming among the ops the profiler leaves out.
_METADATA_OPS = frozenset({
    'Const', 'Identity', 'IdentityN', 'NoOp', 'Placeholder', 'ReadVariableOp',
    'Shape', 'ShapeN', 'Size', 'Rank', 'Reshape', 'StridedSlice', 'Slice',
    'Pack', 'Unpack', 'ExpandDims', 'Squeeze', 'Range', 'Fill', 'StopGradient',
    'BroadcastArgs', 'Prod'})
# Op types whose FLOPs the profiler counts and that do the bulk of the work;
# one of them with an unknown shape would silently lose its FLOPs.
_HEAVY_OPS = frozenset({'Conv2D', 'MatMul', 'BatchMatMulV2',
                        'DepthwiseConv2dNative'})


def _random_boxes(rng, num_boxes, image_size):
  """Valid boxes of detection-like sizes: sides log-uniform in 16 px ..
  3/4 of the image at aspect ratios 1:2 .. 2:1, anywhere inside it."""
  area = np.exp(rng.uniform(np.log(16.0), np.log(0.75 * image_size),
                            num_boxes)) ** 2
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), num_boxes))
  height = np.minimum(np.sqrt(area * aspect), image_size - 1.0)
  width = np.minimum(np.sqrt(area / aspect), image_size - 1.0)
  ymin = rng.uniform(0.0, 1.0, num_boxes) * (image_size - height)
  xmin = rng.uniform(0.0, 1.0, num_boxes) * (image_size - width)
  boxes = np.stack([ymin, xmin, ymin + height, xmin + width], -1)
  return boxes[np.newaxis].astype(np.float32)


def _spec(tensor):
  return tf.TensorSpec(tensor.shape, tensor.dtype)


def _part_functions(models, image, image_size, boxes, classes):
  """One static-shape tf.function per part, plus the whole model.

  Each part's inputs are the previous parts' real outputs, so the RPN and the
  box classifier see the proposals this model makes.

  Returns:
    (functions, args): dicts keyed by PARTS and 'whole model'.
  """
  model = models.inference_model
  normalize = model.get_layer('normalize')
  rpn_head = model.get_layer('rpn_head')
  anchors_layer = model.get_layer('anchors')
  proposals_layer = model.get_layer('proposals')
  classifier = model.get_layer('box_classifier')
  detections = model.get_layer('detections')
  mask_head = model.get_layer('mask_head')

  def backbone(image):
    return models.backbone(normalize(image), training=False)

  def rpn(res4, image_size):
    scores, deltas = rpn_head(res4)
    proposals, _ = proposals_layer(scores, deltas, anchors_layer(res4),
                                   image_size, training=False)
    return proposals

  def box_classifier(res4, proposals, image_size):
    logits, deltas = classifier(res4, proposals, training=False)
    return detections(logits, deltas, proposals, image_size)

  def mask_branch(endpoints, boxes, classes):
    return mask_head(endpoints, boxes, classes, training=False)

  def whole(inputs):
    return model(inputs, training=False)

  functions, args = {}, {}
  functions['backbone'] = tf.function(
      backbone, input_signature=[_spec(image)])
  args['backbone'] = (image,)
  endpoints = functions['backbone'](image)
  res4 = endpoints['res4']

  functions['RPN'] = tf.function(
      rpn, input_signature=[_spec(res4), _spec(image_size)])
  args['RPN'] = (res4, image_size)
  proposals = functions['RPN'](res4, image_size)

  functions['box classifier'] = tf.function(
      box_classifier,
      input_signature=[_spec(res4), _spec(proposals), _spec(image_size)])
  args['box classifier'] = (res4, proposals, image_size)

  functions['mask branch'] = tf.function(
      mask_branch,
      input_signature=[tf.nest.map_structure(_spec, endpoints), _spec(boxes),
                       _spec(classes)])
  args['mask branch'] = (endpoints, boxes, classes)

  inputs = {'image': image, 'image_size': image_size}
  functions['whole model'] = tf.function(
      whole, input_signature=[tf.nest.map_structure(_spec, inputs)])
  args['whole model'] = (inputs,)
  num_proposals = int(tf.reduce_sum(tf.cast(
      tf.reduce_any(proposals > 0, axis=-1), tf.int32)))
  return functions, args, num_proposals


def _output_elements(op):
  """Elements in an op's outputs (0 where a shape is not fully known)."""
  total = 0
  for output in op.outputs:
    if output.shape.is_fully_defined():
      total += output.shape.num_elements()
  return total


def profile_flops(concrete_function):
  """FLOPs of a concrete function's graph by the TF profiler.

  Returns:
    dict with gflops (total), by_op ({op type: GFLOPs} of the counted op
    types), uncounted ({op type: million output elements} of the op types
    with arithmetic or data movement that the profiler does not count,
    nested function calls included: their bodies are invisible to it) and
    unknown_shape_ops (heavy ops whose count may be missing for want of a
    static shape).
  """
  graph = concrete_function.graph
  builder = tf.compat.v1.profiler.ProfileOptionBuilder
  options = builder(builder.float_operation()).with_empty_output().build()
  profile = tf.compat.v1.profiler.profile(graph, cmd='op', options=options)
  # The 'op' view nests op types (a node's total_float_ops includes its
  # children's), so each type's own count is its float_ops.
  by_op = {}
  pending = list(profile.children)
  while pending:
    node = pending.pop()
    pending.extend(node.children)
    if node.float_ops:
      by_op[node.name] = by_op.get(node.name, 0.0) + node.float_ops / 1e9
  uncounted = {}
  unknown = []
  for op in graph.get_operations():
    if op.type in _HEAVY_OPS and not all(
        output.shape.is_fully_defined() for output in op.outputs):
      unknown.append(op.name)
    if op.type in by_op or op.type in _METADATA_OPS:
      continue
    uncounted[op.type] = (uncounted.get(op.type, 0.0) +
                          _output_elements(op) / 1e6)
  return {'gflops': profile.total_float_ops / 1e9, 'by_op': by_op,
          'uncounted': uncounted, 'unknown_shape_ops': unknown}


def _median_ms(functions, args, repeats):
  """Median wall milliseconds per call, calls interleaved round-robin so
  that load from other processes hits every function alike."""
  for name, function in functions.items():
    function(*args[name])  # Warm-up: XLA compiles the assembling ops here.
  samples = {name: [] for name in functions}
  for _ in range(repeats):
    for name, function in functions.items():
      # A tf.function call on CPU returns when its outputs are computed.
      start = time.perf_counter()
      function(*args[name])
      samples[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(times)
          for name, times in samples.items()}


def run_model_cost_table(flagfile='configs/masklab_r50_coco.flags',
                         image_size=512, num_detections=100, repeats=3,
                         output_stride=None, seed=0):
  """Times and counts the FLOPs of each part of MaskLab's inference.

  Args:
    flagfile: model config flags file.
    image_size: side of the square batch-1 input image.
    num_detections: max_detections of the model and boxes of the mask branch.
    repeats: timed calls per function (median), after one warm-up.
    output_stride: overrides the config's output stride (8 or 16) if given.
    seed: seed of the random image and boxes.

  Returns:
    A list of dicts, one per part, then 'sum of parts' and 'whole model',
    with keys part, ms, share (of the sum of parts; None for the whole model),
    gflops, gflops_per_s, uncounted ({op type: million output elements} left
    out of the FLOPs), unknown_shape_ops, and config (the same dict in every
    row: model settings, proposals made, load averages around the timing,
    wall seconds of the build and of the whole run).
  """
  start = time.perf_counter()
  overrides = [f'--max_detections={num_detections}']
  if output_stride:
    overrides.append(f'--output_stride={output_stride}')
  data_cfg, geometry, model_cfg, train_cfg = config_lib.from_flagfile(
      flagfile, tuple(overrides))
  # In the config's precision, as this host resolves it
  # (masklab_r50_fast.flags: auto).
  precision = precision_lib.resolve(train_cfg.mixed_precision)
  models = factory.build_models(model_cfg, geometry, data_cfg.max_instances,
                                precision=precision)
  build_s = time.perf_counter() - start

  rng = np.random.default_rng(seed)
  image = tf.constant(rng.integers(0, 256, [1, image_size, image_size, 3]),
                      tf.uint8)
  sizes = tf.constant([[image_size, image_size]], tf.int32)
  boxes = tf.constant(_random_boxes(rng, num_detections, image_size))
  classes = tf.constant(
      rng.integers(1, model_cfg.num_classes + 1, [1, num_detections]),
      tf.int32)
  functions, args, num_proposals = _part_functions(
      models, image, sizes, boxes, classes)
  flops = {name: profile_flops(function.get_concrete_function())
           for name, function in functions.items()}

  load_before = os.getloadavg()
  ms = _median_ms(functions, args, repeats)
  load_after = os.getloadavg()
  num_found = int(functions['whole model'](*args['whole model'])[
      'num_detections'][0])

  info = {
      'backbone_depth': model_cfg.backbone_depth,
      'output_stride': model_cfg.output_stride,
      'image_size': image_size,
      'test_num_proposals': model_cfg.test_num_proposals,
      'valid_proposals': num_proposals,
      'max_detections': model_cfg.max_detections,
      'whole_model_detections': num_found,
      'mask_crop_size': geometry.mask_crop_size,
      'hypercolumn_channels': model_cfg.hypercolumn_channels,
      'refine_filters': model_cfg.refine_filters,
      'deformable_crop': model_cfg.deformable_crop,
      'precision': precision or 'float32',
      'repeats': repeats,
      'load_before': load_before, 'load_after': load_after,
      'cpus': os.cpu_count(), 'build_s': build_s,
  }
  total_ms = sum(ms[name] for name in PARTS)
  total_gflops = sum(flops[name]['gflops'] for name in PARTS)
  rows = []
  for name in PARTS:
    rows.append({'part': name, 'ms': ms[name], 'share': ms[name] / total_ms,
                 **flops[name]})
  rows.append({'part': 'sum of parts', 'ms': total_ms, 'share': 1.0,
               'gflops': total_gflops, 'by_op': {}, 'uncounted': {},
               'unknown_shape_ops': []})
  rows.append({'part': 'whole model', 'ms': ms['whole model'], 'share': None,
               **flops['whole model']})
  for row in rows:
    row['gflops_per_s'] = row['gflops'] / (row['ms'] / 1e3)
    row['config'] = info
  info['run_s'] = time.perf_counter() - start
  return rows


def _uncounted_summary(uncounted, top=8):
  """'Type (n M), ...' of the largest uncounted op types by output size."""
  largest = sorted(uncounted.items(), key=lambda item: -item[1])[:top]
  text = ', '.join(f'{name} ({elements:.1f}M)' for name, elements in largest)
  if len(uncounted) > top:
    text += f', +{len(uncounted) - top} more'
  return text


def format_table(rows):
  """Markdown table of `run_model_cost_table` rows, with notes below."""
  info = rows[0]['config']
  lines = [
      f"MaskLab inference cost: ResNet-{info['backbone_depth']}, output "
      f"stride {info['output_stride']}, {info['image_size']}x"
      f"{info['image_size']} batch 1, {info['test_num_proposals']} proposals"
      f" ({info['valid_proposals']} non-empty), {info['max_detections']} "
      f"detections ({info['whole_model_detections']} found by the whole "
      f"model), mask crop {info['mask_crop_size']}, hypercolumn_channels="
      f"{info['hypercolumn_channels']}, refine_filters="
      f"{info['refine_filters']}, deformable_crop={info['deformable_crop']},"
      f" {info['precision']}; random weights; median of {info['repeats']} after 1 warm-up; load "
      f"average {info['load_before'][0]:.2f} before / "
      f"{info['load_after'][0]:.2f} after timing on {info['cpus']} CPUs; "
      f"build {info['build_s']:.0f} s, run {info['run_s']:.0f} s",
      '',
      '| part | ms | share of sum of parts | GFLOPs | achieved GFLOP/s |',
      '|---|---:|---:|---:|---:|',
  ]
  for row in rows:
    share = '-' if row['share'] is None else f"{100 * row['share']:.1f} %"
    lines.append(f"| {row['part']} | {row['ms']:.0f} | {share} "
                 f"| {row['gflops']:.1f} | {row['gflops_per_s']:.1f} |")
  lines += ['', 'GFLOPs: TF profiler (multiply-add = 2 FLOPs). Counted op '
            'types, and op types it does not count (million output '
            'elements):']
  for row in rows:
    if not row['by_op']:
      continue
    counted = sorted(row['by_op'].items(), key=lambda item: -item[1])
    small = [name for name, gflops in counted if gflops < 0.01]
    counted = ', '.join(f'{name} {gflops:.2f}' for name, gflops in counted
                        if gflops >= 0.01)
    if small:
      counted += f' (+{len(small)} types under 0.01)'
    lines.append(f"- {row['part']}: counted {counted}; not counted: "
                 f"{_uncounted_summary(row['uncounted'])}")
    if row['unknown_shape_ops']:
      lines.append(f"  WARNING: {len(row['unknown_shape_ops'])} conv/matmul "
                   'ops without static shapes, their FLOPs are missing')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Flags of the script; not at import, so other scripts can import it."""
  flags.DEFINE_string('flagfile_path', 'configs/masklab_r50_coco.flags',
                      'Model config flags file.')
  flags.DEFINE_integer('image_size', 512, 'Side of the square input image.')
  flags.DEFINE_integer('num_detections', 100,
                       'max_detections, and boxes given to the mask branch.')
  flags.DEFINE_integer('repeats', 3, 'Timed calls per part (median).')
  flags.DEFINE_integer('output_stride', None,
                       'Overrides the config output stride (8 or 16).')


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')
  rows = run_model_cost_table(
      flagfile=FLAGS.flagfile_path, image_size=FLAGS.image_size,
      num_detections=FLAGS.num_detections, repeats=FLAGS.repeats,
      output_stride=FLAGS.output_stride)
  print(format_table(rows))


if __name__ == '__main__':
  define_flags()
  app.run(main)
