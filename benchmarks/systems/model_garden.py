"""Model Garden's Mask R-CNN (`official.vision`, nothing reimplemented): the
baseline of the speed and accuracy suites.

Its input pipeline, model, losses and step; not its trainer (orbit), whose
schedules need the step count up front while here the cosine ends where the
time budget runs out. Scored by masklab_tf's COCO evaluation. Its quirks:
num_classes counts the background; masks are binarised at 0 (0/1 and 0/255
PNGs alike); images are padded to a multiple of 2**max_level; image_info is
[[orig h, w], [scaled h, w], [y, x scale], [y, x offset]], boxes y1, x1, y2,
x2 in the scaled image; `paste_instance_masks` takes [x, y, w, h] boxes.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.vision.ops import box_ops
from official.vision.ops import mask_ops
# Importing the task registers 'maskrcnn_resnetfpn_coco' with exp_factory.
from official.vision.tasks import maskrcnn as maskrcnn_task
from pycocotools import mask as mask_api

from benchmarks.harness import budget as budget_lib
from masklab_tf import files
from masklab_tf.evaluation import evaluator as masklab_evaluate

IMAGE_SIZE = 160
NUM_CLASSES = 5  # 4 shapes + the background
# Shapes images hold at most 8 objects; the parser pads ground truth (with
# 112x112 mask crops) to this count, so the default 100 copies ~12x more.
MAX_INSTANCES = 20
# MaskLab's shapes settings; Model Garden's regulariser is decay *
# tf.nn.l2_loss, as MaskLab's.
WEIGHT_DECAY, CLIP_NORM, MOMENTUM = 1e-4, 10.0, 0.9
RATE_SKIP_STEPS = 10  # left out of the rate estimate (tracing, tf.data)
OVERRIDES_FILE = 'model_overrides.json'  # beside the checkpoint
# The speed suite's systems: their tf_keras policy.
PRECISIONS = {'model_garden': 'float32', 'model_garden_bf16': 'mixed_bfloat16'}
# Model Garden's runtime.mixed_precision_dtype of a tf_keras policy.
RUNTIME_DTYPES = {'float32': 'float32', 'mixed_bfloat16': 'bfloat16',
                  'mixed_float16': 'float16'}


def build_task(train_pattern: str, val_pattern: str, batch_size: int = 4,
               model_overrides: dict | None = None, size: int | None = None,
               precision: str = 'float32', score_threshold: float = 0.0,
               max_instances: int = MAX_INSTANCES):
  """(MaskRCNNTask, ExperimentConfig) of `maskrcnn_resnetfpn_coco`, from
  scratch, with the process's tf_keras policy set to `precision`.

  Without `size`: the shapes set's recipe (ResNet-18 + FPN on levels 2..5,
  16 px anchors, 20 detections, scale jitter 0.8..1.2). With `size`: the
  COCO recipe on `size` px square images, 81 classes, 100 detections,
  pre-NMS `score_threshold` (its default 0.05 keeps no box of a random
  81-class model), no scale jitter. `model_overrides` (e.g. {'mask_head':
  {'num_filters': 128}}) go over config.task.model last; `max_instances`:
  the ground truth the shapes recipe's parsers keep per image.
  """
  tf_keras.mixed_precision.set_global_policy(precision)
  config = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  if size is None:
    model = {
        'num_classes': NUM_CLASSES, 'input_size': [IMAGE_SIZE] * 2 + [3],
        'min_level': 2, 'max_level': 5, 'backbone': {
            'type': 'resnet', 'resnet': {'model_id': 18}},
        'anchor': {'anchor_size': 4.0, 'num_scales': 1,
                   'aspect_ratios': [0.5, 1.0, 2.0]},
        'decoder': {'type': 'fpn'},
        'detection_head': {'num_convs': 0, 'num_fcs': 2},
        'roi_generator': {'num_proposals': 500, 'test_num_proposals': 500},
        'roi_sampler': {'num_sampled_rois': 128},
        'mask_sampler': {'num_sampled_masks': 32},
        # The mask head runs on every detection: 100 would evaluate 5x
        # slower for images of at most 8 objects.
        'detection_generator': {'max_num_detections': 20}}
    # The default buffer (10000) would fill before the first step, inside
    # the budget.
    train = {'shuffle_buffer_size': 1000, 'parser': {
        'aug_rand_hflip': True, 'aug_scale_min': 0.8, 'aug_scale_max': 1.2,
        'max_num_instances': max_instances}}
    val_parser, losses = {'max_num_instances': max_instances}, {
        'l2_weight_decay': WEIGHT_DECAY}
  else:
    model = {'num_classes': 81, 'input_size': [size, size, 3],
             'detection_generator': {
                 'max_num_detections': 100,
                 'pre_nms_score_threshold': score_threshold}}
    train = {'shuffle_buffer_size': 16,
             'parser': {'aug_scale_min': 1.0, 'aug_scale_max': 1.0}}
    val_parser, losses = {}, {}
  data = {'dtype': 'float32', 'global_batch_size': batch_size,
          'decoder': {'type': 'simple_decoder',
                      'simple_decoder': {'mask_binarize_threshold': 0.0}}}
  config.override({
      'runtime': {'enable_xla': False,
                  'mixed_precision_dtype': RUNTIME_DTYPES[precision]},
      'task': {
          'init_checkpoint': '', 'losses': losses,
          # One replica: sync batch norm would only add an all-reduce.
          'model': dict(model, norm_activation={'use_sync_bn': False}),
          'train_data': dict(data, input_path=train_pattern,
                             is_training=True, **train),
          'validation_data': dict(data, input_path=val_pattern,
                                  is_training=False, drop_remainder=False,
                                  parser=val_parser)}}, is_strict=True)
  if model_overrides:
    config.override({'task': {'model': model_overrides}}, is_strict=True)
  config.task.annotation_file = None  # scored by masklab_tf, not the task
  config.validate()
  return maskrcnn_task.MaskRCNNTask(config.task), config


def saved_model_overrides(model_dir: str) -> dict | None:
  """The model_overrides a train_for_budget run in model_dir used."""
  path = os.path.join(model_dir, OVERRIDES_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def restore_model(model_dir: str, task=None):
  """The model of the latest checkpoint in `model_dir`."""
  if task is None:
    # Restoring reads no records: the patterns are never opened.
    task, _ = build_task('unused-*', 'unused-*',
                         model_overrides=saved_model_overrides(model_dir))
  model = task.build_model()
  path = tf.train.latest_checkpoint(model_dir)
  if path is None:
    raise FileNotFoundError(f'no checkpoint in {model_dir}')
  tf.train.Checkpoint(model=model).read(path).expect_partial(
  ).assert_existing_objects_matched()
  return model


def learning_rate_at(step: int, base: float, warmup_steps: int,
                     total_steps: int | None) -> float:
  """Linear warmup, then cosine to 0 at total_steps (MaskLab's rule); no
  decay while total_steps is unknown. `step` counts steps done."""
  warmup = min(1.0, (step + 1.0) / max(warmup_steps, 1))
  if total_steps is None:
    return base * warmup
  progress = min(max((step - warmup_steps) /
                     max(total_steps - warmup_steps, 1.0), 0.0), 1.0)
  return base * warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_for_budget(model_dir: str, budget_s: float, budget_mode: str,
                     train_pattern: str, val_pattern: str,
                     warmup_steps: int = 50, learning_rate: float = 0.02,
                     log_every: int = 50, seed: int = 0,
                     model_overrides: dict | None = None,
                     max_instances: int = MAX_INSTANCES) -> dict:
  """Trains from scratch until the budget (MaskLab's clock: tracing counts)
  is spent; checkpoints the model and its model_overrides. Returns {steps,
  wall_s, cpu_s, final_loss, final_loss_mean and losses (since the last log
  line), steps_per_s and steps_per_cpu_s (after RATE_SKIP_STEPS, else None),
  first_step_s, estimated_total_steps, ...}."""
  os.makedirs(model_dir, exist_ok=True)
  budget = budget_lib.TimeBudget(budget_s, budget_mode, RATE_SKIP_STEPS)
  tf_keras.utils.set_random_seed(seed)
  task, config = build_task(train_pattern, val_pattern,
                            model_overrides=model_overrides,
                            max_instances=max_instances)
  config.task.train_data.seed = seed
  files.write_json(os.path.join(model_dir, OVERRIDES_FILE),
                   model_overrides or {})
  model = task.build_model()
  # The rate is assigned before every step: no retracing.
  optimizer = tf_keras.optimizers.SGD(learning_rate=0.0, momentum=MOMENTUM,
                                      global_clipnorm=CLIP_NORM)
  metrics = task.build_metrics(training=True)
  train_step = tf.function(lambda inputs: task.train_step(
      inputs, model, optimizer, metrics)[task.loss])
  iterator = iter(task.build_inputs(config.task.train_data))
  wall_start, cpu_start = time.time(), time.process_time()
  budget.start()
  step, total_steps, rate_mark, window_start = 0, None, None, wall_start
  while True:
    lr = learning_rate_at(step, learning_rate, warmup_steps, total_steps)
    optimizer.learning_rate.assign(lr)
    loss = float(train_step(next(iterator)))
    step += 1
    if step == 1:
      first_step_s = time.time() - wall_start
    if step == RATE_SKIP_STEPS:
      rate_mark = (step, time.time(), time.process_time())
    if step % log_every == 0:
      now = time.time()
      window = {m.name: float(m.result()) for m in metrics}
      print(f'step {step}/{total_steps or "?"}  loss '
            f'{window["total_loss"]:.3f} (last {loss:.3f})  ' + '  '.join(
                f'{k} {v:.3f}' for k, v in window.items()
                if k not in ('total_loss', 'model_loss')) +
            f'  lr {lr:.4g}  {log_every / max(now - window_start, 1e-9):.2f}'
            f' steps/s  budget {budget.used():.0f}/{budget_s:g} s '
            f'({budget_mode})', flush=True)
      for m in metrics:
        m.reset_state()
      window_start = now
    if budget.spent():
      break
    if step % budget_lib.ESTIMATE_EVERY == 0 or step == RATE_SKIP_STEPS:
      total_steps = budget.estimate_total_steps(step) or total_steps
  wall_s, cpu_s = time.time() - wall_start, time.process_time() - cpu_start
  if step % log_every:  # else the window of the last log line
    window = {m.name: float(m.result()) for m in metrics}
  steps_per_s = steps_per_cpu_s = None
  if rate_mark is not None and step > rate_mark[0]:
    steps_per_s = (step - rate_mark[0]) / (time.time() - rate_mark[1])
    steps_per_cpu_s = (step - rate_mark[0]) / (
        time.process_time() - rate_mark[2])
  stats = {
      'steps': step, 'wall_s': wall_s, 'cpu_s': cpu_s, 'final_loss': loss,
      'final_loss_mean': window['total_loss'], 'losses': window,
      'steps_per_s': steps_per_s, 'steps_per_cpu_s': steps_per_cpu_s,
      'first_step_s': first_step_s, 'budget_s': budget_s,
      'budget_mode': budget_mode, 'budget_used': budget.used(),
      'estimated_total_steps': total_steps, 'final_lr': lr,
      'learning_rate': learning_rate, 'warmup_steps': warmup_steps,
      'batch_size': config.task.train_data.global_batch_size, 'seed': seed,
      'checkpoint': tf.train.Checkpoint(model=model).save(
          os.path.join(model_dir, 'ckpt')),
      'model_overrides': model_overrides or {}}
  files.write_json(os.path.join(model_dir, 'train_stats.json'), stats,
                   indent=1)
  return stats


def image_results(image_id: int, boxes: np.ndarray, classes: np.ndarray,
                  scores: np.ndarray, masks: np.ndarray,
                  image_info: np.ndarray) -> list[dict]:
  """COCO result entries of one image from Model Garden's outputs: boxes
  [N, 4] y1, x1, y2, x2 in the scaled input's pixels, classes [N] (the
  COCO category ids), scores [N], masks [N, 28, 28] box-relative
  probabilities, image_info [4, 2] as the parser writes it."""
  if not len(boxes):
    return []
  boxes = (boxes + np.tile(image_info[3], 2)) / np.tile(image_info[2], 2)
  xywh = box_ops.yxyx_to_xywh(boxes)
  binary = mask_ops.paste_instance_masks(
      masks, xywh, int(image_info[0, 0]), int(image_info[0, 1]))
  results = []
  for box, cls, score, mask in zip(xywh, classes, scores, binary):
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    results.append({'image_id': int(image_id), 'category_id': int(cls),
                    'bbox': [float(v) for v in box], 'score': float(score),
                    'segmentation': rle})
  return results


def _metrics(val_annotations: str, results: list[dict]) -> dict:
  with open(val_annotations) as f:
    truth = json.load(f)
  counts = {}
  for annotation in truth['annotations']:
    counts[annotation['image_id']] = counts.get(annotation['image_id'], 0) + 1
  return masklab_evaluate.coco_metrics(truth, results,
                                       max([100, *counts.values()]))


def predict(model, task, config) -> list[dict]:
  """COCO results of the model in inference mode on the val records."""
  infer = tf.function(lambda images, anchors, shape: model(
      images, anchor_boxes=anchors, image_shape=shape, training=False),
                      reduce_retracing=True)
  results = []
  for images, labels in task.build_inputs(config.task.validation_data):
    outputs = {k: v.numpy() for k, v in infer(
        images, labels['anchor_boxes'], labels['image_info'][:, 1, :]
    ).items() if k.startswith(('detection_', 'num_detections'))}
    infos = labels['image_info'].numpy()
    for i, image_id in enumerate(labels['groundtruths']['source_id'].numpy()):
      num = int(outputs['num_detections'][i])
      results += image_results(image_id, *(
          outputs[f'detection_{key}'][i, :num]
          for key in ('boxes', 'classes', 'scores', 'masks')), infos[i])
  return results


def evaluate(model_dir_or_model, val_annotations: str, val_images: str,
             val_pattern: str,
             results_path: str | None = None,
             model_overrides: dict | None = None,
             max_instances: int = MAX_INSTANCES) -> dict:
  """masklab_tf's COCO metrics of a model, or of a model_dir's checkpoint
  (and its model_overrides), on the val records (`val_images`: unused)."""
  del val_images
  from_dir = isinstance(model_dir_or_model, str)
  if model_overrides is None and from_dir:
    model_overrides = saved_model_overrides(model_dir_or_model)
  task, config = build_task(val_pattern, val_pattern,
                            model_overrides=model_overrides,
                            max_instances=max_instances)
  model = (restore_model(model_dir_or_model, task) if from_dir
           else model_dir_or_model)
  results = predict(model, task, config)
  if results_path:
    files.write_json(results_path, results)
  return _metrics(val_annotations, results)


def check_evaluation(val_annotations: str, val_pattern: str,
                     mask_size: int = 28) -> dict:
  """The ground truth scored through `image_results`, masks as a perfect
  28x28 head learns them: box AP must be 100, mask AP is the ceiling that
  28x28 masks and the paste leave (about 92-95 on shapes)."""
  task, config = build_task(val_pattern, val_pattern)
  results = []
  for _, labels in task.build_inputs(config.task.validation_data):
    truth = {k: v.numpy() for k, v in labels['groundtruths'].items()}
    infos = labels['image_info'].numpy()
    for i, image_id in enumerate(truth['source_id']):
      num = int(truth['num_detections'][i])
      masks = tf.image.resize(truth['masks'][i, :num, :, :, None],
                              [mask_size, mask_size])[..., 0].numpy()
      results += image_results(
          image_id, truth['boxes'][i, :num] * np.tile(infos[i, 2], 2),
          truth['classes'][i, :num], np.ones([num]), masks, infos[i])
  return _metrics(val_annotations, results)


def _speed_model(system: str, size: int, settings: dict, pattern: str):
  """(task, config, model, padded side) of a speed system: the model built
  for the padded images (800 -> 832) the parser makes of input_size, in
  settings' 'precision' (else the system's), batches of 'train_batch'."""
  task, config = build_task(
      pattern, pattern, settings.get('train_batch', 2), size=size,
      model_overrides=settings.get('model_overrides'),
      precision=settings.get('precision') or PRECISIONS[system],
      score_threshold=settings.get('model_garden_score_threshold', 0.0))
  stride = 2 ** config.task.model.max_level
  padded = math.ceil(size / stride) * stride
  config.task.model.input_size = [padded, padded, 3]
  model = task.build_model()
  config.task.model.input_size = [size, size, 3]
  return task, config, model, padded


def info(config) -> dict:
  """The settings a row was measured with."""
  model = config.task.model
  return {
      'levels': [model.min_level, model.max_level],
      'test_num_proposals': model.roi_generator.test_num_proposals,
      'num_proposals': model.roi_generator.num_proposals,
      'num_sampled_rois': model.roi_sampler.num_sampled_rois,
      'num_sampled_masks': model.mask_sampler.num_sampled_masks,
      'max_instances': config.task.train_data.parser.max_num_instances,
      'detection_head': f'{model.detection_head.num_convs} convs, '
                        f'{model.detection_head.num_fcs} fc',
      'mask_head': f'{model.mask_head.num_convs} convs x '
                   f'{model.mask_head.num_filters}, '
                   f'{2 * model.mask_roi_aligner.crop_size} px masks',
      'pre_nms_score_threshold':
          model.detection_generator.pre_nms_score_threshold,
      'precision': config.runtime.mixed_precision_dtype}


def inference(system: str, size: int, settings: dict) -> dict:
  """The speed suite's inference (systems/__init__.py says what)."""
  _, config, model, padded = _speed_model(system, size, settings, 'unused-*')
  rng = np.random.default_rng(0)

  def make_args(batch):
    # The parser's output: normalised float images padded to `padded`,
    # image_shape the valid region; anchors are made in the graph.
    return (tf.constant(rng.normal(size=[batch, padded, padded, 3]),
                        tf.float32),
            tf.constant([[size, size]] * batch, tf.float32))

  return dict(
      function=lambda images, shape: model(images, image_shape=shape,
                                           training=False),
      make_args=make_args,
      backbone=lambda images: model.backbone(images, training=False),
      backbone_args=lambda args: args[:1],
      count_detections=lambda outputs: outputs['num_detections'][0],
      info=info(config))


def training(system: str, size: int, settings: dict, pattern: str,
             scratch_dir: str) -> dict:
  """The speed suite's training step: SGD as MaskLab's (momentum 0.9, clip
  norm 10), at a learning rate small enough for random weights to stay
  finite."""
  del scratch_dir
  task, config, model, _ = _speed_model(system, size, settings, pattern)
  optimizer = tf_keras.optimizers.SGD(learning_rate=1e-4, momentum=MOMENTUM,
                                      global_clipnorm=CLIP_NORM)
  if config.runtime.mixed_precision_dtype == 'float16':
    # Its train_step scales the loss for this optimizer.
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
  return dict(dataset=task.build_inputs(config.task.train_data),
              step=tf.function(lambda inputs: task.train_step(
                  inputs, model, optimizer)[task.loss]),
              image_shape=lambda batch: batch[0].shape, info=info(config))

