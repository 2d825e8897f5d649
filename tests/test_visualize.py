"""Pictures: the prediction panel draws masks, boxes and the class map."""

import numpy as np

from masklab_tf import visualize


def test_prediction_panel_draws_inside_the_mask_only():
  image = np.full((20, 30, 3), 100, np.uint8)
  mask = np.zeros((1, 20, 30), bool)
  mask[0, 5:10, 5:15] = True
  boxes = np.array([[4.0, 4.0, 11.0, 16.0]])
  semantic = np.zeros((20, 30), np.int32)
  semantic[5:10, 5:15] = 2
  panel = visualize.prediction_panel(image, boxes, mask, semantic, 3)
  assert panel.shape == (20, 62, 3)
  left, gap, right = panel[:, :30], panel[:, 30:32], panel[:, 32:]
  assert (left[6:9, 6:14] != 100).any(axis=-1).all()  # Mask tinted.
  assert (left[0:3] == 100).all() and (left[15:] == 100).all()
  assert (left[4, 4:16] != 100).any(axis=-1).all()  # Box's top edge.
  assert (gap == 128).all()
  colors = visualize.palette(4)
  assert (right[7, 7] == colors[2]).all() and (right[0, 0] == 0).all()
  alone = visualize.prediction_panel(image, boxes[:0], mask[:0], None, 3)
  assert (alone == image).all()
