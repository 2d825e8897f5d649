"""Weights from files (--init_checkpoint): ImageNet ResNets into the
backbone and the box classifier, and bin/train checkpoints of any system
into another's models.

A bin/train checkpoint (a configs.json beside it, or one folder up for
MODEL_DIR/best) loads weight by weight where the name and the shape agree:
the semantic-segmentation pretraining stage's backbone and semantic logits
into MaskLab (paper Table 6 "Seg"), a MaskLab trained on one set into a
MaskLab for another (the class-sized layers then start fresh), MaskLab's
backbone into FCIS. Anything else is read as a Model Garden ImageNet
ResNet. Either way the report lists what matched and what did not.

Nothing is downloaded: every path is the user's.
"""

from __future__ import annotations

import collections
import os
from typing import Sequence

from absl import logging
import tensorflow as tf
import tf_keras
from official.vision.modeling import backbones as mg_backbones

from masklab_tf import config as config_lib
from masklab_tf import files
from masklab_tf.modeling import factory
from masklab_tf.modeling.backbones import resnet as resnet_lib
from masklab_tf.modeling.systems import base

# What load_init_checkpoint writes into the run it initialises.
REPORT_FILE = 'init_checkpoint.json'


def _weighted_layers(model: tf_keras.Model) -> list:
  return [layer for layer in model.layers if layer.weights]


def _copy_layers(ours: list, theirs: list, our_prefix: str, report: dict,
                 used_theirs: set):
  """Copies weights pairwise, layer by layer, where all shapes agree."""
  for i, layer in enumerate(ours):
    source = theirs[i] if i < len(theirs) else None
    names = [f'{our_prefix}/{w.name}' for w in layer.weights]
    if source is not None and len(source.weights) == len(layer.weights) and all(
        w.shape == v.shape for w, v in zip(layer.weights, source.weights)):
      for w, v in zip(layer.weights, source.weights):
        w.assign(v)
        used_theirs.add(v.ref())
      report['matched'].extend(names)
    else:
      report['unmatched_ours'].extend(names)


def _restore_model_garden_resnet(resnet, checkpoint_path: str,
                                 depth: int) -> str:
  """Restores `resnet` from the first layout that fits; returns its name.

  Model Garden's image classification trainer writes
  tf.train.Checkpoint(model=ClassificationModel, ...); the functional model
  tracks its backbone as '_backbone' (and 'layer_with_weights-0'), not as
  'backbone'. Detection tasks read ImageNet checkpoints that hold the ResNet
  directly as 'backbone='. Each layout must match every ResNet variable.
  """
  layouts = (
      ('backbone', lambda: tf.train.Checkpoint(backbone=resnet)),
      ('model._backbone', lambda: tf.train.Checkpoint(
          model=tf.train.Checkpoint(_backbone=resnet))),
      ('model.backbone', lambda: tf.train.Checkpoint(
          model=tf.train.Checkpoint(backbone=resnet))),
  )
  errors = []
  for layout, make_checkpoint in layouts:
    try:
      status = make_checkpoint().read(checkpoint_path).expect_partial()
      status.assert_existing_objects_matched()
      return layout
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      errors.append(f'{layout}: {str(e).splitlines()[0][:200]}')
  raise ValueError(
      f'Checkpoint {checkpoint_path!r} holds no Model Garden ResNet-{depth} '
      'under any of the layouts tried:\n  ' + '\n  '.join(errors))


def _resolve_checkpoint_path(checkpoint_path: str) -> str:
  """A checkpoint prefix from a prefix or a directory; clear error if none."""
  if not checkpoint_path:
    raise FileNotFoundError('No ResNet checkpoint path given.')
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if latest is None:
      raise FileNotFoundError(
          f'ResNet checkpoint directory {checkpoint_path!r} holds no '
          'checkpoint.')
    return latest
  if not (tf.io.gfile.exists(checkpoint_path + '.index') or
          tf.io.gfile.exists(checkpoint_path)):
    raise FileNotFoundError(
        f'ResNet checkpoint {checkpoint_path!r} not found (looked for '
        f'{checkpoint_path + ".index"!r} and a directory of that name).')
  if checkpoint_path.endswith('.index'):
    return checkpoint_path[:-len('.index')]
  return checkpoint_path


def load_resnet_checkpoint(backbone: tf_keras.Model,
                           checkpoint_path: str,
                           depth: int,
                           conv5_blocks: Sequence[tf_keras.Model] = ()
                           ) -> dict[str, list[str]]:
  """Initialises the backbone (and duplicate conv5 blocks) from ImageNet.

  Builds Model Garden's plain `ResNet(model_id=depth)`, restores the
  checkpoint into it, then copies its weights into `backbone` layer by layer
  in creation order (stem conv, stem BN, then one layer per unit), where all
  shapes agree; atrous rates do not change shapes, so any output stride
  loads. Each conv5 block (from `build_conv5_block`) gets a copy of the
  checkpoint's res5 units (MaskLab Table 6: ImageNet-initialised box
  classifier). Nothing is downloaded.

  Args:
    backbone: from `build_backbone(depth, ...)`.
    checkpoint_path: checkpoint prefix (or a directory: its latest one).
    depth: ResNet depth of the checkpoint and of `backbone`.
    conv5_blocks: models from `build_conv5_block(depth, ...)`.

  Returns:
    {'matched': [our variable names], 'unmatched_ours': [...],
     'unmatched_checkpoint': [Model Garden ResNet variables copied nowhere]}.
    Names are prefixed with the model name ('checkpoint' for Model Garden's).

  Raises:
    FileNotFoundError: no checkpoint at `checkpoint_path`.
    ValueError: the checkpoint holds no ResNet-`depth` in a known layout.
  """
  resnet_lib.check_depth(depth)
  path = _resolve_checkpoint_path(checkpoint_path)
  # Every variable is restored, so skip the costly random initialisation.
  resnet = mg_backbones.ResNet(model_id=depth, kernel_initializer='zeros')
  layout = _restore_model_garden_resnet(resnet, path, depth)

  report = {'matched': [], 'unmatched_ours': [], 'unmatched_checkpoint': []}
  used = set()
  theirs = _weighted_layers(resnet)
  _copy_layers(_weighted_layers(backbone), theirs, backbone.name, report,
               used)
  num_res5_units = resnet_lib.RESNET_SPECS[depth][-1][2]
  for block in conv5_blocks:
    _copy_layers(_weighted_layers(block), theirs[-num_res5_units:],
                 block.name, report, used)
  report['unmatched_checkpoint'] = [
      f'checkpoint/{v.name}' for v in resnet.weights if v.ref() not in used]
  logging.info(
      'Loaded ResNet-%d from %s (layout %s): %d variables matched, %d of ours '
      'and %d of the checkpoint unmatched.', depth, path, layout,
      len(report['matched']), len(report['unmatched_ours']),
      len(report['unmatched_checkpoint']))
  return report


def load_imagenet_checkpoint(models: base.Models, checkpoint_path: str,
                             cfg: config_lib.ModelConfig) -> dict:
  """ImageNet ResNet weights into the backbone and the box classifier's
  duplicated conv5 block (paper Table 6 "BC": initialise the box classifier
  from the same checkpoint). Returns load_resnet_checkpoint's report."""
  conv5 = _box_classifier_conv5(models)  # InstanceFCN: none.
  conv5_blocks = [conv5] if conv5 is not None else []
  return load_resnet_checkpoint(models.backbone, checkpoint_path,
                                cfg.backbone_depth, conv5_blocks=conv5_blocks)


def training_run_configs(checkpoint_path: str) -> config_lib.Configs | None:
  """The configs of the bin/train run that wrote `checkpoint_path` (its
  configs.json, beside it or, for MODEL_DIR/best, one folder up); None for
  a checkpoint no bin/train run wrote."""
  folder = os.path.dirname(os.path.abspath(checkpoint_path))
  for candidate in (folder, os.path.dirname(folder)):
    path = os.path.join(candidate, config_lib.CONFIGS_FILE)
    if os.path.exists(path):
      return config_lib.from_json(path)
  return None


def _named_weights(models: base.Models) -> dict[str, tuple[str, tf.Variable]]:
  """{weight name in the common namespace: (its top-level layer, weight)}.

  Weight names are the layers' (unique within a model, the same in every
  system that builds the part with the same builder); a system's
  checkpoint_aliases rename the few it keeps elsewhere.
  """
  aliases = models.system.checkpoint_aliases
  named = {}
  for layer in models.train_model.layers:
    for weight in layer.weights:
      name = weight.name.removesuffix(':0')
      for old, new in aliases.items():
        if name.startswith(old):
          name = new + name[len(old):]
          break
      named[name] = (layer.name, weight)
  return named


def load_training_checkpoint(models: base.Models, checkpoint_path: str,
                             run_configs: config_lib.Configs
                             ) -> dict[str, list[str]]:
  """Copies a bin/train checkpoint's weights into `models` by name.

  Builds the models of the run that wrote the checkpoint (`run_configs`),
  restores the checkpoint into them, and copies every weight whose name
  (after each system's checkpoint_aliases) and shape agree with one of
  ours. The optimizer's slots and the step are not read: the run that
  loads starts its own schedule.

  Args:
    models: the models to initialise (their weights exist: built).
    checkpoint_path: the checkpoint prefix.
    run_configs: the configs of the run that wrote it
      (training_run_configs).

  Returns:
    {'matched': [...], 'unmatched_ours': [...], 'unmatched_checkpoint':
     [...]}: 'layer/weight' names, ours with the reason where the
    checkpoint had the weight in another shape.

  Raises:
    ValueError: the checkpoint does not hold the weights of the run its
      configs.json describes.
  """
  source = factory.build_models(run_configs.model, run_configs.geometry,
                                run_configs.data.max_instances)
  try:
    tf.train.Checkpoint(model=source.train_model).read(
        checkpoint_path).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(
        f'Checkpoint {checkpoint_path!r} does not hold the weights of the '
        f'{run_configs.model.mask_head} run its configs.json describes: '
        f'{str(e).splitlines()[0][:300]}') from None
  theirs = _named_weights(source)
  report = {'matched': [], 'unmatched_ours': [], 'unmatched_checkpoint': []}
  used = set()
  ours = _named_weights(models)
  copied = _conv5_from_res5(models, source, run_configs, report)
  ours = {name: (layer, weight) for name, (layer, weight) in ours.items()
          if weight.ref() not in copied}
  for name, (layer, weight) in ours.items():
    entry = name if name.startswith(layer + '/') else f'{layer}/{name}'
    if name not in theirs:
      report['unmatched_ours'].append(entry)
      continue
    source_weight = theirs[name][1]
    if source_weight.shape != weight.shape:
      report['unmatched_ours'].append(
          f'{entry} (checkpoint: {source_weight.shape.as_list()}, ours: '
          f'{weight.shape.as_list()})')
      continue
    weight.assign(source_weight)
    used.add(name)
    report['matched'].append(entry)
  report['unmatched_checkpoint'] = [
      name if name.startswith(layer + '/') else f'{layer}/{name}'
      for name, (layer, _) in theirs.items() if name not in used]
  return report


def _conv5_from_res5(models: base.Models, source: base.Models,
                     source_configs: config_lib.Configs,
                     report: dict[str, list[str]]) -> set:
  """Initialises our box classifier's duplicated conv5 from the source's
  res5 when the source has no box classifier (the semantic-segmentation
  stage), as an ImageNet checkpoint does (paper Table 6 "BC").

  Returns the refs of the weights it set (none unless every one matched);
  adds them to report['matched'].
  """
  conv5 = _box_classifier_conv5(models)
  if conv5 is None or _box_classifier_conv5(source) is not None:
    return set()
  num_res5_units = resnet_lib.RESNET_SPECS[
      source_configs.model.backbone_depth][-1][2]
  conv5_report = {'matched': [], 'unmatched_ours': []}
  _copy_layers(_weighted_layers(conv5),
               _weighted_layers(source.backbone)[-num_res5_units:],
               'box_classifier', conv5_report, set())
  if conv5_report['unmatched_ours']:
    return set()
  report['matched'].extend(f'{e} (from res5)' for e in conv5_report['matched'])
  return {w.ref() for w in conv5.weights}


def _box_classifier_conv5(models: base.Models):
  """The box classifier's duplicated conv5 block; None without one."""
  names = {layer.name for layer in models.train_model.layers}
  if 'box_classifier' not in names:
    return None
  return models.train_model.get_layer('box_classifier').conv5


def load_init_checkpoint(models: base.Models, checkpoint_path: str,
                         cfg: config_lib.ModelConfig) -> dict:
  """--init_checkpoint: a bin/train checkpoint by weight name, else an
  ImageNet ResNet (module docstring). `checkpoint_path`: a prefix or a
  folder (its latest checkpoint). Returns the report of the loader used,
  with 'source' added: 'bin/train <system>' or 'ImageNet ResNet-<depth>'."""
  path = _resolve_checkpoint_path(checkpoint_path)
  run_configs = training_run_configs(path)
  if run_configs is None:
    report = load_imagenet_checkpoint(models, path, cfg)
    report['source'] = f'ImageNet ResNet-{cfg.backbone_depth}'
  else:
    report = load_training_checkpoint(models, path, run_configs)
    report['source'] = f'bin/train {run_configs.model.mask_head}'
  report['checkpoint'] = path
  return report


def summarize(report: dict) -> str:
  """One line per list of the report, counted by top-level layer."""
  def counts(entries):
    by_layer = collections.Counter(e.split('/', 1)[0] for e in entries)
    return ', '.join(f'{layer}: {n}' for layer, n in by_layer.items()) or (
        'none')

  return (f'{report["source"]} checkpoint {report["checkpoint"]}\n'
          f'  loaded: {counts(report["matched"])}\n'
          f'  ours not in it (start fresh): '
          f'{counts(report["unmatched_ours"])}\n'
          f'  its own not used: {counts(report["unmatched_checkpoint"])}')


def write_report(report: dict, model_dir: str) -> str:
  """The whole report as MODEL_DIR/init_checkpoint.json; returns the path."""
  path = os.path.join(model_dir, REPORT_FILE)
  files.write_json(path, report, indent=1)
  return path
