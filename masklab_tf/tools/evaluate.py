"""COCO evaluation of a trained MaskLab checkpoint (bin/evaluate).

Usage:
  bin/evaluate --flagfile=configs/shapes_cpu.flags --model_dir=runs/shapes \
      --annotations=demo_data/val/annotations.json \
      --images=demo_data/val/images [--checkpoint=PATH] [--output_dir=DIR] \
      [--test_scales=0.8,1,1.2] [--test_flip] [--test_box_voting]

  bin/evaluate --flagfile=configs/shapes_cpu.flags \
      --saved_model=demo_data/export/1 --output_dir=DIR \
      --annotations=demo_data/val/annotations.json \
      --images=demo_data/val/images

Restores the latest checkpoint of --model_dir (or --checkpoint, e.g.
runs/shapes/best/ckpt-300), or loads an exported SavedModel (bin/export),
writes DIR/results.json (COCO results with RLE masks) and DIR/metrics.json,
and prints box and mask AP, AP50, AP75, APs, APm, APl from pycocotools
COCOeval. A checkpoint is restored into the run's model, built from
--model_dir's configs.json (flags named on the command line override it,
with a warning where they differ; a --flagfile's do not). --test_scales,
--test_flip and --test_box_voting evaluate with test-time augmentation
(postprocess/test_time_augmentation.py); a SavedModel runs what it was
exported with.
"""

import os

from absl import app
from absl import flags
import tensorflow as tf

from masklab_tf import config
from masklab_tf import determinism
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.modeling import factory
from masklab_tf.postprocess import test_time_augmentation as tta
from masklab_tf.tools import common_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  common_flags.define_checkpoint_flags()
  flags.DEFINE_string('output_dir', '', 'Where results.json and metrics.json '
                      'go (default: --model_dir).')
  flags.DEFINE_string('saved_model', '', 'Evaluate this SavedModel '
                      '(bin/export) instead of a checkpoint.')
  # --verify_images is DataConfig's (config flags below).
  common_flags.define_dataset_flags(default_verify=None)
  config.define_all_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  configs = (config.all_from_flags() if FLAGS.saved_model else
             common_flags.run_configs(FLAGS.model_dir))
  try:
    tta.settings(configs)  # Refuses --test_box_voting without passes.
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if configs.train.deterministic:
    determinism.enable()
  if not FLAGS.annotations:
    raise app.UsageError('--annotations and --images name the set to '
                         'evaluate')
  output_dir = FLAGS.output_dir or FLAGS.model_dir
  if not output_dir:
    raise app.UsageError('--output_dir (or --model_dir) says where results '
                         'go')
  if FLAGS.saved_model:
    given = [f'--{name}' for name in ('test_scales', 'test_flip',
                                      'test_box_voting')
             if FLAGS[name].present]
    if given:
      raise app.UsageError(
          f'{", ".join(given)}: a SavedModel runs the test-time '
          'augmentation it was exported with (bin/export --test_scales); '
          'these apply to --model_dir')
    if not os.path.exists(os.path.join(FLAGS.saved_model, 'saved_model.pb')):
      raise app.UsageError(f'{FLAGS.saved_model}: no saved_model.pb')
    path, inference_model = FLAGS.saved_model, None
    saved_model = tf.saved_model.load(path)
  else:
    if not FLAGS.model_dir:
      raise app.UsageError('--model_dir or --saved_model names the model')
    path = FLAGS.checkpoint or tf.train.latest_checkpoint(FLAGS.model_dir)
    if not path:
      raise app.UsageError(f'{FLAGS.model_dir}: no checkpoint to evaluate')
    models = factory.restore_models(configs, path)
    inference_model, saved_model = models.inference_model, None
  os.makedirs(output_dir, exist_ok=True)
  try:
    evaluator = evaluator_lib.Evaluator(configs, FLAGS.annotations,
                                        FLAGS.images)
  except evaluator_lib.SettingError as e:
    raise app.UsageError(str(e)) from e
  metrics = evaluator.run(inference_model,
                          os.path.join(output_dir, 'results.json'),
                          saved_model=saved_model)
  info = {'saved_model' if saved_model else 'checkpoint': path}
  test_time = tta.settings(configs)
  if test_time and not saved_model:
    info['test_time'] = test_time._asdict()  # What the scores are of.
  evaluator_lib.write_metrics(os.path.join(output_dir, 'metrics.json'),
                              metrics, **info)
  print(f'model: {path}')
  print(evaluator_lib.format_table({os.path.basename(path): metrics}))


if __name__ == '__main__':
  define_flags()
  app.run(main)
