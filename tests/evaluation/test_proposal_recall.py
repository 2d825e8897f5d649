"""Average recall of segment proposals, on hand-checkable masks."""

import numpy as np
import pytest
from pycocotools import mask as mask_api

from masklab_tf.evaluation import proposal_recall


def _rle(mask):
  rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
  rle['counts'] = rle['counts'].decode('ascii')
  return rle


def _square(top, left, size, shape=(20, 20)):
  mask = np.zeros(shape, bool)
  mask[top:top + size, left:left + size] = True
  return mask


@pytest.fixture
def ground_truth():
  annotations = [
      {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
       'segmentation': _rle(_square(0, 0, 10))},
      {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
       'segmentation': [[12, 12, 18, 12, 18, 18, 12, 18]]},  # A polygon.
      {'id': 3, 'image_id': 1, 'category_id': 1, 'iscrowd': 1,
       'segmentation': _rle(_square(0, 10, 5))},  # Crowd: not counted.
  ]
  return {'images': [{'id': 1, 'height': 20, 'width': 20}],
          'annotations': annotations,
          'categories': [{'id': 1, 'name': 'thing'}]}


def test_perfect_proposals_recall_everything(ground_truth):
  polygon = np.asarray(mask_api.decode(mask_api.merge(mask_api.frPyObjects(
      [[12, 12, 18, 12, 18, 18, 12, 18]], 20, 20))), bool)
  proposals = {1: [_square(0, 0, 10), polygon]}
  assert proposal_recall.average_recall(ground_truth, proposals) == {
      'AR@10': 100.0, 'AR@100': 100.0, 'AR@1000': 100.0}


def test_recall_counts_thresholds_and_the_top_n(ground_truth):
  # A 10x8 proposal inside the 10x10 instance: IoU 0.8, recalled at
  # t = 0.5 .. 0.8 (7 of 10 thresholds); the polygon is not found.
  shifted = np.zeros((20, 20), bool)
  shifted[0:10, 0:8] = True
  result = proposal_recall.average_recall(
      ground_truth, {1: [np.zeros((20, 20), bool), shifted]}, limits=(1, 2))
  assert result['AR@1'] == 0.0  # The empty proposal ranks first.
  assert result['AR@2'] == pytest.approx(100 * 7 / 10 / 2)
  assert proposal_recall.average_recall(ground_truth, {}) == {
      'AR@10': 0.0, 'AR@100': 0.0, 'AR@1000': 0.0}
