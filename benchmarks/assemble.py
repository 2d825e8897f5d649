"""Speed of position-sensitive assembling: gathers vs crop-all-then-select.

Usage:
  python benchmarks/assemble.py [--sizes=64,128] [--num_boxes=100]
      [--channels=32] [--crop_size=41] [--num_runs=50] [--in_graph=5]
      [--skip_model_cost]

For B=1 feature maps of each size with C channels at stride 8, N random
boxes and MaskLab's direction-pooling channel map, prints a markdown table
of median milliseconds (forward per eager call; forward per op when a graph
runs --in_graph of them, as in a model, where no Python dispatch cost is
paid per op; forward + backward to the features per eager call) of:
  (a) ops/assemble.py's gather path compiled with XLA;
  (b) the same gather path as a plain tf.function graph;
  (c) tf.image.crop_and_resize of all C channels, then a per-pixel select;
  (d) Model Garden's multilevel_crop_and_resize on a one-level feature dict
      (all channels), then the same select; (d, XLA) is that path compiled
      with XLA. Model Garden samples bin centres (RoIAlign), not both box
      edges, so (d) differs in values; it is here for speed only.
Runs are interleaved round-robin, so load from other processes on the
machine hits every path alike; the load average is printed with the table.
Then, unless --skip_model_cost, benchmarks/model_cost.py's table: time and
FLOPs of each part of the r50 model at 512 px with 100 detections.
"""

import os
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from official.vision.ops import spatial_transform_ops

from masklab_tf.ops import assemble
from masklab_tf.ops import crop
from masklab_tf.ops import direction

STRIDE = 8
LEVEL = '3'  # 2^3 = STRIDE, so Model Garden assigns every box this level.


def _random_boxes(rng, num_boxes, image_size):
  """Boxes of 2..40 % of the image side, inside it."""
  size = rng.uniform(0.02, 0.4, [1, num_boxes, 2]) * image_size
  corner = rng.uniform(0.0, 1.0, [1, num_boxes, 2]) * (image_size - size)
  return np.concatenate([corner, corner + size], -1).astype(np.float32)


def _select(crops, channel_map, offsets):
  """[B, N, S, S, C] crops -> [B, N, S, S], channel offset + map per pixel."""
  selected = offsets[:, :, tf.newaxis, tf.newaxis] + channel_map
  return tf.gather(crops, selected, batch_dims=4)


def _crop_and_resize_select(features, boxes, channel_map, offsets):
  shape = tf.shape(features)
  num = tf.shape(boxes)[1]
  crop_size = channel_map.shape[0]
  crops = tf.image.crop_and_resize(
      features,
      crop.to_crop_and_resize_boxes(boxes / STRIDE, shape[1], shape[2])[0],
      tf.zeros([num], tf.int32), (crop_size, crop_size))
  return _select(crops[tf.newaxis], channel_map, offsets)


def _model_garden_select(features, boxes, channel_map, offsets):
  crops = spatial_transform_ops.multilevel_crop_and_resize(
      {LEVEL: features}, boxes, output_size=channel_map.shape[0])
  return _select(crops, channel_map, offsets)


def _gather_path(features, boxes, channel_map, offsets):
  return assemble.assemble(features, boxes, channel_map, offsets, STRIDE)


PATHS = (
    ('(a) gather, XLA', _gather_path, True),
    ('(b) gather, plain TF', _gather_path, False),
    ('(c) crop_and_resize all C + select', _crop_and_resize_select, False),
    ('(d) Model Garden multilevel all C + select', _model_garden_select,
     False),
    ('(d, XLA) Model Garden multilevel all C + select', _model_garden_select,
     True),
)


def _forward_backward(path, loss_weights):
  def step(features, boxes, channel_map, offsets):
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(
          path(features, boxes, channel_map, offsets) * loss_weights)
    return tape.gradient(loss, features)
  return step


def _in_graph(path, xla, repeats):
  """`repeats` ops on shifted boxes in one graph; XLA ones as clusters."""
  op = tf.function(path, jit_compile=True) if xla else path

  def ops(features, boxes, channel_map, offsets):
    return [op(features, boxes + 0.25 * k, channel_map, offsets)
            for k in range(repeats)]
  return tf.function(ops)


def _median_ms(functions, args, num_runs, num_warmup):
  """Median wall milliseconds per call of each function, interleaved."""
  for function in functions:
    for _ in range(num_warmup):
      function(*args)
  times = [[] for _ in functions]
  for _ in range(num_runs):
    for function, samples in zip(functions, times):
      # Eager execution is synchronous on CPU: the call returns when done.
      start = time.perf_counter()
      function(*args)
      samples.append(time.perf_counter() - start)
  return [1e3 * float(np.median(samples)) for samples in times]


def run_assemble_table(sizes=(64, 128), num_boxes=100, channels=32,
                       crop_size=41, num_runs=50, num_warmup=5, in_graph=5,
                       seed=0):
  """Times every path on every map size.

  Returns:
    A list of dicts, one per (size, path), with keys size, path,
    forward_ms (per eager call), in_graph_ms (per op, `in_graph` ops per
    graph), forward_backward_ms (per eager call), speedup_vs_c and
    in_graph_speedup_vs_c (time of (c) / time of the path) and
    max_abs_diff_vs_c (forward values; None for Model Garden's other
    sampling convention).
  """
  rng = np.random.default_rng(seed)
  channel_map = direction.pooling_index_map(crop_size)
  offsets = tf.zeros([1, num_boxes], tf.int32)
  loss_weights = tf.constant(
      rng.normal(size=[1, num_boxes, crop_size, crop_size]), tf.float32)
  rows = []
  for size in sizes:
    features = tf.constant(rng.normal(size=[1, size, size, channels]),
                           tf.float32)
    boxes = tf.constant(_random_boxes(rng, num_boxes, size * STRIDE))
    args = (features, boxes, channel_map, offsets)
    forward = [tf.function(path, jit_compile=xla) for _, path, xla in PATHS]
    both = [tf.function(_forward_backward(path, loss_weights),
                        jit_compile=xla) for _, path, xla in PATHS]
    graphs = [_in_graph(path, xla, in_graph) for _, path, xla in PATHS]
    forward_ms = _median_ms(forward, args, num_runs, num_warmup)
    in_graph_ms = [ms / in_graph for ms in
                   _median_ms(graphs, args, num_runs, num_warmup)]
    both_ms = _median_ms(both, args, num_runs, num_warmup)
    reference = forward[2](*args)
    for k, (name, path, _) in enumerate(PATHS):
      diff = None
      if path is not _model_garden_select:
        diff = float(tf.reduce_max(tf.abs(forward[k](*args) - reference)))
      rows.append({'size': size, 'path': name, 'forward_ms': forward_ms[k],
                   'in_graph_ms': in_graph_ms[k],
                   'forward_backward_ms': both_ms[k],
                   'speedup_vs_c': forward_ms[2] / forward_ms[k],
                   'in_graph_speedup_vs_c': in_graph_ms[2] / in_graph_ms[k],
                   'max_abs_diff_vs_c': diff})
  return rows


def format_table(rows, num_boxes, channels, crop_size, in_graph):
  """Markdown table of `run_assemble_table` rows."""
  lines = [
      f'B=1, C={channels}, N={num_boxes} boxes, crop {crop_size}x{crop_size}'
      f', stride {STRIDE}; medians; load average '
      f'{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs',
      '',
      '| map | path | forward ms/call | speed-up vs (c) '
      f'| forward ms/op, {in_graph} per graph | speed-up vs (c) '
      '| fwd+bwd ms/call | max abs diff vs (c) |',
      '|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    diff = row['max_abs_diff_vs_c']
    lines.append(
        f"| {row['size']}x{row['size']} | {row['path']} "
        f"| {row['forward_ms']:.2f} | {row['speedup_vs_c']:.1f}x "
        f"| {row['in_graph_ms']:.2f} | {row['in_graph_speedup_vs_c']:.1f}x "
        f"| {row['forward_backward_ms']:.2f} "
        f"| {'-' if diff is None else f'{diff:.1e}'} |")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Flags of the script; not at import, so other scripts can import it."""
  flags.DEFINE_list('sizes', ['64', '128'], 'Feature map sides.')
  flags.DEFINE_integer('num_boxes', 100, 'Boxes per image.')
  flags.DEFINE_integer('channels', 32, 'Feature channels (D x R = 32).')
  flags.DEFINE_integer('crop_size', 41, 'S.')
  flags.DEFINE_integer('num_runs', 50, 'Timed calls per path.')
  flags.DEFINE_integer('num_warmup', 5, 'Untimed calls per path first.')
  flags.DEFINE_integer('in_graph', 5, 'Ops per graph for the in-graph times.')
  flags.DEFINE_bool('skip_model_cost', False,
                    'Skip the per-part time and FLOPs table of the r50 model '
                    '(benchmarks/model_cost.py; a few minutes on a CPU).')


def main(argv):
  del argv
  # Every path is its own tf.function; TF would warn about "retracing".
  tf.get_logger().setLevel('ERROR')
  rows = run_assemble_table(
      sizes=[int(s) for s in FLAGS.sizes], num_boxes=FLAGS.num_boxes,
      channels=FLAGS.channels, crop_size=FLAGS.crop_size,
      num_runs=FLAGS.num_runs, num_warmup=FLAGS.num_warmup,
      in_graph=FLAGS.in_graph)
  print(format_table(rows, FLAGS.num_boxes, FLAGS.channels,
                     FLAGS.crop_size, FLAGS.in_graph))
  if not FLAGS.skip_model_cost:
    # The assembling layer's speed only matters against the per-box parts
    # of the model around it. Imported here: the sibling script is on the
    # path when this file runs as a script, from the repo root otherwise.
    try:
      from benchmarks import model_cost  # pylint: disable=g-import-not-at-top
    except ImportError:
      import model_cost  # pylint: disable=g-import-not-at-top
    print()
    print(model_cost.format_table(model_cost.run_model_cost_table()))


if __name__ == '__main__':
  define_flags()
  app.run(main)
