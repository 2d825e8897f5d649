"""bin/predict on a tiny exported SavedModel (tests/serving/conftest.py)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from pycocotools import coco as coco_api
from pycocotools import mask as mask_api

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREDICT = os.path.join(REPO, 'bin', 'predict')


def _run(*args):
  return subprocess.run([sys.executable, PREDICT, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_predict_writes_coco_results_and_pictures_and_skips_bad_files(
    exported_model, shapes_dir, tmp_path):
  """One run over the val images (the first left out, so running indices
  and image ids differ) plus a corrupt .png: the good files are processed
  and written, the corrupt one is reported by name, skipped, exit code 1."""
  annotations = os.path.join(shapes_dir, 'val', 'annotations.json')
  with open(annotations) as f:
    ground_truth = json.load(f)
  images = sorted(ground_truth['images'], key=lambda i: i['file_name'])[1:]
  folder = tmp_path / 'images'
  folder.mkdir()
  for image in images:
    shutil.copy(os.path.join(shapes_dir, 'val', 'images',
                             image['file_name']), folder)
  (folder / 'corrupt.png').write_bytes(b'\x89PNG not really' * 20)
  output_dir = tmp_path / 'out'

  result = _run(f'--saved_model={exported_model["export_dir"]}',
                f'--images={folder}', f'--output_dir={output_dir}',
                '--score_threshold=0.0', '--batch_size=2',
                f'--image_ids_from={annotations}')
  log = result.stdout + result.stderr
  assert result.returncode == 1, log[-3000:]
  assert re.search(r'corrupt\.png: cannot decode', result.stderr), log[-3000:]
  assert 'skipped 1 file' in result.stderr

  # One line per processed image: "path: n detections >= 0 (of m)".
  counts = {os.path.basename(path): int(m) for path, m in re.findall(
      r'^(\S+): \d+ detections >= 0 \(of (\d+)\)$', result.stdout, re.M)}
  assert sorted(counts) == [image['file_name'] for image in images]

  with open(output_dir / 'results.json') as f:
    results = json.load(f)
  assert results, 'random weights still give detections at threshold 0'
  by_id = {image['id']: image for image in images}
  for image in images:
    # Ids come from the json by file name (the first image is left out,
    # so a running index would be off by one).
    assert counts[image['file_name']] == sum(
        r['image_id'] == image['id'] for r in results)
  for r in results:
    image = by_id[r['image_id']]
    assert 1 <= r['category_id'] <= 4
    assert 0.0 <= r['score'] <= 1.0 and len(r['bbox']) == 4
    mask = mask_api.decode(r['segmentation'])
    assert mask.shape == (image['height'], image['width'])
  gt = coco_api.COCO()
  gt.dataset = ground_truth
  gt.createIndex()
  gt.loadRes(results)  # pycocotools' own checks of a results file

  for image in images:
    stem = os.path.splitext(image['file_name'])[0]
    size = (image['width'], image['height'])
    for suffix in ('predictions', 'semantic'):
      with Image.open(output_dir / f'{stem}_{suffix}.png') as picture:
        assert picture.size == size and picture.mode == 'RGB'
  assert not list(output_dir.glob('corrupt*'))


def test_predict_usage_errors_name_the_path(tmp_path):
  """No images matched and a folder without a SavedModel: clear errors
  naming the path, before any model work. In this process: bin/predict
  is predict.main behind absl's app.run, which prints a UsageError and
  exits non-zero (the test above runs the launcher itself)."""
  from absl import app
  from in_process import tool_flags
  from masklab_tf.tools import predict
  empty = tmp_path / 'empty'
  empty.mkdir()
  (tmp_path / 'a.png').write_bytes(b'')
  with tool_flags(predict, '--saved_model=/nonexistent', f'--images={empty}',
                  f'--output_dir={tmp_path / "out"}') as argv:
    with pytest.raises(app.UsageError) as no_images:
      predict.main(argv)
  assert f'--images={empty}: no image files matched' in str(no_images.value)
  with tool_flags(predict, f'--saved_model={empty}', f'--images={tmp_path}',
                  f'--output_dir={tmp_path / "out"}') as argv:
    with pytest.raises(app.UsageError) as no_model:
      predict.main(argv)
  assert f'--saved_model={empty}: no SavedModel' in str(no_model.value)


def test_predict_onnx_usage_errors_name_the_file(tmp_path):
  """--onnx with no file, with a file that is no ONNX model, and together
  with --saved_model: errors naming the flag and the path, before any
  image is read."""
  from absl import app
  from absl import flags
  from in_process import tool_flags
  from masklab_tf.tools import predict
  (tmp_path / 'a.png').write_bytes(b'')
  bad = tmp_path / 'bad.onnx'
  bad.write_bytes(b'not a model' * 10)
  for path, message in ((tmp_path / 'missing.onnx', 'no such ONNX model'),
                        (bad, 'ONNX Runtime cannot load it')):
    with tool_flags(predict, f'--onnx={path}', f'--images={tmp_path}',
                    f'--output_dir={tmp_path / "out"}') as argv:
      with pytest.raises(app.UsageError, match=message) as error:
        predict.main(argv)
    assert f'--onnx={path}' in str(error.value)
  with pytest.raises(flags.IllegalFlagValueError, match='onnx'):
    with tool_flags(predict, f'--onnx={bad}', f'--saved_model={tmp_path}',
                    f'--images={tmp_path}', f'--output_dir={tmp_path}'):
      pass
