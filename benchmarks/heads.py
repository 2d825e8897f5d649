"""Every mask head of the seed papers on the hard shapes set, one table.

Trains each head in the same Faster R-CNN model (configs/shapes_cpu.flags:
same backbone, RPN, box classifier, loop and evaluator; only --mask_head
changes) on the same time budget, then reports on the val split: mask AP,
AP50, AP75 (pycocotools), AR@10 and AR@100 of the masks as class-agnostic
proposals, the mask head's parameters, inference ms/image, and the mIoU of
the class maps the system outputs: the semantic head's, the detections'
alone (painted by score), and the output fusion's (Costea et al.: instances
decide identity where they agree with the semantic map, unclaimed segments
grow or become instances; see semantic_scores for why the last equals the
first). InstanceFCN has no box branch, classes
or semantic map: it is scored by AR only, on the same backbone, data and
budget.

  masklab          semantic + direction features, hypercolumn refinement
  semantic_only    MaskLab Table 2 ablations
  direction_only
  fcis             inside/outside position-sensitive maps (k = 7)
  biseg            fused k1 = 7 (res5) and k2 = 9 (res3) maps x semantic prior
  instancefcn      k = 5 instance-sensitive maps + objectness, sliding
                   windows of 32-90 px (the 18-60 px shapes' DeepMask fit)

Each head runs in its own process; results land in OUTPUT_DIR/<head>/
result.json so an interrupted run re-runs only what is missing.

Usage:
  python benchmarks/heads.py --output_dir=runs/heads \
      [--data_dir=DIR] [--budget_s=1500] [--budget_mode=wall|cpu] \
      [--heads=masklab,fcis,...] [--rescore=masklab,...]
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import machine  # pylint: disable=g-import-not-at-top
import scratch  # pylint: disable=g-import-not-at-top
from masklab_tf.data import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', 'runs/heads', 'Runs and table.')
flags.DEFINE_string('data_dir', None, 'Hard shapes set (default: '
                    'OUTPUT_DIR/data, generated with seed 1 if missing).')
flags.DEFINE_integer('num_train', 2000, 'Training images to generate.')
flags.DEFINE_integer('num_val', 200, 'Val images to generate.')
flags.DEFINE_float('budget_s', 1500.0, 'Training budget per head.')
flags.DEFINE_enum('budget_mode', 'wall', ['wall', 'cpu'],
                  'Budget in wall-clock or process CPU seconds.')
flags.DEFINE_list('heads', ['masklab', 'fcis', 'biseg', 'instancefcn'],
                  'Heads to run, in order (also: semantic_only, '
                  'direction_only).')
flags.DEFINE_bool('rerun', False, 'Re-run heads that have a result.')
flags.DEFINE_string('run_one', None, 'Internal: run this head in-process.')
flags.DEFINE_list('rescore', [], 'Recompute the mIoU columns and ms/image '
                  'of these finished heads from their checkpoints, then '
                  'print the table.')

# Overrides of configs/shapes_cpu.flags per head. Every head also trains
# the dense semantic loss (COMMON): MaskLab's paper trains its semantic
# logits through the masks of ground-truth boxes only, which leaves them
# high outside objects (paper sec. 4.3, Fig. 7; seen here too), so without
# it the semantic map, the output fusion and BiSeg's prior mean little.
# The position-sensitive heads reduce res5 to 256 channels (paper: 1024
# from 2048; ResNet-10's res5 has 512). 100 detections per image (as COCO
# counts) for every head, so AR@100 compares like with like.
COMMON = ('--semantic_loss_weight=1', '--max_detections=100')
HEADS = {
    'masklab': ('--mask_head=masklab',),
    'semantic_only': ('--mask_head=masklab_semantic_only',),
    'direction_only': ('--mask_head=masklab_direction_only',),
    'fcis': ('--mask_head=fcis', '--ps_feature_channels=256'),
    'biseg': ('--mask_head=biseg', '--ps_feature_channels=256'),
    'instancefcn': ('--mask_head=instancefcn', '--ifcn_channels=256',
                    '--ifcn_window_sizes=32,45,64,90'),
}


def semantic_confusion(predicted, labels, num_classes):
  """[K+1, K+1] pixel counts over labelled pixels (label 255 ignored)."""
  valid = labels != 255
  index = labels[valid].astype(np.int64) * (num_classes + 1) + np.clip(
      predicted[valid], 0, num_classes)
  return np.bincount(index, minlength=(num_classes + 1) ** 2).reshape(
      num_classes + 1, num_classes + 1)


def mean_iou(confusion):
  intersection = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - intersection
  present = union > 0
  return float(np.mean(intersection[present] / union[present]) * 100)


def paint_instances(masks, classes, scores, shape):
  """Class map [H, W] of binary instance masks: a higher score paints over
  a lower one; 0 where no instance is."""
  painted = np.zeros(shape, np.int64)
  for i in np.argsort(scores, kind='stable'):
    painted[masks[i]] = classes[i]
  return painted


def semantic_scores(inference_model, batches, num_classes,
                    score_threshold=0.5):
  """mIoU of the class maps a system outputs, and inference ms/image.

  Returns (semantic head's map, instances alone, with the output fusion,
  ms/image); the mIoUs are None for a model without classes. "Instances
  alone" paints the detections >= score_threshold (higher scores on top,
  background elsewhere); "with the output fusion" is the fusion's category
  map from the same detections. With one category per class (the default)
  the fused map's classes are the semantic map's wherever it says
  foreground, so its mIoU equals the semantic head's: the fusion's gain is
  over the instances alone. All at the model's input resolution, over
  labelled pixels.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf.postprocess import output_fusion
  from masklab_tf.postprocess import masks as masks_lib
  call = tf.function(lambda x: inference_model(x, training=False))
  semantic_confusions = np.zeros([3, num_classes + 1, num_classes + 1],
                                 np.int64)
  seconds, images = 0.0, 0
  for step, batch in enumerate(batches):
    start = time.perf_counter()
    outputs = call({'image': batch['image'],
                    'image_size': batch['image_size']})
    outputs = {k: v.numpy() for k, v in outputs.items()}
    if step:  # The first batch pays for tracing.
      seconds += time.perf_counter() - start
      images += len(outputs['num_detections'])
    if 'semantic_map' not in outputs:  # InstanceFCN
      continue
    labels = batch['semantic_labels'].numpy()
    for i, num in enumerate(outputs['num_detections']):
      semantic = outputs['semantic_map'][i]
      keep = outputs['detection_scores'][i, :num] >= score_threshold
      masks = masks_lib.paste_masks(
          outputs['detection_masks'][i, :num][keep],
          outputs['detection_boxes'][i, :num][keep],
          *semantic.shape).numpy() >= 0.5
      classes = outputs['detection_classes'][i, :num][keep]
      scores = outputs['detection_scores'][i, :num][keep]
      fused, _, _ = output_fusion.fuse_np(semantic, masks, classes, scores)
      painted = paint_instances(masks, classes, scores, semantic.shape)
      for k, class_map in enumerate((semantic, painted, fused)):
        semantic_confusions[k] += semantic_confusion(class_map, labels[i],
                                                     num_classes)
  ms = 1000 * seconds / max(images, 1)
  if not semantic_confusions.any():
    return None, None, None, ms
  return (*(mean_iou(c) for c in semantic_confusions), ms)


def run_one(head, data_dir):
  from masklab_tf import config  # pylint: disable=g-import-not-at-top
  from masklab_tf.evaluation import evaluator as evaluator_lib
  from masklab_tf.training import trainer as trainer_lib
  import budget as budget_lib  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(FLAGS.output_dir, head)
  # An earlier run's folder is kept under another name, not deleted.
  earlier = scratch.set_aside(model_dir)
  if earlier:
    print(f'{model_dir}: the earlier run is now in {earlier}', flush=True)
  os.makedirs(model_dir)
  configs = config.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'),
      COMMON + HEADS[head] + (
          f'--train_annotations={data_dir}/train/annotations.json',
          f'--train_images={data_dir}/train/images', '--lr_schedule=cosine',
          '--checkpoint_every=1000000', '--image_summary_every=0'))
  trainer = trainer_lib.Trainer(configs, model_dir)
  trainer.restore_or_initialise()
  wall, cpu = time.time(), time.process_time()
  trainer.train(hooks=[budget_lib.TimeBudget(FLAGS.budget_s,
                                             FLAGS.budget_mode)])
  wall, cpu = time.time() - wall, time.process_time() - cpu
  evaluator = evaluator_lib.Evaluator(configs, f'{data_dir}/val/annotations.json',
                                 f'{data_dir}/val/images')
  inference = trainer.models.inference_model
  metrics = evaluator.run(inference, os.path.join(model_dir, 'results.json'))
  miou, miou_instances, miou_fused, ms = semantic_scores(
      inference, evaluator.batches, configs.model.num_classes)
  result = {
      'head': head, 'steps': trainer.current_step, 'wall_s': wall,
      'cpu_s': cpu, 'budget_s': FLAGS.budget_s,
      'budget_mode': FLAGS.budget_mode, 'metrics': metrics,
      'mask_head_params': int(trainer.models.train_model.get_layer(
          'instancefcn_head' if head == 'instancefcn' else
          'mask_head').count_params()),
      'ms_per_image': ms, 'semantic_miou': miou,
      'instances_miou': miou_instances, 'semantic_miou_fused': miou_fused,
      'model': dataclasses.asdict(configs.model)}
  with open(os.path.join(model_dir, 'result.json'), 'w') as f:
    json.dump(result, f, indent=1)


def rescore(head, data_dir):
  """Recomputes the mIoU columns and ms/image of a finished head from its
  final checkpoint (no retraining)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf import config  # pylint: disable=g-import-not-at-top
  from masklab_tf.evaluation import evaluator as evaluator_lib
  from masklab_tf.modeling import factory
  model_dir = os.path.join(FLAGS.output_dir, head)
  path = os.path.join(model_dir, 'result.json')
  with open(path) as f:
    result = json.load(f)
  configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
  models = factory.restore_models(configs,
                                  tf.train.latest_checkpoint(model_dir))
  evaluator = evaluator_lib.Evaluator(configs, f'{data_dir}/val/annotations.json',
                                 f'{data_dir}/val/images')
  (result['semantic_miou'], result['instances_miou'],
   result['semantic_miou_fused'], result['ms_per_image']) = semantic_scores(
       models.inference_model, evaluator.batches, configs.model.num_classes)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)


def table(results):
  lines = ['| head | steps | mask AP | AP50 | AP75 | box AP | AR@10 | AR@100 '
           '| mask-head params | ms/image | semantic mIoU | instances mIoU '
           '| + output fusion |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']

  def cell(value):
    return '-' if value is None else f'{value:.1f}'

  for head, r in results.items():
    metrics = r['metrics']
    mask, box = metrics.get('mask', {}), metrics.get('box', {})
    recall = metrics.get('proposals', {})
    values = [mask.get('AP'), mask.get('AP50'), mask.get('AP75'),
              box.get('AP'), recall.get('AR@10'), recall.get('AR@100')]
    lines.append(
        f'| {head} | {r["steps"]} | ' + ' | '.join(map(cell, values)) +
        f' | {r["mask_head_params"] / 1e3:.0f}k | {r["ms_per_image"]:.0f} | '
        f'{cell(r["semantic_miou"])} | {cell(r.get("instances_miou"))} | '
        f'{cell(r["semantic_miou_fused"])} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  os.chdir(REPO)
  unknown = set(FLAGS.heads) - set(HEADS)
  if unknown:
    raise app.UsageError(f'unknown heads {sorted(unknown)}; choose from '
                         f'{sorted(HEADS)}')
  data_dir = FLAGS.data_dir or os.path.join(FLAGS.output_dir, 'data')
  if FLAGS.run_one:
    run_one(FLAGS.run_one, data_dir)
    return
  for head in FLAGS.rescore:
    rescore(head, data_dir)
  if not os.path.exists(os.path.join(data_dir, 'train', 'annotations.json')):
    synthetic.make_shapes(data_dir, FLAGS.num_train, FLAGS.num_val, seed=1)
  results = {}
  for head in FLAGS.heads:
    path = os.path.join(FLAGS.output_dir, head, 'result.json')
    if FLAGS.rerun or not os.path.exists(path):
      print(f'== {head}: training for {FLAGS.budget_s:.0f} '
            f'{FLAGS.budget_mode} s', flush=True)
      subprocess.run(
          [sys.executable, os.path.abspath(__file__), f'--run_one={head}',
           f'--output_dir={FLAGS.output_dir}', f'--data_dir={data_dir}',
           f'--budget_s={FLAGS.budget_s}',
           f'--budget_mode={FLAGS.budget_mode}'], check=True)
    with open(path) as f:
      results[head] = json.load(f)
  text = '\n'.join([
      table(results), '',
      f'Budget per head: {FLAGS.budget_s:.0f} {FLAGS.budget_mode} s of '
      f'training; val split of the hard shapes set ({data_dir}). '
      f'ms/image: inference at batch 4 on the val images. mIoU at the '
      f'model\'s input resolution over labelled pixels. Machine: '
      f'{machine.describe()}.',
      f'Command: python benchmarks/heads.py --output_dir={FLAGS.output_dir} '
      f'--budget_s={FLAGS.budget_s:.0f} --budget_mode={FLAGS.budget_mode}'])
  print(text)
  with open(os.path.join(FLAGS.output_dir, 'table.md'), 'w') as f:
    f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
