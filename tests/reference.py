"""Independent numpy models of the project's conventions, for tests."""

import numpy as np


def numpy_channel(u, v, num_directions=8, num_distance_bins=4):
  """DESIGN.md's direction x distance channel, in float64 numpy."""
  angle = np.mod(np.arctan2(v, u), 2 * np.pi)
  d = np.minimum(np.floor(angle / (2 * np.pi) * num_directions),
                 num_directions - 1)
  r = np.minimum(np.floor(np.hypot(u, v) * num_distance_bins),
                 num_distance_bins - 1)
  return (d * num_distance_bins + r).astype(np.int64)


def paste_masks_np(masks: np.ndarray, boxes: np.ndarray, height: int,
                width: int) -> np.ndarray:
  """Box-relative masks -> full-image probabilities: a numpy model of
  postprocess/masks.paste_masks, one box and one pixel at a time.

  Inverse of the crop convention (ops/crop.py): pixel centre (x + 0.5) maps
  to sample position (x + 0.5 - xmin) / (xmax - xmin) * (S - 1) of the
  box's S samples, read bilinearly; pixels outside the box are 0.

  Args:
    masks: [N, S, S] probabilities.
    boxes: [N, 4] continuous [ymin, xmin, ymax, xmax] image pixels.
    height, width: image size.

  Returns:
    float32 [N, height, width].
  """
  num, size = masks.shape[0], masks.shape[1]
  out = np.zeros([num, height, width], np.float32)
  for i in range(num):
    ymin, xmin, ymax, xmax = boxes[i]
    if ymax - ymin <= 0 or xmax - xmin <= 0:
      continue
    rows = np.arange(max(int(np.floor(ymin)), 0),
                     min(int(np.ceil(ymax)), height))
    cols = np.arange(max(int(np.floor(xmin)), 0),
                     min(int(np.ceil(xmax)), width))
    if not len(rows) or not len(cols):
      continue
    ys = (rows + 0.5 - ymin) / (ymax - ymin) * (size - 1)
    xs = (cols + 0.5 - xmin) / (xmax - xmin) * (size - 1)
    out[i][np.ix_(rows, cols)] = _bilinear(masks[i], ys, xs)
  return out




def _bilinear(grid, ys, xs):
  size = grid.shape[0]
  ys = np.clip(ys, 0, size - 1)
  xs = np.clip(xs, 0, size - 1)
  y0 = np.minimum(np.floor(ys).astype(int), size - 2)
  x0 = np.minimum(np.floor(xs).astype(int), size - 2)
  wy = (ys - y0)[:, None]
  wx = (xs - x0)[None, :]
  top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
  bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
  return top * (1 - wy) + bottom * wy
