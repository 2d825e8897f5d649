"""A messy training set: training runs on, skips and counts, and says what
it skipped and why at the start and at the end."""

import io
import json
import logging
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from masklab_tf.training import trainer as trainer_lib


def _png_bytes(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture(scope='module')
def messy_set(shapes_train, tmp_path_factory):
  """The small shapes train split plus every kind of bad entry."""
  annotations, images = shapes_train
  root = tmp_path_factory.mktemp('messy')
  shutil.copytree(images, root / 'images')
  data = json.load(open(annotations))
  next_image = max(i['id'] for i in data['images']) + 1
  next_ann = max(a['id'] for a in data['annotations']) + 1

  def add_image(name, width, height, payload=None, array=None):
    nonlocal next_image
    if array is not None:
      payload = _png_bytes(array)
    if payload is not None:
      (root / 'images' / name).write_bytes(payload)
    data['images'].append({'id': next_image, 'file_name': name,
                           'width': width, 'height': height})
    next_image += 1
    return next_image - 1

  def add_box(image_id, bbox, segmentation=None, area=None):
    nonlocal next_ann
    x, y, w, h = bbox
    data['annotations'].append({
        'id': next_ann, 'image_id': image_id, 'category_id': 1,
        'bbox': bbox, 'iscrowd': 0, 'area': area if area is not None else
        w * h, 'segmentation': segmentation if segmentation is not None
        else [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    next_ann += 1

  good = _png_bytes(np.full((64, 64, 3), 90, np.uint8))
  jpeg = io.BytesIO()
  Image.new('RGB', (64, 64), (10, 200, 30)).save(jpeg, 'JPEG')
  corrupt = add_image('corrupt.jpg', 64, 64,
                      jpeg.getvalue()[:20] + b'\x00garbage' * 50)
  add_box(corrupt, [5, 5, 20, 20])
  truncated = add_image('truncated.png', 64, 64, good[:len(good) // 2])
  add_box(truncated, [5, 5, 20, 20])
  missing = add_image('missing.png', 64, 64)
  add_box(missing, [5, 5, 20, 20])
  odd = add_image('odd_annotations.png', 64, 64, good)
  add_box(odd, [10, 10, 0, 0], area=0)  # Zero area.
  add_box(odd, [10, 10, 8, 8], segmentation=[[10, 10, 18, 10]])  # 2 points.
  add_box(odd, [float('nan'), 10, 8, 8],
          segmentation=[[float('nan'), 10, 18, 10, 18, 18]])
  add_box(odd, [30, 30, 20, 20])  # And one good instance.
  add_image('empty.png', 64, 64, good)  # No instances at all.
  crowded = add_image('crowded.png', 200, 200,
                      array=np.full((200, 200, 3), 120, np.uint8))
  for i in range(500):
    add_box(crowded, [(i % 25) * 8, (i // 25) * 8 + 20, 6, 6])
  add_image('huge.png', 8000, 8000,
            array=np.full((8000, 8000, 3), 60, np.uint8))
  path = root / 'annotations.json'
  # NaN is not JSON, but Python writes it and real files carry it.
  path.write_text(json.dumps(data))
  return str(path), str(root / 'images')


def test_training_skips_counts_and_reports_bad_data(messy_set, tmp_path,
                                                    caplog, shapes_configs):
  configs = shapes_configs('--train_steps=7', '--shuffle_buffer=20',
                           split=messy_set)
  caplog.set_level(logging.WARNING)
  trainer = trainer_lib.Trainer(configs, str(tmp_path))
  trainer.restore_or_initialise()
  # 7 steps of 2 images cover the first epoch of the 13 readable records.
  losses = trainer.train()
  assert trainer.current_step == 7 and np.isfinite(losses['total'])
  counts = trainer.train_set.problem_counts()
  assert counts.get('missing_image') == 1
  assert counts.get('unreadable_image', 0) + counts.get(
      'corrupt_image', 0) >= 1  # corrupt.jpg fails already at its header.
  assert counts.get('zero_area') == 1
  assert counts.get('degenerate_polygon', 0) + counts.get(
      'invalid_segmentation', 0) + counts.get('invalid_field', 0) >= 2
  report = trainer.data_report()
  for name in ('corrupt.jpg', 'missing.png', 'annotations.json'):
    assert name in report, report
  # Annotation problems name the json and the annotation id.
  assert len(re.findall(r'annotations\.json: annotation \d+: ', report)) == 3
  # The truncated PNG passes the header check and fails to decode while
  # training: skipped, counted, reported by name.
  # (Once per time it came up: the pipeline reads ahead into epoch 2.)
  messages = trainer.skipped.messages
  assert messages and all(m.count('truncated.png') == 1 for m in messages)
  assert 'failed to decode during training' in caplog.text
  kept = {r.file_name for r in trainer.train_set.records}
  assert {'empty.png', 'crowded.png', 'huge.png'} <= kept
  crowded = next(r for r in trainer.train_set.records
                 if r.file_name == 'crowded.png')
  assert len(crowded.instances) == 500
