"""Weights from files: ImageNet ResNets into the backbone and the box
classifier, and training checkpoints into a system's models.

Nothing is downloaded: every path is the user's.
"""

from __future__ import annotations

from typing import Sequence

from absl import logging
import tensorflow as tf
import tf_keras
from official.vision.modeling import backbones as mg_backbones

from masklab_tf import config as config_lib
from masklab_tf.modeling.backbones import resnet as resnet_lib
from masklab_tf.modeling.systems import base


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
  names = {layer.name for layer in models.train_model.layers}
  conv5_blocks = ([models.train_model.get_layer('box_classifier').conv5]
                  if 'box_classifier' in names else [])  # InstanceFCN: none.
  return load_resnet_checkpoint(models.backbone, checkpoint_path,
                                cfg.backbone_depth, conv5_blocks=conv5_blocks)
