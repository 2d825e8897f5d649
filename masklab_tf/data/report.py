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
  lines += _kind_lines('notes per kind:', dataset.note_counts())
  lines.append(f'images={len(dataset.records)} instances={len(instances)} '
               f'problems={len(dataset.problems)}')
  return lines


def _kind_lines(title, counts):
  if not counts:
    return [f'{title} none']
  return [title] + [f'  {kind}: {count}'
                    for kind, count in sorted(counts.items())]
