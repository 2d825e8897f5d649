"""The human report of a checked COCO set (bin/check_dataset, bin/demo)."""

from masklab_tf.data import coco

MAX_PROBLEM_LINES = 50


def report_lines(dataset: coco.CocoDataset) -> list[str]:
  """The report, ending with the `images=N instances=M problems=P` line."""
  instances = [instance for record in dataset.records
               for instance in record.instances]
  per_class = {category.id: 0 for category in dataset.categories}
  for instance in instances:
    per_class[instance.category_id] += 1
  lines = [
      f'annotations: {dataset.annotations_path}',
      f'images dir: {dataset.images_dir}',
      f'pixel limit: {_pixel_limit_line()}',
      f'images: {len(dataset.records)}',
      f'instances: {len(instances)} '
      f'(crowd: {sum(instance.is_crowd for instance in instances)})',
      f'instances per class ({dataset.num_classes} classes):',
  ]
  lines += [f'  {category.id} {category.name}: {per_class[category.id]}'
            for category in dataset.categories]
  lines += _kind_lines('problems per kind:', dataset.problem_counts())
  if dataset.problems:
    lines.append('problems:')
    lines += [f'  {problem}'
              for problem in dataset.problems[:MAX_PROBLEM_LINES]]
    if len(dataset.problems) > MAX_PROBLEM_LINES:
      hidden = len(dataset.problems) - MAX_PROBLEM_LINES
      lines.append(f'  ... and {hidden} more')
  lines += _note_lines(dataset.note_counts())
  lines.append(f'images={len(dataset.records)} instances={len(instances)} '
               f'problems={len(dataset.problems)}')
  return lines


def unusable(dataset: coco.CocoDataset) -> str:
  """Why nothing of the set can be trained on, or '' when something can."""
  if not dataset.records:
    return 'no usable image is left'
  if not dataset.num_instances:
    return 'no usable instance is left'
  return ''


def _pixel_limit_line():
  limit = coco.pixel_limit()
  if limit is None:
    return f'none ({coco.pixel_limit_source()})'
  return (f'{limit} pixels ({coco.pixel_limit_source()}); larger images are '
          'skipped as too_many_pixels')


def _note_lines(counts):
  """Each kind's count and, once, what it means."""
  if not counts:
    return ['notes per kind: none']
  lines = ['notes per kind:']
  for kind, count in sorted(counts.items()):
    unit, explanation = coco.NOTE_KINDS.get(kind, ('note', ''))
    noun = unit if count == 1 else unit + 's'
    lines.append(f'  {kind}: {count} {noun}' +
                 (f'; {explanation}' if explanation else ''))
  return lines


def _kind_lines(title, counts):
  if not counts:
    return [f'{title} none']
  return [title] + [f'  {kind}: {count}'
                    for kind, count in sorted(counts.items())]
