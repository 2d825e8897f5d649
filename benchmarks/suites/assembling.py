"""Speed of position-sensitive assembling: gathers vs crop-all-then-select.

B=1 feature maps of each size with C channels at stride 8, N random boxes,
MaskLab's direction-pooling channel map; median ms of the PATHS: forward
per eager call, forward per op when a graph runs --in_graph of them (as in
a model: no Python dispatch per op), forward + backward per eager call.
Runs are interleaved, so load from other processes hits every path alike.
Model Garden samples bin centres (RoIAlign), not both box edges: its values
differ, it is here for speed only. Then, unless --skip_model_cost, the
model_cost suite: the layer matters only against the model's parts.
"""

import os
import subprocess
import sys
import time

from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks.harness import results
from benchmarks.harness import suite
from masklab_tf.ops import assemble
from masklab_tf.ops import crop
from masklab_tf.ops import direction
from official.vision.ops import spatial_transform_ops

QUICK = {'sizes': ['16'], 'num_boxes': 10, 'num_runs': 3, 'num_warmup': 1,
         'in_graph': 2, 'skip_model_cost': True}
STRIDE = 8
LEVEL = '3'  # 2^3 = STRIDE: Model Garden assigns every box this level


def define_flags():
  flags.DEFINE_list('sizes', ['64', '128'], 'Feature map sides.')
  flags.DEFINE_integer('num_boxes', 100, 'Boxes per image.')
  flags.DEFINE_integer('channels', 32, 'Feature channels (D x R = 32).')
  flags.DEFINE_integer('crop_size', 41, 'S.')
  flags.DEFINE_integer('num_runs', 50, 'Timed calls per path.')
  flags.DEFINE_integer('num_warmup', 5, 'Untimed calls per path first.')
  flags.DEFINE_integer('in_graph', 5, 'Ops per graph for the in-graph times.')
  flags.DEFINE_bool('skip_model_cost', False, 'Do not run the model_cost '
                    'suite after the table (minutes on a CPU).')


def _select(crops, channel_map, offsets):
  """[B, N, S, S, C] crops -> [B, N, S, S], channel offset + map per pixel."""
  selected = offsets[:, :, tf.newaxis, tf.newaxis] + channel_map
  return tf.gather(crops, selected, batch_dims=4)


def _crop_and_resize_select(features, boxes, channel_map, offsets):
  shape, size = tf.shape(features), channel_map.shape[0]
  crops = tf.image.crop_and_resize(
      features,
      crop.to_crop_and_resize_boxes(boxes / STRIDE, shape[1], shape[2])[0],
      tf.zeros([tf.shape(boxes)[1]], tf.int32), (size, size))
  return _select(crops[tf.newaxis], channel_map, offsets)


def _model_garden_select(features, boxes, channel_map, offsets):
  return _select(spatial_transform_ops.multilevel_crop_and_resize(
      {LEVEL: features}, boxes, output_size=channel_map.shape[0]),
                 channel_map, offsets)


def _gather(features, boxes, channel_map, offsets):
  return assemble.assemble(features, boxes, channel_map, offsets, STRIDE)


PATHS = (('(a) gather, XLA', _gather, True),
         ('(b) gather, plain TF', _gather, False),
         ('(c) crop_and_resize all C + select', _crop_and_resize_select,
          False),
         ('(d) Model Garden multilevel all C + select', _model_garden_select,
          False),
         ('(d, XLA) Model Garden multilevel all C + select',
          _model_garden_select, True))


def _variants(path, xla, loss_weights, repeats):
  """(forward, forward + backward, `repeats` ops on shifted boxes in one
  graph, XLA ones as clusters) as tf.functions."""
  def both(features, *args):
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(path(features, *args) * loss_weights)
    return tape.gradient(loss, features)
  op = tf.function(path, jit_compile=True) if xla else path
  return (tf.function(path, jit_compile=xla),
          tf.function(both, jit_compile=xla),
          tf.function(lambda features, boxes, *args: [
              op(features, boxes + 0.25 * k, *args) for k in range(repeats)]))


def _median_ms(functions, args, num_runs, num_warmup):
  """Median wall ms per call of each function, interleaved round-robin
  (eager calls on CPU return when done)."""
  for function in functions:
    for _ in range(num_warmup):
      function(*args)
  times = [[] for _ in functions]
  for _ in range(num_runs):
    for function, samples in zip(functions, times):
      start = time.perf_counter()
      function(*args)
      samples.append(time.perf_counter() - start)
  return [1e3 * float(np.median(samples)) for samples in times]


def run_assemble_table(sizes=(64, 128), num_boxes=100, channels=32,
                       crop_size=41, num_runs=50, num_warmup=5, in_graph=5,
                       seed=0):
  """One row per (size, path): speed-ups are time of (c) / time of the
  path; the forward values' max abs difference from (c) (None for Model
  Garden's sampling)."""
  rng = np.random.default_rng(seed)
  channel_map = direction.pooling_index_map(crop_size)
  offsets = tf.zeros([1, num_boxes], tf.int32)
  loss_weights = tf.constant(
      rng.normal(size=[1, num_boxes, crop_size, crop_size]), tf.float32)
  rows = []
  for size in sizes:
    # Boxes of 2..40 % of the image side, inside it.
    sides = rng.uniform(0.02, 0.4, [1, num_boxes, 2]) * size * STRIDE
    corners = rng.uniform(0, 1, [1, num_boxes, 2]) * (size * STRIDE - sides)
    args = (tf.constant(rng.normal(size=[1, size, size, channels]),
                        tf.float32),
            tf.constant(np.concatenate([corners, corners + sides], -1),
                        tf.float32), channel_map, offsets)
    forward, both, graphs = zip(*(_variants(path, xla, loss_weights, in_graph)
                                  for _, path, xla in PATHS))
    forward_ms = _median_ms(forward, args, num_runs, num_warmup)
    graph_ms = [ms / in_graph for ms in
                _median_ms(graphs, args, num_runs, num_warmup)]
    both_ms = _median_ms(both, args, num_runs, num_warmup)
    reference = forward[2](*args)
    for k, (name, path, _) in enumerate(PATHS):
      rows.append({
          'map': f'{size}x{size}', 'path': name, 'forward_ms': forward_ms[k],
          'speedup_vs_c': forward_ms[2] / forward_ms[k],
          'in_graph_ms': graph_ms[k],
          'in_graph_speedup_vs_c': graph_ms[2] / graph_ms[k],
          'forward_backward_ms': both_ms[k],
          'max_abs_diff_vs_c': None if path is _model_garden_select else
                               float(tf.reduce_max(tf.abs(
                                   forward[k](*args) - reference)))})
  return rows


def table(rows, in_graph):
  column = results.column
  return results.table('paths', [
      column('map', 'map'), column('path', 'path'),
      column('forward_ms', 'forward ms/call', '.2f'),
      column('speedup_vs_c', 'speed-up vs (c)', '.1f', suffix='x'),
      column('in_graph_ms', f'forward ms/op, {in_graph} per graph', '.2f'),
      column('in_graph_speedup_vs_c', 'speed-up vs (c)', '.1f', suffix='x'),
      column('forward_backward_ms', 'fwd+bwd ms/call', '.2f'),
      column('max_abs_diff_vs_c', 'max abs diff vs (c)', '.1e')], rows)


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')  # every path retraces: TF would warn
  s = {name: suite.chosen(name, QUICK) for name in (
      'sizes', 'num_boxes', 'channels', 'crop_size', 'num_runs', 'num_warmup',
      'in_graph')}
  s['sizes'] = [int(size) for size in s['sizes']]
  rows = run_assemble_table(**s)
  suite.publish(results.new('assembling', 'The assembling layer', [
      results.text(
          f"B=1, C={s['channels']}, N={s['num_boxes']} boxes, crop "
          f"{s['crop_size']}x{s['crop_size']}, stride {STRIDE}; medians of "
          f"{s['num_runs']} calls; load average {os.getloadavg()[0]:.2f}."),
      table(rows, s['in_graph'])], s))
  if not suite.chosen('skip_model_cost', QUICK):
    subprocess.run([sys.executable, '-m', 'benchmarks', 'model_cost'],
                   cwd=results.REPO, check=True)
