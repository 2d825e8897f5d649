"""Writes a tiny TFRecord shard with the encoder of the day (run once).

The files beside this script were written by the code of commit 0606bbd,
whose `tfrecord.encode_record` built each tf.train.Example by hand, before
the encoder and decoder moved onto Model Garden's TfExampleBuilder and
TfExampleDecoder. tests/data/test_tfrecord.py reads them with the current
reader, so shards written by older code keep working. Rerunning this script
with later code writes shards of the later encoder and so proves nothing:
do it only when the Example layout changes on purpose, and say why.

Three small images cover the encoder's cases:
  1. an RGB PNG, stored as it is, with two polygon instances and a crowd
     instance given as uncompressed RLE (category ids 3 and 7, not 1..K);
  2. a grayscale PNG, stored converted to RGB PNG, with one instance;
  3. an RGB JPEG, stored as it is, without instances.

Files: old-00000-of-00001.tfrecord, old.categories.json, and expected.npz
holding the arrays the encoder's own reader (`tfrecord.decode_example` of
that commit) decoded from the shard, keyed `<image_id>/<field>`. That reader
failed on image 3, the one without instances (tf.map_fn cannot stack zero
masks of unknown size), in a tf.function as in the input pipeline; its
expected arrays are the stored JPEG decoded by tf.io.decode_image and no
instances, and `13/old_reader_failed` says so.

Usage: python tests/testdata/tfrecord/make_records.py
(tests/data/test_tfrecord.py imports `make_dataset` to write the same
images again.)
"""

import json
import os
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from masklab_tf.data import coco
from masklab_tf.data import tfrecord

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = os.path.join(HERE, 'old')


def _write_images(images_dir):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(os.path.join(images_dir, 'rgb.png'))
  gray = rng.integers(0, 256, (20, 28)).astype(np.uint8)
  Image.fromarray(gray, 'L').save(os.path.join(images_dir, 'gray.png'))
  photo = rng.integers(0, 256, (16, 24, 3)).astype(np.uint8)
  Image.fromarray(photo).save(os.path.join(images_dir, 'empty.jpg'),
                              quality=90)


def _annotations():
  crowd = np.zeros((24, 32), np.uint8)
  crowd[14:22, 2:12] = 1
  # Uncompressed RLE counts run down columns (Fortran order).
  flat = crowd.flatten(order='F')
  changes = np.flatnonzero(np.diff(flat)) + 1
  counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  return {
      'images': [
          {'id': 11, 'file_name': 'rgb.png', 'height': 24, 'width': 32},
          {'id': 12, 'file_name': 'gray.png', 'height': 20, 'width': 28},
          {'id': 13, 'file_name': 'empty.jpg', 'height': 16, 'width': 24},
      ],
      'annotations': [
          {'id': 1, 'image_id': 11, 'category_id': 3, 'iscrowd': 0,
           'bbox': [2, 3, 10, 8],
           'segmentation': [[2, 3, 12, 3, 12, 11, 2, 11]], 'area': 80},
          {'id': 2, 'image_id': 11, 'category_id': 7, 'iscrowd': 0,
           'bbox': [15, 1, 14, 12],
           'segmentation': [[15, 1, 29, 7, 15, 13]], 'area': 84},
          {'id': 3, 'image_id': 11, 'category_id': 3, 'iscrowd': 1,
           'bbox': [2, 14, 10, 8],
           'segmentation': {'size': [24, 32], 'counts': counts},
           'area': 80},
          {'id': 4, 'image_id': 12, 'category_id': 7, 'iscrowd': 0,
           'bbox': [4, 5, 15, 9],
           'segmentation': [[4, 5, 19, 5, 19, 14, 4, 14]], 'area': 135},
      ],
      'categories': [{'id': 3, 'name': 'three'}, {'id': 7, 'name': 'seven'}],
  }


def make_dataset(directory: str) -> coco.CocoDataset:
  """The three images and their json under `directory`, read as COCO."""
  images_dir = os.path.join(directory, 'images')
  os.makedirs(images_dir)
  _write_images(images_dir)
  annotations = os.path.join(directory, 'annotations.json')
  with open(annotations, 'w') as f:
    json.dump(_annotations(), f)
  return coco.read_coco(annotations, images_dir, verify_images='full',
                        strict=True)


def main():
  with tempfile.TemporaryDirectory() as scratch:
    dataset = make_dataset(scratch)
    (path,) = tfrecord.write_tfrecords(dataset, PREFIX, num_shards=1)
  categories = tfrecord.read_categories(PREFIX + tfrecord.CATEGORIES_SUFFIX)
  table = tfrecord.class_index_table(categories)
  # In a tf.function, as the input pipeline runs it: that commit's decoder
  # failed eagerly on an image without instances (tf.map_fn over no masks).
  decode = tf.function(lambda s: tfrecord.decode_example(s, table))
  expected = {}
  for serialized in tf.data.TFRecordDataset(path):
    try:
      decoded = {k: v.numpy() for k, v in decode(serialized).items()}
    except tf.errors.InvalidArgumentError:
      # It also failed there on an image without instances ("Tried to stack
      # elements of an empty list"): what a reader should give instead is
      # the stored image and no instances.
      example = tf.train.Example.FromString(serialized.numpy())
      feature = example.features.feature
      image = tf.io.decode_image(feature['image/encoded'].bytes_list.value[0],
                                 channels=3).numpy()
      decoded = {
          'image': image,
          'image_id': np.int64(feature['image/source_id'].bytes_list.value[0]),
          'boxes': np.zeros([0, 4], np.float32),
          'classes': np.zeros([0], np.int32),
          'is_crowd': np.zeros([0], bool),
          'masks': np.zeros([0, image.shape[0], image.shape[1]], np.uint8),
          'old_reader_failed': np.bool_(True),
      }
    for key, value in decoded.items():
      expected[f'{int(decoded["image_id"])}/{key}'] = value
  np.savez_compressed(os.path.join(HERE, 'expected.npz'), **expected)
  print(path, sorted(expected))


if __name__ == '__main__':
  main()
