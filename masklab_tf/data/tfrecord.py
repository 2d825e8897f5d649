"""Sharded TFRecords of a COCO set, and the tf.data reader for them.

COCO-scale training should not parse a 450 MB json and decode polygons on
every run, so bin/make_tfrecords writes validated images and instances once.
The Example layout is Model Garden's, and so is the code that writes and
reads it: `TfExampleBuilder` (official.vision.data.tf_example_builder) builds
each Example, `TfExampleDecoder(include_mask=True)` (official.vision.
dataloaders.tf_example_decoder) parses it. The same shards therefore feed
Model Garden's Mask R-CNN for side-by-side runs, and shards written by Model
Garden's own converter (create_coco_tf_record) read here.

Model Garden's decoder decodes masks to float32 where ours kept uint8: it
is slower on its own, but the whole training pipeline was as fast within
the run-to-run spread (docs/perf-notes.md#tfrecords). Unlike the
hand-written reader it replaced, it also decodes an image without instances
(that one failed: tf.map_fn cannot stack zero masks of unknown size).

What stays ours, and why:
  * Class indices. Examples carry raw COCO category ids (Model Garden's
    Mask R-CNN classifies raw ids, 91 outputs for COCO's 80 classes); our
    model wants contiguous indices 1..K. The category list travels in a
    `<prefix>.categories.json` beside the shards (the Example has no place
    for it) and `class_index_table` maps ids to indices in the graph.
  * The pixel layout of the decoded example (data/sources.py): the decoder
    gives normalised boxes, float32 masks and a string source id; the
    mapping in `decode_example` turns them into pixel boxes, uint8 0/1
    masks and an int64 image id, as the COCO json source gives them.
  * Which bytes are stored. 8-bit RGB JPEG/PNG files go in as they are
    (`add_encoded_image_feature`); others are converted once, here, since
    the builder's `add_image_matrix_feature` would re-encode every image.
  * Masks, crowd ones included, are stored as 0/1 PNGs (COCO's RLE is
    decoded first, as Model Garden's converter does), written by `_png` at
    zlib level 1. The builder's `add_instance_mask_matrices_feature`
    writes Pillow's default level 6, slower to write and, what every epoch
    pays, about twice as slow to decode, for smaller files
    (docs/perf-notes.md#tfrecords).
  * `image/object/is_crowd`, `image/object/annotation_id` and
    `image/filename` are plain features: the builder has no method for
    them (Model Garden's decoder reads `is_crowd`; `annotation_id` is our
    addition).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from official.vision.data import tf_example_builder
from official.vision.dataloaders import tf_example_decoder
from PIL import Image
import tensorflow as tf

from masklab_tf import files
from masklab_tf.data import coco
from masklab_tf.data import sources

CATEGORIES_SUFFIX = '.categories.json'

_PNG_SIGNATURE = b'\x89PNG'
_JPEG_SIGNATURES = (b'\xff\xd8\xff\xe0', b'\xff\xd8\xff\xe1',
                    b'\xff\xd8\xff\xdb', b'\xff\xd8\xff\xee')


def _png(array: np.ndarray) -> bytes:
  """PNG at zlib level 1: faster to write and to read than Pillow's default
  level 6, for larger files (figures in the module docstring)."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def encode_record(dataset: coco.CocoDataset,
                  record: coco.ImageRecord) -> bytes:
  """One image and its instances as a serialised tf.train.Example.

  8-bit RGB JPEG/PNG files are stored as they are; other modes (grayscale,
  RGBA, 16-bit) are stored converted, as PNG, so the reader never has to.
  Boxes are normalised to [0, 1] and classes are raw category ids, as Model
  Garden's decoder expects.
  """
  with open(record.path, 'rb') as f:
    encoded = f.read()
  image_format = None
  if record.mode == 'RGB':
    if encoded[:4] == _PNG_SIGNATURE:
      image_format = 'PNG'
    elif encoded[:4] in _JPEG_SIGNATURES:
      image_format = 'JPEG'
  if image_format is None:
    encoded, image_format = _png(dataset.load_image(record)), 'PNG'
  masks = dataset.load_masks(record)
  height, width = record.height, record.width
  x, y, w, h = np.array([i.box for i in record.instances],
                        np.float64).reshape(-1, 4).T
  builder = tf_example_builder.TfExampleBuilder()
  builder.add_encoded_image_feature(
      encoded, image_format=image_format, height=height, width=width,
      num_channels=3, image_source_id=str(record.image_id).encode())
  builder.add_bytes_feature('image/filename', record.file_name)
  builder.add_boxes_feature(
      xmins=x / width, xmaxs=(x + w) / width, ymins=y / height,
      ymaxs=(y + h) / height,
      labels=[i.category_id for i in record.instances])
  # 0/1 PNGs, as Model Garden's converter writes and its decoder reads.
  builder.add_encoded_instance_masks_feature(
      [_png(m) for m in masks],
      mask_areas=[i.area for i in record.instances])
  builder.add_ints_feature('image/object/is_crowd',
                           [int(i.is_crowd) for i in record.instances])
  builder.add_ints_feature('image/object/annotation_id',
                           [i.annotation_id for i in record.instances])
  return builder.serialized_example


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
  # Temporary names unique to this writer (files.temporary_path), so two
  # writers of one prefix never write into each other's files, and a
  # failed run removes only its own.
  temps = [files.temporary_path(p) for p in paths]
  try:
    writers = []
    try:
      for temp in temps:
        writers.append(tf.io.TFRecordWriter(temp))
      for index, record in enumerate(dataset.records):
        writers[index % num_shards].write(encode_record(dataset, record))
    finally:
      for writer in writers:
        writer.close()
    for temp, path in zip(temps, paths):
      os.replace(temp, path)
  finally:
    for temp in temps:
      if os.path.exists(temp):
        os.remove(temp)
  categories = [{'id': c.id, 'name': c.name} for c in dataset.categories]
  files.write_json(output_prefix + CATEGORIES_SUFFIX,
                   {'categories': categories,
                    'max_instances_per_image':
                        dataset.max_instances_per_image}, indent=1)
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


def class_index_table(categories: list[dict]) -> tf.lookup.StaticHashTable:
  """Raw category id -> contiguous class index 1..K (-1 if unknown)."""
  ids = tf.constant([c['id'] for c in categories], tf.int64)
  indices = tf.range(1, len(categories) + 1, dtype=tf.int32)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(ids, indices), default_value=-1)


def decode_example(serialized: tf.Tensor,
                   table: tf.lookup.StaticHashTable) -> dict[str, tf.Tensor]:
  """Serialised Example -> the decoded-example dict of data/sources.py.

  Model Garden's decoder parses the Example and decodes the image and the
  PNG masks (an image without instances gets [0, H, W] masks); this maps
  its output onto our contract: boxes in pixels of the decoded image,
  contiguous class indices (-1 for ids not in `table`), masks as uint8 0/1
  (shards of older code wrote 0/255).
  """
  decoded = tf_example_decoder.TfExampleDecoder(
      include_mask=True).decode(serialized)
  image = decoded['image']
  height = tf.shape(image)[0]
  width = tf.shape(image)[1]
  scale = tf.cast(tf.stack([height, width, height, width]), tf.float32)
  masks = tf.reshape(decoded['groundtruth_instance_masks'],
                     [-1, height, width])
  return {
      'image': image,
      'image_id': tf.strings.to_number(decoded['source_id'], tf.int64),
      'boxes': decoded['groundtruth_boxes'] * scale,
      'classes': table.lookup(decoded['groundtruth_classes']),
      'is_crowd': decoded['groundtruth_is_crowd'],
      'masks': tf.cast(masks > 0, tf.uint8),
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
