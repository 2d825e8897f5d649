"""Sharded TFRecords of a COCO set, and the tf.data reader for them.

COCO-scale training should not parse a 450 MB json and decode polygons on
every run, so bin/make_tfrecords writes validated images and instances once.
The Example layout is Model Garden's (`official.vision.dataloaders.
tf_example_decoder`: normalised boxes, raw category ids, PNG instance masks),
so the same shards also feed Model Garden's Mask R-CNN for side-by-side runs;
`image/object/annotation_id` is our addition. The category list travels in a
`<prefix>.categories.json` beside the shards, since Examples carry raw ids and
the model wants contiguous class indices.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from masklab_tf.data import coco
from masklab_tf.data import sources

CATEGORIES_SUFFIX = '.categories.json'


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def encode_record(dataset: coco.CocoDataset,
                  record: coco.ImageRecord) -> bytes:
  """One image and its instances as a serialised tf.train.Example.

  8-bit RGB JPEG/PNG files are stored as they are; other modes (grayscale,
  RGBA, 16-bit) are stored converted, as PNG, so the reader never has to.
  """
  with open(record.path, 'rb') as f:
    encoded = f.read()
  is_plain = (record.mode == 'RGB' and
              encoded[:4] in (b'\x89PNG', b'\xff\xd8\xff\xe0',
                              b'\xff\xd8\xff\xe1', b'\xff\xd8\xff\xdb',
                              b'\xff\xd8\xff\xee'))
  if not is_plain:
    encoded = _png(dataset.load_image(record))
  masks = dataset.load_masks(record)
  height, width = record.height, record.width
  boxes = np.array([i.box for i in record.instances],
                   np.float64).reshape(-1, 4)
  features = {
      'image/encoded': _bytes([encoded]),
      'image/height': _ints([height]),
      'image/width': _ints([width]),
      'image/source_id': _bytes([str(record.image_id).encode()]),
      'image/filename': _bytes([record.file_name.encode()]),
      'image/object/bbox/xmin': _floats(boxes[:, 0] / width),
      'image/object/bbox/ymin': _floats(boxes[:, 1] / height),
      'image/object/bbox/xmax': _floats((boxes[:, 0] + boxes[:, 2]) / width),
      'image/object/bbox/ymax': _floats((boxes[:, 1] + boxes[:, 3]) / height),
      'image/object/class/label': _ints(
          [i.category_id for i in record.instances]),
      'image/object/is_crowd': _ints(
          [int(i.is_crowd) for i in record.instances]),
      'image/object/area': _floats([i.area for i in record.instances]),
      'image/object/annotation_id': _ints(
          [i.annotation_id for i in record.instances]),
      # 0/1 PNGs, as Model Garden's converter writes and its decoder reads.
      'image/object/mask': _bytes([_png(m) for m in masks]),
  }
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString()


def shard_paths(output_prefix: str, num_shards: int) -> list[str]:
  return [f'{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord'
          for i in range(num_shards)]


def write_tfrecords(dataset: coco.CocoDataset, output_prefix: str,
                    num_shards: int = 8) -> list[str]:
  """Writes the dataset's records round-robin into `num_shards` shards.

  Shards and the categories file are written under temporary names and
  renamed at the end, so an interrupted run never leaves a set that looks
  complete.

  Returns:
    The shard paths.
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}')
  directory = os.path.dirname(output_prefix)
  if directory:
    os.makedirs(directory, exist_ok=True)
  paths = shard_paths(output_prefix, num_shards)
  writers = [tf.io.TFRecordWriter(p + '.tmp') for p in paths]
  try:
    for index, record in enumerate(dataset.records):
      writers[index % num_shards].write(encode_record(dataset, record))
  finally:
    for writer in writers:
      writer.close()
  for path in paths:
    os.replace(path + '.tmp', path)
  categories = [{'id': c.id, 'name': c.name} for c in dataset.categories]
  with open(output_prefix + CATEGORIES_SUFFIX + '.tmp', 'w') as f:
    json.dump({'categories': categories,
               'max_instances_per_image': dataset.max_instances_per_image},
              f, indent=1)
  os.replace(output_prefix + CATEGORIES_SUFFIX + '.tmp',
             output_prefix + CATEGORIES_SUFFIX)
  return paths


def categories_path_for(file_pattern: str) -> str:
  """`<prefix>.categories.json` for a shard pattern such as `dir/train-*`."""
  prefix = file_pattern.split('*')[0].split('-?')[0].rstrip('-')
  return prefix + CATEGORIES_SUFFIX


def read_categories(path: str) -> list[dict]:
  """The categories json written by `write_tfrecords`, sorted by id."""
  try:
    with open(path) as f:
      categories = json.load(f)['categories']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: cannot read the categories list: {e}') from e
  return sorted(categories, key=lambda c: c['id'])


_FEATURES = {
    'image/encoded': tf.io.FixedLenFeature((), tf.string),
    'image/source_id': tf.io.FixedLenFeature((), tf.string),
    'image/object/bbox/xmin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/xmax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymax': tf.io.VarLenFeature(tf.float32),
    'image/object/class/label': tf.io.VarLenFeature(tf.int64),
    'image/object/is_crowd': tf.io.VarLenFeature(tf.int64),
    'image/object/mask': tf.io.VarLenFeature(tf.string),
}


def class_index_table(categories: list[dict]) -> tf.lookup.StaticHashTable:
  """Raw category id -> contiguous class index 1..K (-1 if unknown)."""
  ids = tf.constant([c['id'] for c in categories], tf.int64)
  indices = tf.range(1, len(categories) + 1, dtype=tf.int32)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(ids, indices), default_value=-1)


def decode_example(serialized: tf.Tensor,
                   table: tf.lookup.StaticHashTable) -> dict[str, tf.Tensor]:
  """Serialised Example -> the decoded-example dict of data/pipeline.py."""
  parsed = tf.io.parse_single_example(serialized, _FEATURES)
  dense = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
           for k, v in parsed.items()}
  image = tf.io.decode_image(dense['image/encoded'], channels=3,
                             dtype=tf.uint8, expand_animations=False)
  height = tf.shape(image)[0]
  width = tf.shape(image)[1]
  scale = tf.cast(tf.stack([height, width, height, width]), tf.float32)
  boxes = tf.stack([dense['image/object/bbox/ymin'],
                    dense['image/object/bbox/xmin'],
                    dense['image/object/bbox/ymax'],
                    dense['image/object/bbox/xmax']], axis=-1) * scale
  masks = tf.map_fn(
      lambda png: tf.io.decode_png(png, channels=1)[..., 0],
      dense['image/object/mask'],
      fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
  masks = tf.reshape(masks, [-1, height, width])
  return {
      'image': image,
      'image_id': tf.strings.to_number(dense['image/source_id'], tf.int64),
      'boxes': boxes,
      'classes': table.lookup(dense['image/object/class/label']),
      'is_crowd': dense['image/object/is_crowd'] > 0,
      'masks': tf.cast(masks > 0, tf.uint8),  # 0/1 (and older 0/255)
  }


def tfrecord_source(file_pattern: str, categories: list[dict],
                    input_context: tf.distribute.InputContext | None = None
                    ) -> sources.Source:
  """Serialised Examples from TFRecord shards, sharded per input pipeline.

  Files are sharded across input pipelines when there are enough of them
  (each worker reads whole files); otherwise examples are.
  """
  files = tf.io.gfile.glob(file_pattern)
  if not files:
    raise ValueError(f'{file_pattern}: no TFRecord files match')
  files = sorted(files)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  shard_examples = False
  if input_context and input_context.num_input_pipelines > 1:
    if len(files) >= input_context.num_input_pipelines:
      dataset = dataset.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
    else:
      shard_examples = True
  dataset = dataset.interleave(
      tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shard_examples:
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  table = class_index_table(categories)
  return sources.Source(
      keys=dataset, decode=lambda serialized: decode_example(serialized, table),
      num_classes=len(categories), description=file_pattern)
