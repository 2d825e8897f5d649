"""COCO reader: decoding, every skip/repair rule, image modes, check_dataset."""

import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from masklab_tf.data import coco
from masklab_tf.tools import check_dataset

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 32
GOOD_POLYGON = [[4, 4, 12, 4, 12, 12, 4, 12]]


def _square(top, left, side):
  mask = np.zeros((SIZE, SIZE), np.uint8)
  mask[top:top + side, left:left + side] = 1
  return mask


def _uncompressed_counts(mask):
  """Column-major run lengths, zeros first: how COCO stores crowd masks."""
  runs, current, length = [], 0, 0
  for value in mask.T.ravel():
    if value == current:
      length += 1
    else:
      runs.append(length)
      current, length = value, 1
  return runs + [length]


def _clean_json():
  """Two images, two categories, one annotation per segmentation format."""
  crowd_counts = _uncompressed_counts(_square(20, 2, 10))
  compressed = mask_utils.encode(np.asfortranarray(_square(4, 18, 9)))
  polygons = [[2, 3, 16, 3, 16, 15, 2, 15], [20, 20, 28, 20, 24, 28]]
  return {
      'images': [
          {'id': 1, 'file_name': 'a.png', 'height': SIZE, 'width': SIZE},
          {'id': 2, 'file_name': 'b.png', 'height': SIZE, 'width': SIZE},
      ],
      'annotations': [
          {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
           'bbox': [2.0, 3.0, 14.0, 12.0], 'segmentation': polygons},
          {'id': 2, 'image_id': 1, 'category_id': 3, 'iscrowd': 1,
           'bbox': [2.0, 20.0, 10.0, 10.0],
           'segmentation': {'size': [SIZE, SIZE], 'counts': crowd_counts}},
          {'id': 3, 'image_id': 2, 'category_id': 3, 'iscrowd': 0,
           'bbox': [18.0, 4.0, 9.0, 9.0],
           'segmentation': {'size': [SIZE, SIZE],
                            'counts': compressed['counts'].decode('ascii')}},
      ],
      'categories': [{'id': 1, 'name': 'cat'}, {'id': 3, 'name': 'dog'}],
  }


def _annotation(annotation_id=100, **fields):
  """A good annotation on image 2 unless `fields` break it."""
  entry = {'id': annotation_id, 'image_id': 2, 'category_id': 1,
           'iscrowd': 0, 'segmentation': GOOD_POLYGON}
  entry.update(fields)
  return entry


def _random_rgb(seed):
  return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3),
                                              dtype=np.uint8)


def _write_dataset(tmp_path, data):
  """Writes a.png, b.png and the json; returns (annotations, images dir)."""
  images_dir = tmp_path / 'images'
  images_dir.mkdir(exist_ok=True)
  for seed, name in enumerate(('a.png', 'b.png')):
    if not (images_dir / name).exists():
      Image.fromarray(_random_rgb(seed)).save(images_dir / name)
  annotations_path = tmp_path / 'instances.json'
  annotations_path.write_text(json.dumps(data))
  return str(annotations_path), str(images_dir)


def _read(tmp_path, data, **kwargs):
  return coco.read_coco(*_write_dataset(tmp_path, data), **kwargs)


def _instances_by_id(dataset):
  return {instance.annotation_id: (record.image_id, instance)
          for record in dataset.records for instance in record.instances}


def _masks_by_id(dataset):
  masks = {}
  for record in dataset.records:
    for instance, mask in zip(record.instances, dataset.load_masks(record)):
      masks[instance.annotation_id] = mask
  return masks


def _assert_clean_data_intact(dataset, clean_dataset):
  """The good annotations next to a bad entry are kept unchanged."""
  got = _instances_by_id(dataset)
  for annotation_id, want in _instances_by_id(clean_dataset).items():
    assert got[annotation_id] == want
  got_masks = _masks_by_id(dataset)
  for annotation_id, mask in _masks_by_id(clean_dataset).items():
    np.testing.assert_array_equal(got_masks[annotation_id], mask)
  assert dataset.categories == clean_dataset.categories


def _assert_problem(problem, kind, file, record, reason_part, action_part):
  assert problem.kind == kind
  assert problem.record == record
  assert reason_part in problem.reason
  assert action_part in problem.action
  text = str(problem)
  assert os.path.basename(file) in text
  assert f': {record}: ' in text and problem.reason in text


@pytest.fixture
def clean_dataset(tmp_path_factory):
  return _read(tmp_path_factory.mktemp('clean'), _clean_json())


# Decoding ---------------------------------------------------------------------


def test_clean_dataset_has_no_problems(clean_dataset):
  assert clean_dataset.problems == [] and clean_dataset.notes == []
  assert len(clean_dataset.records) == 2
  assert clean_dataset.num_instances == 3 and clean_dataset.num_classes == 2
  assert [(c.id, c.name, c.index) for c in clean_dataset.categories] == [
      (1, 'cat', 1), (3, 'dog', 2)]
  assert set(clean_dataset.category_by_id()) == {1, 3}
  assert clean_dataset.max_instances_per_image == 2
  assert clean_dataset.records[0].mode == 'RGB'
  crowd = _instances_by_id(clean_dataset)[2][1]
  assert crowd.is_crowd and crowd.class_index == 2
  np.testing.assert_array_equal(
      clean_dataset.load_image(clean_dataset.records[1]), _random_rgb(1))


def test_masks_match_pycocotools_ann_to_mask(tmp_path):
  annotations_path, images_dir = _write_dataset(tmp_path, _clean_json())
  dataset = coco.read_coco(annotations_path, images_dir)
  with contextlib.redirect_stdout(io.StringIO()):
    reference = COCO(annotations_path)
  masks = _masks_by_id(dataset)
  assert sorted(masks) == [1, 2, 3]
  for annotation_id, mask in masks.items():
    expected = reference.annToMask(reference.anns[annotation_id])
    assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(mask, expected)
    instance = _instances_by_id(dataset)[annotation_id][1]
    assert instance.area == mask.sum()
    assert isinstance(instance.rle['counts'], bytes)


def test_compressed_rle_parser_agrees_with_pycocotools():
  """The parser that guards pycocotools' unchecked C decoder must be exact."""
  rng = np.random.default_rng(0)
  for _ in range(50):
    height, width = rng.integers(1, 60, size=2)
    mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(mask))
    runs = coco._compressed_runs(rle['counts'].decode('ascii'))
    assert runs == _uncompressed_counts(mask)


def test_image_without_instances_has_empty_masks(tmp_path):
  data = _clean_json()
  data['annotations'] = [a for a in data['annotations'] if a['image_id'] == 1]
  dataset = _read(tmp_path, data)
  assert dataset.load_masks(dataset.records[1]).shape == (0, SIZE, SIZE)


def test_missing_bbox_is_derived_from_mask(tmp_path):
  data = _clean_json()
  del data['annotations'][2]['bbox']
  dataset = _read(tmp_path, data)
  assert dataset.problems == []
  assert _instances_by_id(dataset)[3][1].box == (18.0, 4.0, 9.0, 9.0)


# Bad annotations --------------------------------------------------------------

BAD_ANNOTATIONS = [  # (entry, kind, record, part of the reason)
    (_annotation(segmentation=[[1, 1, 10, 10]]), 'degenerate_polygon',
     'annotation 100', 'polygon 0 has 2 points, needs at least 3'),
    (_annotation(segmentation=[[1, 1, 10, 10, 5]]), 'degenerate_polygon',
     'annotation 100', 'odd number (5)'),
    (_annotation(segmentation=[[1, 1, 10, math.nan, 5, 9]]),
     'degenerate_polygon', 'annotation 100', 'non-finite'),
    (_annotation(segmentation=[]), 'degenerate_polygon', 'annotation 100',
     'no polygons'),
    (_annotation(segmentation=[1, 1, 10, 1, 10, 10]), 'invalid_segmentation',
     'annotation 100', 'flat list'),
    (_annotation(segmentation=[[1, 1, 1e9, 1, 10, 10]]),
     'invalid_segmentation', 'annotation 100', 'far outside'),
    (_annotation(segmentation={'size': [16, 32], 'counts': [0, 512]}),
     'invalid_segmentation', 'annotation 100',
     'RLE size [16, 32] differs from the image size [32, 32]'),
    (_annotation(segmentation={'size': [32, 32], 'counts': [0, 2000]}),
     'invalid_segmentation', 'annotation 100', 'cover 2000 pixels'),
    (_annotation(segmentation={'size': [32, 32], 'counts': [5, -5, 1024]}),
     'invalid_segmentation', 'annotation 100', 'non-negative'),
    (_annotation(segmentation={'size': [32, 32], 'counts': 'P\\1\x01'}),
     'invalid_segmentation', 'annotation 100', 'invalid character'),
    (_annotation(segmentation={'size': [32, 32], 'counts': 'Pa'}),
     'invalid_segmentation', 'annotation 100', 'ends mid-number'),
    (_annotation(segmentation={'size': [32, 32], 'counts': '0`0'}),
     'invalid_segmentation', 'annotation 100', 'cover'),
    (_annotation(segmentation='mask.png'), 'invalid_segmentation',
     'annotation 100', 'not polygons or RLE'),
    (_annotation(segmentation={'size': [32, 32], 'counts': [1024]}),
     'zero_area', 'annotation 100', 'no pixels'),
    (_annotation(segmentation=[[40, 40, 50, 40, 50, 50]]), 'zero_area',
     'annotation 100', 'no pixels'),
    (_annotation(bbox=[4, 4, 0, 8]), 'zero_area', 'annotation 100',
     'has no area'),
    (_annotation(bbox=[40, 4, 5, 8]), 'box_outside_image', 'annotation 100',
     'lies outside the 32x32 image'),
    (_annotation(bbox=[4, 4, math.nan, 8]), 'invalid_field', 'annotation 100',
     '"bbox"'),
    (_annotation(bbox=[4, 4, 8]), 'invalid_field', 'annotation 100', '"bbox"'),
    (_annotation(category_id=7), 'unknown_category', 'annotation 100',
     'category_id 7 is not in the categories list'),
    (_annotation(category_id=0), 'background_category', 'annotation 100',
     'background'),
    (_annotation(category_id='1'), 'invalid_field', 'annotation 100',
     '"category_id"'),
    (_annotation(image_id=99), 'unknown_image', 'annotation 100',
     'image_id 99 is not in the images list'),
    (_annotation(image_id=None), 'invalid_field', 'annotation 100',
     '"image_id"'),
    (_annotation(iscrowd=2), 'invalid_field', 'annotation 100', '"iscrowd"'),
    (_annotation(annotation_id='100'), 'invalid_field', 'annotation #3',
     '"id"'),
    (_annotation(annotation_id=1.5), 'invalid_field', 'annotation #3', '"id"'),
    ({'image_id': 2, 'category_id': 1, 'segmentation': GOOD_POLYGON},
     'invalid_field', 'annotation #3', '"id" is missing'),
    ([1, 2, 3], 'invalid_field', 'annotation #3', 'not an object'),
]


@pytest.mark.parametrize(
    'entry,kind,record,reason', BAD_ANNOTATIONS,
    ids=[f'{case[1]}-{i}' for i, case in enumerate(BAD_ANNOTATIONS)])
def test_bad_annotation_is_skipped_and_reported(tmp_path, clean_dataset,
                                                entry, kind, record, reason):
  data = _clean_json()
  data['annotations'].append(entry)
  annotations_path, images_dir = _write_dataset(tmp_path, data)
  dataset = coco.read_coco(annotations_path, images_dir)
  assert len(dataset.problems) == 1, [str(p) for p in dataset.problems]
  problem = dataset.problems[0]
  _assert_problem(problem, kind, annotations_path, record, reason,
                  'skipped annotation')
  assert problem.file == annotations_path
  assert dataset.num_instances == 3
  _assert_clean_data_intact(dataset, clean_dataset)


def test_partly_bad_polygons_are_dropped(tmp_path, clean_dataset):
  data = _clean_json()
  polygons = GOOD_POLYGON + [[1, 1, 2, 2], [1, 2, 3]]
  data['annotations'].append(_annotation(segmentation=polygons))
  dataset = _read(tmp_path, data)
  [problem] = dataset.problems
  _assert_problem(problem, 'degenerate_polygon', 'instances.json',
                  'annotation 100', 'polygon 1 has 2 points',
                  'dropped 2 of 3 polygons')
  assert 'polygon 2 has an odd number' in problem.reason
  expected = mask_utils.decode(
      mask_utils.merge(mask_utils.frPyObjects(GOOD_POLYGON, SIZE, SIZE)))
  np.testing.assert_array_equal(_masks_by_id(dataset)[100], expected)
  _assert_clean_data_intact(dataset, clean_dataset)


def test_box_overhanging_the_border_is_clipped(tmp_path, clean_dataset):
  data = _clean_json()
  data['annotations'].append(_annotation(bbox=[-2.0, 20.0, 10.0, 20.0]))
  dataset = _read(tmp_path, data)
  [problem] = dataset.problems
  _assert_problem(problem, 'box_outside_image', 'instances.json',
                  'annotation 100', 'extends outside the 32x32 image',
                  'clipped to image')
  assert _instances_by_id(dataset)[100][1].box == (0.0, 20.0, 8.0, 12.0)
  _assert_clean_data_intact(dataset, clean_dataset)


def test_annotation_ids_zero_and_duplicates_are_renumbered(tmp_path,
                                                           clean_dataset):
  data = _clean_json()
  data['annotations'] += [
      _annotation(annotation_id=0), _annotation(annotation_id=3),
      _annotation(annotation_id=-4), _annotation(annotation_id=50)]
  dataset = _read(tmp_path, data)
  assert [(p.kind, p.record, p.action) for p in dataset.problems] == [
      ('annotation_id_0', 'annotation 0', 'renumbered to 51'),
      ('duplicate_annotation_id', 'annotation 3', 'renumbered to 52'),
      ('annotation_id_0', 'annotation -4', 'renumbered to 53'),
  ]
  assert 'COCOeval' in dataset.problems[0].reason
  ids = [a['id'] for a in dataset.to_coco_dict()['annotations']]
  assert sorted(ids) == [1, 2, 3, 50, 51, 52, 53]
  _assert_clean_data_intact(dataset, clean_dataset)


def test_cleaned_json_evaluates_to_perfect_ap(tmp_path):
  data = _clean_json()
  data['annotations'] += [
      _annotation(annotation_id=0),
      _annotation(annotation_id=1, image_id=1),
      _annotation(annotation_id=7, bbox=[-3, 4, 20, 8])]
  cleaned = _read(tmp_path, data).to_coco_dict()
  ids = [a['id'] for a in cleaned['annotations']]
  assert min(ids) >= 1 and len(set(ids)) == len(ids) == 6
  detections = [{'image_id': a['image_id'], 'category_id': a['category_id'],
                 'segmentation': a['segmentation'], 'score': 1.0}
                for a in json.loads(json.dumps(cleaned))['annotations']]
  with contextlib.redirect_stdout(io.StringIO()):
    ground_truth = COCO()
    ground_truth.dataset = copy.deepcopy(cleaned)
    ground_truth.createIndex()
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(detections),
                         'segm')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  assert evaluator.stats[0] == pytest.approx(1.0)


def _single_pixel(index):
  mask = np.zeros((SIZE, SIZE), np.uint8)
  mask.flat[index] = 1
  return mask


def test_crowded_image_gets_a_note_not_a_problem(tmp_path):
  data = _clean_json()
  data['annotations'] += [
      _annotation(annotation_id=100 + i, segmentation={
          'size': [SIZE, SIZE],
          'counts': _uncompressed_counts(_single_pixel(i))})
      for i in range(101)]
  dataset = _read(tmp_path, data, strict=True)
  assert dataset.problems == []
  [note] = dataset.notes
  assert note.kind == 'many_instances' and note.record == 'image 2'
  assert '102 instances' in note.reason and 'at most 100' in note.reason
  assert dataset.max_instances_per_image == 102


# Bad categories ---------------------------------------------------------------


def test_category_zero_is_dropped_with_its_annotations(tmp_path,
                                                       clean_dataset):
  data = _clean_json()
  data['categories'].insert(0, {'id': 0, 'name': 'background'})
  data['annotations'].append(_annotation(category_id=0))
  dataset = _read(tmp_path, data)
  # The category is a note (labelme's export always has it), an annotation
  # that uses it a problem.
  assert [(p.kind, p.record) for p in dataset.notes] == [
      ('background_category', 'category 0')]
  assert [(p.kind, p.record) for p in dataset.problems] == [
      ('background_category', 'annotation 100')]
  _assert_clean_data_intact(dataset, clean_dataset)


def test_invalid_and_duplicate_categories(tmp_path, clean_dataset):
  data = _clean_json()
  data['categories'] += [{'id': 3, 'name': 'again'}, {'id': 5}, 'bird']
  data['annotations'].append(_annotation(category_id=5))
  dataset = _read(tmp_path, data)
  assert [(p.kind, p.record) for p in dataset.problems] == [
      ('duplicate_category_id', 'category 3'),
      ('invalid_field', 'category 5'), ('invalid_field', 'category #4'),
      ('unknown_category', 'annotation 100')]
  assert 'was skipped' in dataset.problems[-1].reason
  _assert_clean_data_intact(dataset, clean_dataset)


# Bad images -------------------------------------------------------------------


def _add_image(data, image_id, file_name):
  """Adds an image entry and one annotation on it."""
  data['images'].append({'id': image_id, 'file_name': file_name,
                         'height': SIZE, 'width': SIZE})
  data['annotations'].append(
      _annotation(annotation_id=100 + image_id, image_id=image_id))


def _write_truncated_png(path):
  buffer = io.BytesIO()
  Image.fromarray(_random_rgb(5)).save(buffer, 'PNG')
  path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])


@pytest.mark.parametrize('case,kind,reason', [
    ('missing', 'missing_image', 'does not exist'),
    ('not_image', 'unreadable_image', 'not a readable image'),
    ('truncated', 'corrupt_image', 'cannot be decoded'),
    ('wrong_size', 'image_size_mismatch',
     'file is 20x32 but the json says 32x32'),
])
def test_bad_image_is_skipped_with_its_annotations(tmp_path, clean_dataset,
                                                   case, kind, reason):
  images_dir = tmp_path / 'images'
  images_dir.mkdir()
  bad = images_dir / 'bad.png'
  if case == 'not_image':
    bad.write_text('this is not an image')
  elif case == 'truncated':
    _write_truncated_png(bad)
  elif case == 'wrong_size':
    Image.new('RGB', (SIZE, 20)).save(bad)
  data = _clean_json()
  _add_image(data, 7, 'bad.png')
  dataset = _read(tmp_path, data, verify_images='full')
  [problem] = dataset.problems
  _assert_problem(problem, kind, str(bad), 'image 7', reason,
                  'skipped image and its 1 annotation')
  assert problem.file == str(bad)
  assert [r.image_id for r in dataset.records] == [1, 2]
  _assert_clean_data_intact(dataset, clean_dataset)


def test_truncated_image_passes_header_check_but_fails_to_load(tmp_path):
  (tmp_path / 'images').mkdir()
  _write_truncated_png(tmp_path / 'images' / 'bad.png')
  data = _clean_json()
  _add_image(data, 7, 'bad.png')
  dataset = _read(tmp_path, data, verify_images='header')
  assert dataset.problems == []
  with pytest.raises(coco.DatasetError,
                     match='bad.png: image 7: cannot decode'):
    dataset.load_image(dataset.records[-1])


def test_verify_none_trusts_the_json(tmp_path):
  data = _clean_json()
  _add_image(data, 7, 'absent.png')
  dataset = _read(tmp_path, data, verify_images='none')
  assert dataset.problems == [] and len(dataset.records) == 3
  assert {r.mode for r in dataset.records} == {''}


def test_duplicate_and_invalid_image_entries(tmp_path, clean_dataset):
  data = _clean_json()
  data['images'] += [
      {'id': 2, 'file_name': 'a.png', 'height': SIZE, 'width': SIZE},
      {'id': '9', 'file_name': 'a.png', 'height': SIZE, 'width': SIZE},
      {'id': 10, 'file_name': 'a.png', 'height': 32.0, 'width': SIZE},
      {'id': 11, 'height': SIZE, 'width': SIZE},
      None,
  ]
  dataset = _read(tmp_path, data)
  assert [(p.kind, p.record) for p in dataset.problems] == [
      ('duplicate_image_id', 'image 2'), ('invalid_field', 'image #3'),
      ('invalid_field', 'image 10'), ('invalid_field', 'image 11'),
      ('invalid_field', 'image #6')]
  assert '"height"' in dataset.problems[2].reason
  assert '"file_name"' in dataset.problems[3].reason
  assert [r.file_name for r in dataset.records] == ['a.png', 'b.png']
  _assert_clean_data_intact(dataset, clean_dataset)


# Image modes ------------------------------------------------------------------


def _gray_to_rgb(gray):
  return np.repeat(gray[:, :, None], 3, axis=2)


def _mode_images():
  """(file name, Pillow image, expected uint8 RGB, Pillow mode on disk)."""
  rng = np.random.default_rng(3)
  gray16 = rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)
  gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
  rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
  indices = rng.integers(0, 4, (SIZE, SIZE), dtype=np.uint8)
  palette = np.array([[0, 0, 0], [255, 0, 0], [10, 200, 30], [7, 8, 9]],
                     np.uint8)
  palette_image = Image.fromarray(indices, 'P')
  palette_image.putpalette(palette.ravel().tolist())
  return [
      ('gray16.png', Image.fromarray(gray16),
       _gray_to_rgb((gray16 >> 8).astype(np.uint8)), 'I;16'),
      ('gray.png', Image.fromarray(gray), _gray_to_rgb(gray), 'L'),
      ('rgba.png', Image.fromarray(rgba, 'RGBA'), rgba[:, :, :3], 'RGBA'),
      ('palette.png', palette_image, palette[indices], 'P'),
  ]


def test_non_rgb_images_load_as_uint8_rgb(tmp_path):
  images_dir = tmp_path / 'images'
  images_dir.mkdir()
  data = {'images': [], 'annotations': [],
          'categories': [{'id': 1, 'name': 'cat'}]}
  cases = _mode_images()
  for image_id, (name, image, _, _) in enumerate(cases, start=1):
    image.save(images_dir / name)
    data['images'].append({'id': image_id, 'file_name': name,
                           'height': SIZE, 'width': SIZE})
  dataset = _read(tmp_path, data, verify_images='full', strict=True)
  assert [note.kind for note in dataset.notes] == ['converted_image'] * 4
  assert 'mode I;16, 16-bit converted to 8-bit RGB' in dataset.notes[0].reason
  for record, (name, _, expected, mode) in zip(dataset.records, cases):
    assert record.mode == mode
    pixels = dataset.load_image(record)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(pixels, expected, err_msg=name)


# Strict mode and unreadable json ----------------------------------------------


def test_strict_mode_lists_every_problem(tmp_path):
  data = _clean_json()
  data['annotations'] += [_annotation(annotation_id=100 + i, category_id=9)
                          for i in range(25)]
  data['annotations'].append(_annotation(segmentation=[[1, 1, 10, 10]]))
  annotations_path, images_dir = _write_dataset(tmp_path, data)
  with pytest.raises(coco.DatasetError) as raised:
    coco.read_coco(annotations_path, images_dir, strict=True)
  message = str(raised.value)
  assert '26 problem(s)' in message and 'and 6 more' in message
  assert (f'{annotations_path}: annotation 100: category_id 9 is not in the '
          'categories list (skipped annotation)') in message
  assert coco.read_coco(annotations_path, images_dir).num_instances == 3


@pytest.mark.parametrize('content,reason', [
    ('{"images": [', 'invalid json'),
    ('[1, 2]', 'not an object'),
    ('{"images": [], "annotations": []}', 'no "categories" list'),
    ('{"images": {}, "annotations": [], "categories": []}', '"images" is dict'),
    (b'\xff\xfe', 'not UTF-8'),
    ('[' * 100000 + ']' * 100000, 'nested too deeply'),
])
def test_unreadable_json_raises_dataset_error(tmp_path, content, reason):
  path = tmp_path / 'broken.json'
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  with pytest.raises(coco.DatasetError, match=reason) as raised:
    coco.read_coco(str(path), str(tmp_path))
  assert str(path) in str(raised.value)


def test_missing_json_file_raises_dataset_error(tmp_path):
  with pytest.raises(coco.DatasetError, match='absent.json: cannot read'):
    coco.read_coco(str(tmp_path / 'absent.json'), str(tmp_path))


def _fuzz_strategy(st):
  """COCO-shaped json whose fields are often right, often wrong in any way."""
  number = (st.integers(-3, 40) | st.floats(allow_nan=True) |
            st.integers(-2**70, 2**70) | st.booleans())
  anything = st.recursive(
      st.none() | number | st.text(max_size=3),
      lambda inner: (st.lists(inner, max_size=4) |
                     st.dictionaries(st.text(max_size=3), inner, max_size=3)),
      max_leaves=10)
  runs = st.lists(st.integers(0, 20), min_size=1, max_size=6)
  segmentation = (
      st.lists(st.lists(st.floats(-10, 10), min_size=6, max_size=10),
               min_size=1, max_size=3) |
      runs.map(lambda r: {'size': [4, 5], 'counts': r + [max(0, 20 - sum(r))]})
      | st.just({'size': [4, 5], 'counts': '34='}) |
      st.lists(st.lists(number, max_size=12), max_size=3) |
      st.fixed_dictionaries({
          'size': st.lists(st.integers(0, 6), min_size=2, max_size=2),
          'counts': (st.lists(st.integers(-2, 21), max_size=6) |
                     st.text(alphabet=[chr(c) for c in range(40, 115)],
                             max_size=8))}) |
      anything)
  annotation = st.fixed_dictionaries(
      {'id': st.integers(-2, 5) | anything,
       'image_id': st.just(1) | anything,
       'category_id': st.just(1) | anything,
       'segmentation': segmentation},
      optional={'bbox': (st.lists(st.floats(-3, 8), min_size=4, max_size=4) |
                         anything),
                'iscrowd': st.integers(-1, 2) | anything})
  image = st.just({'id': 1, 'file_name': 'a.png', 'height': 4, 'width': 5})
  category = st.just({'id': 1, 'name': 'x'})
  return anything | st.fixed_dictionaries({
      'images': st.lists(image | anything, max_size=3),
      'annotations': st.lists(annotation | anything, max_size=6),
      'categories': st.lists(category | anything, max_size=3)})


def test_random_structures_never_crash(tmp_path):
  """A short fuzz: only DatasetError (a ValueError) with a message escapes."""
  hypothesis = pytest.importorskip('hypothesis')

  @hypothesis.settings(max_examples=80, deadline=None, database=None)
  @hypothesis.given(_fuzz_strategy(hypothesis.strategies))
  def read_anything(data):
    try:
      dataset = coco.read_coco_dict(data, str(tmp_path), verify_images='none')
    except ValueError as error:
      assert str(error)
      return
    for record in dataset.records:
      for instance, mask in zip(record.instances, dataset.load_masks(record)):
        assert mask.sum() == instance.area > 0
    json.dumps(dataset.to_coco_dict())

  read_anything()


# check_dataset ----------------------------------------------------------------


def _bad_set(tmp_path):
  """3 images (one missing, with 2 annotations), 1 bad and 1 renumbered."""
  data = _clean_json()
  _add_image(data, 7, 'absent.png')
  data['annotations'] += [
      _annotation(annotation_id=0), _annotation(category_id=9),
      _annotation(annotation_id=107, image_id=7)]
  return _write_dataset(tmp_path, data)


def test_check_dataset_tool(tmp_path):
  annotations_path, images_dir = _bad_set(tmp_path)
  command = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'check_dataset'),
             f'--annotations={annotations_path}', f'--images={images_dir}']
  result = subprocess.run(command, capture_output=True, text=True,
                          cwd=tmp_path, check=False)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[-1] == 'images=2 instances=4 problems=3'
  assert '  1 cat: 2' in lines and '  3 dog: 2' in lines
  assert '  missing_image: 1' in lines and '  unknown_category: 1' in lines
  assert (f'  {images_dir}/absent.png: image 7: image file does not exist '
          '(skipped image and its 2 annotations)') in lines
  strict = subprocess.run(command + ['--strict'], capture_output=True,
                          text=True, cwd=tmp_path, check=False)
  assert strict.returncode == 1
  assert strict.stdout.splitlines()[-1] == 'images=2 instances=4 problems=3'


def test_check_dataset_caps_problem_lines(tmp_path):
  data = _clean_json()
  data['annotations'] += [_annotation(annotation_id=100 + i, category_id=9)
                          for i in range(60)]
  output = io.StringIO()
  status = check_dataset.check(*_write_dataset(tmp_path, data), out=output)
  lines = output.getvalue().splitlines()
  assert status == 0
  assert sum('category_id 9' in line for line in lines) == 50
  assert '  ... and 10 more' in lines
  assert lines[-1] == 'images=2 instances=3 problems=60'


def test_check_dataset_unreadable_json(tmp_path, capsys):
  (tmp_path / 'bad.json').write_text('{')
  assert check_dataset.check(str(tmp_path / 'bad.json'), str(tmp_path)) == 2
  assert 'bad.json: invalid json' in capsys.readouterr().err
