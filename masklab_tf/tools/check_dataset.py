"""Checks a COCO instances dataset: what the reader would skip or repair.

Usage:
  bin/check_dataset --annotations=instances.json --images=images/
      [--strict] [--verify_images=none|header|full] [--allow_outside_images]
      [--suggest_flags=suggested.flags]

Prints counts of images, instances (per class), problems and notes (per kind,
each with what it means), each problem, and the pixel limit in force; the
last line is always `images=N instances=M problems=P` for scripts. Exit
status: 0; 1 when no usable image or instance is left, or with --strict
when there are problems; 2 when the json cannot be read at all.

--suggest_flags=FILE also writes a flags file fitted to the data it read
(data/suggest.py: classes, sizes, anchors, stride, instance and detection
limits, each with the statistic behind it), to use after a base config.
"""

import sys

from absl import app
from absl import flags

from masklab_tf import files
from masklab_tf.data import coco
from masklab_tf.data import report
from masklab_tf.data import suggest
from masklab_tf.tools import common_flags


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  common_flags.define_dataset_flags()
  flags.DEFINE_bool('strict', False, 'Exit with status 1 on any problem.')
  flags.DEFINE_bool('allow_outside_images', False,
                    'Read images whose file_name leads outside --images '
                    '(../x.png, an absolute path, a link out) instead of '
                    'reporting them as outside_images problems.')
  flags.DEFINE_string('suggest_flags', '', 'Also write a flags file fitted '
                      'to the dataset here (data/suggest.py).')
  flags.mark_flags_as_required(['annotations', 'images'])


def check(annotations_path: str, images_dir: str, *, strict: bool = False,
          verify_images: str = 'full', allow_outside_images: bool = False,
          suggest_flags: str = '', out=None) -> int:
  """Prints the report to `out` (stdout) and returns the exit status;
  with `suggest_flags`, writes the fitted flags file there."""
  out = out or sys.stdout
  try:
    dataset = coco.read_coco(annotations_path, images_dir,
                             verify_images=verify_images,
                             allow_outside_images=allow_outside_images)
  except coco.DatasetError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  for line in report.report_lines(dataset):
    print(line, file=out)
  unusable = report.unusable(dataset)
  if unusable:
    print(f'error: {annotations_path}: {unusable}', file=sys.stderr)
    return 1
  if suggest_flags:
    with files.atomic_write(suggest_flags) as f:
      f.write('\n'.join(suggest.suggest_flags(dataset)) + '\n')
    print(f'fitted flags -> {suggest_flags}', file=out)
  return 1 if strict and dataset.problems else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  return check(FLAGS.annotations, FLAGS.images, strict=FLAGS.strict,
               verify_images=FLAGS.verify_images,
               allow_outside_images=FLAGS.allow_outside_images,
               suggest_flags=FLAGS.suggest_flags)


if __name__ == '__main__':
  define_flags()
  app.run(main)
