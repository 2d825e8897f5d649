"""The synthetic shapes set: format, content rules, determinism, the tool."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import coco as coco_api
from pycocotools import mask as mask_api

from masklab_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def digest(folder):
  sha = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      with open(os.path.join(root, name), 'rb') as f:
        sha.update(name.encode() + f.read())
  return sha.hexdigest()


@pytest.fixture(scope='module')
def hard_split(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('hard'))
  return synthetic.write_split(root, 'train', 40, seed=7)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
  synthetic.make_shapes(str(tmp_path / 'a'), 4, 2, seed=3)
  synthetic.make_shapes(str(tmp_path / 'b'), 4, 2, seed=3)
  synthetic.make_shapes(str(tmp_path / 'c'), 4, 2, seed=4)
  assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
  assert digest(tmp_path / 'a') != digest(tmp_path / 'c')
  # train and val come from different seeds.
  a_train = json.load(open(tmp_path / 'a' / 'train' / 'annotations.json'))
  a_val = json.load(open(tmp_path / 'a' / 'val' / 'annotations.json'))
  assert (a_train['annotations'][0]['segmentation'] !=
          a_val['annotations'][0]['segmentation'])


def test_coco_format_and_content_rules(hard_split):
  coco = coco_api.COCO(hard_split)
  data = coco.dataset
  ids = [a['id'] for a in data['annotations']]
  assert min(ids) == 1 and len(set(ids)) == len(ids)
  assert min(i['id'] for i in data['images']) == 1
  assert len(data['categories']) >= 4
  images_dir = os.path.join(os.path.dirname(hard_split), 'images')
  classes_seen = set()
  for image in data['images']:
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image['id']))
    assert 3 <= len(anns) <= 8
    assert os.path.exists(os.path.join(images_dir, image['file_name']))
    union = np.zeros([image['height'], image['width']], np.int32)
    for ann in anns:
      mask = mask_api.decode(ann['segmentation'])
      assert mask.shape == (image['height'], image['width'])
      assert mask.sum() == ann['area'] >= 40
      rows, cols = np.nonzero(mask)
      x, y = cols.min(), rows.min()
      assert ann['bbox'] == [x, y, cols.max() + 1 - x, rows.max() + 1 - y]
      union += mask
      classes_seen.add(ann['category_id'])
      assert np.array_equal(coco.annToMask(ann), mask)
    assert union.max() <= 1  # visible parts never overlap
  assert classes_seen == {1, 2, 3, 4}


def test_extents_and_visibility_rules():
  rng = np.random.default_rng(0)
  for _ in range(15):
    image, masks, classes = synthetic.generate_image(rng)
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    for mask in masks:
      rows, cols = np.nonzero(mask)
      extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
      assert extent <= synthetic.MAX_EXTENT
      assert mask.sum() >= synthetic.MIN_VISIBLE_PIXELS


def test_hard_mode_touches_easy_mode_does_not(hard_split, tmp_path):
  hard = synthetic.summarize_split(hard_split)
  assert hard['touching_fraction'] >= 0.6
  easy = synthetic.summarize_split(
      synthetic.write_split(str(tmp_path), 'train', 20, seed=7, easy=True))
  assert easy['touching_fraction'] <= 0.05


def test_make_shapes_tool(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'bin', 'make_shapes'),
       f'--output_dir={tmp_path}', '--num_train=5', '--num_val=2'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'train: images=5' in result.stdout
  assert 'val: images=2' in result.stdout
  assert os.path.exists(tmp_path / 'val' / 'annotations.json')


def test_easy_instances_keep_their_full_extent(tmp_path):
  path = synthetic.write_split(str(tmp_path), 'train', 15, seed=5, easy=True)
  for ann in coco_api.COCO(path).dataset['annotations']:
    extent = max(ann['bbox'][2:])
    assert synthetic.MIN_EXTENT <= extent <= synthetic.MAX_EXTENT


def test_touching_same_class_pair_uses_8_neighbours():
  def square(top, left):
    mask = np.zeros([20, 20], bool)
    mask[top:top + 4, left:left + 4] = True
    return mask

  touching = synthetic.touching_same_class_pair
  assert touching([square(2, 2), square(2, 6)], [1, 1])
  assert touching([square(2, 2), square(6, 6)], [2, 2])  # diagonal
  assert not touching([square(2, 2), square(2, 7)], [1, 1])  # 1 px gap
  assert not touching([square(2, 2), square(2, 6)], [1, 2])  # other class
