"""Exports a trained MaskLab as a SavedModel for TF Serving, or as ONNX
(bin/export).

Usage:
  bin/export --flagfile=configs/shapes_cpu.flags --model_dir=runs/shapes \
      --export_dir=exported/shapes/1 [--checkpoint=PATH] \
      [--full_image_masks] [--mask_voting] [--panoptic] \
      [--categories=annotations.json] [--max_image_pixels=40000000] \
      [--test_scales=0.8,1,1.2] [--test_flip] [--test_box_voting]

  bin/export --format=onnx --model_dir=runs/shapes \
      --export_dir=exported/shapes/onnx [--mask_voting] [--panoptic] \
      [--onnx_opset=17]

--format=onnx writes export_dir/model.onnx and categories.json beside it
(serving/onnx_export.py): uint8 images [batch, height, width, 3] of one
size in, the outputs of `serving_default` out, `detection_masks_full`
always among them; it runs in ONNX Runtime without TensorFlow
(`bin/predict --onnx`). It is built from the portable graph (no XLA, NMS in
ONNX's form, float32), whose results equal the fast graph's; not
exported: the in-graph image checks (--max_image_pixels is bin/predict's
there).

Signatures (serving/export.py): `serving_default` takes uint8 images
[batch, height, width, 3], `serving_encoded` JPEG, PNG, GIF, BMP or WebP
strings [batch]; batch and size are dynamic; images over --max_image_pixels
are refused (encoded ones sized from their headers, never decoded). The
model is the run's: its configs.json (flags named on the command line
override it, with a warning where they differ; a --flagfile's do not).
--test_scales, --test_flip and --test_box_voting build test-time
augmentation into both signatures (postprocess/test_time_augmentation.py):
each request then costs one network pass per scale and mirror. Class
names come from --categories (a COCO json or a TFRecord
`.categories.json`; default: the run's categories.json, else the training
data's) and travel in the SavedModel's assets.
"""

import os

from absl import app
from absl import flags
import tensorflow as tf

from masklab_tf import config
from masklab_tf.data import tfrecord
from masklab_tf.modeling import factory
from masklab_tf.modeling.systems import registry
from masklab_tf.postprocess import test_time_augmentation as tta
from masklab_tf.serving import export
from masklab_tf.serving import model as model_lib
from masklab_tf.serving import onnx_export
from masklab_tf.serving import preprocess
from masklab_tf.tools import common_flags
from masklab_tf.training import trainer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  common_flags.define_checkpoint_flags()
  flags.DEFINE_enum('format', 'saved_model', ['saved_model', 'onnx'],
                    'saved_model: a SavedModel for TF Serving; onnx: '
                    'export_dir/model.onnx for ONNX Runtime.')
  flags.DEFINE_string('export_dir', None, 'Folder to write (the SavedModel, '
                      'or model.onnx and categories.json).')
  flags.DEFINE_integer('onnx_opset', onnx_export.OPSET, 'ONNX opset of '
                       '--format=onnx.')
  flags.DEFINE_bool('full_image_masks', False, 'Also output masks pasted '
                    'into the image (uint8 [B, D, H, W]).')
  flags.DEFINE_bool('mask_voting', False, 'Binarise full-image masks by mask '
                    'voting (BiSeg / MNC); implies full-image masks.')
  flags.DEFINE_bool('panoptic', False, 'Add the output fusion\'s panoptic '
                    'category and instance maps.')
  flags.DEFINE_string('categories', '', 'COCO json or .categories.json with '
                      'the class names (default: from the training data).')
  flags.DEFINE_integer(
      'max_image_pixels', preprocess.MAX_IMAGE_PIXELS, 'Both signatures '
      'refuse images with more pixels (height x width), naming the batch '
      'element; encoded images are sized from their headers before '
      'decoding, so a decompression bomb is never decoded.')
  flags.mark_flags_as_required(['model_dir', 'export_dir'])
  config.define_all_flags()


# InstanceFCN's proposals are class-agnostic: class 1 is any object.
OBJECT_CATEGORY = [{'id': 1, 'name': 'object'}]


def categories_for(configs, model_dir: str = '') -> list[dict] | None:
  """The class names: --categories, else what bin/train recorded in
  `model_dir`, else the training data's."""
  if registry.get_system(configs.model, configs.geometry).class_agnostic:
    return OBJECT_CATEGORY
  recorded = os.path.join(model_dir, trainer.CATEGORIES_FILE)
  if not FLAGS.categories and model_dir and os.path.exists(recorded):
    return tfrecord.read_categories(recorded)
  train_set = configs.data.train
  path = FLAGS.categories or train_set.categories
  if not path and train_set.tfrecords:
    path = tfrecord.categories_path_for(train_set.tfrecords)
  path = path or train_set.annotations
  if not path:
    return None
  if not os.path.exists(path):
    raise app.UsageError(f'{path}: no such categories file')
  return tfrecord.read_categories(path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  onnx = FLAGS.format == 'onnx'
  configs = common_flags.run_configs(FLAGS.model_dir)
  path = FLAGS.checkpoint or tf.train.latest_checkpoint(FLAGS.model_dir)
  if not path:
    raise app.UsageError(f'{FLAGS.model_dir}: no checkpoint to export')
  try:
    model_lib.check_servable(configs)
    test_time = tta.settings(configs)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if onnx and test_time is not None:
    raise app.UsageError('--format=onnx takes no test-time augmentation '
                         '(--test_scales, --test_flip): it has no portable '
                         'form; a SavedModel does')
  models = factory.restore_models(configs, path, portable=onnx)
  categories = categories_for(configs, FLAGS.model_dir)
  if onnx:
    model_path = onnx_export.export_onnx(
        models.inference_model, configs, FLAGS.export_dir, categories,
        FLAGS.mask_voting, FLAGS.panoptic, FLAGS.onnx_opset,
        verbose='verbose' in FLAGS and FLAGS.verbose)
    print(f'exported {path} to {model_path} (input images uint8 [batch, '
          f'height, width, 3]; {len(categories) if categories else "no"} '
          'class names)')
    return
  export.export_saved_model(models.inference_model, configs,
                            FLAGS.export_dir, categories,
                            FLAGS.full_image_masks, FLAGS.mask_voting,
                            FLAGS.panoptic, FLAGS.max_image_pixels)
  print(f'exported {path} to {FLAGS.export_dir} (signatures '
        'serving_default, serving_encoded; '
        f'{len(categories) if categories else "no"} class names)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
