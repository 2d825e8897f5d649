"""Model Garden's Mask R-CNN on the shapes set: the from-scratch baseline.

Usage:
  python benchmarks/model_garden_maskrcnn.py --model_dir=DIR --budget_s=60
      [--budget_mode=wall|cpu] [--check_eval]

Trains tf-models-official's Mask R-CNN (`official.vision`: ResNet-18 + FPN,
its own input pipeline, model and losses, nothing reimplemented) for a time
budget, then scores it on the val split with the project's COCO evaluation
(`masklab_tf.evaluation.evaluator.coco_metrics`), so MaskLab runs and this baseline
compare on one metric code path. Other benchmarks import it:

  import model_garden_maskrcnn as mg
  stats = mg.train_for_budget('runs/mg', budget_s=600)
  metrics = mg.evaluate('runs/mg', mg.VAL_ANNOTATIONS, mg.VAL_IMAGES,
                        mg.VAL_PATTERN)

The experiment starts from Model Garden's `maskrcnn_resnetfpn_coco` and
overrides what the benchmark fixes (see `build_task`). Model Garden's
trainer (orbit) is not used: its learning-rate schedules need the total step
count up front, while here the cosine ends where the time budget is
estimated to run out. The step itself is `MaskRCNNTask.train_step`.

Model Garden quirks met on the way:
  * num_classes counts the background (class 0): 4 shapes -> 5.
  * Its decoder does not binarise masks by default: shards with 0/255 PNG
    masks (bin/make_tfrecords wrote those before it switched to Model
    Garden's 0/1) would give mask targets up to 255. Threshold 0 reads both.
  * The parser pads images to a multiple of 2**max_level: levels 2..6 would
    pad 160 px to 192 (44% more pixels, all zeros), so levels 2..5 are used
    (anchors 16..128 px for 18..60 px objects).
  * image_info is [[orig_h, orig_w], [scaled_h, scaled_w], [y_scale,
    x_scale], [y_offset, x_offset]]; detection boxes are [y1, x1, y2, x2] in
    the scaled image.
  * `mask_ops.paste_instance_masks` wants [x, y, w, h] boxes (Detectron's
    integer, +1-pixel convention) and returns masks already binarised at
    0.5. Fed the ground truth as a perfect 28x28 head would give it, it
    scores mask AP ~92 here (`--check_eval`), as MaskLab's paste_masks does.

Cost: the mask head (Model Garden's default 4 convs x 256 filters at 14x14,
then 28x28) on 4 x 32 masks is ~4.3 of the ~7 CPU-seconds of a step on
this 2-core machine; `model_overrides={'mask_head': {'num_filters': 128}}`
halves the step, at the price of departing from Model Garden's head.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras
from pycocotools import mask as mask_api

from official.core import exp_factory
from official.vision.ops import box_ops
from official.vision.ops import mask_ops
# Importing the task also registers the 'maskrcnn_resnetfpn_coco' experiment
# (official.vision.configs.maskrcnn) with exp_factory.
from official.vision.tasks import maskrcnn as maskrcnn_task

from masklab_tf.evaluation import evaluator as masklab_evaluate
# MaskLab's own budget clock, so that both systems get the same time by the
# same rule: it starts before the first step (tracing counts), covers
# training only, and in CPU mode counts every thread of this process.
from budget import TimeBudget

SHAPES_DIR = '/work/bench/shapes'
TRAIN_PATTERN = os.path.join(SHAPES_DIR, 'tfrecords', 'train-*.tfrecord')
VAL_PATTERN = os.path.join(SHAPES_DIR, 'tfrecords', 'val-*.tfrecord')
VAL_ANNOTATIONS = os.path.join(SHAPES_DIR, 'val', 'annotations.json')
VAL_IMAGES = os.path.join(SHAPES_DIR, 'val', 'images')

IMAGE_SIZE = 160
NUM_CLASSES = 5  # 4 shapes + background: Model Garden counts class 0.
# The shapes images hold at most 8 instances; the parser pads ground truth
# (with 112x112 mask crops) to this count, so 100 (the default) would copy
# ~12x more mask data per batch for nothing.
MAX_INSTANCES = 20
# Same as MaskLab's shapes runs (masklab_tf TrainConfig): L2 1e-4 on
# kernels, gradient clipping at global norm 10. Model Garden's regulariser
# is l2(decay / 2) * sum(w^2), i.e. decay * tf.nn.l2_loss, as MaskLab's.
WEIGHT_DECAY = 1e-4
CLIP_NORM = 10.0
MOMENTUM = 0.9
# Steps excluded from the rate estimate (tracing and warm-up of tf.data).
RATE_SKIP_STEPS = 10
ESTIMATE_EVERY = 50
# Written beside the checkpoint, so that evaluation rebuilds the same model.
OVERRIDES_FILE = 'model_overrides.json'


def build_task(train_pattern: str, val_pattern: str, batch_size: int = 4,
               model_overrides: dict | None = None):
  """Model Garden's Mask R-CNN task for the shapes set.

  Args:
    train_pattern, val_pattern: TFRecord patterns.
    batch_size: images per batch (training and evaluation).
    model_overrides: optional overrides of config.task.model on top of the
      benchmark's settings, e.g. {'mask_head': {'num_filters': 128}}.

  Returns:
    (task, config): a `MaskRCNNTask` and its `ExperimentConfig`.
  """
  config = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  data_common = {
      'dtype': 'float32',
      # Masks > 0: right for 0/1 PNGs (Model Garden's layout) and 0/255.
      'decoder': {'type': 'simple_decoder',
                  'simple_decoder': {'mask_binarize_threshold': 0.0}},
  }
  config.override({
      'runtime': {'mixed_precision_dtype': 'float32', 'enable_xla': False},
      'task': {
          'init_checkpoint': '',  # from scratch
          'model': {
              'num_classes': NUM_CLASSES,
              'input_size': [IMAGE_SIZE, IMAGE_SIZE, 3],
              'min_level': 2,
              'max_level': 5,
              # Smallest anchor anchor_size * 2**min_level = 16 px.
              'anchor': {'anchor_size': 4.0, 'num_scales': 1,
                         'aspect_ratios': [0.5, 1.0, 2.0]},
              'backbone': {'type': 'resnet', 'resnet': {'model_id': 18}},
              'decoder': {'type': 'fpn'},
              'detection_head': {'num_convs': 0, 'num_fcs': 2},
              'roi_generator': {'num_proposals': 500,
                                'test_num_proposals': 500},
              'roi_sampler': {'num_sampled_rois': 128},
              'mask_sampler': {'num_sampled_masks': 32},
              # MaskLab's shapes config keeps 20 detections per image (the
              # images hold at most 8 objects); the 28x28 mask head runs on
              # every detection, so 100 would make evaluation 5x slower.
              'detection_generator': {'max_num_detections': 20},
              # One replica: sync BN would only add an all-reduce.
              'norm_activation': {'use_sync_bn': False},
          },
          'losses': {'l2_weight_decay': WEIGHT_DECAY},
          'train_data': dict(
              data_common,
              input_path=train_pattern,
              is_training=True,
              global_batch_size=batch_size,
              # The default 10000 would buffer five epochs of records
              # before the first step, inside the budget.
              shuffle_buffer_size=1000,
              parser={'aug_rand_hflip': True, 'aug_scale_min': 0.8,
                      'aug_scale_max': 1.2,
                      'max_num_instances': MAX_INSTANCES}),
          'validation_data': dict(
              data_common,
              input_path=val_pattern,
              is_training=False,
              global_batch_size=batch_size,
              drop_remainder=False,
              parser={'max_num_instances': MAX_INSTANCES}),
      },
  }, is_strict=True)
  if model_overrides:
    config.override({'task': {'model': model_overrides}}, is_strict=True)
  # Evaluation goes through masklab_tf, not the task's COCO evaluator.
  config.task.annotation_file = None
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
    task, _ = build_task(TRAIN_PATTERN, VAL_PATTERN,
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
  """Linear warmup, then cosine decay to 0 at total_steps (MaskLab's rule);
  no decay while total_steps is unknown. `step` counts steps done."""
  warmup = min(1.0, (step + 1.0) / max(warmup_steps, 1))
  decay = 1.0
  if total_steps is not None:
    progress = min(max((step - warmup_steps) /
                       max(total_steps - warmup_steps, 1.0), 0.0), 1.0)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress))
  return base * warmup * decay


def train_for_budget(model_dir: str, budget_s: float,
                     budget_mode: str = 'wall',
                     train_pattern: str = TRAIN_PATTERN,
                     val_pattern: str = VAL_PATTERN,
                     warmup_steps: int = 50, learning_rate: float = 0.02,
                     log_every: int = 50, seed: int = 0,
                     model_overrides: dict | None = None) -> dict:
  """Trains from scratch until the budget is spent; checkpoints the model.

  `model_overrides` (see build_task) is saved in model_dir for evaluate().

  Returns:
    {'steps', 'wall_s', 'cpu_s' (training only), 'final_loss' (last step),
     'final_loss_mean' and 'losses' (means since the last log line),
     'steps_per_s' and 'steps_per_cpu_s' (wall and CPU rates after the
     first RATE_SKIP_STEPS steps; None if it stopped before), 'first_step_s'
     (tracing included), 'estimated_total_steps', 'checkpoint', ...}.
  """
  os.makedirs(model_dir, exist_ok=True)
  budget = TimeBudget(budget_s, budget_mode, skip_steps=RATE_SKIP_STEPS)
  tf_keras.utils.set_random_seed(seed)
  task, config = build_task(train_pattern, val_pattern,
                            model_overrides=model_overrides)
  config.task.train_data.seed = seed
  with open(os.path.join(model_dir, OVERRIDES_FILE), 'w') as f:
    json.dump(model_overrides or {}, f)
  model = task.build_model()
  # The learning rate lives in the optimizer's variable, assigned before
  # every step, so re-estimating the schedule's end never retraces.
  optimizer = tf_keras.optimizers.SGD(learning_rate=0.0, momentum=MOMENTUM,
                                      global_clipnorm=CLIP_NORM)
  metrics = task.build_metrics(training=True)
  dataset = task.build_inputs(config.task.train_data)

  @tf.function
  def train_step(inputs):
    return task.train_step(inputs, model, optimizer, metrics)[task.loss]

  wall_start, cpu_start = time.time(), time.process_time()
  budget.start()
  iterator = iter(dataset)
  step, total_steps, loss = 0, None, float('nan')
  first_step_s, rate_mark = None, None
  window_start, window_step = time.time(), 0
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
      print(f'step {step}/{total_steps or "?"}  '
            f'loss {window["total_loss"]:.3f} (last {loss:.3f})  ' +
            '  '.join(f'{k} {v:.3f}' for k, v in window.items()
                      if k not in ('total_loss', 'model_loss')) +
            f'  lr {lr:.4g}  '
            f'{(step - window_step) / max(now - window_start, 1e-9):.2f} '
            f'steps/s  budget {budget.used():.0f}/{budget_s:g} s '
            f'({budget_mode})', flush=True)
      final_window = window
      for m in metrics:
        m.reset_state()
      window_start, window_step = now, step
    if budget.spent():
      break
    if step % ESTIMATE_EVERY == 0 or step == budget.skip_steps:
      estimate = budget.estimate_total_steps(step)
      if estimate is not None:
        total_steps = estimate
  wall_s = time.time() - wall_start
  cpu_s = time.process_time() - cpu_start
  budget_used = budget.used()
  if step % log_every or step < log_every:
    final_window = {m.name: float(m.result()) for m in metrics}
  steps_per_s = steps_per_cpu_s = None
  if rate_mark is not None and step > rate_mark[0]:
    steps_per_s = (step - rate_mark[0]) / (time.time() - rate_mark[1])
    steps_per_cpu_s = (step - rate_mark[0]) / (time.process_time() -
                                               rate_mark[2])
  checkpoint = tf.train.Checkpoint(model=model).save(
      os.path.join(model_dir, 'ckpt'))
  stats = {
      'steps': step, 'wall_s': wall_s, 'cpu_s': cpu_s, 'final_loss': loss,
      'final_loss_mean': final_window['total_loss'],
      'losses': final_window, 'steps_per_s': steps_per_s,
      'steps_per_cpu_s': steps_per_cpu_s,
      'first_step_s': first_step_s, 'budget_s': budget_s,
      'budget_mode': budget_mode, 'budget_used': budget_used,
      'estimated_total_steps': total_steps, 'final_lr': lr,
      'learning_rate': learning_rate, 'warmup_steps': warmup_steps,
      'batch_size': config.task.train_data.global_batch_size, 'seed': seed,
      'checkpoint': checkpoint, 'model_overrides': model_overrides or {},
  }
  with open(os.path.join(model_dir, 'train_stats.json'), 'w') as f:
    json.dump(stats, f, indent=1)
  return stats


def image_results(image_id: int, boxes: np.ndarray, classes: np.ndarray,
                  scores: np.ndarray, masks: np.ndarray,
                  image_info: np.ndarray) -> list[dict]:
  """COCO result entries of one image from Model Garden's outputs.

  Args:
    image_id: the record's source_id (the COCO image id).
    boxes: [N, 4] y1, x1, y2, x2 in the network input's (scaled) pixels.
    classes: [N] class ids 1..4, which are the COCO category ids here.
    scores: [N].
    masks: [N, 28, 28] box-relative probabilities.
    image_info: [4, 2] as the parser writes it.
  """
  if not len(boxes):
    return []
  scale = np.tile(image_info[2], 2)
  offset = np.tile(image_info[3], 2)
  boxes = (boxes + offset) / scale  # original image pixels
  height, width = int(image_info[0, 0]), int(image_info[0, 1])
  xywh = box_ops.yxyx_to_xywh(boxes)
  binary = mask_ops.paste_instance_masks(masks, xywh, height, width)
  results = []
  for box, cls, score, mask in zip(xywh, classes, scores, binary):
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    results.append({'image_id': int(image_id), 'category_id': int(cls),
                    'bbox': [float(v) for v in box], 'score': float(score),
                    'segmentation': rle})
  return results


def _max_detections(ground_truth: dict) -> int:
  counts = {}
  for ann in ground_truth['annotations']:
    counts[ann['image_id']] = counts.get(ann['image_id'], 0) + 1
  return max([100] + list(counts.values()))


def predict(model, task, config) -> list[dict]:
  """COCO results of the model in inference mode on the val records."""
  dataset = task.build_inputs(config.task.validation_data)

  @tf.function(reduce_retracing=True)
  def infer(images, anchor_boxes, image_shape):
    return model(images, anchor_boxes=anchor_boxes, image_shape=image_shape,
                 training=False)

  results = []
  for images, labels in dataset:
    outputs = infer(images, labels['anchor_boxes'],
                    labels['image_info'][:, 1, :])
    outputs = {k: v.numpy() for k, v in outputs.items()
               if k.startswith(('detection_', 'num_detections'))}
    infos = labels['image_info'].numpy()
    ids = labels['groundtruths']['source_id'].numpy()
    for i, image_id in enumerate(ids):
      num = int(outputs['num_detections'][i])
      results += image_results(
          image_id, outputs['detection_boxes'][i, :num],
          outputs['detection_classes'][i, :num],
          outputs['detection_scores'][i, :num],
          outputs['detection_masks'][i, :num], infos[i])
  return results


def evaluate(model_dir_or_model, val_annotations: str = VAL_ANNOTATIONS,
             val_images: str = VAL_IMAGES, val_pattern: str = VAL_PATTERN,
             results_path: str | None = None,
             model_overrides: dict | None = None) -> dict:
  """Box and mask COCO metrics (masklab_tf.evaluation.evaluator.coco_metrics format).

  Args:
    model_dir_or_model: a model_dir with a checkpoint, or the model itself.
    val_annotations: the val COCO json (ground truth, annotation ids >= 1).
    val_images: the val image folder; unused, since Model Garden reads the
      same images from the records (kept for a uniform benchmark API).
    val_pattern: the val TFRecords.
    results_path: where to write the COCO results json, if given.
    model_overrides: as in training; read from model_dir when not given.
  """
  del val_images
  if model_overrides is None and isinstance(model_dir_or_model, str):
    model_overrides = saved_model_overrides(model_dir_or_model)
  task, config = build_task(val_pattern, val_pattern,
                            model_overrides=model_overrides)
  if isinstance(model_dir_or_model, str):
    model = restore_model(model_dir_or_model, task)
  else:
    model = model_dir_or_model
  results = predict(model, task, config)
  if results_path:
    with open(results_path, 'w') as f:
      json.dump(results, f)
  with open(val_annotations) as f:
    ground_truth = json.load(f)
  return masklab_evaluate.coco_metrics(ground_truth, results,
                                       _max_detections(ground_truth))


def check_evaluation(val_annotations: str = VAL_ANNOTATIONS,
                     val_pattern: str = VAL_PATTERN,
                     mask_size: int = 28) -> dict:
  """Scores the ground truth itself through `image_results`.

  Boxes go in as a perfect model would give them (scaled-image pixels) and
  masks as the targets a perfect mask head learns: the parser's 112 px box
  crops shrunk to 28x28 with half-pixel sampling, as the mask sampler does
  (sample_offset 0.5). Box AP must be 100; mask AP is the ceiling that the
  28x28 masks and the paste leave (about 92 on shapes, whose objects are
  18-60 px; MaskLab's paste_masks gives the same within 0.5).
  """
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
  with open(val_annotations) as f:
    ground_truth = json.load(f)
  return masklab_evaluate.coco_metrics(ground_truth, results,
                                       _max_detections(ground_truth))


def _main(argv):
  del argv
  flags = absl_flags.FLAGS
  if flags.check_eval:
    metrics = check_evaluation(flags.val_annotations, flags.val_pattern)
    print(masklab_evaluate.format_table({'ground truth': metrics}))
  if flags.budget_s <= 0:
    return
  stats = train_for_budget(
      flags.model_dir, flags.budget_s, flags.budget_mode,
      flags.train_pattern, flags.val_pattern, flags.warmup_steps,
      flags.learning_rate, flags.log_every, flags.seed,
      json.loads(flags.model_overrides) if flags.model_overrides else None)
  print(f'trained {stats["steps"]} steps in {stats["wall_s"]:.0f} s wall, '
        f'{stats["cpu_s"]:.0f} s CPU; {stats["steps_per_s"] or 0:.3f} '
        f'steps/s, {stats["steps_per_cpu_s"] or 0:.3f} steps/CPU-s after '
        f'tracing (first step {stats["first_step_s"]:.0f} s); '
        f'final loss {stats["final_loss"]:.3f} '
        f'(mean {stats["final_loss_mean"]:.3f})', flush=True)
  start = time.time()
  metrics = evaluate(flags.model_dir, flags.val_annotations,
                     flags.val_images, flags.val_pattern,
                     os.path.join(flags.model_dir, 'results.json'))
  masklab_evaluate.write_metrics(
      os.path.join(flags.model_dir, 'metrics.json'), metrics,
      steps=stats['steps'], budget_s=flags.budget_s,
      budget_mode=flags.budget_mode)
  print(f'evaluated in {time.time() - start:.0f} s')
  print(masklab_evaluate.format_table({'model garden mask r-cnn': metrics}))
  print(json.dumps(metrics))


if __name__ == '__main__':
  # Flags only in script mode: importing benchmarks define their own.
  from absl import app
  from absl import flags as absl_flags
  # No default: a fixed shared folder would resume another run's training.
  absl_flags.DEFINE_string('model_dir', None, 'Output folder.')
  absl_flags.mark_flag_as_required('model_dir')
  absl_flags.DEFINE_float('budget_s', 60.0,
                          'Training budget in seconds (0: no training).')
  absl_flags.DEFINE_enum('budget_mode', 'wall', ['wall', 'cpu'],
                         'wall: time.time(); cpu: process CPU seconds.')
  absl_flags.DEFINE_string('train_pattern', TRAIN_PATTERN, 'Train records.')
  absl_flags.DEFINE_string('val_pattern', VAL_PATTERN, 'Val records.')
  absl_flags.DEFINE_string('val_annotations', VAL_ANNOTATIONS,
                           'Val COCO json.')
  absl_flags.DEFINE_string('val_images', VAL_IMAGES, 'Val images.')
  absl_flags.DEFINE_integer('warmup_steps', 50, 'Linear warmup steps.')
  absl_flags.DEFINE_float('learning_rate', 0.02, 'Peak learning rate.')
  absl_flags.DEFINE_integer('log_every', 50, 'Steps between progress lines.')
  absl_flags.DEFINE_integer('seed', 0, 'Random seed.')
  absl_flags.DEFINE_string('model_overrides', '',
                           'JSON overrides of config.task.model, e.g. '
                           '\'{"mask_head": {"num_filters": 128}}\'.')
  absl_flags.DEFINE_bool('check_eval', False,
                         'First score the ground truth through the same '
                         'conversion (box AP must be 100).')
  app.run(_main)
