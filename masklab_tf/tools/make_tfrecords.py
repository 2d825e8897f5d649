"""Writes a COCO instances set as sharded TFRecords (Model Garden's layout).

Usage:
  bin/make_tfrecords --annotations=instances.json --images=images/ \
      --output_prefix=records/train --num_shards=8 [--strict]

Writes records/train-00000-of-00008.tfrecord ... and
records/train.categories.json; train with --train_tfrecords='records/train-*'.
Images and annotations are validated first (data/coco.py): problems are
reported and skipped, or fail the run with --strict.
"""

import time

from absl import app
from absl import flags

from masklab_tf.data import coco
from masklab_tf.data import tfrecord
from masklab_tf.tools import common_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  common_flags.define_dataset_flags()
  flags.DEFINE_string('output_prefix', None, 'Shard path prefix.')
  flags.DEFINE_integer('num_shards', 8, 'Number of shards (at least the number '
                       'of training workers, so each reads whole files).')
  flags.DEFINE_bool('strict', False, 'Fail on any data problem.')
  flags.mark_flags_as_required(['annotations', 'images', 'output_prefix'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  start = time.time()
  dataset = coco.read_coco(FLAGS.annotations, FLAGS.images,
                           strict=FLAGS.strict,
                           verify_images=FLAGS.verify_images)
  for problem in dataset.problems:
    print(f'skipped or repaired: {problem}')
  paths = tfrecord.write_tfrecords(dataset, FLAGS.output_prefix,
                                   FLAGS.num_shards)
  print(f'wrote {len(dataset.records)} images, {dataset.num_instances} '
        f'instances into {len(paths)} shards ({paths[0]} ...) in '
        f'{time.time() - start:.1f} s; problems={len(dataset.problems)}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
