"""COCO evaluation: perfect, empty and crowded predictions; mask pasting;
the printed metrics and per-class tables."""

import numpy as np
import pytest
from pycocotools import mask as mask_api

from masklab_tf.evaluation import coco_results
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.postprocess import masks as masks_lib


def ground_truth(num_instances, size=200, first_id=1):
  """One image with `num_instances` non-overlapping 8x8 squares."""
  annotations, masks = [], []
  per_row = size // 10
  for i in range(num_instances):
    mask = np.zeros([size, size], np.uint8)
    top, left = (i // per_row) * 10, (i % per_row) * 10
    mask[top:top + 8, left:left + 8] = 1
    rle = mask_api.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode('ascii')
    annotations.append({'id': first_id + i, 'image_id': 1, 'category_id': 1,
                        'segmentation': rle, 'area': 64.0,
                        'bbox': [left, top, 8, 8], 'iscrowd': 0})
    masks.append(mask)
  data = {'images': [{'id': 1, 'height': size, 'width': size,
                      'file_name': 'x.png'}],
          'annotations': annotations,
          'categories': [{'id': 1, 'name': 'square'}]}
  return data, masks


def perfect_results(data, masks):
  predictions = [{
      'image_id': 1,
      'boxes': np.array([[a['bbox'][1], a['bbox'][0],
                          a['bbox'][1] + 8, a['bbox'][0] + 8]
                         for a in data['annotations']], np.float32),
      'scores': np.linspace(1.0, 0.5, len(masks)),
      'classes': np.ones(len(masks), np.int32),
      'masks': np.stack(masks)}]
  return coco_results.to_coco_results(predictions, [1])


def test_perfect_predictions_score_100():
  data, masks = ground_truth(5)
  metrics = evaluator_lib.coco_metrics(data, perfect_results(data, masks))
  assert metrics['box']['AP'] == pytest.approx(100.0)
  assert metrics['mask']['AP'] == pytest.approx(100.0)


def test_more_than_100_instances_count_in_full():
  # COCOeval's default maxDets=100 would cap this image's recall at 0.8.
  data, masks = ground_truth(125)
  metrics = evaluator_lib.coco_metrics(data, perfect_results(data, masks),
                                  max_detections=125)
  assert metrics['mask']['AP'] == pytest.approx(100.0)
  capped = evaluator_lib.coco_metrics(data, perfect_results(data, masks),
                                 max_detections=100)
  assert capped['mask']['AP'] < 90.0


def test_empty_predictions_give_zero_and_a_warning(caplog):
  data, _ = ground_truth(3)
  with caplog.at_level('WARNING'):
    metrics = evaluator_lib.coco_metrics(data, [])
  assert metrics['mask']['AP'] == 0.0 and metrics['box']['AP'] == 0.0
  assert 'no detections' in caplog.text


def test_paste_masks_inverts_the_crop_convention():
  from masklab_tf.ops import crop
  mask = np.zeros([1, 60, 80], np.uint8)
  mask[0, 10:40, 20:70] = 1
  box = np.array([[10.0, 20.0, 40.0, 70.0]], np.float32)
  crops = crop.crop_masks(mask, box, 41).numpy()
  pasted = masks_lib.paste_masks(crops, box, 60, 80)[0].numpy() >= 0.5
  assert (pasted == mask[0].astype(bool)).mean() > 0.999
  assert not pasted[:10].any() and not pasted[:, :20].any()


def test_summary_matches_cocoeval_at_default_max_dets():
  import contextlib
  import io
  from pycocotools import coco as coco_api
  from pycocotools import cocoeval
  data, masks = ground_truth(30)
  rng = np.random.default_rng(0)
  noisy = []
  for mask in masks:  # shift some masks by a few pixels, drop others
    if rng.uniform() < 0.8:
      noisy.append(np.roll(mask, int(rng.integers(-3, 4)), axis=1))
  results = perfect_results(data, noisy)
  for result in results:
    result['score'] = float(rng.uniform())
  ours = evaluator_lib.coco_metrics(data, results)['mask']
  with contextlib.redirect_stdout(io.StringIO()):
    gt = coco_api.COCO()
    gt.dataset = data
    gt.createIndex()
    evaluator = cocoeval.COCOeval(gt, gt.loadRes(results), 'segm')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  for key, value in zip(evaluator_lib.METRIC_NAMES, evaluator.stats[:6]):
    expected = value * 100 if value >= 0 else -1.0  # -1: undefined
    assert ours[key] == pytest.approx(expected, abs=1e-6), key


def cells(line):
  return line.strip().strip('|').split('|')


def test_table_has_one_separator_cell_per_header():
  metrics = {'box': {'AP': 50.0}, 'mask': {'AP': 40.0, 'APs': -1.0},
             'proposals': {'AR@10': 30.0}}
  header, separator, row = evaluator_lib.format_table(
      {'run': metrics}).splitlines()
  assert len(cells(separator)) == len(cells(header)) == len(cells(row)) == 12
  assert all(c == '---' for c in cells(separator))
  assert [c.strip() for c in cells(row)][:5] == ['run', '50.0', '-', '-',
                                                '40.0']


def test_per_class_ap_shows_the_class_never_found():
  data, masks = ground_truth(4)
  # Instances 3 and 4 are circles, all predicted (last) as squares; no
  # crosses exist.
  for annotation in data['annotations'][2:]:
    annotation['category_id'] = 2
  data['categories'] += [{'id': 2, 'name': 'circle'},
                         {'id': 7, 'name': 'cross'}]
  results = perfect_results(data, masks)
  per_class = evaluator_lib.per_class_ap(data, results)
  assert list(per_class) == ['square', 'circle', 'cross']
  assert per_class['square']['box'] == pytest.approx(100.0)
  assert per_class['square']['mask'] == pytest.approx(100.0)
  assert per_class['circle'] == {'box': 0.0, 'mask': 0.0}
  assert per_class['cross'] == {'box': -1.0, 'mask': -1.0}
  lines = evaluator_lib.format_per_class(per_class).splitlines()
  assert lines[2:] == ['| square | 100.0 | 100.0 |', '| circle | 0.0 | 0.0 |',
                       '| cross | - | - |']
  empty = evaluator_lib.per_class_ap(data, [])
  assert empty['circle'] == {'box': 0.0, 'mask': 0.0}
