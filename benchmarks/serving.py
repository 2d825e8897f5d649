"""SavedModel serving latency of MaskLab (the r50 config, random weights).

Usage:
  python benchmarks/serving.py [--config=configs/masklab_r50_coco.flags]
      [--size=512] [--work_dir=DIR] [--num_runs=5]
      [--num_runs_batch=3] [--batch_size=8]
  # Quick check of the script itself (seconds, not minutes):
  python benchmarks/serving.py --config=configs/shapes_cpu.flags --size=160

Builds the config's model with random weights (latency depends on shapes,
not values: no checkpoint needed), overrides its test scale to --size
(--eval_min_size=--max_size=SIZE, so square SIZE x SIZE inputs are served
as they are), exports it with serving/export.py into a new folder of its
own (in --work_dir, default a temporary folder; removed at the end), loads it
back with tf.saved_model.load (plain TensorFlow, as TF Serving would) and
prints a markdown table of milliseconds per image:

  serving_default  uint8 [B, SIZE, SIZE, 3] at batch 1 and --batch_size;
  serving_encoded  one JPEG of SIZE x SIZE at batch 1 (decode + resize in
                   the graph);

each the median of --num_runs (--num_runs_batch for the batch) calls after
one warm-up call, outputs fetched to numpy as a client would. Under the
table: the SavedModel's size on disk, build / export / load times, the
machine and the TensorFlow version. Random weights decide how many
detections reach the mask branch; the table says how many there were.
"""

import os
import shutil
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import machine  # pylint: disable=g-import-not-at-top
import scratch  # pylint: disable=g-import-not-at-top
from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.serving import export

FLAGS = flags.FLAGS
flags.DEFINE_string('config', 'configs/masklab_r50_coco.flags', 'Flags file '
                    'of the model (relative to the repository or absolute).')
flags.DEFINE_integer('size', 512, 'Side of the square test images; also the '
                     'served size (--eval_min_size and --max_size).')
flags.DEFINE_string('work_dir', None, 'Scratch folder for the SavedModel '
                    '(a new folder in it, removed at the end; default: a '
                    'temporary folder).')
flags.DEFINE_integer('num_runs', 5, 'Timed calls at batch 1.')
flags.DEFINE_integer('num_runs_batch', 3, 'Timed calls at --batch_size.')
flags.DEFINE_integer('batch_size', 8, 'The larger batch.')


def test_images(num: int, size: int, seed: int = 0) -> np.ndarray:
  """uint8 [num, size, size, 3]: smooth blobs plus a little noise.

  Pure noise would make a JPEG several times larger than a photo's and its
  decode slower than a client's; upsampled coarse noise is closer.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, [num, max(size // 16, 2), max(size // 16, 2),
                                3]).astype(np.float32)
  images = tf.image.resize(coarse, [size, size], method='bicubic').numpy()
  images += rng.normal(0, 8, images.shape)
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def time_calls(function, num_runs: int, **inputs):
  """(median seconds per call, mean detections per image); one warm-up."""
  function(**inputs)
  times, detections = [], []
  for _ in range(num_runs):
    start = time.perf_counter()
    outputs = {k: v.numpy() for k, v in function(**inputs).items()}
    times.append(time.perf_counter() - start)
    detections.append(outputs['num_detections'].mean())
  return statistics.median(times), float(np.mean(detections))


def folder_mb(path: str) -> float:
  total = sum(os.path.getsize(os.path.join(root, name))
              for root, _, names in os.walk(path) for name in names)
  return total / 2**20


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  path = FLAGS.config
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(REPO, path)
  if not os.path.exists(path):
    raise app.UsageError(f'--config={FLAGS.config}: no such flags file')
  size = FLAGS.size
  own = config.from_flagfile(path).data
  overrides = (f'--eval_min_size={size}', f'--max_size={size}')
  configs = config.from_flagfile(path, overrides)
  load_avg = os.getloadavg()[0]

  start = time.perf_counter()
  models = factory.build_models(configs.model, configs.geometry,
                                 configs.data.max_instances)
  build_s = time.perf_counter() - start
  with scratch.work_dir(FLAGS.work_dir, 'masklab_bench_serving_') as work:
    # A folder of this run's own: a stale SavedModel of another config is
    # never timed by mistake, and nothing of the user's is replaced.
    export_dir = os.path.join(scratch.fresh_folder(work, 'export_'), '1')
    try:
      start = time.perf_counter()
      export.export_saved_model(models.inference_model, configs, export_dir)
      export_s = time.perf_counter() - start
      del models  # Time the SavedModel alone, as a server holds it.
      time_saved_model(export_dir, size, path, own, build_s, export_s,
                       load_avg)
    finally:
      shutil.rmtree(os.path.dirname(export_dir), ignore_errors=True)


def time_saved_model(export_dir, size, path, own, build_s, export_s,
                     load_avg):
  """Loads the SavedModel in export_dir, times it, prints the table."""
  start = time.perf_counter()
  loaded = tf.saved_model.load(export_dir)
  load_s = time.perf_counter() - start
  default = loaded.signatures['serving_default']
  encoded = loaded.signatures['serving_encoded']

  images = test_images(FLAGS.batch_size, size)
  jpeg = tf.io.encode_jpeg(images[0], quality=90).numpy()
  rows = []
  for batch, runs in ((1, FLAGS.num_runs),
                      (FLAGS.batch_size, FLAGS.num_runs_batch)):
    seconds, detections = time_calls(
        default, runs, images=tf.constant(images[:batch]))
    rows.append(('serving_default', f'uint8 {size}x{size}', batch, runs,
                 seconds, detections))
    print(f'serving_default batch {batch}: {seconds * 1e3 / batch:.0f} '
          'ms / image', flush=True)
  seconds, detections = time_calls(encoded, FLAGS.num_runs,
                                   encoded=tf.constant([jpeg]))
  rows.append(('serving_encoded', f'JPEG {size}x{size} '
               f'({len(jpeg) / 1024:.0f} KB)', 1, FLAGS.num_runs, seconds,
               detections))

  name = os.path.relpath(path, REPO) if path.startswith(REPO) else path
  lines = [
      f'SavedModel latency of {name} (random weights), images served at '
      f'{size} px (overrides --eval_min_size={size} --max_size={size}; the '
      f'config tests at {own.eval_min_size} / {own.max_size}). Median of '
      'the timed calls after one warm-up call; outputs fetched to numpy.',
      '',
      '| signature | input | batch | timed calls | ms / image | ms / call | '
      'detections / image |',
      '|---|---|---:|---:|---:|---:|---:|']
  for signature, kind, batch, runs, seconds, detections in rows:
    lines.append(f'| {signature} | {kind} | {batch} | {runs} | '
                 f'{seconds * 1e3 / batch:.0f} | {seconds * 1e3:.0f} | '
                 f'{detections:.1f} |')
  lines += [
      '',
      f'SavedModel size on disk: {folder_mb(export_dir):.1f} MB (whole '
      f'folder). Build {build_s:.1f} s, export {export_s:.1f} s, load '
      f'{load_s:.1f} s.',
      f'Machine: {os.cpu_count()} cores, {machine.cpu_model()}; TensorFlow '
      f'{tf.__version__}; load average {load_avg:.2f} at the start.',
      f'Command: python benchmarks/serving.py --config={FLAGS.config} '
      f'--size={size} --num_runs={FLAGS.num_runs} '
      f'--num_runs_batch={FLAGS.num_runs_batch} '
      f'--batch_size={FLAGS.batch_size}']
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
