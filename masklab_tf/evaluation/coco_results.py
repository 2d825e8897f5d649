"""Detections -> COCO results json entries, in numpy and pycocotools only
(bin/predict --onnx runs without TensorFlow)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_api


def to_coco_results(predictions: list[dict],
                    category_ids: list[int]) -> list[dict]:
  """COCO results json entries; category_ids[k - 1] is class k's COCO id."""
  results = []
  for prediction in predictions:
    for box, score, cls, mask in zip(prediction['boxes'],
                                     prediction['scores'],
                                     prediction['classes'],
                                     prediction['masks']):
      ymin, xmin, ymax, xmax = [float(v) for v in box]
      rle = mask_api.encode(np.asfortranarray(mask))
      rle['counts'] = rle['counts'].decode('ascii')
      results.append({
          'image_id': prediction['image_id'],
          'category_id': int(category_ids[int(cls) - 1]),
          'bbox': [xmin, ymin, xmax - xmin, ymax - ymin],
          'score': float(score),
          'segmentation': rle,
      })
  return results
