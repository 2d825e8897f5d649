"""MaskLab's speed systems: the project's own configs, at a size.

masklab_os16 / masklab_os8: configs/masklab_r50_coco.flags at that output
stride; masklab_fast: configs/masklab_r50_fast.flags in mixed_bfloat16 (what
its --mixed_precision=auto picks on CPUs with bfloat16 units),
masklab_fast_fp32 the same in float32 (what auto picks elsewhere): each
names its precision, so a row means the same on every machine.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from benchmarks import systems
from masklab_tf import config as config_lib
from masklab_tf.modeling import factory
from masklab_tf.modeling import precision as precision_lib
from masklab_tf.training import trainer as trainer_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SYSTEMS = {  # (flags file, overrides)
    'masklab_os16': ('masklab_r50_coco', ('--output_stride=16',)),
    'masklab_os8': ('masklab_r50_coco', ('--output_stride=8',)),
    'masklab_fast_fp32': ('masklab_r50_fast', ('--mixed_precision=',)),
    'masklab_fast': ('masklab_r50_fast',
                     ('--mixed_precision=mixed_bfloat16',)),
}


def configs(system: str, size: int, extra=(), settings: dict | None = None):
  """The system's configs for square `size` px images; `settings`'
  'precision' and 'extra_flags' (systems/__init__.py) go last."""
  name, overrides = SYSTEMS[system]
  settings = settings or {}
  precision = settings.get('precision')
  return config_lib.from_flagfile(
      os.path.join(REPO, 'configs', f'{name}.flags'),
      (*overrides, '--num_classes=80', '--max_detections=100',
       f'--min_sizes={size}', f'--eval_min_size={size}', f'--max_size={size}',
       *extra, *settings.get('extra_flags', ()),
       *([f'--mixed_precision={"" if precision == "float32" else precision}']
         if precision else [])))


def info(cfg) -> dict:
  """The settings a row was measured with."""
  model = cfg.model
  return {
      **{key: getattr(model, key) for key in (
          'output_stride', 'backbone_depth', 'test_num_proposals',
          'num_proposals', 'num_sampled_rois')},
      'max_instances': cfg.data.max_instances,
      'mask_crop_size': cfg.geometry.mask_crop_size,
      **{key: getattr(model, key) for key in (
          'deformable_crop', 'hypercolumn_channels', 'refine_filters',
          'detection_score_threshold')},
      'precision': (precision_lib.resolve(cfg.train.mixed_precision)
                    or 'float32')}


def inference(system: str, size: int, settings: dict) -> dict:
  """See systems/__init__.py. uint8 images, normalised in the graph."""
  cfg = configs(system, size, settings=settings)
  models = factory.build_models(cfg.model, cfg.geometry,
                                cfg.data.max_instances,
                                use_xla=settings.get('use_xla', True),
                                precision=cfg.train.mixed_precision)
  model = models.inference_model
  normalize = model.get_layer('normalize')
  rng = np.random.default_rng(0)
  return dict(
      function=lambda inputs: model(inputs, training=False),
      make_args=lambda batch: ({
          'image': tf.constant(rng.integers(0, 256, [batch, size, size, 3]),
                               tf.uint8),
          'image_size': tf.constant([[size, size]] * batch, tf.int32)},),
      backbone=lambda image: models.backbone(normalize(image),
                                             training=False),
      backbone_args=lambda args: (args[0]['image'],),
      count_detections=lambda outputs: outputs['num_detections'][0],
      info=info(cfg))


def training(system: str, size: int, settings: dict, pattern: str,
             scratch_dir: str) -> dict:
  """See systems/__init__.py: the Trainer's own tf.function step, without
  its checkpointing and logging (its model_dir is `scratch_dir`). The
  assembling layers train compiled with XLA, as the Trainer's do."""
  cfg = configs(system, size, (
      f'--train_tfrecords={pattern}',
      f'--batch_size={settings.get("train_batch", systems.TRAIN_BATCH)}',
      '--image_summary_every=0', '--shuffle_buffer=16'), settings)
  trainer = trainer_lib.Trainer(cfg, scratch_dir)
  step = trainer._train_step  # pylint: disable=protected-access
  return dict(dataset=trainer.make_dataset(),
              step=lambda batch: step(batch)[0]['total'],
              image_shape=lambda batch: batch['image'].shape, info=info(cfg))
