"""Generates the synthetic shapes set (COCO json with RLE masks + PNGs).

Usage:
  bin/make_shapes --output_dir=DIR [--num_train=300 --num_val=60 --seed=0
      --easy --image_size=160]

Writes DIR/{train,val}/annotations.json and DIR/{train,val}/images/*.png and
prints one summary line per split.
"""

import time

from absl import app
from absl import flags

from masklab_tf.data import synthetic

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  flags.DEFINE_string('output_dir', None, 'Where to write the set.')
  flags.DEFINE_integer('num_train', 300, 'Training images.')
  flags.DEFINE_integer('num_val', 60, 'Validation images.')
  flags.DEFINE_integer('seed', 0, 'Seed; the same seed gives the same bytes.')
  flags.DEFINE_bool('easy', False, 'Place instances apart (no touching '
                    'clusters).')
  flags.DEFINE_integer('image_size', 160, 'Image side in pixels.')
  flags.mark_flag_as_required('output_dir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  start = time.time()
  paths = synthetic.make_shapes(FLAGS.output_dir, FLAGS.num_train,
                                FLAGS.num_val, FLAGS.seed, FLAGS.easy,
                                FLAGS.image_size)
  for split, path in paths.items():
    summary = synthetic.summarize_split(path)
    per_class = ', '.join(f'{name}: {count}' for name, count in
                          summary['instances_per_class'].items())
    print(f'{split}: images={summary["images"]} '
          f'instances={summary["instances"]} ({per_class}); '
          f'touching same-class pair in '
          f'{summary["touching_fraction"]:.0%} of images -> {path}')
  print(f'done in {time.time() - start:.1f} s')


if __name__ == '__main__':
  define_flags()
  app.run(main)
