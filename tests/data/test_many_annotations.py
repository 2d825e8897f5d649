"""An image with far more annotations than training keeps: the COCO source
decodes only the masks it can keep, and the batches of ordinary images do
not change (data/sources.py, module docstring)."""

import dataclasses
import json
import tracemalloc

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
import tensorflow as tf

from masklab_tf import config
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.ops import label_values

IGNORE = label_values.IGNORE_LABEL
GEOMETRY = config.GeometryConfig()
HEIGHT, WIDTH = 48, 64


def _rle_annotation(annotation_id, mask, iscrowd=0, category_id=1):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {'id': annotation_id, 'image_id': 1, 'category_id': category_id,
          'iscrowd': iscrowd,
          'segmentation': {'size': [HEIGHT, WIDTH],
                           'counts': rle['counts'].decode('ascii')}}


def _box_mask(top, left, height, width):
  mask = np.zeros((HEIGHT, WIDTH), np.uint8)
  mask[top:top + height, left:left + width] = 1
  return mask


def _read(tmp_path, annotations):
  """One 48x64 image with these annotations, read by the COCO reader."""
  images = tmp_path / 'images'
  images.mkdir(parents=True)
  pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3))
  Image.fromarray(pixels.astype(np.uint8)).save(images / 'a.png')
  data = {'images': [{'id': 1, 'file_name': 'a.png', 'height': HEIGHT,
                      'width': WIDTH}],
          'annotations': annotations,
          'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]}
  (tmp_path / 'instances.json').write_text(json.dumps(data))
  return coco.read_coco(str(tmp_path / 'instances.json'), str(images))


def _cfg(max_instances):
  return config.DataConfig(min_sizes=(48,), eval_min_size=48, max_size=400,
                           max_instances=max_instances,
                           keep_full_masks=True, shuffle_buffer=1)


def _batch(source, cfg):
  dataset = pipeline.build_dataset(cfg, GEOMETRY, 1, False, source=source,
                                   output_stride=16, seed=0)
  return tf.nest.map_structure(lambda t: t.numpy(), next(iter(dataset)))


def _unbounded(source):
  return dataclasses.replace(source, bounded_decode=None)


def _many_squares(count):
  """`count` regular 3x3 squares of growing size order, then the big ones."""
  annotations = []
  for index in range(count):
    top, left = (index * 3) % (HEIGHT - 3), (index * 7) % (WIDTH - 3)
    annotations.append(_rle_annotation(index + 1, _box_mask(top, left, 3, 3)))
  return annotations


def test_bounded_decode_keeps_at_most_max_instances_masks(tmp_path):
  # 300 small squares, 3 large ones, 2 crowd regions; keep 4.
  annotations = _many_squares(300)
  annotations += [_rle_annotation(401, _box_mask(0, 0, 20, 20)),
                  _rle_annotation(402, _box_mask(10, 30, 30, 30),
                                  category_id=2),
                  _rle_annotation(403, _box_mask(30, 0, 18, 18)),
                  _rle_annotation(404, _box_mask(0, 50, 5, 5), iscrowd=1),
                  _rle_annotation(405, _box_mask(40, 40, 5, 5), iscrowd=1)]
  dataset = _read(tmp_path, annotations)
  source = sources.coco_source(dataset)
  example = source.bounded_decode(4)(tf.constant(0, tf.int64))
  masks = example['masks'].numpy()
  # 3 large + the largest (first, stable) small square, then the merge.
  assert masks.shape == (5, HEIGHT, WIDTH)
  np.testing.assert_array_equal(example['is_crowd'].numpy(),
                                [False] * 4 + [True])
  full = dataset.load_masks(dataset.records[0])
  np.testing.assert_array_equal(masks[:4], full[[0, 300, 301, 302]])
  dropped = full[1:300].max(0) | full[303:].max(0)
  np.testing.assert_array_equal(masks[4], dropped)
  x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(
      dropped)))
  np.testing.assert_allclose(example['boxes'].numpy()[4], [y, x, y + h, x + w])


def _traced_peak(source, cfg):
  """Peak bytes Python and numpy allocate while one batch is made."""
  tracemalloc.start()
  try:
    batch = _batch(source, cfg)
    return batch, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_pipeline_decodes_only_kept_masks(tmp_path):
  # Unbounded, 2000 masks of 48x64 pixels (6 MB) are decoded at once; the
  # control image has 5 annotations. The first batch pays for imports.
  control = sources.coco_source(_read(tmp_path / 'few', _many_squares(5)))
  many = sources.coco_source(_read(tmp_path / 'many', _many_squares(2000)))
  _batch(control, _cfg(5))
  _, control_peak = _traced_peak(control, _cfg(5))
  batch, many_peak = _traced_peak(many, _cfg(5))
  assert batch['num_instances'][0] == 5
  assert many_peak < control_peak + 2000 * HEIGHT * WIDTH / 8, (
      many_peak, control_peak)


def _assert_same_batches(first, second):
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_images_within_max_instances_keep_their_batches(tmp_path):
  # Overlapping regular instances of both classes and a crowd region.
  annotations = [_rle_annotation(1, _box_mask(2, 2, 30, 40)),
                 _rle_annotation(2, _box_mask(10, 10, 12, 12), category_id=2),
                 _rle_annotation(3, _box_mask(20, 30, 25, 30), iscrowd=1),
                 _rle_annotation(4, _box_mask(25, 35, 8, 8))]
  source = sources.coco_source(_read(tmp_path, annotations))
  for max_instances in (4, 8):
    _assert_same_batches(_batch(source, _cfg(max_instances)),
                         _batch(_unbounded(source), _cfg(max_instances)))


def test_crowd_masks_merged_change_no_label(tmp_path):
  # 3 regular instances, 5 crowd ones: 8 > 3 annotations, but every regular
  # one is kept, and the union of the crowd masks marks the same pixels.
  annotations = [_rle_annotation(1, _box_mask(2, 2, 30, 40)),
                 _rle_annotation(2, _box_mask(10, 10, 12, 12), category_id=2),
                 _rle_annotation(3, _box_mask(25, 35, 8, 8))]
  annotations += [_rle_annotation(10 + i, _box_mask(5 * i, 8 * i, 12, 12),
                                  iscrowd=1) for i in range(5)]
  source = sources.coco_source(_read(tmp_path, annotations))
  example = source.bounded_decode(3)(tf.constant(0, tf.int64))
  assert example['masks'].shape[0] == 4
  _assert_same_batches(_batch(source, _cfg(3)),
                       _batch(_unbounded(source), _cfg(3)))


def test_dropped_instances_are_ignored_by_dense_labels(tmp_path):
  big = _box_mask(0, 0, 30, 30)
  small = _box_mask(35, 40, 4, 4)  # dropped: the smallest of 3, keep 2
  annotations = [_rle_annotation(1, big),
                 _rle_annotation(2, small, category_id=2),
                 _rle_annotation(3, _box_mask(32, 0, 10, 10))]
  source = sources.coco_source(_read(tmp_path, annotations))
  batch = _batch(source, _cfg(2))
  assert batch['num_instances'][0] == 2
  semantic = batch['semantic_labels'][0, :HEIGHT, :WIDTH]
  direction = batch['direction_labels'][0, :HEIGHT, :WIDTH]
  assert (semantic[small == 1] == IGNORE).all()
  assert (direction[small == 1] == IGNORE).all()
  assert (semantic[big == 1] == 1).all()
  assert semantic[0, WIDTH - 1] == 0
