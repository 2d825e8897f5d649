"""tf.data input pipeline: decoded examples -> padded training batches.

  keys (shard per worker, shuffle, repeat) -> decode (parallel)
  -> scale jitter -> flip -> dense targets -> pad -> batch -> prefetch

Everything random is drawn with stateless ops from (seed, the example's
position in the stream of keys), so `deterministic=True` gives the same
batches whatever the parallelism, and `start` resumes the stream exactly.

Each batch is a dict:
  image            uint8 [B, Hp, Wp, 3]  (the model normalises)
  image_id         int64 [B]
  original_size    int32 [B, 2]   (height, width) before resizing
  image_size       int32 [B, 2]   valid region after resizing, before padding
  scale            float32 [B, 2] image_size / original_size
  gt_boxes         float32 [B, M, 4] continuous [ymin, xmin, ymax, xmax] in
                   resized pixels; padding -1
  gt_classes       int32 [B, M]   1..K; padding -1
  gt_mask_targets  float32 [B, M, S, S] each mask cropped to its own box
                   (ops/crop.py convention); what the mask losses compare to
  num_instances    int32 [B]
  position         int64 [B]  place of the example in this pipeline's stream
                   of keys (shuffled and repeated in training): the seed of
                   its augmentation, and where a resumed run starts
  semantic_labels  uint8 [B, Hp, Wp]  0 background, 1..K, 255 ignore
  direction_labels uint8 [B, Hp, Wp]  0..D*R-1 on instances, 255 ignore
  gt_masks         uint8 [B, M, Hp, Wp]  only with keep_full_masks
M = max_instances; Hp, Wp multiples of the model's output stride (or pad_to).
Crowd instances only mark ignore regions; they are not in gt_*.
"""

from __future__ import annotations

import tensorflow as tf

from masklab_tf import config as config_lib
from masklab_tf.data import coco
from masklab_tf.data import sources
from masklab_tf.data import targets
from masklab_tf.data import tfrecord
from masklab_tf.ops import crop
from masklab_tf.ops import image_policy
from masklab_tf.ops import label_values


def make_source(split: config_lib.DataSplitConfig, verify_images: str,
                input_context: tf.distribute.InputContext | None = None,
                skipped: sources.SkippedImages | None = None,
                dataset: coco.CocoDataset | None = None, *,
                allow_outside_images: bool = False) -> sources.Source:
  """TFRecords when `split.tfrecords` is set, else the COCO json + images
  (`dataset`, when the caller has read it already; else read here, images
  checked as `verify_images` and `allow_outside_images` say)."""
  if split.tfrecords:
    categories = tfrecord.read_categories(
        split.categories or tfrecord.categories_path_for(split.tfrecords))
    return tfrecord.tfrecord_source(split.tfrecords, categories,
                                    input_context)
  if dataset is None:
    if not split.annotations:
      raise ValueError('no data: the set names neither a COCO json with its '
                       'images nor TFRecords')
    dataset = coco.read_coco(split.annotations, split.images,
                             verify_images=verify_images,
                             allow_outside_images=allow_outside_images)
  return sources.coco_source(dataset, input_context, skipped)


def _select_instances(areas, is_crowd, max_instances):
  """Regular (non-crowd) instances, the largest max_instances of them."""
  regular = tf.logical_not(is_crowd)
  areas = tf.where(regular, areas, -1.0)
  num_regular = tf.reduce_sum(tf.cast(regular, tf.int32))
  order = tf.argsort(areas, direction='DESCENDING', stable=True)
  keep = order[:tf.minimum(num_regular, max_instances)]
  return tf.sort(keep)


def _pad_rows(tensor, rows, value):
  pad = rows - tf.shape(tensor)[0]
  paddings = [[0, pad]] + [[0, 0]] * (len(tensor.shape) - 1)
  padded = tf.pad(tensor, paddings, constant_values=value)
  return tf.ensure_shape(padded, [rows] + tensor.shape[1:].as_list())


class Preprocessor:
  """One decoded example -> one training example (see module docstring).

  Args:
    cfg: the pipeline's settings.
    geometry: direction geometry of the targets and the mask crop size.
    is_training: scale jitter and flips on (else the eval size, no flip).
    output_stride: padded sides are multiples of it: the model's
      (ModelConfig.output_stride), whose feature maps must tile the image.
    seed: the run's seed (TrainConfig.seed) of scale jitter and flips.
  """

  def __init__(self, cfg: config_lib.DataConfig,
               geometry: config_lib.GeometryConfig, is_training: bool, *,
               output_stride: int, seed: int):
    self.cfg = cfg
    self.geometry = geometry
    self.is_training = is_training
    self.output_stride = output_stride
    self.seed = seed
    if cfg.pad_to and len(cfg.pad_to) != 2:
      raise ValueError(f'pad_to must be (height, width), got {cfg.pad_to}')
    if any(p % output_stride for p in cfg.pad_to):
      raise ValueError(f'pad_to {cfg.pad_to} must be multiples of the '
                       f'output stride {output_stride}')

  def _min_size(self, seed):
    if not self.is_training:
      return tf.constant(self.cfg.eval_min_size)
    sizes = tf.constant(self.cfg.min_sizes, tf.int32)
    index = tf.random.stateless_uniform([], seed, 0, len(self.cfg.min_sizes),
                                        dtype=tf.int32)
    return sizes[index]

  def __call__(self, position: tf.Tensor, example: dict) -> dict:
    cfg, geometry = self.cfg, self.geometry
    seed = tf.stack([tf.constant(self.seed, tf.int64), position])
    size_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))

    image = example['image']
    masks = example['masks']
    boxes = tf.cast(example['boxes'], tf.float32)
    original_size = tf.shape(image)[:2]

    areas = tf.reduce_sum(tf.cast(masks, tf.float32), [1, 2])
    keep = _select_instances(areas, example['is_crowd'], cfg.max_instances)
    # Box-relative mask targets from the original masks: a crop over a box is
    # independent of image scale, so no resize error reaches them.
    mask_targets = crop.crop_masks(tf.gather(masks, keep),
                                   tf.gather(boxes, keep),
                                   geometry.mask_crop_size)
    # Who owns each pixel, decided once at the source resolution; resizing
    # and flipping this one map replaces doing so for every mask.
    instances = targets.instance_map(masks, example['is_crowd'], areas)
    kept_masks = tf.gather(masks, keep) if cfg.keep_full_masks else None

    size = image_policy.resized_size(original_size[0], original_size[1],
                                     self._min_size(size_seed), cfg.max_size)
    scale = tf.cast(size, tf.float32) / tf.cast(original_size, tf.float32)
    image = image_policy.resize_image(image, size)
    instances = image_policy.resize_nearest(instances, size)
    boxes = boxes * tf.tile(scale, [2])
    if kept_masks is not None:
      kept_masks = image_policy.resize_nearest(kept_masks, size, axis=1)

    if self.is_training and cfg.flip:
      flip = tf.random.stateless_uniform([], flip_seed) < 0.5
      width = tf.cast(size[1], tf.float32)
      flipped_boxes = tf.stack([boxes[:, 0], width - boxes[:, 3],
                                boxes[:, 2], width - boxes[:, 1]], axis=-1)
      image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
      instances = tf.cond(flip, lambda: instances[:, ::-1], lambda: instances)
      boxes = tf.cond(flip, lambda: flipped_boxes, lambda: boxes)
      mask_targets = tf.cond(flip, lambda: mask_targets[:, :, ::-1],
                             lambda: mask_targets)
      if kept_masks is not None:
        kept_masks = tf.cond(flip, lambda: kept_masks[:, :, ::-1],
                             lambda: kept_masks)

    dense = targets.labels_from_instance_map(
        instances, boxes, example['classes'], geometry.num_directions,
        geometry.num_distance_bins)

    if cfg.pad_to:
      padded = tf.constant(cfg.pad_to, tf.int32)
    else:
      padded = image_policy.own_padded_size(size, self.output_stride)
    pad_h, pad_w = padded[0] - size[0], padded[1] - size[1]
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    for key in dense:
      dense[key] = tf.pad(dense[key], [[0, pad_h], [0, pad_w]],
                          constant_values=label_values.IGNORE_LABEL)

    num = tf.shape(keep)[0]
    max_instances = cfg.max_instances
    features = {
        'image': image,
        'image_id': example['image_id'],
        'original_size': original_size,
        'image_size': size,
        'scale': scale,
        'gt_boxes': _pad_rows(tf.gather(boxes, keep), max_instances, -1.0),
        'gt_classes': _pad_rows(tf.gather(example['classes'], keep),
                                max_instances, -1),
        'gt_mask_targets': _pad_rows(mask_targets, max_instances, 0.0),
        'num_instances': num,
        'position': position,
        **dense,
    }
    if kept_masks is not None:
      full = tf.pad(kept_masks, [[0, 0], [0, pad_h], [0, pad_w]])
      features['gt_masks'] = _pad_rows(full, max_instances, 0)
    if cfg.pad_to:
      features = _set_static_sizes(features, cfg.pad_to)
    return features


def _set_static_sizes(features: dict, pad_to) -> dict:
  """Static padded shapes, as XLA and TPUs need them."""
  height, width = pad_to
  static = {'image': [height, width, 3],
            'semantic_labels': [height, width],
            'direction_labels': [height, width]}
  if 'gt_masks' in features:
    static['gt_masks'] = [features['gt_masks'].shape[0], height, width]
  return {k: tf.ensure_shape(v, static[k]) if k in static else v
          for k, v in features.items()}


def _padding_values(features_spec: dict) -> dict:
  values = {}
  for key, spec in features_spec.items():
    if key in ('semantic_labels', 'direction_labels'):
      values[key] = tf.constant(label_values.IGNORE_LABEL, spec.dtype)
    elif key in ('gt_boxes', 'gt_classes'):
      values[key] = tf.constant(-1, spec.dtype)
    else:
      values[key] = tf.constant(0, spec.dtype)
  return values


def build_dataset(cfg: config_lib.DataConfig,
                  geometry: config_lib.GeometryConfig,
                  global_batch_size: int,
                  is_training: bool,
                  input_context: tf.distribute.InputContext | None = None,
                  *,
                  source: sources.Source,
                  output_stride: int,
                  seed: int,
                  deterministic: bool = False,
                  start: int = 0) -> tf.data.Dataset:
  """Batches for one input pipeline.

  Under tf.distribute, pass the InputContext that
  `strategy.distribute_datasets_from_function` gives: each worker reads its
  own shard and batches global_batch_size / num_replicas per replica.

  Args:
    cfg: the pipeline's settings.
    geometry: direction geometry of the targets and the mask crop size.
    global_batch_size: examples per step over all replicas.
    is_training: shuffle, repeat, jitter and flip (else one pass in order).
    input_context: under tf.distribute, what sets the per-replica batch
      (the source shards by it).
    source: the examples (make_source, or the sources module).
    output_stride: the model's (ModelConfig.output_stride): padded sides are
      its multiples.
    seed: the run's seed (TrainConfig.seed) of shuffling and augmentation.
    deterministic: the same seed gives the same batches (TrainConfig.
      deterministic): a seeded shuffle, maps and batches in order. Evaluation
      (is_training False) is always in order.
    start: position in the stream of keys to begin at (a resumed run's:
      batch['position'] of the last example trained on, plus one). Only the
      keys are skipped, nothing is decoded.
  """
  batch_size = global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)

  in_order = deterministic or not is_training
  keys = source.keys
  if is_training:
    keys = keys.shuffle(cfg.shuffle_buffer,
                        seed=seed if deterministic else None,
                        reshuffle_each_iteration=True).repeat()
  # Positions count keys, not decoded examples, so that an image that fails
  # to decode (filtered below) does not shift the positions after it.
  keys = keys.enumerate()
  if start:
    keys = keys.skip(start)
  decode = source.decode
  if source.bounded_decode is not None:  # decode only masks it can keep
    decode = source.bounded_decode(cfg.max_instances)
  dataset = keys.map(lambda position, key: (position, decode(key)),
                     num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=in_order)
  if 'valid' in dataset.element_spec[1]:
    dataset = dataset.filter(lambda _, example: example['valid'])
  dataset = dataset.map(Preprocessor(cfg, geometry, is_training,
                                     output_stride=output_stride, seed=seed),
                        num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=in_order)
  dataset = dataset.padded_batch(
      batch_size, padding_values=_padding_values(dataset.element_spec),
      drop_remainder=is_training)
  options = tf.data.Options()
  options.deterministic = in_order
  options.experimental_optimization.map_parallelization = True
  dataset = dataset.with_options(options)
  return dataset.prefetch(tf.data.AUTOTUNE)
