"""Image paths stay inside the images folder unless the user allows more."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from masklab_tf import config
from masklab_tf.data import coco

SIZE = 16
POLYGON = [[2, 2, 10, 2, 10, 10, 2, 10]]


def _png(path):
  pixels = np.full((SIZE, SIZE, 3), 90, np.uint8)
  Image.fromarray(pixels).save(path)


@pytest.fixture
def layout(tmp_path):
  """images/inside.png, secret.png beside the folder, links in it."""
  images = tmp_path / 'images'
  images.mkdir()
  _png(images / 'inside.png')
  _png(tmp_path / 'secret.png')
  os.symlink(tmp_path / 'secret.png', images / 'link_out.png')
  os.symlink(images / 'inside.png', images / 'link_in.png')
  return tmp_path


def _write(root, file_names):
  """A json naming `file_names` as images 1..N, one annotation each."""
  data = {
      'images': [{'id': i, 'file_name': name, 'height': SIZE, 'width': SIZE}
                 for i, name in enumerate(file_names, 1)],
      'annotations': [{'id': i, 'image_id': i, 'category_id': 1,
                       'segmentation': POLYGON}
                      for i in range(1, len(file_names) + 1)],
      'categories': [{'id': 1, 'name': 'thing'}],
  }
  path = root / 'instances.json'
  path.write_text(json.dumps(data))
  return str(path), str(root / 'images')


def _outside_names(root):
  return ['../secret.png', str(root / 'secret.png'), 'link_out.png',
          'sub/../../secret.png']


@pytest.mark.parametrize('verify_images', coco.VERIFY_MODES)
def test_paths_leaving_the_images_folder_are_skipped(layout, verify_images):
  names = ['inside.png', 'link_in.png'] + _outside_names(layout)
  dataset = coco.read_coco(*_write(layout, names),
                           verify_images=verify_images)
  assert [record.file_name for record in dataset.records] == names[:2]
  problems = dataset.problems
  assert [p.kind for p in problems] == ['outside_images'] * 4
  assert [p.record for p in problems] == ['image 3', 'image 4', 'image 5',
                                          'image 6']
  images_dir = os.path.realpath(layout / 'images')
  secret = os.path.realpath(layout / 'secret.png')
  for problem, name in zip(problems, names[2:]):
    assert problem.file == os.path.join(str(layout / 'images'), name)
    assert f'resolves to {secret}, outside the images folder {images_dir}' in (
        problem.reason)
    assert problem.action == 'skipped image and its 1 annotation'
  with pytest.raises(coco.DatasetError, match='outside_images|outside the'):
    coco.read_coco(*_write(layout, names), strict=True,
                   verify_images=verify_images)


def test_allowed_outside_paths_are_read_and_noted(layout):
  names = ['inside.png'] + _outside_names(layout)[:3]
  dataset = coco.read_coco(*_write(layout, names), strict=True,
                           allow_outside_images=True)
  assert len(dataset.records) == 4 and not dataset.problems
  assert [note.kind for note in dataset.notes] == ['outside_images'] * 3
  for record in dataset.records:
    assert dataset.load_image(record).shape == (SIZE, SIZE, 3)


def test_a_link_turned_outward_after_reading_is_not_loaded(layout):
  dataset = coco.read_coco(*_write(layout, ['link_in.png']))
  [record] = dataset.records
  os.remove(record.path)
  os.symlink(layout / 'secret.png', record.path)
  with pytest.raises(coco.DatasetError, match='outside the images folder'):
    dataset.load_image(record)


def test_nul_in_file_name_is_a_problem_not_a_crash(layout):
  dataset = coco.read_coco(*_write(layout, ['in\x00side.png']),
                           verify_images='none')
  assert [p.kind for p in dataset.problems] == ['outside_images']
  assert 'cannot be resolved' in dataset.problems[0].reason


def test_the_flag_reaches_the_data_config():
  configs = config.from_flagfile('configs/shapes_cpu.flags',
                                 ('--allow_outside_images',))
  assert configs.data.allow_outside_images
