"""Where examples come from: a COCO json + image folder, or TFRecord shards.

A `Source` is a dataset of small keys (image indices, or serialised Examples)
plus a `decode` function that turns one key into the decoded-example dict
every later stage reads:

  image     uint8 [H, W, 3]
  image_id  int64 []
  boxes     float32 [N, 4]  continuous [ymin, xmin, ymax, xmax] pixels
  classes   int32 [N]       contiguous class indices 1..K
  is_crowd  bool [N]
  masks     uint8 [N, H, W] (0/1)

Keys are cheap, so sharding and shuffling happen on them before the costly
decode, which then runs in parallel.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from masklab_tf.data import coco


@dataclasses.dataclass
class Source:
  keys: tf.data.Dataset
  decode: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  num_classes: int
  description: str


class SkippedImages:
  """Images a running pipeline could not decode: counted, never fatal.

  The reader validates up front, but a file can still change or rot between
  validation and reading; training skips such images and reports them.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self.messages: list[str] = []

  def add(self, message: str) -> None:
    with self._lock:
      self.messages.append(message)

  def __len__(self) -> int:
    return len(self.messages)


_DECODED_SIGNATURE = (tf.uint8, tf.int64, tf.float32, tf.int32, tf.bool,
                      tf.uint8, tf.bool)


def coco_source(dataset: coco.CocoDataset,
                input_context: tf.distribute.InputContext | None = None,
                skipped: SkippedImages | None = None) -> Source:
  """Decoded examples straight from a validated COCO dataset.

  Decoding runs in Python (Pillow, pycocotools) through tf.numpy_function,
  several images at a time. Fine for sets up to tens of thousands of images;
  use TFRecords beyond.
  """
  records = dataset.records
  if not records:
    raise ValueError(f'{dataset.annotations_path}: no usable images')
  skipped = skipped if skipped is not None else SkippedImages()

  def load(index):
    record = records[int(index)]
    try:
      image = dataset.load_image(record)
      masks = dataset.load_masks(record)
    except (coco.DatasetError, OSError, ValueError) as e:
      message = str(e)  # The reader's errors already name file and image.
      if not message.startswith(record.path):
        message = f'{record.path}: image {record.image_id}: {message}'
      skipped.add(message)
      return (np.zeros([1, 1, 3], np.uint8), np.int64(record.image_id),
              np.zeros([0, 4], np.float32), np.zeros([0], np.int32),
              np.zeros([0], bool), np.zeros([0, 1, 1], np.uint8),
              np.bool_(False))
    x, y, w, h = (np.array([i.box for i in record.instances],
                           np.float32).reshape(-1, 4).T)
    boxes = np.stack([y, x, y + h, x + w], axis=-1)
    classes = np.array([i.class_index for i in record.instances], np.int32)
    is_crowd = np.array([i.is_crowd for i in record.instances], bool)
    masks = masks.reshape(-1, image.shape[0], image.shape[1])
    return (image, np.int64(record.image_id), boxes, classes, is_crowd,
            masks.astype(np.uint8), np.bool_(True))

  def decode(index):
    values = tf.numpy_function(load, [index], _DECODED_SIGNATURE,
                               stateful=False)
    image, image_id, boxes, classes, is_crowd, masks, valid = values
    return {
        'image': tf.ensure_shape(image, [None, None, 3]),
        'image_id': tf.ensure_shape(image_id, []),
        'boxes': tf.ensure_shape(boxes, [None, 4]),
        'classes': tf.ensure_shape(classes, [None]),
        'is_crowd': tf.ensure_shape(is_crowd, [None]),
        'masks': tf.ensure_shape(masks, [None, None, None]),
        'valid': tf.ensure_shape(valid, []),
    }

  keys = tf.data.Dataset.range(len(records))
  if input_context and input_context.num_input_pipelines > 1:
    keys = keys.shard(input_context.num_input_pipelines,
                      input_context.input_pipeline_id)
  return Source(keys=keys, decode=decode, num_classes=dataset.num_classes,
                description=dataset.annotations_path)


def in_memory_source(examples: list[dict], num_classes: int,
                     description: str = 'in-memory examples') -> Source:
  """Decoded examples held as numpy arrays (tests, benchmarks).

  Each example is a dict with the keys of the decoded-example contract.
  """
  signature = {
      'image': tf.TensorSpec([None, None, 3], tf.uint8),
      'image_id': tf.TensorSpec([], tf.int64),
      'boxes': tf.TensorSpec([None, 4], tf.float32),
      'classes': tf.TensorSpec([None], tf.int32),
      'is_crowd': tf.TensorSpec([None], tf.bool),
      'masks': tf.TensorSpec([None, None, None], tf.uint8),
  }

  def generate():
    for example in examples:
      yield {key: np.asarray(example[key], spec.dtype.as_numpy_dtype)
             for key, spec in signature.items()}

  keys = tf.data.Dataset.from_generator(generate, output_signature=signature)
  return Source(keys=keys, decode=lambda example: example,
                num_classes=num_classes, description=description)
