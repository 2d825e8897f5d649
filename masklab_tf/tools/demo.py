"""The main job on the built-in demo data (README's first command).

Generates the synthetic shapes set, checks both splits with the COCO reader,
runs the input pipeline over it (summary + a picture of the targets), trains
MaskLab on it (the Makefile's demo: configs/shapes_demo.flags, resumable),
evaluates on the val split with pycocotools (the COCO table, then each
class's AP), saves a picture of the predictions and exports the SavedModel.

Usage:
  bin/demo --output_dir=demo_data [--flagfile=configs/shapes_demo.flags]
"""

import collections
import dataclasses
import json
import os
import time

import numpy as np
from absl import app
from absl import flags

from masklab_tf import config
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.training import trainer as trainer_lib
from masklab_tf import visualize
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import synthetic
from masklab_tf.data import report
from masklab_tf.data import sources
from masklab_tf.ops import label_values
from masklab_tf.serving import export

FLAGS = flags.FLAGS
# Detections drawn in the predictions picture and counted per class.
PICTURE_SCORE = 0.5


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  flags.DEFINE_string('output_dir', 'demo_data', 'Where the shapes set and '
                      'outputs go.')
  flags.DEFINE_integer('num_train', 300, 'Training images to generate.')
  flags.DEFINE_integer('num_val', 60, 'Validation images to generate.')
  flags.DEFINE_bool('regenerate', False, 'Regenerate the set if it exists.')
  flags.DEFINE_integer('num_batches', 100, 'Batches to pull through the '
                       'pipeline.')
  flags.DEFINE_bool('train', True, 'Train and evaluate after the data steps.')
  config.define_all_flags()


def _make_data(output_dir):
  train_json = os.path.join(output_dir, 'train', 'annotations.json')
  if FLAGS.regenerate or not os.path.exists(train_json):
    start = time.time()
    synthetic.make_shapes(output_dir, num_train=FLAGS.num_train,
                          num_val=FLAGS.num_val, seed=0)
    print(f'[1/6] generated the shapes set in {output_dir} '
          f'({time.time() - start:.1f} s)')
  else:
    print(f'[1/6] reusing the shapes set in {output_dir} '
          '(--regenerate to rebuild)')


def _check(output_dir):
  print('[2/6] checking both splits')
  datasets = {}
  for split in ('train', 'val'):
    dataset = coco.read_coco(
        os.path.join(output_dir, split, 'annotations.json'),
        os.path.join(output_dir, split, 'images'), verify_images='full')
    lines = report.report_lines(dataset)
    print(f'  {split}: {lines[-1]}')
    datasets[split] = dataset
  return datasets


def _run_pipeline(dataset, configs, output_dir):
  geometry, batch_size = configs.geometry, configs.train.batch_size
  print(f'[3/6] input pipeline: {FLAGS.num_batches} batches of {batch_size}')
  batches = pipeline.build_dataset(
      configs.data, geometry, batch_size, is_training=True,
      source=sources.coco_source(dataset),
      output_stride=configs.model.output_stride, seed=configs.train.seed,
      deterministic=configs.train.deterministic)
  first, start, num_images, instances = None, None, 0, []
  semantic_counts = np.zeros(256, np.int64)
  direction_counts = np.zeros(256, np.int64)
  for step, batch in enumerate(batches.take(FLAGS.num_batches + 1)):
    if step == 0:  # The first batch pays for tracing; time the rest.
      first, start = batch, time.time()
      continue
    num_images += len(batch['image_id'])
    instances += batch['num_instances'].numpy().tolist()
    semantic_counts += np.bincount(batch['semantic_labels'].numpy().ravel(),
                                   minlength=256)
    direction_counts += np.bincount(
        batch['direction_labels'].numpy().ravel(), minlength=256)
  elapsed = time.time() - start
  channels = geometry.num_direction_channels
  print(f'  batch: image {tuple(first["image"].shape)}, gt_mask_targets '
        f'{tuple(first["gt_mask_targets"].shape)}, semantic_labels '
        f'{tuple(first["semantic_labels"].shape)}')
  print(f'  instances per image: mean {np.mean(instances):.2f}, '
        f'max {max(instances)}')
  labelled = semantic_counts[:label_values.IGNORE_LABEL].sum()
  print('  semantic pixels: ' + ', '.join(
      f'{k}: {semantic_counts[k] / labelled:.1%}'
      for k in range(dataset.num_classes + 1)))
  print(f'  direction channels used: '
        f'{int((direction_counts[:channels] > 0).sum())}/{channels}')
  preview = os.path.join(output_dir, 'pipeline_preview.png')
  _save_preview(first, dataset.num_classes, geometry, preview)
  print(f'  preview of the targets: {preview}')
  print(f'pipeline images/s={num_images / elapsed:.1f} '
        f'batches={FLAGS.num_batches}')


def _save_preview(batch, num_classes, geometry, path):
  rows = []
  for i in range(min(2, len(batch['image_id']))):
    n = int(batch['num_instances'][i])
    image = batch['image'][i].numpy()
    rows.append([
        visualize.overlay_masks(image, np.zeros([0] + list(image.shape[:2])),
                                batch['gt_boxes'][i, :n].numpy()),
        visualize.color_labels(batch['semantic_labels'][i].numpy(),
                               num_classes),
        visualize.color_directions(batch['direction_labels'][i].numpy(),
                                   geometry.num_directions,
                                   geometry.num_distance_bins),
    ])
  visualize.save_row(path, [np.concatenate(col, axis=0)
                            for col in zip(*rows)], scale=2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  output_dir = FLAGS.output_dir
  _make_data(output_dir)
  datasets = _check(output_dir)
  configs = config.all_from_flags()
  _run_pipeline(datasets['train'], configs, output_dir)
  if FLAGS.train:
    _train_and_evaluate(configs, output_dir, datasets['val'])


def _train_and_evaluate(configs, output_dir, val_set):
  """Trains, evaluates on val, draws the predictions."""
  split = lambda name, part: os.path.join(output_dir, name, part)
  configs = configs._replace(data=dataclasses.replace(
      configs.data, train=dataclasses.replace(
          configs.data.train, annotations=split('train', 'annotations.json'),
          images=split('train', 'images'))))
  model_dir = os.path.join(output_dir, 'model')
  print(f'[4/6] training {configs.train.train_steps} steps into {model_dir} '
        f'(batch {configs.train.batch_size}; rerun to resume)')
  trainer = trainer_lib.Trainer(configs, model_dir)
  print('  ' + trainer.restore_or_initialise(), flush=True)
  trainer.train()
  print(f'[5/6] COCO evaluation on {len(val_set.records)} val images')
  evaluator = evaluator_lib.Evaluator(configs, split('val', 'annotations.json'),
                                 split('val', 'images'))
  results_path = os.path.join(model_dir, 'results.json')
  metrics = evaluator.run(trainer.models.inference_model, results_path)
  evaluator_lib.write_metrics(os.path.join(model_dir, 'metrics.json'), metrics,
                         step=trainer.current_step)
  print(evaluator_lib.format_table({f'demo, step {trainer.current_step}':
                               metrics}))
  _print_per_class(evaluator, results_path)
  preview = os.path.join(output_dir, 'predictions_preview.png')
  _save_predictions(trainer.models.inference_model, evaluator, val_set,
                    preview)
  print(f'  predictions (score >= {PICTURE_SCORE}) under the images: '
        f'{preview}')
  export_dir = os.path.join(output_dir, 'export', '1')
  print(f'[6/6] exporting the SavedModel (TF Serving) to {export_dir}')
  export.export_saved_model(
      trainer.models.inference_model, configs, export_dir,
      categories=[{'id': c.id, 'name': c.name} for c in val_set.categories])
  print('  signatures serving_default (uint8 images) and serving_encoded '
        '(JPEG, PNG, GIF, BMP or WebP bytes); try: saved_model_cli show '
        f'--all --dir {export_dir}')


def _print_per_class(evaluator, results_path):
  """Each class's AP, and its detections >= PICTURE_SCORE against its
  ground truth: a class the model misses or floods shows here."""
  with open(results_path) as f:
    results = json.load(f)
  ground_truth = evaluator.ground_truth
  print(evaluator_lib.format_per_class(evaluator_lib.per_class_ap(
      ground_truth, results, evaluator.dataset.max_instances_per_image)))
  names = {c['id']: c['name'] for c in ground_truth['categories']}
  truth = collections.Counter(a['category_id']
                              for a in ground_truth['annotations'])
  found = collections.Counter(r['category_id'] for r in results
                              if r['score'] >= PICTURE_SCORE)
  print(f'  detections scored >= {PICTURE_SCORE} / ground truth: ' +
        ', '.join(f'{name} {found[i]}/{truth[i]}'
                  for i, name in names.items()))


def _save_predictions(inference_model, evaluator, val_set, path):
  predictions = evaluator_lib.predict(inference_model,
                                      evaluator.batches.take(2))
  records = {r.image_id: r for r in val_set.records}
  names = [c.name for c in val_set.categories]
  panels = []
  for prediction in predictions[:6]:
    image = val_set.load_image(records[prediction['image_id']])
    gray = (image.mean(-1, keepdims=True).repeat(3, -1) * 0.5).astype(
        np.uint8)
    keep = prediction['scores'] >= PICTURE_SCORE
    boxes = prediction['boxes'][keep]
    drawn = visualize.overlay_masks(gray, prediction['masks'][keep], boxes,
                                    alpha=0.8)
    drawn = visualize.draw_labels(drawn, boxes, [
        names[int(c) - 1] for c in prediction['classes'][keep]])
    panels.append(np.concatenate([image, drawn], axis=0))
  visualize.save_row(path, panels, scale=2)


if __name__ == '__main__':
  define_flags()
  app.run(main)
