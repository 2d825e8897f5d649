"""Images/s of the training input pipeline, small and COCO-sized.

Rows: the shapes set at its native 160 px from json; the same images
upscaled on disk to 800 px (shortest side), read from json and from
TFRecords with the paper's COCO training settings (shortest side jittered
over 480..930, longest capped at 1333, flips, output stride 8). The sets
are generated in --work_dir and reused by the next run with it.
"""

import json
import os
import time

from absl import flags
import numpy as np
from PIL import Image
from pycocotools import mask as mask_api

from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from masklab_tf import config
from masklab_tf import files
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.data import synthetic
from masklab_tf.data import tfrecord

FLAGS = flags.FLAGS
QUICK = {'num_batches': 3, 'num_images': 8}
OUTPUT_STRIDE = 8  # the paper's: the padding multiple
WARMUP_BATCHES = 3  # tracing, autotuning, the file cache


def define_flags():
  flags.DEFINE_integer('num_batches', 60, 'Timed batches per row.')
  flags.DEFINE_integer('batch_size', 4, 'Batch size.')
  flags.DEFINE_integer('num_images', 120, 'Training images to generate.')


def upscale_split(src_dir, dst_dir, short_side=800):
  """Writes the split with images and masks resized to `short_side`."""
  with open(os.path.join(src_dir, 'annotations.json')) as f:
    data = json.load(f)
  os.makedirs(os.path.join(dst_dir, 'images'), exist_ok=True)
  sizes = {}
  for image in data['images']:
    scale = short_side / min(image['height'], image['width'])
    size = (round(image['width'] * scale), round(image['height'] * scale))
    picture = Image.open(os.path.join(src_dir, 'images', image['file_name']))
    picture.resize(size, Image.BICUBIC).save(
        os.path.join(dst_dir, 'images', image['file_name']))
    sizes[image['id']] = size
    image['width'], image['height'] = size
  for ann in data['annotations']:
    small = mask_api.decode(ann['segmentation'])
    big = np.array(Image.fromarray(small).resize(sizes[ann['image_id']],
                                                 Image.NEAREST))
    rle = mask_api.encode(np.asfortranarray(big))
    ann['segmentation'] = {'size': rle['size'],
                           'counts': rle['counts'].decode('ascii')}
    ann['bbox'] = [float(v) for v in mask_api.toBbox(rle)]
    ann['area'] = float(mask_api.area(rle))
  files.write_json(os.path.join(dst_dir, 'annotations.json'), data)


def measure(cfg, source, batch_size, num_batches):
  """(images/s over `num_batches` after the warm-up, last batch's shape)."""
  batches = iter(pipeline.build_dataset(cfg, config.GeometryConfig(),
                                        batch_size, True, source=source,
                                        output_stride=OUTPUT_STRIDE, seed=0))
  for _ in range(WARMUP_BATCHES):
    next(batches)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(batches)
  rate = num_batches * batch_size / (time.perf_counter() - start)
  return rate, 'x'.join(str(d) for d in batch['image'].shape)


def rows(root, batch_size, num_batches, num_images):
  """Generates the sets in `root` (unless there); one row per source."""
  shapes = os.path.join(root, 'shapes')
  if not os.path.exists(os.path.join(shapes, 'train', 'annotations.json')):
    synthetic.make_shapes(shapes, num_train=num_images, num_val=1)
  big = os.path.join(root, 'shapes800')
  if not os.path.exists(os.path.join(big, 'annotations.json')):
    upscale_split(os.path.join(shapes, 'train'), big)
  small_set = coco.read_coco(os.path.join(shapes, 'train', 'annotations.json'),
                             os.path.join(shapes, 'train', 'images'))
  big_set = coco.read_coco(os.path.join(big, 'annotations.json'),
                           os.path.join(big, 'images'))
  prefix = os.path.join(root, 'records', 'shapes800')
  if not os.path.exists(prefix + tfrecord.CATEGORIES_SUFFIX):
    tfrecord.write_tfrecords(big_set, prefix, num_shards=4)
  small_cfg = config.DataConfig(min_sizes=(128, 160, 192), max_size=192,
                                max_instances=16, shuffle_buffer=64)
  coco_cfg = config.DataConfig(min_sizes=(480, 576, 688, 800, 930),
                               max_size=1333, max_instances=100,
                               shuffle_buffer=64)
  records = pipeline.make_source(
      config.DataSplitConfig(tfrecords=prefix + '-*'), coco_cfg.verify_images)
  found = []
  for name, cfg, source in (
      ('shapes 160 px, json', small_cfg, sources.coco_source(small_set)),
      ('shapes 800 px, json', coco_cfg, sources.coco_source(big_set)),
      ('shapes 800 px, tfrecords', coco_cfg, records)):
    rate, shape = measure(cfg, source, batch_size, num_batches)
    found.append({'source': name, 'images_per_s': rate, 'shape': shape})
  return found


def main(argv):
  del argv
  settings = {name: suite.chosen(name, QUICK) for name in
              ('num_batches', 'batch_size', 'num_images')}
  with scratch.work_dir(FLAGS.work_dir, 'masklab_input_pipeline_') as root:
    found = rows(root, **settings)
  suite.publish(results.new('input_pipeline', 'Input pipeline throughput', [
      results.text(
          f"Batch {settings['batch_size']}, {settings['num_batches']} timed "
          f'batches after {WARMUP_BATCHES} warm-up ones, '
          f"{settings['num_images']} generated images; padded to output "
          f'stride {OUTPUT_STRIDE}.'),
      results.table('rates', [
          results.column('source', 'source'),
          results.column('images_per_s', 'images/s', '.1f'),
          results.column('shape', 'last batch image shape')], found)],
      settings))
