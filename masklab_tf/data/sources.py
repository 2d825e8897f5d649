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

An image can carry far more annotations than training keeps (the largest
`max_instances` regular ones, data/pipeline.py). Decoding them all costs
memory in proportion to the annotation count, not the image: 10,000 masks
of a 160x160 image took training to 4.8 GB. So a source may offer a
`bounded_decode(max_instances)`, which the pipeline uses with its own
`max_instances`; the COCO source's then decodes only what can be kept:

  * an image with at most max_instances annotations decodes as before;
  * otherwise the largest max_instances regular (non-crowd) instances are
    decoded, ranked by their RLE areas exactly as the pipeline ranks them
    (descending, stable), in their json order; every other annotation,
    crowd or regular, is merged (pycocotools' RLE union, no per-mask
    decode) into one crowd mask appended last.

The crowd mask is where the dense losses ignore pixels no kept instance
covers. For crowd annotations that is what they did before (the union of
crowd masks marks the same pixels as the masks one by one). The dropped
regular instances were never training targets (not in gt_*), and now mark
their pixels ignore instead of lending them their class and direction: the
semantic and direction losses neither call those pixels background nor
learn an instance the box and mask losses never see.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils
import tensorflow as tf

from masklab_tf.data import coco


@dataclasses.dataclass
class Source:
  keys: tf.data.Dataset
  decode: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  num_classes: int
  description: str
  # max_instances -> a decode that keeps only the masks that many kept
  # instances need (module docstring); None: `decode` is already bounded.
  bounded_decode: Callable[[int], Callable[[tf.Tensor], dict[str, tf.Tensor]]
                           ] | None = None


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
  use TFRecords beyond. `decode` decodes every annotation's mask;
  `bounded_decode(max_instances)` only those training can keep (module
  docstring).
  """
  records = dataset.records
  if not records:
    raise ValueError(f'{dataset.annotations_path}: no usable images')
  skipped = skipped if skipped is not None else SkippedImages()

  def load(index, max_instances):
    record = records[int(index)]
    instances = bounded_instances(record.instances, record.height,
                                  record.width, max_instances)
    try:
      image = dataset.load_image(record)
      masks = dataset.load_masks(record, instances)
    except (coco.DatasetError, OSError, ValueError) as e:
      message = str(e)  # The reader's errors already name file and image.
      if not message.startswith(record.path):
        message = f'{record.path}: image {record.image_id}: {message}'
      skipped.add(message)
      return (np.zeros([1, 1, 3], np.uint8), np.int64(record.image_id),
              np.zeros([0, 4], np.float32), np.zeros([0], np.int32),
              np.zeros([0], bool), np.zeros([0, 1, 1], np.uint8),
              np.bool_(False))
    x, y, w, h = (np.array([i.box for i in instances],
                           np.float32).reshape(-1, 4).T)
    boxes = np.stack([y, x, y + h, x + w], axis=-1)
    classes = np.array([i.class_index for i in instances], np.int32)
    is_crowd = np.array([i.is_crowd for i in instances], bool)
    masks = masks.reshape(-1, image.shape[0], image.shape[1])
    return (image, np.int64(record.image_id), boxes, classes, is_crowd,
            masks.astype(np.uint8), np.bool_(True))

  def make_decode(max_instances):
    def decode(index):
      values = tf.numpy_function(lambda i: load(i, max_instances), [index],
                                 _DECODED_SIGNATURE, stateful=False)
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
    return decode

  keys = tf.data.Dataset.range(len(records))
  if input_context and input_context.num_input_pipelines > 1:
    keys = keys.shard(input_context.num_input_pipelines,
                      input_context.input_pipeline_id)
  return Source(keys=keys, decode=make_decode(None),
                num_classes=dataset.num_classes,
                description=dataset.annotations_path,
                bounded_decode=make_decode)


def bounded_instances(instances: list[coco.Instance], height: int,
                      width: int, max_instances: int | None
                      ) -> list[coco.Instance]:
  """The instances whose masks an image's example needs (module docstring).

  Args:
    instances: the image's instances in json order.
    height: the image's height (of the merged mask).
    width: its width.
    max_instances: regular instances training keeps; None keeps all.

  Returns:
    `instances` itself when it holds at most max_instances; else the largest
    max_instances regular ones in json order, then one crowd instance
    (annotation id 0, the first merged annotation's class) whose mask is
    the union of all the others.
  """
  if max_instances is None or len(instances) <= max_instances:
    return instances
  regular = [index for index, instance in enumerate(instances)
             if not instance.is_crowd]
  # float32 areas and a stable descending sort: the pipeline's ranking.
  areas = np.array([instances[index].area for index in regular], np.float32)
  ranked = np.argsort(-areas, kind='stable')[:max_instances]
  kept = set(regular[position] for position in ranked)
  merged = [instance for index, instance in enumerate(instances)
            if index not in kept]
  result = [instance for index, instance in enumerate(instances)
            if index in kept]
  if merged:
    rle = mask_utils.merge([instance.rle for instance in merged])
    rle = {'size': [height, width], 'counts': rle['counts']}
    box = tuple(float(value) for value in mask_utils.toBbox(rle))
    result.append(coco.Instance(
        annotation_id=0, category_id=merged[0].category_id,
        class_index=merged[0].class_index, box=box, rle=rle,
        area=float(mask_utils.area(rle)), is_crowd=True))
  return result


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
