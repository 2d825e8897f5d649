"""Independent numpy models of the project's conventions, for tests."""

import numpy as np


def numpy_channel(u, v, num_directions=8, num_distance_bins=4):
  """The direction x distance channel of ops/direction.py, in float64 numpy."""
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


def crop_np(features, box, crop_size, stride):
  """The crop convention (ops/crop.py) in numpy, for one [H, W, C] map and
  one box in continuous image pixels (`stride` pixels per map cell).

  S samples per axis include both box edges; pixel k has its centre at
  continuous k + 0.5; a sample outside the hull of the pixel centres is 0.
  """
  height, width, channels = features.shape
  ymin, xmin, ymax, xmax = np.asarray(box, np.float64) / stride
  steps = np.arange(crop_size) / max(crop_size - 1, 1)
  if crop_size == 1:
    steps = np.array([0.5])
  ys = ymin + steps * (ymax - ymin) - 0.5
  xs = xmin + steps * (xmax - xmin) - 0.5
  out = np.zeros((crop_size, crop_size, channels))
  for i, y in enumerate(ys):
    for j, x in enumerate(xs):
      if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
        continue
      y0, x0 = int(np.floor(y)), int(np.floor(x))
      y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
      wy, wx = y - y0, x - x0
      out[i, j] = ((1 - wy) * (1 - wx) * features[y0, x0] +
                   (1 - wy) * wx * features[y0, x1] +
                   wy * (1 - wx) * features[y1, x0] +
                   wy * wx * features[y1, x1])
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
# Mask voting (masklab_tf/postprocess/mask_voting.py) in numpy, with its own
# box IoU rather than Model Garden's bbox_overlap (no padding -1, no 1e-8 in
# the union, areas clipped at 0).


def box_iou_np(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
  """Pairwise IoU of continuous boxes; empty boxes have IoU 0 with all.

  Args:
    boxes1: [N, 4] ymin, xmin, ymax, xmax.
    boxes2: [M, 4].

  Returns:
    float32 [N, M].
  """
  boxes1 = np.asarray(boxes1, np.float32).reshape(-1, 4)
  boxes2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
  top = np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
  left = np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
  bottom = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2])
  right = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3])
  inter = np.maximum(bottom - top, 0) * np.maximum(right - left, 0)
  area1 = _area_np(boxes1)
  area2 = _area_np(boxes2)
  union = area1[:, None] + area2[None, :] - inter
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(union > 0, inter / union, 0).astype(np.float32)


def vote_weights_np(boxes: np.ndarray, classes: np.ndarray,
                    pool_boxes: np.ndarray, pool_scores: np.ndarray,
                    pool_classes: np.ndarray, iou_threshold: float = 0.5,
                    include_self: bool = False) -> np.ndarray:
  """A numpy model of postprocess/mask_voting.vote_weights."""
  classes = np.asarray(classes).reshape(-1)
  pool_classes = np.asarray(pool_classes).reshape(-1)
  votes = ((box_iou_np(boxes, pool_boxes) >= iou_threshold) &
           (classes[:, None] == pool_classes[None, :]) &
           (classes[:, None] > 0))
  if include_self:
    votes |= np.eye(len(classes), dtype=bool) & (classes[:, None] > 0)
  scores = np.asarray(pool_scores, np.float32).reshape(1, -1)
  return np.where(votes, scores, 0).astype(np.float32)


def vote_masks_np(masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                  classes: np.ndarray, iou_threshold: float = 0.5,
                  mask_threshold: float = 0.5, pool=None) -> np.ndarray:
  """A numpy model of postprocess/mask_voting.vote_masks (same arguments
  and result)."""
  include_self = pool is None
  if pool is None:
    pool = (masks, boxes, scores, classes)
  pool_masks, pool_boxes, pool_scores, pool_classes = pool
  weights = vote_weights_np(boxes, classes, pool_boxes, pool_scores,
                            pool_classes, iou_threshold, include_self)
  pool_masks = np.asarray(pool_masks, np.float32)
  total = np.einsum('nm,mhw->nhw', weights, pool_masks)
  norm = weights.sum(axis=1)[:, None, None]
  # Compare the weighted sum with threshold * total weight rather than
  # divide: no 0/0 for unvoted rows, and `vote_masks` can do the same.
  keep = (total >= np.float32(mask_threshold) * norm) & (norm > 0)
  return keep.astype(np.uint8)


def _area_np(boxes):
  return (np.maximum(boxes[:, 2] - boxes[:, 0], 0) *
          np.maximum(boxes[:, 3] - boxes[:, 1], 0))
