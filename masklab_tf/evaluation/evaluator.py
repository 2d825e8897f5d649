"""COCO evaluation of a MaskLab inference model with pycocotools.

Predictions come back to original image coordinates through
postprocess/image_results.py (as served models answer), masks pasted from
their box crops and binarised at 0.5, RLE-encoded, and COCOeval scores
boxes and masks. Two pycocotools
traps are handled: annotation id 0 is silently dropped by COCOeval (the
reader renumbers ids, and the ground truth handed over is its cleaned json),
and the headline AP counts at most 100 detections per image (maxDets is
raised to the largest ground-truth count when images hold more).

Why pycocotools directly rather than Model Garden's COCOEvaluator
(official.vision.evaluation.coco_evaluator, tf-models-official 2.20):
  * It reads COCOeval.summarize(), whose headline AP is -1 whenever maxDets
    lacks 100, and it raises only the box maxDets (masks stay at 100). The
    125-instance test caught the -1 (commit 429860d); `_summarize` reads
    the precision array instead.
  * It pastes masks with Detectron's integer-box convention
    (mask_ops.paste_instance_masks); our crops follow ops/crop.py and paste
    with its inverse (postprocess.detections.paste_masks). Cropping 200
    ellipse masks at 41 x 41 and pasting them back gave a mean IoU with the
    original of 0.978 (min 0.905) through Model Garden's paste, 0.995 (min
    0.987) through ours.

Every model is also scored as a source of segment proposals: average recall
AR@10 and AR@100 over mask IoU 0.5:0.95 (proposal_recall.py, InstanceFCN's
metric), classes ignored. Class-agnostic models (InstanceFCN) get only
that: COCO AP needs classes. A model without detections (the
semantic-segmentation pretraining stage) gets the mean IoU of its semantic
map instead (semantic_metrics.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging

import numpy as np
import tensorflow as tf
from pycocotools import coco as coco_api
from pycocotools import cocoeval

from masklab_tf import files
from masklab_tf.evaluation import coco_results
from masklab_tf.evaluation import proposal_recall
from masklab_tf.evaluation import semantic_metrics
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.modeling.systems import registry
from masklab_tf.postprocess import image_results
from masklab_tf.postprocess import masks as masks_lib
from masklab_tf.postprocess import test_time_augmentation as tta

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
RECALL_LIMITS = (10, 100)


def predict(inference_model, dataset: tf.data.Dataset,
            padding_multiple: int = 0,
            test_time: tta.Settings | None = None) -> list[dict]:
  """Runs the model over eval batches; returns per-image predictions.

  The batches' images go through the inference graph and
  postprocess/image_results.py, the path a served model's answers take,
  so evaluation scores what serving returns. With `padding_multiple` (the
  model's output stride, when batches mix image sizes) each image runs
  alone (image_results.EachImageAlone): its scores then do not depend on
  the batch size or on which images share its batch. `test_time`: test-time
  augmentation (postprocess/test_time_augmentation.py).

  Each prediction: image_id, boxes [D, 4] (ymin, xmin, ymax, xmax in
  original pixels), scores [D], classes [D] (1..K), masks uint8 [D, H0, W0]
  binarised at image_results.MASK_THRESHOLD.
  """
  results_model = image_results.build_results_model(
      inference_model, full_image_masks=True,
      padding_multiple=padding_multiple, test_time=test_time)
  call = tf.function(lambda inputs: results_model(inputs, training=False),
                     autograph=False)
  predictions = []
  for batch in dataset:
    outputs = call({k: batch[k] for k in results_model.input_names})
    outputs = {k: v.numpy() for k, v in outputs.items()}
    for i, image_id in enumerate(batch['image_id'].numpy()):
      height, width = batch['original_size'][i].numpy()
      predictions.append(_prediction(int(image_id), outputs, i, height,
                                     width))
  return predictions


def predict_saved_model(loaded, dataset: coco.CocoDataset) -> list[dict]:
  """`predict` through an exported SavedModel (serving/export.py).

  Each original image goes in as it is (batch 1, its own size) through the
  `serving_default` signature, which resizes and pads in the graph and
  answers in the image's pixels, as a served model would. Masks are pasted
  by postprocess/masks.py where the SavedModel was exported without
  full-image masks.
  """
  serve = loaded.signatures['serving_default']
  predictions = []
  for record in dataset.records:
    image = dataset.load_image(record)
    outputs = {k: v.numpy() for k, v in
               serve(images=tf.constant(image[np.newaxis])).items()}
    predictions.append(_prediction(record.image_id, outputs, 0,
                                   record.height, record.width))
  return predictions


def _prediction(image_id: int, outputs: dict, i: int, height: int,
                width: int) -> dict:
  """Image i of a batch of results (image_results.py) as a prediction."""
  num = int(outputs['num_detections'][i])
  boxes = outputs['detection_boxes'][i, :num]
  if 'detection_masks_full' in outputs:
    masks = outputs['detection_masks_full'][i, :num, :height, :width]
  else:
    masks = (masks_lib.paste_masks(
        outputs['detection_masks'][i, :num], boxes, height, width).numpy()
             >= image_results.MASK_THRESHOLD).astype(np.uint8)
  return {'image_id': image_id, 'boxes': boxes,
          'scores': outputs['detection_scores'][i, :num],
          'classes': outputs['detection_classes'][i, :num], 'masks': masks}


def coco_metrics(ground_truth: dict, results: list[dict],
                 max_detections: int = 100) -> dict[str, dict[str, float]]:
  """Box and mask AP, AP50, AP75, APs, APm, APl (in %) from COCOeval.

  Args:
    ground_truth: a COCO instances dict with annotation ids >= 1 (use
      CocoDataset.to_coco_dict()).
    results: COCO results entries.
    max_detections: detections per image the headline AP counts (at least
      100, COCO's default; more when images hold more ground truth).

  Returns:
    {'box': {...}, 'mask': {...}}, -1 where undefined; zeros (with a
    warning) when there are no results at all.
  """
  if not results:
    logging.warning('no detections at all: AP is 0')
    zeros = {name: 0.0 for name in METRIC_NAMES}
    return {'box': dict(zeros), 'mask': dict(zeros)}
  return {name: _summarize(evaluator) for name, evaluator in
          _cocoevals(ground_truth, results, max_detections).items()}


def _cocoevals(ground_truth: dict, results: list[dict],
               max_detections: int) -> dict[str, cocoeval.COCOeval]:
  """{'box': ..., 'mask': ...}: accumulated COCOeval objects (their
  printing swallowed)."""
  with contextlib.redirect_stdout(io.StringIO()):
    gt = coco_api.COCO()
    gt.dataset = ground_truth
    gt.createIndex()
    detections = gt.loadRes(results)
  evaluators = {}
  for name, iou_type in (('box', 'bbox'), ('mask', 'segm')):
    evaluator = cocoeval.COCOeval(gt, detections, iou_type)
    evaluator.params.maxDets = [1, 10, max(100, max_detections)]
    with contextlib.redirect_stdout(io.StringIO()):
      evaluator.evaluate()
      evaluator.accumulate()
    evaluators[name] = evaluator
  return evaluators


def per_class_ap(ground_truth: dict, results: list[dict],
                 max_detections: int = 100) -> dict[str, dict[str, float]]:
  """Box and mask AP (%, IoU 0.5:0.95, all sizes) of each category.

  The headline AP averages the classes, so one class the model never
  finds hides behind the others; this shows it.

  Args:
    ground_truth, results, max_detections: as `coco_metrics`.

  Returns:
    {category name: {'box': AP, 'mask': AP}} in the ground truth's order;
    -1 for a category without ground truth, 0 without any results.
  """
  names = {c['id']: c['name'] for c in ground_truth['categories']}
  if not results:
    return {name: {'box': 0.0, 'mask': 0.0} for name in names.values()}
  per_class = {name: {} for name in names.values()}
  for kind, evaluator in _cocoevals(ground_truth, results,
                                    max_detections).items():
    precision = evaluator.eval['precision']  # [T, R, K, A, M]
    for k, category_id in enumerate(evaluator.params.catIds):
      values = precision[:, :, k, 0, -1]
      values = values[values > -1]
      per_class[names[category_id]][kind] = (
          float(values.mean()) * 100 if values.size else -1.0)
  return per_class


def format_per_class(per_class: dict[str, dict[str, float]]) -> str:
  """Markdown table of `per_class_ap`: a row per class, '-' where
  undefined."""
  lines = ['| class | box AP | mask AP |', '|---|---|---|']
  for name, ap in per_class.items():
    cells = ['-' if ap.get(k, -1) < 0 else f'{ap[k]:.1f}'
             for k in ('box', 'mask')]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _summarize(evaluator: cocoeval.COCOeval) -> dict[str, float]:
  """AP, AP50, AP75, APs, APm, APl (%) at the largest maxDets.

  COCOeval.summarize() asks for maxDets=100 by a default argument, so with
  any other maxDets its headline AP is -1; read the precision array
  instead. -1 means undefined (no ground truth of that size).
  """
  precision = evaluator.eval['precision']  # [T, R, K, A, M]
  thresholds = evaluator.params.iouThrs

  def mean(values):
    values = values[values > -1]
    return float(values.mean()) * 100 if values.size else -1.0

  def at(iou):
    return int(np.argmin(np.abs(thresholds - iou)))

  return {
      'AP': mean(precision[:, :, :, 0, -1]),
      'AP50': mean(precision[at(0.5), :, :, 0, -1]),
      'AP75': mean(precision[at(0.75), :, :, 0, -1]),
      'APs': mean(precision[:, :, :, 1, -1]),
      'APm': mean(precision[:, :, :, 2, -1]),
      'APl': mean(precision[:, :, :, 3, -1]),
  }


def write_metrics(path: str, metrics: dict, **info) -> None:
  """metrics.json: `info` (step, checkpoint, ...) and box / mask metrics."""
  files.write_json(path, {**info, **metrics}, indent=1)


def proposal_metrics(ground_truth: dict, predictions: list[dict],
                     limits=RECALL_LIMITS) -> dict[str, float]:
  """AR@N (%) of the predictions' masks as class-agnostic proposals, best
  score first (predictions as `predict` returns them)."""
  proposals = {}
  for prediction in predictions:
    order = np.argsort(-np.asarray(prediction['scores']), kind='stable')
    proposals[prediction['image_id']] = [prediction['masks'][i]
                                         for i in order]
  return proposal_recall.average_recall(ground_truth, proposals, limits)


def headline(metrics: dict) -> tuple[str, float]:
  """The one number a run is ranked by: mask AP, AR@100 for proposals,
  mean IoU for a semantic segmentation."""
  if 'mask' in metrics:
    return 'mask AP', metrics['mask']['AP']
  if 'semantic' in metrics:
    return 'semantic mIoU', metrics['semantic']['mIoU']
  return 'AR@100', metrics['proposals']['AR@100']


def format_table(rows: dict[str, dict]) -> str:
  """Markdown table of several runs' box and mask AP and proposal AR; '-'
  where a run has no such metric."""
  recall = [f'AR@{n}' for n in RECALL_LIMITS]
  semantic = any('semantic' in metrics for metrics in rows.values())
  headers = (['run', 'box AP', 'box AP50', 'box AP75'] +
             [f'mask {name}' for name in METRIC_NAMES] + recall +
             ['semantic mIoU'] * semantic)
  # The separator row is derived from the headers: one cell each.
  lines = ['| ' + ' | '.join(headers) + ' |', '|---' * len(headers) + '|']
  def cell(value):
    return '-' if value is None or value < 0 else f'{value:.1f}'

  for name, metrics in rows.items():
    box = metrics.get('box', {})
    mask = metrics.get('mask', {})
    proposals = metrics.get('proposals', {})
    values = ([box.get(k) for k in ('AP', 'AP50', 'AP75')] +
              [mask.get(k) for k in METRIC_NAMES] +
              [proposals.get(k) for k in recall] +
              [metrics.get('semantic', {}).get('mIoU')] * semantic)
    lines.append(f'| {name} | ' + ' | '.join(cell(v) for v in values) + ' |')
  return '\n'.join(lines)


class SettingError(ValueError):
  """The configs ask the evaluation for something the system cannot do."""


class Evaluator:
  """COCO evaluation of an inference model on one annotated set (mean IoU
  for a system without detections).

  Raises (from the constructor):
    SettingError: test-time augmentation of a system without detections.
  """

  def __init__(self, configs, annotations: str, images: str,
               batch_size: int = 4):
    self.dataset = coco.read_coco(
        annotations, images,
        allow_outside_images=configs.data.allow_outside_images)
    data_cfg = dataclasses.replace(configs.data, keep_full_masks=False)
    self.batches = pipeline.build_dataset(
        data_cfg, configs.geometry, batch_size, is_training=False,
        source=sources.coco_source(self.dataset),
        output_stride=configs.model.output_stride, seed=configs.train.seed)
    self.ground_truth = self.dataset.to_coco_dict()
    self.category_ids = [c.id for c in self.dataset.categories]
    system = registry.get_system(configs.model, configs.geometry)
    self.class_agnostic = system.class_agnostic
    self.has_detections = system.has_detections
    self.num_classes = configs.model.num_classes
    # Eval batches pad to their largest image unless pad_to fixes the size.
    self.padding_multiple = (0 if configs.data.pad_to
                             else configs.model.output_stride)
    self.test_time = tta.settings(configs)
    if self.test_time and not self.has_detections:
      raise SettingError(
          f'--test_scales/--test_flip: --mask_head={configs.model.mask_head}'
          ' has no detections to merge; its semantic map is scored as the '
          'model returns it')

  def run(self, inference_model, results_path: str | None = None,
          saved_model=None) -> dict:
    """Scores `inference_model` on the eval pipeline's batches, or a loaded
    SavedModel (then inference_model is unused) on the raw images."""
    if not self.has_detections:
      return {'semantic': semantic_metrics.semantic_metrics(
          inference_model, self.batches, self.num_classes,
          [c.name for c in self.dataset.categories])}
    if saved_model is not None:
      predictions = predict_saved_model(saved_model, self.dataset)
    else:
      predictions = predict(inference_model, self.batches,
                            self.padding_multiple, self.test_time)
    # Class-agnostic proposals (class 1) are written under the first
    # category: the json stays loadable by COCO tools.
    results = coco_results.to_coco_results(predictions, self.category_ids)
    if results_path:
      files.write_json(results_path, results)
    metrics = {}
    if not self.class_agnostic:
      metrics = coco_metrics(self.ground_truth, results,
                             self.dataset.max_instances_per_image)
    metrics['proposals'] = proposal_metrics(self.ground_truth, predictions)
    return metrics
