"""ONNX Runtime against the SavedModel in TensorFlow: latency and size.

For each config and size: the model with random weights (latency depends
on shapes, and both runtimes get the same weights, so the same
detections), exported twice as users export it: the SavedModel of the fast
graph (serving/export.py, with full-image masks, as the ONNX model always
has them) and model.onnx of the portable graph (serving/onnx_export.py).
Each is loaded as a server would; `serving_default` and the ONNX model are
timed on the same uint8 images at batch 1 and --batch_size, in interleaved
rounds (one call of each per round, so that the machine's load falls on
both alike), medians after one warm-up call, outputs fetched to numpy.
"""

import importlib.metadata
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
from benchmarks.harness import timing
from benchmarks.harness import suite
from benchmarks.suites import serving
from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.serving import export
from masklab_tf.serving import onnx_export
from masklab_tf.serving import onnx_model

QUICK = {'configs': ['configs/shapes_cpu.flags'], 'sizes': [128],
         'runs': 1, 'batch_size': 2}


def define_flags():
  flags.DEFINE_list('configs', ['configs/shapes_cpu.flags',
                                'configs/masklab_r50_fast.flags'],
                    'Flags files of the models (relative to the '
                    'repository).')
  flags.DEFINE_list('sizes', ['256', '512'], 'Sides of the square test '
                    'images, served as they are (--eval_min_size and '
                    '--max_size).')
  flags.DEFINE_integer('runs', 5, 'Timed rounds per row.')
  flags.DEFINE_integer('batch_size', 4, 'The larger batch (the other is 1).')


def measure(flagfile, size, s, work):
  """Rows of one config at one size: one per batch size."""
  configs = config.from_flagfile(
      os.path.join(results.REPO, flagfile),
      (f'--eval_min_size={size}', f'--max_size={size}'))
  fast = factory.build_models(configs.model, configs.geometry,
                              configs.data.max_instances,
                              precision=configs.train.mixed_precision)
  portable = factory.build_models(configs.model, configs.geometry,
                                  configs.data.max_instances, portable=True)
  portable.inference_model.set_weights(fast.inference_model.get_weights())
  saved_model_dir = os.path.join(scratch.fresh_folder(work, 'export_'), '1')
  onnx_dir = scratch.fresh_folder(work, 'onnx_')
  try:
    start = time.perf_counter()
    export.export_saved_model(fast.inference_model, configs, saved_model_dir,
                              full_image_masks=True)
    saved_model_s = time.perf_counter() - start
    start = time.perf_counter()
    onnx_path = onnx_export.export_onnx(portable.inference_model, configs,
                                        onnx_dir)
    onnx_s = time.perf_counter() - start
    del fast, portable
    serve = tf.saved_model.load(saved_model_dir).signatures[
        'serving_default']
    session = onnx_model.OnnxModel(onnx_path)
    images = serving.test_images(s['batch_size'], size)
    rows = []
    for batch in (1, s['batch_size']):
      inputs = images[:batch]
      runtimes = {
          'tf': lambda x=inputs: {k: v.numpy() for k, v in serve(
              images=tf.constant(x)).items()},
          'onnx': lambda x=inputs: session(x)}
      outputs = {name: run() for name, run in runtimes.items()}  # warm-up
      times = {name: [] for name in runtimes}
      for _ in range(s['runs']):
        for name, run in runtimes.items():
          times[name].append(timing.seconds(run, ()))
      tf_ms, onnx_ms = (statistics.median(times[name]) * 1e3 / batch
                        for name in ('tf', 'onnx'))
      rows.append({
          'config': os.path.basename(flagfile), 'size': size,
          'batch': batch, 'tf_ms': tf_ms, 'onnx_ms': onnx_ms,
          'ratio': onnx_ms / tf_ms,
          'detections': float(np.mean(outputs['tf']['num_detections'])),
          'same_detections': bool(np.array_equal(
              outputs['tf']['num_detections'],
              outputs['onnx']['num_detections'])),
          'saved_model_mib': serving.size_mib(saved_model_dir),
          'onnx_mib': serving.size_mib(onnx_path),
          'saved_model_export_s': saved_model_s, 'onnx_export_s': onnx_s})
      print(f'{flagfile} {size} px batch {batch}: SavedModel {tf_ms:.0f} '
            f'ms / image, ONNX Runtime {onnx_ms:.0f}', flush=True)
    return rows
  finally:
    shutil.rmtree(os.path.dirname(saved_model_dir), ignore_errors=True)
    shutil.rmtree(onnx_dir, ignore_errors=True)


def main(argv):
  del argv
  s = {name: suite.chosen(name, QUICK) for name in
       ('configs', 'sizes', 'runs', 'batch_size')}
  for flagfile in s['configs']:
    if not os.path.exists(os.path.join(results.REPO, flagfile)):
      raise app.UsageError(f'--configs: {flagfile}: no such flags file')
  load = os.getloadavg()[0]
  rows = []
  with scratch.work_dir(suite.FLAGS.work_dir, 'masklab_onnx_') as work:
    for flagfile in s['configs']:
      for size in s['sizes']:
        rows.extend(measure(flagfile, int(size), s, work))
  column = results.column
  suite.publish(results.new('onnx', 'ONNX Runtime against the SavedModel', [
      results.text(
          'Random weights (the same in both), square uint8 images served '
          'at their size; SavedModel: `serving_default` of the fast graph '
          'in TensorFlow; ONNX: model.onnx of the portable graph in ONNX '
          'Runtime (CPU provider, default threads). Medians of interleaved '
          f'rounds after one warm-up; load average at the start {load:.2f}.'
      ),
      results.table('latency', [
          column('config', 'config'), column('size', 'px', 'd'),
          column('batch', 'batch', 'd'),
          column('tf_ms', 'SavedModel ms / image', '.0f'),
          column('onnx_ms', 'ONNX Runtime ms / image', '.0f'),
          column('ratio', 'ONNX / SavedModel', '.2f'),
          column('detections', 'detections / image', '.0f'),
          column('same_detections', 'same counts'),
          column('saved_model_mib', 'SavedModel MiB', '.1f'),
          column('onnx_mib', 'model.onnx MiB', '.1f'),
          column('saved_model_export_s', 'SavedModel export s', '.0f'),
          column('onnx_export_s', 'ONNX export s', '.0f')], rows)], s,
      extra_versions={package: importlib.metadata.version(package)
                      for package in ('onnxruntime', 'tf2onnx', 'onnx')}))
