"""bin/check_dataset --suggest_flags (data/suggest.py): on the shapes set it
lands on shapes_cpu's data settings; on many small crowded instances it
moves every limit the way that data needs; its file is a flags file."""

import os

import numpy as np
import pytest

from masklab_tf import config
from masklab_tf.data import coco
from masklab_tf.data import suggest
from masklab_tf.tools import check_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_the_shapes_set_gets_shapes_cpus_data_settings(shapes_train,
                                                       tmp_path):
  path = tmp_path / 'suggested.flags'
  status = check_dataset.check(*shapes_train, verify_images='header',
                               suggest_flags=str(path), out=open(os.devnull,
                                                                 'w'))
  assert status == 0
  got = config.from_flagfile(str(path))
  want = config.from_flagfile(os.path.join(REPO, 'configs',
                                           'shapes_cpu.flags'))
  for section, field in (('model', 'num_classes'), ('data', 'eval_min_size'),
                         ('data', 'min_sizes'), ('data', 'max_size'),
                         ('data', 'max_instances'), ('model', 'anchor_sizes'),
                         ('model', 'output_stride'),
                         ('model', 'max_detections'),
                         ('model', 'num_proposals'),
                         ('model', 'test_num_proposals')):
    assert (getattr(getattr(got, section), field) ==
            getattr(getattr(want, section), field)), field
  # The shapes' boxes are near square (h / w 0.87-1.14 on the demo's
  # 300 images): the data asks for no other aspect ratio.
  assert list(got.model.anchor_aspect_ratios) == [1.0]
  text = path.read_text()
  assert text.count('\n# ') >= 10  # every value says why


def _dataset(num_images, height, width, boxes_per_image, rng):
  """A CocoDataset of random boxes (sizes from `boxes_per_image`'s ranges)
  without pixels: suggest reads only records and boxes."""
  records = []
  for i in range(num_images):
    instances = []
    count, (low, high), ratio = boxes_per_image
    for j in range(count):
      size = rng.uniform(low, high)
      aspect = rng.uniform(1 / ratio, ratio)
      w, h = size / np.sqrt(aspect), size * np.sqrt(aspect)
      instances.append(coco.Instance(j + 1, 1, 1, (5.0, 5.0, w, h), {},
                                     w * h, False))
    records.append(coco.ImageRecord(i + 1, f'{i}.png', f'{i}.png', height,
                                    width, '', instances))
  return coco.CocoDataset('nuclei.json', '.', [coco.Category(1, 'nucleus', 1)],
                          records, [], [])


def test_many_small_crowded_instances_move_every_limit(tmp_path):
  """Nuclei-like data (512 x 512, 125 boxes of 8-24 px, elongated up to
  2.5:1): stride 8, small anchors, wider ratios, limits above COCO's."""
  lines = suggest.suggest_flags(_dataset(
      3, 512, 512, (125, (8, 24), 2.5), np.random.default_rng(0)))
  path = tmp_path / 'nuclei.flags'
  path.write_text('\n'.join(lines) + '\n')
  got = config.from_flagfile(str(path))
  assert got.model.num_classes == 1
  assert got.data.eval_min_size == 512 and got.data.max_size == 608
  assert got.model.output_stride == 8
  assert list(got.model.anchor_sizes) == [8.0, 16.0, 32.0]
  assert list(got.model.anchor_aspect_ratios) == [0.5, 1.0, 2.0]
  assert got.data.max_instances == 130
  assert got.model.max_detections == 260
  assert got.model.num_proposals == got.model.test_num_proposals == 520


def test_large_boxes_keep_output_stride_16():
  lines = suggest.suggest_flags(_dataset(
      4, 600, 800, (3, (100, 300), 1.2), np.random.default_rng(1)))
  assert '--output_stride=16' in lines
  assert '--anchor_sizes=128,256,512' in lines
  assert '--eval_min_size=608' in lines  # 600 to a multiple of 16
  # The median longer side: 800 x 608 / 600 = 811 px at 1x; 1.2x of it.
  assert '--max_size=976' in lines


def test_no_instances_is_an_error():
  dataset = coco.CocoDataset('empty.json', '.', [], [], [], [])
  with pytest.raises(ValueError, match='empty.json: no image with an '
                     'instance'):
    suggest.suggest_flags(dataset)
