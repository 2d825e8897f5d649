"""Runs an exported MaskLab model on image files (bin/predict).

Usage:
  bin/predict --saved_model=exported/shapes/1 --images=photos/ \
      --output_dir=predictions [--score_threshold=0.5] [--batch_size=1] \
      [--image_ids_from=annotations.json] [--max_image_pixels=40000000]

  bin/predict --onnx=exported/shapes/onnx/model.onnx --images=photos/ \
      --output_dir=predictions [same options]

  bin/predict --model_dir=runs/shapes --images=photos/ \
      --output_dir=predictions --test_scales=0.8,1,1.2 --test_flip \
      [--checkpoint=PATH] [same options]

--images is a file, a folder (its .png / .jpg / .jpeg / .bmp / .gif / .webp
files) or a glob ('photos/*.jpg', quoted). With --saved_model the raw file
bytes go to the SavedModel's `serving_encoded` signature, so images keep
their own size and format; --batch_size consecutive files share one call.
With --onnx (bin/export --format=onnx) ONNX Runtime runs the model on the
pixels Pillow decodes, consecutive files of one size in one call, and
TensorFlow is never imported: the path a deployment without it takes. The
model runs from its export alone; masklab_tf only supplies the numpy
helpers for pictures and COCO results. With --model_dir a training
directory's checkpoint runs (its configs.json), test-time augmentation
chosen here (--test_scales, --test_flip, --test_box_voting: postprocess/
test_time_augmentation.py); an export carries the augmentation it was
exported with (bin/export --test_scales ...).

Writes to --output_dir:
  results.json              COCO results of every detection (any score):
                            image_id (the id of the file's name in
                            --image_ids_from, else the file's position
                            among the matched files, from 1), the
                            category's COCO id from the model's
                            categories asset, bbox [x, y, w, h], score and
                            the mask pasted into the image, thresholded at
                            0.5, as RLE.
  <stem>_predictions.png    the image with masks, boxes and "name score"
                            labels of the detections >= --score_threshold.
  <stem>_semantic.png       the semantic map (class 0 black; InstanceFCN
                            models have none).
  <stem>_panoptic.png       with a SavedModel exported --panoptic: the
                            output fusion's maps (R = category, G B = the
                            instance id's high and low bytes).

Nothing that succeeded is lost to a file that fails. A file that cannot be
read or decoded, whose header says it has more than --max_image_pixels
pixels (read before decoding: a small file can decode to gigabytes), whose
name is not in --image_ids_from, or on which the model fails (a batch that
fails is rerun image by image) is reported by name and skipped; the others
are processed, and the exit code is 1. results.json is written atomically,
every --flush_seconds on long runs (a killed run keeps what was written)
and at the end, also when the run stops on an error.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys
import time

import numpy as np
from absl import app
from absl import flags
from PIL import Image

# No TensorFlow here, nor in what these import: the ONNX path runs without
# it (tests/serving/test_golden_checkpoint.py blocks its import); exported_models
# imports it for a SavedModel.
from masklab_tf import files
from masklab_tf import visualize
from masklab_tf.evaluation import coco_results
from masklab_tf.serving import limits
from masklab_tf.tools import exported_models
from masklab_tf.tools import image_files

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  flags.DEFINE_string('saved_model', None, 'SavedModel folder (bin/export '
                      '--export_dir).')
  flags.DEFINE_string('onnx', None, 'model.onnx of bin/export --format=onnx '
                      '(instead of --saved_model): runs in ONNX Runtime '
                      'without TensorFlow.')
  flags.DEFINE_string('model_dir', None, 'A bin/train directory whose '
                      'checkpoint runs (instead of an export).')
  flags.DEFINE_string('checkpoint', '', 'With --model_dir: this checkpoint '
                      '(default: the latest).')
  flags.DEFINE_list('test_scales', [], 'With --model_dir: test-time '
                    'augmentation, factors of the eval size, a pass each '
                    '(e.g. 0.8,1,1.2).')
  flags.DEFINE_bool('test_flip', False, 'With --model_dir: also a mirrored '
                    'pass at each scale.')
  flags.DEFINE_bool('test_box_voting', False, 'With --model_dir: merged '
                    'boxes are their cluster\'s score-weighted mean.')
  flags.DEFINE_string('images', None, 'An image file, a folder of images or a '
                      'glob.')
  flags.DEFINE_string('output_dir', None, 'Where results.json and the '
                      'pictures go.')
  flags.DEFINE_float('score_threshold', 0.5, 'Detections drawn from this '
                     'score up (results.json keeps all).')
  flags.DEFINE_integer('batch_size', 1, 'Files per SavedModel call.')
  flags.DEFINE_string('image_ids_from', '', 'COCO json whose image ids '
                      'results.json uses, matched by file name.')
  flags.DEFINE_float('flush_seconds', 60.0, 'results.json is rewritten '
                     '(atomically) after the batch that ends this many '
                     'seconds since the last write: a killed run keeps it.')
  flags.DEFINE_integer('max_image_pixels', limits.MAX_IMAGE_PIXELS,
                       'Images with more pixels (height x width, read from '
                       'the header before decoding) are skipped. The '
                       'SavedModel has its own limit (bin/export).')
  flags.DEFINE_bool('deterministic', False, 'Deterministic TensorFlow '
                    'kernels (masklab_tf/determinism.py), as bin/train '
                    '--deterministic uses.')
  flags.mark_flags_as_required(['images', 'output_dir'])
  flags.mark_flags_as_mutual_exclusive(['saved_model', 'onnx', 'model_dir'],
                                       required=True)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')
Item = exported_models.Item
def list_images(pattern: str) -> list[str]:
  """The files --images names, sorted; UsageError when there are none."""
  if os.path.isdir(pattern):
    paths = [os.path.join(pattern, name) for name in os.listdir(pattern)
             if name.lower().endswith(IMAGE_EXTENSIONS)]
  elif os.path.isfile(pattern):
    paths = [pattern]
  else:
    # A glob is taken as the user wrote it: no extension filter.
    paths = [p for p in glob.glob(pattern) if os.path.isfile(p)]
  if not paths:
    raise app.UsageError(f'--images={pattern}: no image files matched')
  paths = sorted(paths)
  stems = collections.Counter(stem(p) for p in paths)
  clashes = sorted(s for s, n in stems.items() if n > 1)
  if clashes:
    # Output pictures are named by stem; two inputs would overwrite one.
    raise app.UsageError(
        f'--images={pattern}: several files share the name(s) '
        f'{", ".join(clashes[:5])}; their pictures would collide')
  return paths


def stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def read_image_ids(path: str) -> dict[str, int | None]:
  """file name -> image id of a COCO json; None for ambiguous names."""
  if not os.path.exists(path):
    raise app.UsageError(f'--image_ids_from={path}: no such file')
  try:
    with open(path) as f:
      images = json.load(f)['images']
  except (ValueError, KeyError, TypeError) as e:
    raise app.UsageError(f'--image_ids_from={path}: not a COCO json with '
                         f'"images" ({e})') from e
  ids = {}
  for image in images:
    # COCO file names may carry folders; the files are matched by base name.
    name = os.path.basename(image['file_name'])
    if name in ids and ids[name] != image['id']:
      ids[name] = None
    else:
      ids[name] = image['id']
  return ids


def predict(model: exported_models.Model, items: list[Item]
            ) -> list[tuple[Item, dict | str]]:
  """(item, its outputs or why the model failed on it) for each item.

  One image the model fails on (a size or format the SavedModel refuses,
  an allocation) fails its whole batch: the batch then runs again image by
  image, so that the others still get their results and the culprit is
  named.
  """
  try:
    return list(zip(items, model.run(items)))
  except (exported_models.ModelFailed, MemoryError) as e:
    if len(items) > 1:
      return [pair for item in items for pair in predict(model, [item])]
    return [(items[0], f'{items[0].path}: the model failed on it ({e})')]


def draw_predictions(image: np.ndarray, prediction: dict, names: list[str],
                     threshold: float) -> np.ndarray:
  """Masks, boxes and "name score" labels of the detections >= threshold,
  lines and text sized to the image (visualize.draw_labels)."""
  keep = prediction['scores'] >= threshold
  boxes = prediction['boxes'][keep]
  labels = [f'{name_of(names, cls)} {score:.2f}' for score, cls in
            zip(prediction['scores'][keep], prediction['classes'][keep])]
  return visualize.draw_labels(
      visualize.overlay_masks(image, prediction['masks'][keep], boxes),
      boxes, labels)


def name_of(names: list[str], cls) -> str:
  cls = int(cls)
  return names[cls - 1] if 0 < cls <= len(names) else f'class {cls}'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.batch_size < 1:
    raise app.UsageError(f'--batch_size={FLAGS.batch_size}: must be >= 1')
  if FLAGS.max_image_pixels < 1:
    raise app.UsageError(
        f'--max_image_pixels={FLAGS.max_image_pixels}: must be >= 1')
  if FLAGS.deterministic:
    if FLAGS.onnx:
      raise app.UsageError('--deterministic sets TensorFlow\'s kernels; '
                           'ONNX Runtime\'s CPU kernels are deterministic')
    from masklab_tf import determinism  # pylint: disable=g-import-not-at-top
    determinism.enable()
  test_time = [name for name in ('test_scales', 'test_flip',
                                  'test_box_voting', 'checkpoint')
               if FLAGS[name].present]
  if test_time and not FLAGS.model_dir:
    raise app.UsageError(
        f'--{test_time[0]} applies to --model_dir; an exported model runs '
        'the test-time augmentation it was exported with (bin/export '
        '--test_scales, --test_flip)')
  try:
    scales = [float(s) for s in FLAGS.test_scales]
  except ValueError as e:
    raise app.UsageError(f'--test_scales={",".join(FLAGS.test_scales)}: '
                         f'not numbers ({e})') from e
  if any(scale <= 0 for scale in scales):
    raise app.UsageError(f'--test_scales={",".join(FLAGS.test_scales)}: '
                         'give positive factors of the eval size')
  paths = list_images(FLAGS.images)
  ids = read_image_ids(FLAGS.image_ids_from) if FLAGS.image_ids_from else None
  if FLAGS.onnx:
    model = exported_models.load_onnx(FLAGS.onnx)
  elif FLAGS.model_dir:
    model = exported_models.load_checkpoint(
        FLAGS.model_dir, FLAGS.checkpoint, scales, FLAGS.test_flip,
        FLAGS.test_box_voting)
  else:
    model = exported_models.load_saved_model(FLAGS.saved_model)
  categories = model.categories
  if categories is None:
    print(f'{FLAGS.onnx or FLAGS.saved_model or FLAGS.model_dir}: no '
          f'categories (asset or {exported_models.ONNX_CATEGORIES}); '
          'category ids are the class indices 1..K', file=sys.stderr)
  names = [c['name'] for c in categories or []]
  os.makedirs(FLAGS.output_dir, exist_ok=True)

  # Without the asset, class k is its own category id.
  category_ids = [c['id'] for c in categories] if categories else None
  skipped, results, drawn, done = [], [], 0, 0
  results_path = os.path.join(FLAGS.output_dir, 'results.json')

  def skip(message):
    print(f'skipping {message}', file=sys.stderr, flush=True)
    skipped.append(message)

  def write(item, prediction):
    """Pictures and COCO results of one image."""
    name = stem(item.path)
    picture = draw_predictions(item.image, prediction, names,
                               FLAGS.score_threshold)
    Image.fromarray(picture).save(
        os.path.join(FLAGS.output_dir, f'{name}_predictions.png'))
    if 'panoptic' in prediction:
      Image.fromarray(prediction.pop('panoptic')).save(
          os.path.join(FLAGS.output_dir, f'{name}_panoptic.png'))
    if 'semantic_map' in prediction:
      semantic = np.maximum(prediction.pop('semantic_map'), 0)
      Image.fromarray(visualize.color_labels(
          semantic, max(len(names), int(semantic.max(initial=0))))).save(
              os.path.join(FLAGS.output_dir, f'{name}_semantic.png'))
    # RLE now: full-image masks of a whole folder would not fit in memory.
    return coco_results.to_coco_results([prediction], category_ids or (
        range(1, int(prediction['classes'].max(initial=0)) + 1)))

  def process(items):
    nonlocal drawn, done
    for item, prediction in predict(model, items):
      if isinstance(prediction, str):
        skip(prediction)
        continue
      try:
        image_results = write(item, prediction)
      except (OSError, ValueError, MemoryError) as e:
        skip(f'{item.path}: cannot write its results '
             f'({type(e).__name__}: {image_files.error_message(e)})')
        continue
      results.extend(image_results)
      above = int((prediction['scores'] >= FLAGS.score_threshold).sum())
      drawn += above
      done += 1
      print(f'{item.path}: {above} detections >= {FLAGS.score_threshold:g} '
            f'(of {len(prediction["scores"])})', flush=True)

  batch, flushed = [], time.monotonic()
  try:
    for index, path in enumerate(paths, start=1):
      try:
        data, image = image_files.decode(path, FLAGS.max_image_pixels,
                                         model.tensorflow_decoder)
      except ValueError as e:
        skip(str(e))
        continue
      image_id = index
      if ids is not None:
        image_id = ids.get(os.path.basename(path))
        if image_id is None:
          why = ('is not' if os.path.basename(path) not in ids else
                 'has several ids') + f' in {FLAGS.image_ids_from}'
          skip(f'{path}: {os.path.basename(path)} {why}')
          continue
      batch.append(Item(path, data, image, image_id))
      if len(batch) == FLAGS.batch_size:
        process(batch)
        batch = []
        if time.monotonic() - flushed >= FLAGS.flush_seconds:
          files.write_json(results_path, results)
          flushed = time.monotonic()
    if batch:
      process(batch)
  finally:
    # Also when the run stops on an error: what succeeded is kept.
    files.write_json(results_path, results)

  print(f'{done} images, {len(results)} detections '
        f'({drawn} >= {FLAGS.score_threshold:g}) -> {results_path}; '
        f'{len(skipped)} skipped')
  if skipped:
    print(f'skipped {len(skipped)} file(s):', file=sys.stderr)
    for message in skipped:
      print(f'  {message}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main)
