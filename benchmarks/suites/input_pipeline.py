"""Images/s of the training input pipeline, small and COCO-sized.

Rows: the shapes set at its native 160 px from json; the set drawn at 800
px read from json and from TFRecords with the paper's COCO training
settings (shortest side jittered over 480..930, longest capped at 1333,
flips, output stride 8). The sets stay in --work_dir for the next run.
"""

import os
import time

from absl import flags

from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from masklab_tf import config
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.data import synthetic
from masklab_tf.data import tfrecord

QUICK = {'num_batches': 3, 'num_images': 8}
WARMUP_BATCHES = 3  # tracing, autotuning, the file cache
SMALL = config.DataConfig(min_sizes=(128, 160, 192), max_size=192,
                          max_instances=16, shuffle_buffer=64)
COCO = config.DataConfig(min_sizes=(480, 576, 688, 800, 930), max_size=1333,
                         max_instances=100, shuffle_buffer=64)


def define_flags():
  flags.DEFINE_integer('num_batches', 60, 'Timed batches per row.')
  flags.DEFINE_integer('batch_size', 4, 'Batch size.')
  flags.DEFINE_integer('num_images', 120, 'Training images to generate.')


def rate(cfg, source, batch_size, num_batches):
  """(images/s over `num_batches` after the warm-up, last batch's shape)."""
  batches = iter(pipeline.build_dataset(cfg, config.GeometryConfig(),
                                        batch_size, True, source=source,
                                        output_stride=8, seed=0))
  for _ in range(WARMUP_BATCHES):
    next(batches)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(batches)
  return (num_batches * batch_size / (time.perf_counter() - start),
          'x'.join(str(d) for d in batch['image'].shape))


def rows(root, batch_size, num_batches, num_images):
  """Generates the sets in `root` (unless there); one row per source."""
  found = {}
  for side in (160, 800):
    folder = os.path.join(root, f'shapes{side}', 'train')
    if not os.path.exists(os.path.join(folder, 'annotations.json')):
      synthetic.make_shapes(os.path.dirname(folder), num_train=num_images,
                            num_val=1, image_size=side)
    found[side] = coco.read_coco(os.path.join(folder, 'annotations.json'),
                                 os.path.join(folder, 'images'))
  prefix = os.path.join(root, 'records', 'shapes800')
  if not os.path.exists(prefix + tfrecord.CATEGORIES_SUFFIX):
    tfrecord.write_tfrecords(found[800], prefix, num_shards=4)
  records = pipeline.make_source(
      config.DataSplitConfig(tfrecords=prefix + '-*'), COCO.verify_images)
  return [dict(zip(('source', 'images_per_s', 'shape'), (name, *rate(
      cfg, source, batch_size, num_batches)))) for name, cfg, source in (
          ('shapes 160 px, json', SMALL, sources.coco_source(found[160])),
          ('shapes 800 px, json', COCO, sources.coco_source(found[800])),
          ('shapes 800 px, tfrecords', COCO, records))]


def main(argv):
  del argv
  s = {name: suite.chosen(name, QUICK) for name in
       ('num_batches', 'batch_size', 'num_images')}
  with scratch.work_dir(suite.FLAGS.work_dir, 'masklab_input_') as root:
    found = rows(root, **s)
  suite.publish(results.new('input_pipeline', 'Input pipeline throughput', [
      results.text(f"Batch {s['batch_size']}, {s['num_batches']} timed "
                   f'batches after {WARMUP_BATCHES} warm-up ones, '
                   f"{s['num_images']} generated images; padded to output "
                   'stride 8.'),
      results.table('rates', [
          results.column('source', 'source'),
          results.column('images_per_s', 'images/s', '.1f'),
          results.column('shape', 'last batch image shape')], found)], s))
