"""Accuracy at equal training time on the hard shapes set, side by side.

Trains, each from scratch and on the same time budget (default 25 minutes
of wall clock on this machine), then scores on the val split with
pycocotools:
  masklab           configs/shapes_cpu.flags (semantic + direction)
  semantic_only     the paper's Table 2 ablation: semantic logits only
  direction_only    direction logits only
  model_garden      Model Garden's Mask R-CNN, ResNet-18 + FPN, from
                    official.vision (benchmarks/model_garden_maskrcnn.py)
and adds the connected components of the ground-truth class map as a
baseline that needs no training: it fails exactly where instances of one
class touch, the case direction features exist for.

Every system runs in its own process (fresh TensorFlow runtime and memory);
its result lands in OUTPUT_DIR/<system>/result.json, so an interrupted
benchmark re-runs only what is missing (--rerun to redo). The table goes to
stdout and OUTPUT_DIR/table.md.

Usage:
  python benchmarks/shapes_accuracy.py --output_dir=runs/shapes_accuracy \
      [--budget_s=1500] [--budget_mode=wall|cpu] [--systems=masklab,...]

--budget_mode=cpu counts process CPU seconds instead (give 2x the minutes
on 2 cores), which keeps the comparison fair when other jobs share the
machine.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
from pycocotools import mask as mask_api
import skimage.measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import machine  # pylint: disable=g-import-not-at-top
import scratch  # pylint: disable=g-import-not-at-top
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.data import coco
from masklab_tf.data import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', 'runs/shapes_accuracy', 'Runs and table.')
flags.DEFINE_string('data_dir', None, 'Hard shapes set (default: '
                    'OUTPUT_DIR/data, generated if missing).')
flags.DEFINE_integer('num_train', 2000, 'Training images to generate.')
flags.DEFINE_integer('num_val', 200, 'Val images to generate.')
flags.DEFINE_float('budget_s', 1500.0, 'Training budget per system.')
flags.DEFINE_enum('budget_mode', 'wall', ['wall', 'cpu'],
                  'Budget in wall-clock or process CPU seconds.')
flags.DEFINE_list('systems', ['masklab', 'semantic_only', 'direction_only',
                              'model_garden', 'connected_components'],
                  'Systems to run, in this order.')
flags.DEFINE_string('flagfile_for_masklab', 'configs/shapes_cpu.flags',
                    'MaskLab config (relative to the repo).')
flags.DEFINE_bool('rerun', False, 'Re-run systems that have a result.')
flags.DEFINE_string('run_one', None, 'Internal: run this system in-process.')

MASK_HEADS = {
    'masklab': 'masklab',
    'semantic_only': 'masklab_semantic_only',
    'direction_only': 'masklab_direction_only',
}


def make_data(data_dir):
  """The hard shapes set (seed 1) plus Model Garden's TFRecords of it."""
  train_json = os.path.join(data_dir, 'train', 'annotations.json')
  if not os.path.exists(train_json):
    synthetic.make_shapes(data_dir, FLAGS.num_train, FLAGS.num_val, seed=1)
  for split in ('train', 'val'):
    prefix = os.path.join(data_dir, 'tfrecords', split)
    if not os.path.exists(prefix + '.categories.json'):
      subprocess.run(
          [sys.executable, os.path.join(REPO, 'bin', 'make_tfrecords'),
           f'--annotations={data_dir}/{split}/annotations.json',
           f'--images={data_dir}/{split}/images', f'--output_prefix={prefix}'],
          check=True)


def data_paths(data_dir):
  return {
      'train_annotations': f'{data_dir}/train/annotations.json',
      'train_images': f'{data_dir}/train/images',
      'val_annotations': f'{data_dir}/val/annotations.json',
      'val_images': f'{data_dir}/val/images',
      'train_pattern': f'{data_dir}/tfrecords/train-*.tfrecord',
      'val_pattern': f'{data_dir}/tfrecords/val-*.tfrecord',
  }


def run_masklab(system, paths, model_dir):
  from masklab_tf import config  # pylint: disable=g-import-not-at-top
  from masklab_tf.training import trainer as trainer_lib
  import budget as budget_lib  # pylint: disable=g-import-not-at-top
  configs = config.from_flagfile(
      os.path.join(REPO, FLAGS.flagfile_for_masklab),
      (f'--mask_head={MASK_HEADS[system]}',
       f'--train_annotations={paths["train_annotations"]}',
       f'--train_images={paths["train_images"]}',
       '--lr_schedule=cosine', '--checkpoint_every=1000000',
       '--image_summary_every=0'))
  trainer = trainer_lib.Trainer(configs, model_dir)
  trainer.restore_or_initialise()
  budget = budget_lib.TimeBudget(FLAGS.budget_s, FLAGS.budget_mode)
  wall, cpu = time.time(), time.process_time()
  losses = trainer.train(hooks=[budget])
  wall, cpu = time.time() - wall, time.process_time() - cpu
  evaluator = evaluator_lib.Evaluator(configs, paths['val_annotations'],
                                 paths['val_images'])
  metrics = evaluator.run(trainer.models.inference_model,
                          os.path.join(model_dir, 'results.json'))
  return {'steps': trainer.current_step, 'wall_s': wall, 'cpu_s': cpu,
          'final_loss': losses.get('total'), 'metrics': metrics,
          'config': dataclasses.asdict(configs.model)}


def run_model_garden(paths, model_dir):
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import model_garden_maskrcnn  # pylint: disable=g-import-not-at-top
  result = model_garden_maskrcnn.train_for_budget(
      model_dir, FLAGS.budget_s, FLAGS.budget_mode,
      train_pattern=paths['train_pattern'], val_pattern=paths['val_pattern'])
  result['metrics'] = model_garden_maskrcnn.evaluate(
      model_dir, paths['val_annotations'], paths['val_images'],
      paths['val_pattern'])
  return result


def connected_component_results(dataset: coco.CocoDataset) -> list[dict]:
  """Instances = 8-connected components of each class in the GT class map.

  The class map gives each pixel the class of its smallest covering
  instance (the pipeline's ownership rule); every component is one
  detection with score 1.
  """
  results = []
  for record in dataset.records:
    masks = dataset.load_masks(record)
    class_map = np.zeros((record.height, record.width), np.int32)
    order = np.argsort([-int(m.sum(dtype=np.int64)) for m in masks])
    for index in order:  # Largest first, so smaller instances win.
      class_map[masks[index] > 0] = record.instances[index].category_id
    for category_id in np.unique(class_map[class_map > 0]):
      components = skimage.measure.label(class_map == category_id,
                                         connectivity=2)
      for label in range(1, components.max() + 1):
        mask = np.asfortranarray((components == label).astype(np.uint8))
        rle = mask_api.encode(mask)
        rle['counts'] = rle['counts'].decode('ascii')
        results.append({
            'image_id': record.image_id, 'category_id': int(category_id),
            'bbox': [float(v) for v in mask_api.toBbox(rle)],
            'score': 1.0, 'segmentation': rle})
  return results


def run_connected_components(paths):
  dataset = coco.read_coco(paths['val_annotations'], paths['val_images'])
  metrics = evaluator_lib.coco_metrics(dataset.to_coco_dict(),
                                  connected_component_results(dataset),
                                  dataset.max_instances_per_image)
  return {'steps': 0, 'wall_s': 0.0, 'cpu_s': 0.0, 'metrics': metrics}


def run_one(system, data_dir):
  paths = data_paths(data_dir)
  model_dir = os.path.join(FLAGS.output_dir, system)
  # An earlier run's folder is kept under another name, not deleted.
  earlier = scratch.set_aside(model_dir)
  if earlier:
    print(f'{model_dir}: the earlier run is now in {earlier}', flush=True)
  os.makedirs(model_dir)
  if system in MASK_HEADS:
    result = run_masklab(system, paths, model_dir)
  elif system == 'model_garden':
    result = run_model_garden(paths, model_dir)
  elif system == 'connected_components':
    result = run_connected_components(paths)
  else:
    raise app.UsageError(f'unknown system {system!r}')
  result.update(system=system, budget_s=FLAGS.budget_s,
                budget_mode=FLAGS.budget_mode)
  with open(os.path.join(model_dir, 'result.json'), 'w') as f:
    json.dump(result, f, indent=1)


def table(results):
  lines = [
      '| system | steps | train min (wall / cpu) | box AP | AP50 | AP75 | '
      'mask AP | AP50 | AP75 |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for system, result in results.items():
    box, mask = result['metrics']['box'], result['metrics']['mask']
    lines.append(
        f'| {system} | {result["steps"]} | {result["wall_s"] / 60:.1f} / '
        f'{result["cpu_s"] / 60:.1f} | ' + ' | '.join(
            f'{v:.1f}' for v in (box['AP'], box['AP50'], box['AP75'],
                                 mask['AP'], mask['AP50'], mask['AP75'])) +
        ' |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  os.chdir(REPO)
  data_dir = FLAGS.data_dir or os.path.join(FLAGS.output_dir, 'data')
  if FLAGS.run_one:
    run_one(FLAGS.run_one, data_dir)
    return
  make_data(data_dir)
  results = {}
  for system in FLAGS.systems:
    path = os.path.join(FLAGS.output_dir, system, 'result.json')
    if FLAGS.rerun or not os.path.exists(path):
      print(f'== {system}: training for {FLAGS.budget_s:.0f} '
            f'{FLAGS.budget_mode} s', flush=True)
      subprocess.run(
          [sys.executable, os.path.abspath(__file__),
           f'--run_one={system}', f'--output_dir={FLAGS.output_dir}',
           f'--data_dir={data_dir}', f'--budget_s={FLAGS.budget_s}',
           f'--budget_mode={FLAGS.budget_mode}',
           f'--flagfile_for_masklab={FLAGS.flagfile_for_masklab}'],
          check=True)
    with open(path) as f:
      results[system] = json.load(f)
  budgets = {(r['budget_s'], r['budget_mode']) for r in results.values()
             if r['steps']}
  text = '\n'.join([
      table(results), '',
      f'Budget per trained system: '
      f'{", ".join(f"{s:.0f} {m} s" for s, m in sorted(budgets))}; '
      f'val split: {FLAGS.num_val} images of the hard shapes set (seed 1). '
      f'Machine: {machine.describe()}.',
      f'Command: python benchmarks/shapes_accuracy.py '
      f'--output_dir={FLAGS.output_dir} --budget_s={FLAGS.budget_s:.0f} '
      f'--budget_mode={FLAGS.budget_mode}'])
  print(text)
  with open(os.path.join(FLAGS.output_dir, 'table.md'), 'w') as f:
    f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
