"""Average recall of segment proposals (InstanceFCN's metric).

InstanceFCN (sec. 4) evaluates class-agnostic segment proposals as
DeepMask does: AR@N is the recall of the ground-truth instances by the
top-N proposals of each image, averaged over mask IoU thresholds 0.5,
0.55, ..., 0.95 (Hosang et al.: an instance counts as recalled at t if
some proposal overlaps it with IoU >= t; no one-to-one matching, as
proposals are not detections). Crowd regions are not instances. Mask IoU is
pycocotools'.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_api

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _rles(segmentations, height, width):
  rles = []
  for segmentation in segmentations:
    if isinstance(segmentation, list):  # Polygons.
      rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get('counts'), list):  # Uncompressed.
      rle = mask_api.frPyObjects(segmentation, height, width)
    else:
      rle = segmentation
    rles.append(rle)
  return rles


def best_overlaps(ground_truth: dict, proposals: dict[int, list],
                  max_proposals: int) -> np.ndarray:
  """Each non-crowd instance's best mask IoU with its image's top proposals.

  Args:
    ground_truth: COCO instances dict.
    proposals: image id -> RLE dicts (or binary masks [H, W]) sorted by
      score, best first.
    max_proposals: N, proposals per image considered.

  Returns:
    float [num instances], 0 for an image without proposals.
  """
  sizes = {image['id']: (image['height'], image['width'])
           for image in ground_truth['images']}
  per_image: dict[int, list] = {}
  for annotation in ground_truth['annotations']:
    if not annotation.get('iscrowd', 0):
      per_image.setdefault(annotation['image_id'], []).append(
          annotation['segmentation'])
  overlaps = []
  for image_id, segmentations in per_image.items():
    height, width = sizes[image_id]
    gts = _rles(segmentations, height, width)
    found = list(proposals.get(image_id, []))[:max_proposals]
    if not found:
      overlaps.append(np.zeros(len(gts)))
      continue
    found = [mask_api.encode(np.asfortranarray(p.astype(np.uint8)))
             if isinstance(p, np.ndarray) else p for p in found]
    iou = np.asarray(mask_api.iou(found, gts, [0] * len(gts)))
    overlaps.append(iou.reshape(len(found), len(gts)).max(axis=0))
  return np.concatenate(overlaps) if overlaps else np.zeros(0)


def average_recall(ground_truth: dict, proposals: dict[int, list],
                   limits=(10, 100, 1000)) -> dict[str, float]:
  """{'AR@10': %, 'AR@100': %, 'AR@1000': %} (by default)."""
  result = {}
  for limit in limits:
    best = best_overlaps(ground_truth, proposals, limit)
    recalls = [(best >= t).mean() if len(best) else 0.0
               for t in IOU_THRESHOLDS]
    result[f'AR@{limit}'] = float(np.mean(recalls) * 100)
  return result
