"""Accuracy at equal training time on the hard shapes set (or --data_dir):
MaskLab, its ablations, the seed papers' heads (sharing --config's
backbone, RPN and box classifier; InstanceFCN, without boxes or classes, by
AR only), Model Garden's Mask R-CNN, the connected components of the true
class map (no training; fails exactly where instances of one class touch,
the case direction features exist for) and those of the semantic map the
trained `masklab` predicts (what semantic segmentation alone gives), each
trained from scratch to one budget."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
import numpy as np
from pycocotools import mask as mask_api
import skimage.measure

from benchmarks.harness import budget
from benchmarks.harness import jobs
from benchmarks.harness import render
from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from masklab_tf.data import coco
from masklab_tf.data import synthetic

# TensorFlow is imported by the jobs only, not by the planner.
# pylint: disable=g-import-not-at-top
FLAGS = flags.FLAGS
# --mask_head and overrides of --config: the position-sensitive heads reduce
# res5 to 256 channels (paper: 1024 of 2048), InstanceFCN's windows fit the
# 18-60 px shapes, masklab_fast has the fast config's changes.
SYSTEMS = {
    'masklab': 'masklab', 'semantic_only': 'masklab_semantic_only',
    'direction_only': 'masklab_direction_only',
    'masklab_fast': 'masklab --output_stride=16 '
                    '--mixed_precision=mixed_bfloat16',
    'fcis': 'fcis --ps_feature_channels=256',
    'biseg': 'biseg --ps_feature_channels=256',
    'instancefcn': 'instancefcn --ifcn_channels=256 '
                   '--ifcn_window_sizes=32,45,64,90'}
ALL = [*SYSTEMS, 'model_garden', 'connected_components',
       'semantic_components']
# Trained through ground-truth boxes only (the paper), semantic logits stay
# high outside objects (its Fig. 7): the semantic map, output fusion and
# BiSeg's prior need the dense loss. 100 detections: AR@100 as COCO counts.
DENSE_SEMANTIC = ('--semantic_loss_weight=1', '--max_detections=100')
SCORES = ('ms_per_image', 'semantic_miou', 'instances_miou',
          'semantic_miou_fused')
QUICK = {'num_train': 8, 'num_val': 8, 'budget_s': 5.0}
DETECTIONS = ('masks', 'boxes', 'classes', 'scores')
COLUMNS = [results.column('system', 'system')] + [
    results.column(key, header, fmt, suffix='k' * (key == 'mask_head_params'))
    for key, header, fmt in (
        ('steps', 'steps', 'd'), ('wall_min', 'train min (wall)', '.1f'),
        ('cpu_min', 'train min (cpu)', '.1f'), *(
            (f'{kind}_ap{at}', f'{kind} AP{at}', '.1f')
            for kind in ('box', 'mask') for at in ('', '50', '75')),
        ('ar10', 'AR@10', '.1f'), ('ar100', 'AR@100', '.1f'),
        ('mask_head_params', 'mask-head params', '.0f'), *zip(
            SCORES, ('ms/image', 'semantic mIoU', 'instances mIoU',
                     '+ output fusion'), ('.0f', '.1f', '.1f', '.1f')))]


def define_flags() -> None:
  flags.DEFINE_list('systems', [s for s in ALL if s != 'masklab_fast'],
                    f'In order, of: {", ".join(ALL)}.')
  flags.DEFINE_float('budget_s', 1500.0, 'Training budget per system.')
  flags.DEFINE_enum('budget_mode', 'wall', ['wall', 'cpu'],
                    'Wall-clock or process CPU seconds (2x on 2 cores).')
  flags.DEFINE_string('data_dir', '', 'Hard shapes set; generated if missing.')
  flags.DEFINE_integer('num_train', 2000, 'Training images to generate.')
  flags.DEFINE_integer('num_val', 200, 'Val images to generate.')
  flags.DEFINE_integer('data_seed', 1, 'Seed of the generated set.')
  flags.DEFINE_string('config', 'configs/shapes_cpu.flags',
                      "MaskLab's systems' flags file (repository-relative).")
  flags.DEFINE_bool('dense_semantic_loss', True, 'MaskLab systems: + dense '
                    'semantic loss, 100 detections.')
  flags.DEFINE_integer('seed', 0, 'MaskLab systems: --seed of training '
                       '(runs with other seeds measure the spread).')
  flags.DEFINE_bool('deterministic', False, 'MaskLab systems: --deterministic '
                    'training (steps still end at the time budget).')
  flags.DEFINE_list('rescore', [], 'Score these systems of --work_dir again '
                    'from their checkpoints.')
  flags.DEFINE_bool('rerun', False, 'Train --systems of --work_dir again.')
  flags.DEFINE_enum('model_garden_recipe', 'shapes', ['shapes', 'data'],
                    "Model Garden's settings: shapes: the hard shapes set's "
                    '(160 px, 4 classes, 16 px anchors, 20 detections); '
                    "data: --config's classes, smallest anchor, detections "
                    'and instances, each split at its own largest side '
                    '(native scale).')


def configs_for(settings: dict, data: str, *overrides: str):
  """--config's Configs training on `data`'s train split, with the dense
  semantic loss if set, then `overrides` (flags), the seed and a cosine
  schedule ending where the time budget does."""
  from masklab_tf import config
  return config.from_flagfile(
      os.path.join(results.REPO, settings['config']),
      DENSE_SEMANTIC * settings['dense_semantic_loss'] + overrides + (
          f'--train_annotations={data}/train/annotations.json',
          f'--train_images={data}/train/images', '--lr_schedule=cosine',
          '--checkpoint_every=1000000', '--image_summary_every=0',
          f'--seed={settings["seed"]}',
          f'--deterministic={settings["deterministic"]}'))


def train_to_budget(configs, model_dir: str, budget_s: float,
                    budget_mode: str):
  """Trains `configs` in `model_dir` until the budget is spent; returns
  (the trainer, {steps, wall_s, cpu_s, final_loss, initialised}).

  budget_mode 'wall' or 'cpu': `budget_s` seconds of that clock; 'steps':
  configs.train.train_steps (the schedule's own end; `budget_s` unused)."""
  from masklab_tf.training import trainer as trainer_lib
  trainer = trainer_lib.Trainer(configs, model_dir)
  initialised = trainer.restore_or_initialise()
  wall, cpu = time.time(), time.process_time()
  losses = trainer.train(hooks=[] if budget_mode == 'steps' else [
      budget.TimeBudget(budget_s, budget_mode)])
  return trainer, {'steps': trainer.current_step,
                   'wall_s': time.time() - wall,
                   'cpu_s': time.process_time() - cpu,
                   'final_loss': losses.get('total'),
                   'initialised': initialised}


def train(system: str, settings: dict, data: str, model_dir: str) -> dict:
  """Trains a MaskLab system to the budget in `model_dir`; scores it."""
  configs = configs_for(settings, data,
                        *f'--mask_head={SYSTEMS[system]}'.split())
  trainer, trained = train_to_budget(configs, model_dir, settings['budget_s'],
                                     settings['budget_mode'])
  head = trainer.models.train_model.get_layer(
      'instancefcn_head' if system == 'instancefcn' else 'mask_head')
  trained.pop('initialised')
  return {**trained, 'mask_head_params': int(head.count_params()),
          **score(configs, trainer.models.inference_model, data, model_dir),
          'model': dataclasses.asdict(configs.model)}


def score(configs, inference_model, data: str, model_dir: str) -> dict:
  """pycocotools' metrics and the SCORES on the val split."""
  from masklab_tf.evaluation import evaluator as evaluator_lib
  evaluator = evaluator_lib.Evaluator(
      configs, f'{data}/val/annotations.json', f'{data}/val/images')
  metrics = evaluator.run(inference_model, f'{model_dir}/results.json')
  return {'metrics': metrics, **semantic_scores(
      inference_model, evaluator.batches, configs.model.num_classes)}


def model_garden(settings: dict, data: str, model_dir: str) -> dict:
  """Model Garden's Mask R-CNN (ResNet-18 + FPN) on the same images."""
  from benchmarks.systems import model_garden as mg
  from masklab_tf.data import tfrecord
  for split in ('train', 'val'):
    if not os.path.exists(f'{data}/tfrecords/{split}.categories.json'):
      tfrecord.write_tfrecords(coco.read_coco(
          f'{data}/{split}/annotations.json', f'{data}/{split}/images'),
                               f'{data}/tfrecords/{split}')
  pattern = data + '/tfrecords/{}-*.tfrecord'
  recipe = ({'train': None, 'val': None, 'max_instances': mg.MAX_INSTANCES}
            if settings['model_garden_recipe'] == 'shapes' else
            data_recipe(settings, data))
  result = mg.train_for_budget(
      model_dir, settings['budget_s'], settings['budget_mode'],
      train_pattern=pattern.format('train'), val_pattern=pattern.format('val'),
      model_overrides=recipe['train'], max_instances=recipe['max_instances'])
  result['metrics'] = mg.evaluate(
      model_dir, f'{data}/val/annotations.json', f'{data}/val/images',
      pattern.format('val'), model_overrides=recipe['val'],
      max_instances=recipe['max_instances'])
  return dict(result, recipe=recipe)


def data_recipe(settings: dict, data: str) -> dict:
  """Model Garden's settings from --config and the data: the classes (its
  labels are the raw category ids: the largest id + 1, background
  included), the smallest anchor (Model Garden's anchor_size is in units of
  the level-2 stride, 4 px), the detections, the instances kept per image,
  and an input size per split at its largest image side: its largest images
  keep their native scale (Model Garden's parser fits each image into the
  input size, enlarging smaller ones)."""
  from masklab_tf import config
  configs = config.from_flagfile(os.path.join(results.REPO,
                                              settings['config']))
  sides, largest_id = {}, 0
  for split in ('train', 'val'):
    dataset = coco.read_coco(f'{data}/{split}/annotations.json',
                             f'{data}/{split}/images')
    sides[split] = max(max(r.height, r.width) for r in dataset.records)
    largest_id = max([largest_id] + [c.id for c in dataset.categories])
  model = {'num_classes': largest_id + 1,
           'anchor': {'anchor_size': min(configs.model.anchor_sizes) / 4},
           'detection_generator': {
               'max_num_detections': configs.model.max_detections}}
  return {split: dict(model, input_size=[side, side, 3])
          for split, side in sides.items()} | {
              'max_instances': configs.data.max_instances}


def connected_components(data: str) -> dict:
  """Scores the 8-connected components of each class of the true class map
  (smallest instances on top, the pipeline's rule) as detections."""
  from masklab_tf.evaluation import evaluator as evaluator_lib
  dataset = coco.read_coco(f'{data}/val/annotations.json',
                           f'{data}/val/images')
  found = []
  for record in dataset.records:
    masks = dataset.load_masks(record)
    class_map = np.zeros((record.height, record.width), np.int32)
    for index in np.argsort([-int(m.sum(dtype=np.int64)) for m in masks]):
      class_map[masks[index] > 0] = record.instances[index].category_id
    found += components_as_results(record.image_id, class_map, int)
  return {'steps': 0, 'detections': len(found), 'metrics': evaluator_lib.
          coco_metrics(dataset.to_coco_dict(), found,
                       dataset.max_instances_per_image)}


def components_as_results(image_id: int, class_map: np.ndarray,
                          category_of) -> list[dict]:
  """COCO results, score 1, of the 8-connected components of each class
  k > 0 of `class_map` [H, W] (category id: category_of(k))."""
  found = []
  for category in np.unique(class_map[class_map > 0]):
    components = skimage.measure.label(class_map == category, connectivity=2)
    for label in range(1, components.max() + 1):
      rle = mask_api.encode(np.asfortranarray(components == label, np.uint8))
      rle['counts'] = rle['counts'].decode('ascii')
      found.append({'image_id': image_id, 'score': 1.0,
                    'category_id': category_of(int(category)),
                    'segmentation': rle,
                    'bbox': [float(v) for v in mask_api.toBbox(rle)]})
  return found


def semantic_components(data: str, work_dir: str) -> dict:
  """Scores the 8-connected components of each class of the semantic map
  that the suite's trained `masklab` predicts (in image pixels, through
  postprocess/image_results.py), as detections of score 1."""
  import tensorflow as tf
  from masklab_tf import config
  from masklab_tf.evaluation import evaluator as evaluator_lib
  from masklab_tf.modeling import factory
  from masklab_tf.postprocess import image_results
  model_dir = os.path.join(work_dir, 'models', 'masklab')
  checkpoint = tf.train.latest_checkpoint(model_dir)
  if not checkpoint:
    raise ValueError(f'{model_dir}: no checkpoint; run the masklab system '
                     'first')
  configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
  inference_model = factory.restore_models(configs,
                                           checkpoint).inference_model
  evaluator = evaluator_lib.Evaluator(
      configs, f'{data}/val/annotations.json', f'{data}/val/images')
  model = image_results.build_results_model(
      inference_model, padding_multiple=evaluator.padding_multiple)
  found = []
  for batch in evaluator.batches:
    outputs = model({k: batch[k] for k in model.input_names})
    for i, image_id in enumerate(batch['image_id'].numpy()):
      height, width = batch['original_size'][i].numpy()
      found += components_as_results(
          int(image_id),
          outputs['semantic_map'][i, :height, :width].numpy(),
          lambda k: evaluator.category_ids[k - 1])
  return {'steps': 0, 'detections': len(found), 'metrics': evaluator_lib.
          coco_metrics(evaluator.ground_truth, found,
                       evaluator.dataset.max_instances_per_image)}


def semantic_scores(inference_model, batches, num_classes,
                    threshold=0.5) -> dict:
  """mIoU of the semantic head's map, of the detections >= threshold alone
  (higher scores on top) and of the output fusion's (one category per
  class: the semantic head's; its gain is over the instances alone), at the
  model's input resolution (None without classes); inference ms/image."""
  import tensorflow as tf
  from masklab_tf.evaluation.semantic_metrics import confusion
  from masklab_tf.evaluation.semantic_metrics import mean_iou
  from masklab_tf.postprocess import masks as masks_lib
  from masklab_tf.postprocess import output_fusion
  call = tf.function(lambda x: inference_model(x, training=False))
  counts = np.zeros([3, num_classes + 1, num_classes + 1], np.int64)
  seconds, images = 0.0, 0
  for step, batch in enumerate(batches):
    start = time.perf_counter()
    out = {k: v.numpy() for k, v in call(
        {'image': batch['image'], 'image_size': batch['image_size']}).items()}
    if step:  # The first batch pays for tracing.
      seconds += time.perf_counter() - start
      images += len(out['num_detections'])
    for i, num in enumerate(out['num_detections']
                            if 'semantic_map' in out else []):
      semantic, keep = out['semantic_map'][i], (
          out['detection_scores'][i, :num] >= threshold)
      masks, boxes, classes, scores = (out[f'detection_{k}'][i, :num][keep]
                                       for k in DETECTIONS)
      pasted = masks_lib.paste_masks(masks, boxes, *semantic.shape)
      masks = pasted.numpy() >= 0.5
      painted = np.zeros(semantic.shape, np.int64)
      for j in np.argsort(scores, kind='stable'):
        painted[masks[j]] = classes[j]
      fused = output_fusion.fuse_np(semantic, masks, classes, scores)[0]
      for k, class_map in enumerate((semantic, painted, fused)):
        counts[k] += confusion(class_map, batch['semantic_labels'][i].numpy(),
                               num_classes)
  mious = [mean_iou(c) for c in counts] if counts.any() else [None] * 3
  return dict(zip(SCORES, [1000 * seconds / images if images else None,
                          *mious]))


def shapes_data(settings: dict, work_dir: str) -> str:
  """--data_dir, else the hard shapes set in the work folder (made once)."""
  data = settings['data_dir'] or os.path.join(work_dir, 'data')
  if not os.path.exists(f'{data}/train/annotations.json'):
    synthetic.make_shapes(data, settings['num_train'], settings['num_val'],
                          seed=settings['data_seed'])
  return data


def run_job(job: jobs.Job, settings: dict, work_dir: str) -> dict:
  data = shapes_data(settings, work_dir)
  model_dir = os.path.join(work_dir, 'models', job.system)
  if job.kind == 'rescore':
    import tensorflow as tf
    from masklab_tf import config
    from masklab_tf.modeling import factory
    configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
    models = factory.restore_models(configs,
                                    tf.train.latest_checkpoint(model_dir))
    return score(configs, models.inference_model, data, model_dir)
  if job.system == 'connected_components':
    return connected_components(data)
  if job.system == 'semantic_components':
    return semantic_components(data, work_dir)
  print(f'earlier run set aside: {scratch.set_aside(model_dir)}', flush=True)
  os.makedirs(model_dir)
  if job.system == 'model_garden':
    return model_garden(settings, data, model_dir)
  return train(job.system, settings, data, model_dir)


def row(system: str, result: dict) -> dict:
  """A table row of a system's result, without the keys it lacks."""
  metrics, trained = result.get('metrics', {}), bool(result.get('steps'))
  recall, params = metrics.get('proposals', {}), result.get('mask_head_params')
  values = {
      'system': system, 'steps': result['steps'] if trained else None,
      'wall_min': result['wall_s'] / 60 if trained else None,
      'cpu_min': result['cpu_s'] / 60 if trained else None,
      'ar10': recall.get('AR@10'), 'ar100': recall.get('AR@100'),
      'mask_head_params': params / 1e3 if params else None,
      **{key: result.get(key) for key in SCORES},
      **{f'{kind}_ap{at}': metrics.get(kind, {}).get(f'AP{at}')
         for kind in ('box', 'mask') for at in ('', '50', '75')}}
  return {key: value for key, value in values.items() if value is not None}


def systems_table(rows: list[dict]) -> dict:
  """The 'systems' table: the README headline's columns (render.HEADLINE)
  and those a row has."""
  return results.table('systems', [
      spec for spec in COLUMNS if spec['key'] in render.HEADLINE['columns']
      or any(spec['key'] in r for r in rows)], rows)


def report(store: jobs.Store, settings: dict, systems: list[str]) -> dict:
  """The systems' table; a system's rescored metrics replace its own."""
  rows = [row(system, dict(result, **(
      store.result(jobs.Job('rescore', system), settings) or {})))
          for system in systems
          if (result := store.result(jobs.Job('accuracy', system), settings))]
  scored = ('{num_val} val images of the hard shapes set (seed '
            '{data_seed})'.format(**settings))
  if settings['data_dir']:
    with open(os.path.join(settings['data_dir'], 'val',
                           'annotations.json')) as f:
      scored = (f'the {len(json.load(f)["images"])} val image(s) of '
                f'--data_dir, with --config={settings["config"]}')
  title = 'Systems at equal training time' + (
      f' ({os.path.basename(settings["config"])}, --data_dir)'
      if settings['data_dir'] else '')
  return results.new('accuracy', title, [
      results.text('{budget_s:g} {budget_mode} s of training each; '
                   .format(**settings) + scored + '.'),
      systems_table(rows)],
      dict(settings, data_dir=results.relative_paths(settings['data_dir'])))


def main(argv) -> None:
  del argv
  systems = list(dict.fromkeys(FLAGS.systems + FLAGS.rescore))
  if set(systems) - set(ALL) or set(FLAGS.rescore) - set(SYSTEMS):
    raise app.UsageError(f'systems: {ALL} (rescore: MaskLab\'s)')
  settings = {name: suite.chosen(name, QUICK) for name in (
      'budget_s', 'budget_mode', 'num_train', 'num_val', 'data_seed',
      'config', 'dense_semantic_loss', 'seed', 'deterministic',
      'model_garden_recipe')}
  settings['data_dir'] = FLAGS.data_dir and os.path.abspath(FLAGS.data_dir)
  suite.run('accuracy', [jobs.Job('accuracy', s) for s in systems]
            + [jobs.Job('rescore', s) for s in FLAGS.rescore], settings,
            lambda store, settings, _: report(store, settings, systems),
            redo=[f'rescore-{s}' for s in FLAGS.rescore]  # whenever asked
            + [f'accuracy-{s}' for s in systems if FLAGS.rerun])
