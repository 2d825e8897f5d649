"""bin/check_dataset says what it knows: notes with their meaning, the pixel
limit in force, over-limit images, and a failing status when nothing usable
is left."""

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image
import pytest

from masklab_tf.data import coco
from masklab_tf.tools import check_dataset

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16
POLYGON = [[2, 2, 10, 2, 10, 10, 2, 10]]


def _png(path, mode='RGB'):
  pixels = np.full((SIZE, SIZE, 3), 120, np.uint8)
  Image.fromarray(pixels).convert(mode).save(path)


def _png_header(path, height, width):
  """A PNG that is only a header claiming height x width RGB pixels."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
                   chunk(b'IEND', b''))


def _labelme_export(root, num_images=2):
  """What labelme's labelme2coco.py writes: category 0 is _background_."""
  (root / 'JPEGImages').mkdir(parents=True)
  images, annotations = [], []
  for image_id in range(num_images):
    name = f'JPEGImages/{image_id}.png'
    _png(root / name)
    images.append({'license': 0, 'url': None, 'file_name': name,
                   'height': SIZE, 'width': SIZE, 'date_captured': None,
                   'id': image_id})
    # labelme numbers annotations from 0, which the reader renumbers (a
    # problem of its own, annotation_id_0); here they start at 1.
    annotations.append({'id': image_id + 1, 'image_id': image_id,
                        'category_id': 1, 'segmentation': POLYGON,
                        'area': 64.0, 'bbox': [2, 2, 8, 8], 'iscrowd': 0})
  data = {'info': {}, 'licenses': [], 'images': images,
          'type': 'instances', 'annotations': annotations,
          'categories': [
              {'supercategory': None, 'id': 0, 'name': '_background_'},
              {'supercategory': None, 'id': 1, 'name': 'cat'}]}
  (root / 'annotations.json').write_text(json.dumps(data))
  return str(root / 'annotations.json'), str(root)


def _check(annotations, images, capsys, **kwargs):
  out = io.StringIO()
  status = check_dataset.check(annotations, images, out=out, **kwargs)
  return status, out.getvalue().splitlines(), capsys.readouterr().err


def test_labelme_background_category_is_a_note(tmp_path, capsys):
  annotations, images = _labelme_export(tmp_path)
  status, lines, _ = _check(annotations, images, capsys, strict=True)
  assert status == 0
  assert lines[-1] == 'images=2 instances=2 problems=0'
  assert ('  background_category: 1 category; category id 0 is reserved '
          'for background (labelme\'s COCO export writes _background_ '
          'there); the category is skipped, annotations that use it are '
          'problems') in lines


def test_each_note_kind_says_what_it_means_once(tmp_path, capsys):
  annotations, images = _labelme_export(tmp_path, num_images=3)
  data = json.loads(open(annotations).read())
  for image_id in (1, 2):  # two crowded images, one grayscale
    data['annotations'] += [
        {'id': 1000 * image_id + i, 'image_id': image_id, 'category_id': 1,
         'segmentation': [[i % 12, 0, i % 12 + 3, 0, i % 12 + 3, 3]]}
        for i in range(101)]
  _png(tmp_path / 'JPEGImages' / '0.png', mode='L')
  (tmp_path / 'annotations.json').write_text(json.dumps(data))
  status, lines, _ = _check(annotations, images, capsys)
  assert status == 0
  text = '\n'.join(lines)
  assert text.count('COCOeval\'s headline AP counts at most 100') == 1
  assert ('  many_instances: 2 images; images with more than 100 '
          'instances: COCOeval\'s headline AP counts at most 100 detections '
          'per image, so their recall is capped; training keeps the '
          'largest max_instances of them') in lines
  assert ('  converted_image: 1 image; images not stored as 8-bit RGB are '
          'converted on every read (16-bit keeps the high byte, alpha is '
          'dropped)') in lines


def test_no_usable_image_or_instance_fails(tmp_path, capsys):
  annotations, images = _labelme_export(tmp_path)
  for name in ('0.png', '1.png'):
    os.remove(tmp_path / 'JPEGImages' / name)
  status, lines, err = _check(annotations, images, capsys)
  assert status == 1
  assert lines[-1] == 'images=0 instances=0 problems=2'
  assert f'error: {annotations}: no usable image is left' in err

  data = json.loads(open(annotations).read())
  _png(tmp_path / 'JPEGImages' / '0.png')
  data['annotations'] = []
  (tmp_path / 'annotations.json').write_text(json.dumps(data))
  status, lines, err = _check(annotations, images, capsys)
  assert status == 1
  assert lines[-1] == 'images=1 instances=0 problems=1'
  assert 'no usable instance is left' in err


def test_the_pixel_limit_in_force_is_printed(tmp_path, capsys, monkeypatch):
  annotations, images = _labelme_export(tmp_path)
  _, lines, _ = _check(annotations, images, capsys)
  limit = 2 * Image.MAX_IMAGE_PIXELS
  assert (f'pixel limit: {limit} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS = '
          f'2 x {Image.MAX_IMAGE_PIXELS}, where Pillow refuses images as '
          'decompression bombs); larger images are skipped as '
          'too_many_pixels') in lines
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)
  _, lines, _ = _check(annotations, images, capsys)
  assert ('pixel limit: none (PIL.Image.MAX_IMAGE_PIXELS is None: no '
          'limit)') in lines


def test_an_over_limit_image_is_a_problem_of_its_own(tmp_path, capsys):
  annotations, images = _labelme_export(tmp_path, num_images=3)
  data = json.loads(open(annotations).read())
  # Image 1: the header claims 20000 x 20000 pixels, the json 16 x 16.
  _png_header(tmp_path / 'JPEGImages' / '1.png', 20000, 20000)
  # Image 2: the json and the header both claim 20000 x 20000.
  _png_header(tmp_path / 'JPEGImages' / '2.png', 20000, 20000)
  data['images'][2].update(height=20000, width=20000)
  (tmp_path / 'annotations.json').write_text(json.dumps(data))
  for verify_images in ('header', 'full'):
    dataset = coco.read_coco(annotations, images,
                             verify_images=verify_images)
    assert [(p.kind, p.record) for p in dataset.problems] == [
        ('too_many_pixels', 'image 1'), ('too_many_pixels', 'image 2')]
    header, json_size = dataset.problems
    assert header.file.endswith('JPEGImages/1.png')
    assert 'Image size (400000000 pixels) exceeds limit' in header.reason
    assert json_size.file.endswith('JPEGImages/2.png')
    assert (f'the json says 20000x20000 = 400000000 pixels, above the pixel '
            f'limit of {2 * Image.MAX_IMAGE_PIXELS}') in json_size.reason
  status, lines, _ = _check(annotations, images, capsys, strict=True)
  assert status == 1 and '  too_many_pixels: 2' in lines


def test_a_lowered_limit_applies_to_the_json_size(tmp_path, capsys,
                                                  monkeypatch):
  annotations, images = _labelme_export(tmp_path)
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  dataset = coco.read_coco(annotations, images, verify_images='none')
  assert [p.kind for p in dataset.problems] == ['too_many_pixels'] * 2
  assert 'above the pixel limit of 200' in dataset.problems[0].reason


@pytest.mark.parametrize('allow', [False, True])
def test_outside_images_flag(tmp_path, allow):
  annotations, images = _labelme_export(tmp_path / 'set')
  _png(tmp_path / 'secret.png')
  data = json.loads(open(annotations).read())
  data['images'][1]['file_name'] = '../secret.png'
  (tmp_path / 'set' / 'annotations.json').write_text(json.dumps(data))
  command = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'check_dataset'),
             f'--annotations={annotations}', f'--images={images}', '--strict']
  if allow:
    command.append('--allow_outside_images')
  result = subprocess.run(command, capture_output=True, text=True,
                          cwd=tmp_path, check=False)
  lines = result.stdout.splitlines()
  if allow:
    assert result.returncode == 0, result.stderr
    assert lines[-1] == 'images=2 instances=2 problems=0'
    assert any(line.startswith('  outside_images: 1 image; ')
               for line in lines)
  else:
    assert result.returncode == 1
    assert lines[-1] == 'images=1 instances=1 problems=1'
    assert '  outside_images: 1' in lines
