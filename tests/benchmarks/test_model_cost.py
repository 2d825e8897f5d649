"""The model_cost suite's logic on hand-made rows (no model is built)."""

import numpy as np

from benchmarks.suites import model_cost


def test_random_boxes_are_valid_and_of_detection_sizes():
  random_boxes = model_cost._random_boxes  # pylint: disable=protected-access
  boxes = random_boxes(np.random.default_rng(0), 500, 128)
  assert boxes.shape == (1, 500, 4)
  ymin, xmin, ymax, xmax = np.moveaxis(boxes[0], -1, 0)
  assert (ymin >= 0).all() and (xmin >= 0).all()
  assert (ymax <= 128).all() and (xmax <= 128).all()
  sides = np.sqrt((ymax - ymin) * (xmax - xmin))
  assert sides.min() >= 15.9 and sides.max() <= 0.75 * 128 + 0.1


def test_op_lines_name_counted_and_uncounted_ops_per_part():
  rows = [
      {'part': 'backbone', 'by_op': {'Conv2D': 10.0, 'BiasAdd': 0.001},
       'uncounted': {f'Op{i}': float(i) for i in range(10)},
       'unknown_shape_ops': ['conv']},
      {'part': 'sum of parts', 'by_op': {}, 'uncounted': {},
       'unknown_shape_ops': []}]
  line, = model_cost._op_lines(rows)  # pylint: disable=protected-access
  assert line.startswith('- backbone: counted Conv2D 10.00 (+1 types under '
                         '0.01); not counted: Op9 (9.0M), Op8 (8.0M)')
  assert ', +2 more; WARNING: 1 conv/matmul ops' in line
