"""Checks a COCO instances dataset and reports everything the reader would skip or repair.

Usage:
  bin/check_dataset --annotations=instances.json --images=images/ [--strict]
      [--verify_images=none|header|full]

The last output line is always `images=N instances=M problems=P` so scripts can parse it.
Exit status: 0, or 1 with --strict when problems were found, or 2 when the json is unusable.
"""

import sys

from absl import app
from absl import flags

from masklab_tf.data import coco

MAX_PROBLEM_LINES = 50

FLAGS = flags.FLAGS
flags.DEFINE_string('annotations', None, 'COCO instances json.')
flags.DEFINE_string('images', None, 'Directory holding the images named in the json.')
flags.DEFINE_bool('strict', False, 'Exit with status 1 when any problem is found.')
flags.DEFINE_enum('verify_images', 'full', list(coco.VERIFY_MODES),
                  'none: trust json sizes; header: open each image; full: decode all pixels.')
flags.mark_flags_as_required(['annotations', 'images'])


def check(annotations_path: str, images_dir: str, *, strict: bool = False,
          verify_images: str = 'full', out=sys.stdout) -> int:
    """Prints the report and returns the exit status; callable without absl flags."""
    try:
        dataset = coco.read_coco(annotations_path, images_dir, verify_images=verify_images)
    except coco.DatasetError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    for line in report_lines(dataset):
        print(line, file=out)
    return 1 if strict and dataset.problems else 0


def report_lines(dataset: coco.CocoDataset) -> list[str]:
    """The human report; the summary line comes last for scripts."""
    lines = [
        f'annotations: {dataset.annotations_path}',
        f'images dir: {dataset.images_dir}',
        f'images: {len(dataset.records)}',
        f'instances: {dataset.num_instances} '
        f'(crowd: {sum(i.is_crowd for r in dataset.records for i in r.instances)})',
        f'classes: {dataset.num_classes}',
        'instances per class:',
    ]
    per_class = {category.id: 0 for category in dataset.categories}
    for record in dataset.records:
        for instance in record.instances:
            per_class[instance.category_id] += 1
    lines += [f'  {category.id} {category.name}: {per_class[category.id]}'
              for category in dataset.categories]
    lines += _kind_lines('problems per kind:', dataset.problem_counts())
    if dataset.problems:
        lines.append('problems:')
        lines += [f'  {problem}' for problem in dataset.problems[:MAX_PROBLEM_LINES]]
        if len(dataset.problems) > MAX_PROBLEM_LINES:
            lines.append(f'  ... and {len(dataset.problems) - MAX_PROBLEM_LINES} more')
    lines += _kind_lines('notes per kind:', dataset.note_counts())
    lines.append(f'images={len(dataset.records)} instances={dataset.num_instances} '
                 f'problems={len(dataset.problems)}')
    return lines


def _kind_lines(title, counts):
    if not counts:
        return [f'{title} none']
    return [title] + [f'  {kind}: {count}' for kind, count in sorted(counts.items())]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    return check(FLAGS.annotations, FLAGS.images, strict=FLAGS.strict,
                 verify_images=FLAGS.verify_images)


if __name__ == '__main__':
    app.run(main)
