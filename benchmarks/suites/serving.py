"""SavedModel serving latency and size of MaskLab (random weights).

Latency depends on shapes, not values: the config's model is built with
random weights and its test scale set to --size (square inputs served as
they are), exported with serving/export.py into a folder of its own
(removed at the end) and loaded back with tf.saved_model.load, as TF
Serving would. Rows: serving_default (uint8) at batch 1 and --batch_size,
serving_encoded (one JPEG, decoded in the graph) at batch 1: medians after
one warm-up call, outputs fetched to numpy as a client would, with the
detections that reached the mask branch (random weights decide how many).
"""

import os
import shutil
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.serving import export

QUICK = {'config': 'configs/shapes_cpu.flags', 'size': 160, 'num_runs': 1,
         'num_runs_batch': 1, 'batch_size': 2}


def define_flags():
  flags.DEFINE_string('config', 'configs/masklab_r50_coco.flags', 'Flags '
                      'file of the model (relative to the repository).')
  flags.DEFINE_integer('size', 512, 'Side of the square test images; also '
                       'the served size (--eval_min_size and --max_size).')
  flags.DEFINE_integer('num_runs', 5, 'Timed calls at batch 1.')
  flags.DEFINE_integer('num_runs_batch', 3, 'Timed calls at --batch_size.')
  flags.DEFINE_integer('batch_size', 8, 'The larger batch.')


def test_images(num, size, seed=0):
  """uint8 [num, size, size, 3]: smooth blobs and a little noise (pure noise
  would make a JPEG over twice a photo's, and slower to decode)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, [num, max(size // 16, 2), max(size // 16, 2),
                                3]).astype(np.float32)
  images = tf.image.resize(coarse, [size, size], method='bicubic').numpy()
  images += rng.normal(0, 8, images.shape)
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def latency(function, runs, **inputs):
  """(median s per call, mean detections per image) after one warm-up."""
  function(**inputs)
  times, detections = [], []
  for _ in range(runs):
    start = time.perf_counter()
    outputs = {k: v.numpy() for k, v in function(**inputs).items()}
    times.append(time.perf_counter() - start)
    detections.append(outputs['num_detections'].mean())
  return statistics.median(times), float(np.mean(detections))


def size_mib(path):
  """A file's or a folder's (all it holds) size on disk in MiB."""
  if os.path.isfile(path):
    return os.path.getsize(path) / 2**20
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names) / 2**20


def measure(export_dir, s):
  """Loads and times the SavedModel: (latency rows, {load_s, size_mib})."""
  start = time.perf_counter()
  loaded = tf.saved_model.load(export_dir)
  costs = {'load_s': time.perf_counter() - start,
           'size_mib': size_mib(export_dir)}
  size, batch_size = s['size'], s['batch_size']
  images = test_images(batch_size, size)
  jpeg = tf.io.encode_jpeg(images[0], quality=90).numpy()
  rows = []
  for signature, shown, batch, runs, inputs in (
      ('serving_default', f'uint8 {size}x{size}', 1, s['num_runs'],
       {'images': images[:1]}),
      ('serving_default', f'uint8 {size}x{size}', batch_size,
       s['num_runs_batch'], {'images': images}),
      ('serving_encoded', f'JPEG {size}x{size} ({len(jpeg) / 1024:.0f} KiB)',
       1, s['num_runs'], {'encoded': [jpeg]})):
    seconds, detections = latency(
        loaded.signatures[signature], runs,
        **{k: tf.constant(v) for k, v in inputs.items()})
    rows.append({'signature': signature, 'input': shown, 'batch': batch,
                 'runs': runs, 'ms_per_image': seconds * 1e3 / batch,
                 'ms_per_call': seconds * 1e3, 'detections': detections})
    print(f'{signature} batch {batch}: {seconds * 1e3 / batch:.0f} ms / '
          'image', flush=True)
  return rows, costs


def main(argv):
  del argv
  s = {name: suite.chosen(name, QUICK) for name in
       ('config', 'size', 'num_runs', 'num_runs_batch', 'batch_size')}
  path = os.path.join(results.REPO, s['config'])  # as given if absolute
  if not os.path.exists(path):
    raise app.UsageError(f"--config={s['config']}: no such flags file")
  size, own = s['size'], config.from_flagfile(path).data
  configs = config.from_flagfile(
      path, (f'--eval_min_size={size}', f'--max_size={size}'))
  costs = {'load_average': os.getloadavg()[0]}
  start = time.perf_counter()
  models = factory.build_models(configs.model, configs.geometry,
                                configs.data.max_instances)
  costs['build_s'] = time.perf_counter() - start
  with scratch.work_dir(suite.FLAGS.work_dir, 'masklab_serving_') as work:
    # A folder of this run's own: no stale SavedModel is timed by mistake,
    # nothing of the user's is replaced.
    export_dir = os.path.join(scratch.fresh_folder(work, 'export_'), '1')
    try:
      start = time.perf_counter()
      export.export_saved_model(models.inference_model, configs, export_dir)
      costs['export_s'] = time.perf_counter() - start
      del models  # the SavedModel alone is timed, as a server holds it
      rows, more = measure(export_dir, s)
    finally:
      shutil.rmtree(os.path.dirname(export_dir), ignore_errors=True)
  column = results.column
  suite.publish(results.new('serving', 'SavedModel latency of '
                            f"{results.relative_paths(path)}", [
      results.text(
          f'Random weights, served at {size} px (--eval_min_size={size} '
          f'--max_size={size}; the config tests at {own.eval_min_size} / '
          f'{own.max_size}). Medians after one warm-up call.'),
      results.table('latency', [
          column('signature', 'signature'), column('input', 'input'),
          column('batch', 'batch', 'd'), column('runs', 'timed calls', 'd'),
          column('ms_per_image', 'ms / image', '.0f'),
          column('ms_per_call', 'ms / call', '.0f'),
          column('detections', 'detections / image', '.1f')], rows),
      results.table('costs', [
          column('size_mib', 'SavedModel MiB (whole folder)', '.1f'),
          column('build_s', 'build s', '.1f'),
          column('export_s', 'export s', '.1f'),
          column('load_s', 'load s', '.1f'),
          column('load_average', 'load average at the start', '.2f')],
                    [{**costs, **more}])], s))
