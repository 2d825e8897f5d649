"""The main job on the built-in demo data (README's first command).

For now (foundation): generate the synthetic shapes set, check both splits
with the COCO reader, run the training input pipeline over it, print a
summary and save a picture of the targets. Training, evaluation, export and
prediction join this job as they land.

Usage:
  bin/demo --output_dir=demo_data [--flagfile=configs/shapes_cpu.flags]
"""

import os
import time

import numpy as np
from absl import app
from absl import flags

from masklab_tf import config
from masklab_tf import visualize
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import synthetic
from masklab_tf.data import report

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', 'demo_data', 'Where the shapes set and '
                    'outputs go.')
flags.DEFINE_integer('num_train', 300, 'Training images to generate.')
flags.DEFINE_integer('num_val', 60, 'Validation images to generate.')
flags.DEFINE_bool('regenerate', False, 'Regenerate the set if it exists.')
flags.DEFINE_integer('batch_size', 4, 'Global batch size.')
flags.DEFINE_integer('num_batches', 100, 'Batches to pull through the '
                     'pipeline.')
config.define_all_flags()


def _make_data(output_dir):
  train_json = os.path.join(output_dir, 'train', 'annotations.json')
  if FLAGS.regenerate or not os.path.exists(train_json):
    start = time.time()
    synthetic.make_shapes(output_dir, num_train=FLAGS.num_train,
                          num_val=FLAGS.num_val, seed=0)
    print(f'[1/3] generated the shapes set in {output_dir} '
          f'({time.time() - start:.1f} s)')
  else:
    print(f'[1/3] reusing the shapes set in {output_dir} '
          '(--regenerate to rebuild)')


def _check(output_dir):
  print('[2/3] checking both splits')
  datasets = {}
  for split in ('train', 'val'):
    dataset = coco.read_coco(
        os.path.join(output_dir, split, 'annotations.json'),
        os.path.join(output_dir, split, 'images'), verify_images='full')
    lines = report.report_lines(dataset)
    print(f'  {split}: {lines[-1]}')
    datasets[split] = dataset
  return datasets


def _run_pipeline(dataset, data_cfg, geometry, output_dir):
  print(f'[3/3] input pipeline: {FLAGS.num_batches} batches of '
        f'{FLAGS.batch_size}')
  batches = pipeline.build_dataset(
      data_cfg, geometry, FLAGS.batch_size, is_training=True,
      source=pipeline.make_source(data_cfg, dataset=dataset))
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
  labelled = semantic_counts[:255].sum()
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
  data_cfg = config.from_flags(config.DataConfig)
  geometry = config.from_flags(config.GeometryConfig)
  _run_pipeline(datasets['train'], data_cfg, geometry, output_dir)


if __name__ == '__main__':
  app.run(main)
