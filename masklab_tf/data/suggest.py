"""Flags fitted to a dataset (bin/check_dataset --suggest_flags), as
YOLO's autoanchor fits anchors: what a new dataset most often gets wrong
when it starts from a config made for another one.

Plain Python and numpy over the COCO reader's records: every rule reads
one statistic of the data and says which in the comment it writes. The
rules (sizes after the resize the flags themselves set):

- image sizes: the median image's shorter side, to a multiple of 16, is
  `--eval_min_size`; training jitters it by 0.8x / 1x / 1.2x
  (`--min_sizes`); `--max_size` lets the median image's longer side reach
  1.2x its eval size.
- anchors: octaves (powers of 2) from the 2nd to the 98th percentile of the
  boxes' sqrt(w h), half octaves between them where that gives fewer than 3;
  aspect ratios (h / w) 1, plus 0.5 / 2 (and 0.25 / 4) where the 5th / 95th
  percentiles pass 0.7 / 1.4 (0.35 / 2.8).
- output stride 8 where a tenth of the boxes are under 32 px (they would
  cover fewer than 2 x 2 cells of the semantic and direction maps at 16),
  else 16.
- `--max_instances`: the most instances of an image, rounded up to 10s;
  `--max_detections`: twice that, at least 20; proposals: twice the
  detections, at least 100 (COCOeval's maxDets already follows the most
  instances of an image: evaluation/evaluator.py).
"""

from __future__ import annotations

import datetime
import math

import numpy as np

from masklab_tf.data import coco

JITTER = (0.8, 1.0, 1.2)
SMALL_BOX = 32  # px: 2 cells of a stride-16 map.


def _round_to(value: float, multiple: int, up: bool = False) -> int:
  rounded = (math.ceil if up else round)(value / multiple) * multiple
  return max(int(rounded), multiple)


def _anchor_sizes(sizes: np.ndarray) -> list[float]:
  low, high = np.percentile(sizes, [2, 98])
  first = 2 ** math.floor(math.log2(max(low, 1.0)))
  last = 2 ** math.ceil(math.log2(max(high, first * 2)))
  octaves = [first * 2 ** i for i in range(int(math.log2(last / first)) + 1)]
  if len(octaves) >= 3:
    return octaves
  halves = [size * 1.5 for size in octaves[:-1]]
  return sorted(octaves + halves)


def _aspect_ratios(ratios: np.ndarray) -> list[float]:
  low, high = np.percentile(ratios, [5, 95])
  chosen = [1.0]
  for bound, ratio in ((0.7, 0.5), (0.35, 0.25)):
    if low < bound:
      chosen.insert(0, ratio)
  for bound, ratio in ((1.4, 2.0), (2.8, 4.0)):
    if high > bound:
      chosen.append(ratio)
  return chosen


def _number(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def suggest_flags(dataset: coco.CocoDataset) -> list[str]:
  """The lines of a flags file fitted to `dataset` (comments included).

  Raises ValueError when the dataset has no image with an instance.
  """
  records = [r for r in dataset.records if r.instances]
  if not records:
    raise ValueError(f'{dataset.annotations_path}: no image with an '
                     'instance to fit flags to')
  shorter = np.array([min(r.height, r.width) for r in records], float)
  longer = np.array([max(r.height, r.width) for r in records], float)
  eval_min = _round_to(float(np.median(shorter)), 16)
  median_longer = float(np.median(longer)) * eval_min / float(
      np.median(shorter))
  max_size = _round_to(max(median_longer, eval_min) * JITTER[-1], 16)
  min_sizes = [_round_to(eval_min * j, 16) for j in JITTER]

  sizes, ratios = [], []
  for record in records:
    scale = min(eval_min / min(record.height, record.width),
                max_size / max(record.height, record.width))
    for instance in record.instances:
      _, _, width, height = instance.box
      if instance.is_crowd or width <= 0 or height <= 0:
        continue
      sizes.append(math.sqrt(width * height) * scale)
      ratios.append(height / width)
  sizes, ratios = np.array(sizes), np.array(ratios)
  anchors = _anchor_sizes(sizes)
  small_share = float(np.mean(sizes < SMALL_BOX))
  stride = 8 if small_share >= 0.1 else 16
  most = max(len(r.instances) for r in records)
  max_instances = _round_to(most, 10, up=True)
  max_detections = max(20, 2 * max_instances)
  proposals = max(100, 2 * max_detections)
  counts = [len(r.instances) for r in records]
  low, high = np.percentile(sizes, [2, 98])

  def line(flag, value, why):
    shown = (','.join(_number(v) for v in value)
             if isinstance(value, (list, tuple)) else _number(value))
    return [f'# {why}', f'--{flag}={shown}']

  lines = [
      f'# Fitted by bin/check_dataset --suggest_flags to '
      f'{dataset.annotations_path}',
      f'# ({len(dataset.records)} images, {dataset.num_instances} instances, '
      f'{datetime.date.today().isoformat()}). Use after a base config: '
      'bin/train --flagfile=configs/shapes_cpu.flags --flagfile=THIS.',
      *line('num_classes', dataset.num_classes,
            f'{dataset.num_classes} categories in the json.'),
      *line('eval_min_size', eval_min, 'The median image\'s shorter side is '
            f'{np.median(shorter):g} px (to a multiple of 16).'),
      *line('min_sizes', min_sizes, 'Scale jitter 0.8x / 1x / 1.2x around '
            'it.'),
      *line('max_size', max_size, 'The median image\'s longer side at 1.2x '
            f'its eval size ({median_longer:.0f} px at 1x).'),
      *line('anchor_sizes', anchors, 'Boxes after the resize: sqrt(w h) '
            f'from {low:.0f} px (2nd percentile) to {high:.0f} px (98th).'),
      *line('anchor_aspect_ratios', _aspect_ratios(ratios),
            'Box h / w from {:.2f} (5th percentile) to {:.2f} (95th).'.format(
                *np.percentile(ratios, [5, 95]))),
      *line('output_stride', stride,
            f'{small_share:.0%} of the boxes are under {SMALL_BOX} px '
            '(stride 8 from 10 %: they would cover under 2 x 2 cells at '
            '16).'),
      *line('max_instances', max_instances, f'Up to {most} instances in an '
            f'image (median {np.median(counts):g}).'),
      *line('max_detections', max_detections, 'Twice that, at least 20.'),
      *line('num_proposals', proposals, 'Proposals: twice the detections, '
            'at least 100.'),
      *line('test_num_proposals', proposals, 'The same at test time.'),
      '# Training length: the base config\'s steps are for its data; about '
      f'20 epochs of {len(records)} images at batch 4 would be',
      f'# --train_steps={max(100, 20 * len(records) // 4)}',
  ]
  return lines
