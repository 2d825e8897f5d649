"""Pictures: the prediction panel draws masks, boxes and the class map."""

import numpy as np
import pytest

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


def label_band(picture, image, color):
  """Rows and columns where a label tag of `color` replaced the image."""
  tag = (picture == color).all(-1) & (image != color).any(-1)
  rows, cols = np.nonzero(tag)
  return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize('height,width', [(96, 128), (160, 160),
                                          (768, 1024), (3000, 4000)])
def test_labels_and_boxes_scale_with_the_image(height, width):
  image = np.full((height, width, 3), 100, np.uint8)
  box = np.array([[0.4 * height, 0.3 * width, 0.7 * height, 0.6 * width]])
  color = np.array([[255, 0, 0]], np.uint8)
  picture = visualize.draw_labels(image, box, ['triangle 0.93'], color)
  tag_h, tag_w = label_band(picture, image, color[0])
  short = min(height, width)
  # About 1/20 of the shorter side (text 1/24 plus the tag's margin), 9 px
  # at least: readable on a small image, not a third of it.
  assert max(9, 0.03 * short) <= tag_h <= max(11, 0.07 * short)
  assert tag_w <= 0.6 * width
  boxes = visualize.overlay_masks(image, np.zeros((1, height, width)), box,
                                  alpha=0.0)
  top_row = int(box[0, 0])
  middle = int((box[0, 1] + box[0, 3]) / 2)
  drawn = (boxes[top_row:, middle] != 100).any(-1)
  thickness = int(np.argmin(drawn))  # Drawn rows from the top edge down.
  assert thickness == max(1, round(short / 300))
  assert (thickness == 1) == (short < 450)
