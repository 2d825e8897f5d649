"""Input pipeline throughput on the shapes set, at 160 px and at 800 px.

Usage:
  python benchmarks/input_pipeline.py [--work_dir=DIR]
      [--num_batches=60] [--batch_size=4]

The generated sets are kept in --work_dir (and reused by the next run with
it); without one, in a temporary folder removed at the end.

Prints a table of images/s for: the shapes set at its native 160 px from
json; the same images upscaled on disk to 800 px (shortest side) read from
json and from TFRecords, with the paper's COCO training settings (shortest
side jittered over 480..930, longest capped at 1333, flips, output stride 8).
"""

import json
import os
import time

import numpy as np
from absl import app
from absl import flags
from PIL import Image
from pycocotools import mask as mask_api

from masklab_tf import config
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.data import synthetic
from masklab_tf.data import tfrecord

try:
  from benchmarks import scratch
except ImportError:  # run as a script: benchmarks/ is on the path
  import scratch

FLAGS = flags.FLAGS
flags.DEFINE_string('work_dir', None, 'Where the generated sets are kept '
                    '(and reused); default: a temporary folder, removed at '
                    'the end.')
flags.DEFINE_integer('num_batches', 60, 'Timed batches per row.')
flags.DEFINE_integer('batch_size', 4, 'Batch size.')
flags.DEFINE_integer('num_images', 120, 'Training images to generate.')


def upscale_split(src_dir, dst_dir, short_side=800):
  """Writes the split with images and masks resized to `short_side`."""
  data = json.load(open(os.path.join(src_dir, 'annotations.json')))
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
    width, height = sizes[ann['image_id']]
    small = mask_api.decode(ann['segmentation'])
    big = np.array(Image.fromarray(small).resize((width, height),
                                                 Image.NEAREST))
    rle = mask_api.encode(np.asfortranarray(big))
    ann['segmentation'] = {'size': rle['size'],
                           'counts': rle['counts'].decode('ascii')}
    ann['bbox'] = [float(v) for v in mask_api.toBbox(rle)]
    ann['area'] = float(mask_api.area(rle))
  with open(os.path.join(dst_dir, 'annotations.json'), 'w') as f:
    json.dump(data, f)


# Padding multiple: the paper's output stride.
OUTPUT_STRIDE = 8


def measure(cfg, source):
  batches = iter(pipeline.build_dataset(cfg, config.GeometryConfig(),
                                        FLAGS.batch_size, True, source=source,
                                        output_stride=OUTPUT_STRIDE, seed=0))
  for _ in range(3):  # warm up: tracing, autotune, file cache
    next(batches)
  start = time.time()
  for _ in range(FLAGS.num_batches):
    batch = next(batches)
  elapsed = time.time() - start
  shape = tuple(batch['image'].shape)
  return FLAGS.num_batches * FLAGS.batch_size / elapsed, shape


def main(argv):
  del argv
  with scratch.work_dir(FLAGS.work_dir, 'masklab_bench_input_') as root:
    run(root)


def run(root):
  """Generates the sets in `root` (unless there), prints the table."""
  shapes = os.path.join(root, 'shapes')
  if not os.path.exists(os.path.join(shapes, 'train', 'annotations.json')):
    synthetic.make_shapes(shapes, num_train=FLAGS.num_images, num_val=1)
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
  records = config.DataSplitConfig(tfrecords=prefix + '-*')
  rows = [
      ('shapes 160 px, json',
       *measure(small_cfg, sources.coco_source(small_set))),
      ('shapes 800 px, json', *measure(coco_cfg, sources.coco_source(big_set))),
      ('shapes 800 px, tfrecords',
       *measure(coco_cfg, pipeline.make_source(records,
                                               coco_cfg.verify_images))),
  ]
  cores = os.cpu_count()
  print(f'\ninput pipeline, batch {FLAGS.batch_size}, {FLAGS.num_batches} '
        f'timed batches, {cores} cores')
  print(f'| {"source":28s} | {"images/s":>9s} | last batch image shape |')
  print(f'|{"-" * 30}|{"-" * 11}|{"-" * 24}|')
  for name, rate, shape in rows:
    print(f'| {name:28s} | {rate:9.1f} | {str(shape):22s} |')


if __name__ == '__main__':
  app.run(main)
