"""What the trainer checks and reports of its training set, before and
after training: its categories and instance count, and what was skipped."""

from __future__ import annotations

import json

from masklab_tf import config as config_lib
from masklab_tf.data import coco
from masklab_tf.data import sources
from masklab_tf.data import tfrecord


class DataError(ValueError):
  """The training set cannot be trained on as configured."""


def check_classes(categories: list[dict], num_classes: int,
                  description: str) -> None:
  """Raises DataError when the set has more categories than num_classes."""
  if len(categories) > num_classes:
    names = ', '.join(str(c['name']) for c in categories)
    raise DataError(
        f'{description} has {len(categories)} categories ({names}) but '
        f'--num_classes={num_classes}: set --num_classes={len(categories)} '
        '(or leave it out to take it from the data)')


def facts(train_set: coco.CocoDataset | None,
          split: config_lib.DataSplitConfig) -> tuple[list[dict], int, str]:
  """(categories [{'id', 'name'}] by id, regular instances, a name for
  messages) of the training set: the COCO json read (`train_set`), or the
  TFRecords' categories file (its max_instances_per_image stands for the
  count)."""
  if train_set is not None:
    categories = [{'id': c.id, 'name': c.name} for c in train_set.categories]
    regular = sum(not i.is_crowd for record in train_set.records
                  for i in record.instances)
    return categories, regular, split.annotations
  path = split.categories or tfrecord.categories_path_for(split.tfrecords)
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except (OSError, ValueError) as error:
    raise DataError(f'{path}: cannot read the categories of '
                    f'--train_tfrecords={split.tfrecords}: {error}') from None
  categories = tfrecord.read_categories(path)
  return (categories, saved.get('max_instances_per_image', 1),
          split.tfrecords)


def report(train_set: coco.CocoDataset | None,
           skipped: sources.SkippedImages) -> str:
  """What training skipped: entries the reader dropped or repaired (by
  kind, then each), and images that failed to decode while training."""
  lines = []
  if train_set is not None and train_set.problems:
    kinds = ', '.join(f'{kind} {count}' for kind, count in
                      train_set.problem_counts().items())
    lines.append(f'{len(train_set.problems)} problems in the training '
                 f'set, skipped or repaired when read ({kinds}):')
    lines += [f'  {problem}' for problem in train_set.problems]
  if len(skipped):
    lines.append(f'{len(skipped)} images failed to decode during '
                 'training and were skipped:')
    lines += [f'  {message}' for message in skipped.messages]
  return '\n'.join(lines)
