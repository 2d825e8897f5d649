"""Images of extreme aspect ratio (2x1000, 1x4000) through the training
pipeline and a few training steps: every side keeps at least 1 pixel
(ops/image_policy.resized_size), targets and crops follow."""

import json

import numpy as np
import pytest
from PIL import Image

from masklab_tf import config
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.ops import label_values
from masklab_tf.training import trainer as trainer_lib

GEOMETRY = config.GeometryConfig()
OUTPUT_STRIDE = 8
# (height, width) of each image, long side at 200..4000.
SIZES = ((2, 1000), (1, 4000), (1000, 2), (3, 200))


def _boxes(height, width):
  """Two instances per image: boxes [ymin, xmin, ymax, xmax] spanning the
  short side."""
  if height <= width:
    return [[0, width // 10, height, width // 3],
            [0, width // 2, height, width * 9 // 10]]
  return [[height // 10, 0, height // 3, width],
          [height // 2, 0, height * 9 // 10, width]]


def extreme_examples():
  rng = np.random.default_rng(0)
  examples = []
  for image_id, (height, width) in enumerate(SIZES, start=1):
    boxes = np.array(_boxes(height, width), np.float32)
    masks = np.zeros([len(boxes), height, width], np.uint8)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes.astype(int)):
      mask[y0:y1, x0:x1] = 1
    examples.append({
        'image': rng.integers(0, 256, [height, width, 3]),
        'image_id': image_id, 'boxes': boxes, 'classes': [1, 2],
        'is_crowd': [False, False], 'masks': masks})
  return examples


@pytest.mark.parametrize('is_training', [True, False])
def test_extreme_aspect_ratios_give_batches_with_targets(is_training):
  """Each image keeps >= 1 pixel per side, pads to the stride, and its
  boxes, mask targets and dense labels land inside its valid region."""
  cfg = config.DataConfig(min_sizes=(160,), eval_min_size=160, max_size=192,
                          max_instances=4, flip=True,
                          keep_full_masks=True, shuffle_buffer=1)
  dataset = pipeline.build_dataset(
      cfg, GEOMETRY, 1, is_training,
      source=sources.in_memory_source(extreme_examples(), 3),
      output_stride=OUTPUT_STRIDE, seed=0, deterministic=True)
  batches = [dict((k, v.numpy()) for k, v in b.items())
             for b in dataset.take(len(SIZES))]
  assert sorted(int(b['image_id'][0]) for b in batches) == [1, 2, 3, 4]
  for batch in batches:
    height, width = SIZES[int(batch['image_id'][0]) - 1]
    size = batch['image_size'][0]
    assert (size >= 1).all() and max(size) <= 192
    # The long side keeps the aspect's rule, the short one its pixel.
    assert size[0] if height > width else size[1] in (192, 160)
    assert batch['image'].shape[1] % OUTPUT_STRIDE == 0
    assert batch['image'].shape[2] % OUTPUT_STRIDE == 0
    np.testing.assert_allclose(batch['scale'][0],
                               size / np.array([height, width]))
    assert batch['num_instances'][0] == 2
    boxes = batch['gt_boxes'][0, :2]
    assert (boxes[:, 2] <= size[0] + 1e-3).all()
    assert (boxes[:, 3] <= size[1] + 1e-3).all()
    assert (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes[:, 3] > boxes[:, 1]).all()
    # Each mask fills its own box: crops over the box are ones inside,
    # >= 0.5 on the edges (samples on the box edge, ops/crop.py).
    targets = batch['gt_mask_targets'][0, :2]
    np.testing.assert_allclose(targets[:, 1:-1, 1:-1], 1.0)
    assert (targets >= 0.5).all()
    semantic = batch['semantic_labels'][0]
    valid = semantic[:size[0], :size[1]]
    assert set(np.unique(valid)) <= {0, 1, 2}
    assert {1, 2} <= set(np.unique(valid))
    assert (semantic[size[0]:] == label_values.IGNORE_LABEL).all()
    assert batch['gt_masks'][0, :2, :size[0], :size[1]].any(axis=(1, 2)).all()


def _write_coco(root):
  """The examples as a COCO set of PNGs with polygon instances."""
  (root / 'images').mkdir()
  images, annotations = [], []
  for example, (height, width) in zip(extreme_examples(), SIZES):
    name = f'{height}x{width}.png'
    Image.fromarray(example['image'].astype(np.uint8)).save(
        root / 'images' / name)
    image_id = example['image_id']
    images.append({'id': image_id, 'file_name': name, 'height': height,
                   'width': width})
    for cls, (y0, x0, y1, x1) in zip(example['classes'], example['boxes']):
      annotations.append({
          'id': len(annotations) + 1, 'image_id': image_id,
          'category_id': cls, 'iscrowd': 0,
          'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
          'area': float((x1 - x0) * (y1 - y0)),
          'segmentation': [[float(v) for v in (x0, y0, x1, y0, x1, y1,
                                               x0, y1)]]})
  path = root / 'annotations.json'
  path.write_text(json.dumps({
      'images': images, 'annotations': annotations,
      'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]}))
  return str(path), str(root / 'images')


@pytest.mark.slow
def test_training_steps_on_extreme_aspect_ratios(shapes_configs, tmp_path):
  """bin/train's Trainer on a COCO set of only such images: the steps run
  and the losses are finite."""
  split = _write_coco(tmp_path)
  configs = shapes_configs('--train_steps=2', '--num_classes=2',
                           '--min_sizes=160', '--eval_min_size=160',
                           '--max_size=192', split=split)
  trainer = trainer_lib.Trainer(configs, str(tmp_path / 'model'))
  trainer.restore_or_initialise()
  losses = trainer.train()
  assert trainer.current_step == 2
  assert len(trainer.train_set.records) == len(SIZES)
  assert np.isfinite(losses['total'])
