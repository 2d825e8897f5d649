"""Where MaskLab's inference time and FLOPs go, part by part.

The per-box parts (conv5 on every proposal, the hypercolumn refinement on
every detection) are where MaskLab's cost lies, so a change to one part
(e.g. the assembling layer) is read against this split. Random weights (time
and FLOPs depend on shapes), batch 1, static shapes; four tf.functions over
the inference model's own layers, each fed the real outputs of the parts
before it: backbone (normalise, conv1 .. res5); RPN (head on res4, anchors,
proposals); box classifier (conv5 on res4 crops of every proposal, then
the detections); mask branch (on random valid boxes of detection-like
sizes, one per detection). The whole model adds what no part holds (mask
sigmoid, the semantic map's upsampling and argmax). Medians of interleaved
calls after a warm-up; FLOPs by systems.profile_flops, with the op types it
leaves out listed.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import flags

from benchmarks import systems
from benchmarks.harness import results
from benchmarks.harness import suite

FLAGS = flags.FLAGS
PARTS = ('backbone', 'RPN', 'box classifier', 'mask branch')
QUICK = {'image_size': 128, 'repeats': 1}


def define_flags():
  flags.DEFINE_string('flagfile_path', 'configs/masklab_r50_coco.flags',
                      'Model config flags file.')
  flags.DEFINE_integer('image_size', 512, 'Side of the square input image.')
  flags.DEFINE_integer('num_detections', 100,
                       'max_detections, and boxes given to the mask branch.')
  flags.DEFINE_integer('repeats', 3, 'Timed calls per part (median).')
  flags.DEFINE_integer('output_stride', None,
                       "Overrides the config's output stride (8 or 16).")


def _random_boxes(rng, count, size):
  """Boxes with sides log-uniform in 16 px .. 3/4 of the image, aspect 1:2
  .. 2:1, anywhere inside it: [1, count, 4] ymin, xmin, ymax, xmax."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  area = np.exp(rng.uniform(np.log(16.0), np.log(0.75 * size), count)) ** 2
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), count))
  height = np.minimum(np.sqrt(area * aspect), size - 1.0)
  width = np.minimum(np.sqrt(area / aspect), size - 1.0)
  ymin = rng.uniform(0.0, 1.0, count) * (size - height)
  xmin = rng.uniform(0.0, 1.0, count) * (size - width)
  return np.stack([ymin, xmin, ymin + height, xmin + width],
                  -1)[None].astype(np.float32)


def measure(flagfile: str, image_size: int, num_detections: int,
            repeats: int, output_stride: int | None = None, seed: int = 0
            ) -> tuple[list[dict], dict]:
  """(rows: {part, ms, share, gflops, gflops_per_s, by_op, uncounted,
  unknown_shape_ops} per part, their sum and the whole model; info)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from masklab_tf import config as config_lib
  from masklab_tf.modeling import factory
  from masklab_tf.modeling import precision as precision_lib
  start = time.perf_counter()
  cfg = config_lib.from_flagfile(flagfile, (
      f'--max_detections={num_detections}',
      *([f'--output_stride={output_stride}'] if output_stride else [])))
  precision = precision_lib.resolve(cfg.train.mixed_precision)
  models = factory.build_models(cfg.model, cfg.geometry,
                                cfg.data.max_instances, precision=precision)
  build_s = time.perf_counter() - start
  model = models.inference_model
  layer = model.get_layer
  rng = np.random.default_rng(seed)
  image = tf.constant(rng.integers(0, 256, [1, image_size, image_size, 3]),
                      tf.uint8)
  sizes = tf.constant([[image_size, image_size]], tf.int32)
  static = lambda function, *args: tf.function(function, input_signature=[
      tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), arg)
      for arg in args])

  def rpn(res4, image_size):
    scores, deltas = layer('rpn_head')(res4)
    return layer('proposals')(scores, deltas, layer('anchors')(res4),
                              image_size, training=False)[0]

  def box_classifier(res4, proposals, image_size):
    logits, deltas = layer('box_classifier')(res4, proposals, training=False)
    return layer('detections')(logits, deltas, proposals, image_size)

  functions, args = {}, {'backbone': (image,)}
  functions['backbone'] = static(lambda image: models.backbone(
      layer('normalize')(image), training=False), image)
  endpoints = functions['backbone'](image)
  args['RPN'] = (endpoints['res4'], sizes)
  functions['RPN'] = static(rpn, *args['RPN'])
  proposals = functions['RPN'](*args['RPN'])
  args['box classifier'] = (endpoints['res4'], proposals, sizes)
  functions['box classifier'] = static(box_classifier,
                                       *args['box classifier'])
  args['mask branch'] = (endpoints, tf.constant(_random_boxes(
      rng, num_detections, image_size)), tf.constant(rng.integers(
          1, cfg.model.num_classes + 1, [1, num_detections]), tf.int32))
  functions['mask branch'] = static(
      lambda e, b, c: layer('mask_head')(e, b, c, training=False),
      *args['mask branch'])
  args['whole model'] = ({'image': image, 'image_size': sizes},)
  functions['whole model'] = static(
      lambda inputs: model(inputs, training=False), *args['whole model'])
  flops = {name: systems.profile_flops(function.get_concrete_function())
           for name, function in functions.items()}
  load_before = os.getloadavg()[0]
  samples = {name: [] for name in functions}
  for name, function in functions.items():
    function(*args[name])  # warm-up: XLA compiles here
  for _ in range(repeats):  # interleaved: load hits every part alike
    for name, function in functions.items():
      begin = time.perf_counter()
      function(*args[name])
      samples[name].append(1e3 * (time.perf_counter() - begin))
  ms = {name: statistics.median(times) for name, times in samples.items()}
  info = {
      'backbone_depth': cfg.model.backbone_depth,
      'output_stride': cfg.model.output_stride, 'image_size': image_size,
      'test_num_proposals': cfg.model.test_num_proposals,
      'valid_proposals': int(tf.reduce_sum(tf.cast(
          tf.reduce_any(proposals > 0, axis=-1), tf.int32))),
      'max_detections': cfg.model.max_detections,
      'whole_model_detections': int(functions['whole model'](
          *args['whole model'])['num_detections'][0]),
      'mask_crop_size': cfg.geometry.mask_crop_size,
      'hypercolumn_channels': cfg.model.hypercolumn_channels,
      'refine_filters': cfg.model.refine_filters,
      'deformable_crop': cfg.model.deformable_crop,
      'precision': precision or 'float32', 'repeats': repeats,
      'load': [load_before, os.getloadavg()[0]], 'cpus': os.cpu_count(),
      'build_s': build_s}
  total_ms = sum(ms[name] for name in PARTS)
  rows = [dict(part=name, ms=ms[name], share=100 * ms[name] / total_ms,
               **flops[name]) for name in PARTS]
  rows.append({'part': 'sum of parts', 'ms': total_ms, 'share': 100.0,
               'gflops': sum(row['gflops'] for row in rows), 'by_op': {},
               'uncounted': {}, 'unknown_shape_ops': []})
  rows.append(dict(part='whole model', ms=ms['whole model'], share=None,
                   **flops['whole model']))
  for row in rows:
    row['gflops_per_s'] = row['gflops'] / row['ms'] * 1e3
  info['run_s'] = time.perf_counter() - start
  return rows, info


def _op_lines(rows) -> list[str]:
  """Counted op types (GFLOPs) and the largest uncounted ones (million
  output elements), per part."""
  lines = []
  for row in rows:
    if not row['by_op']:
      continue
    counted = sorted(row['by_op'].items(), key=lambda kv: -kv[1])
    small = sum(gflops < 0.01 for _, gflops in counted)
    uncounted = sorted(row['uncounted'].items(), key=lambda kv: -kv[1])
    lines.append(
        f"- {row['part']}: counted " + ', '.join(
            f'{name} {gflops:.2f}' for name, gflops in counted
            if gflops >= 0.01) + (f' (+{small} types under 0.01)'
                                  if small else '') +
        '; not counted: ' + ', '.join(
            f'{name} ({elements:.1f}M)' for name, elements in uncounted[:8])
        + (f', +{len(uncounted) - 8} more' if len(uncounted) > 8 else '')
        + (f"; WARNING: {len(row['unknown_shape_ops'])} conv/matmul ops "
           'without static shapes, their FLOPs are missing'
           if row['unknown_shape_ops'] else ''))
  return lines


def main(argv):
  del argv
  settings = {'flagfile_path': FLAGS.flagfile_path,
              'image_size': suite.chosen('image_size', QUICK),
              'num_detections': FLAGS.num_detections,
              'repeats': suite.chosen('repeats', QUICK),
              'output_stride': FLAGS.output_stride}
  rows, info = measure(settings['flagfile_path'], settings['image_size'],
                       settings['num_detections'], settings['repeats'],
                       settings['output_stride'])
  columns = [results.column(*spec) for spec in (
      ('part', 'part'), ('ms', 'ms', '.0f'),
      ('share', 'share of sum of parts', '.1f', None, ' %'),
      ('gflops', 'GFLOPs', '.1f'), ('gflops_per_s', 'achieved GFLOP/s',
                                    '.1f'))]
  keys = [spec['key'] for spec in columns]
  suite.publish(results.new('model_cost', (
      f"MaskLab inference cost by part: ResNet-{info['backbone_depth']}, "
      f"output stride {info['output_stride']}, {info['image_size']} px"), [
          results.text(
              f"Batch 1, {info['test_num_proposals']} proposals "
              f"({info['valid_proposals']} non-empty), "
              f"{info['max_detections']} detections "
              f"({info['whole_model_detections']} found by the whole "
              f"model), mask crop {info['mask_crop_size']}, "
              f"hypercolumn_channels={info['hypercolumn_channels']}, "
              f"refine_filters={info['refine_filters']}, deformable_crop="
              f"{info['deformable_crop']}, {info['precision']}; random "
              f"weights; median of {info['repeats']} after 1 warm-up; load "
              f"{info['load'][0]:.2f} before, {info['load'][1]:.2f} after "
              f"timing on {info['cpus']} CPUs; build {info['build_s']:.0f} "
              f"s, run {info['run_s']:.0f} s."),
          results.table('parts', columns, [
              {key: row[key] for key in keys} for row in rows]),
          results.text('GFLOPs: TF profiler (multiply-add = 2 FLOPs). '
                       'Counted op types, and op types it does not count '
                       '(million output elements):\n' +
                       '\n'.join(_op_lines(rows)))], settings))
