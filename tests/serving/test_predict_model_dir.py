"""bin/predict --model_dir: a training directory's checkpoint runs, with
test-time augmentation chosen on the command line."""

import json
import os
import shutil
import sys
import tarfile

import numpy as np
import pytest
from absl import app

import golden
from in_process import tool_flags
from masklab_tf.tools import predict


@pytest.fixture(scope='module')
def golden_run(tmp_path_factory):
  """The golden model directory (configs.json, ckpt-1) and a folder of the
  three golden shapes images."""
  work = tmp_path_factory.mktemp('golden_dir')
  with tarfile.open(os.path.join(golden.GOLDEN, 'model.tar.xz')) as tar:
    tar.extractall(work, filter='data')
  images = work / 'images'
  images.mkdir()
  names = [n for n in golden.record()['images'] if n.endswith('.png')]
  for name in names:
    shutil.copy(os.path.join(golden.GOLDEN, name), images)
  # The class names as bin/train records them, under other ids than the
  # class indices: results must carry these.
  with open(work / 'model' / 'categories.json', 'w') as f:
    json.dump({'categories': [{'id': 10 + c['id'], 'name': c['name']}
                              for c in golden.record()['categories']]}, f)
  return {'model_dir': str(work / 'model'), 'images': str(images),
          'names': sorted(names)}


def _predict(run, output_dir, *extra):
  with tool_flags(predict, f'--model_dir={run["model_dir"]}',
                  f'--images={run["images"]}', f'--output_dir={output_dir}',
                  '--score_threshold=0', *extra) as argv:
    assert predict.main(argv) == 0
  with open(os.path.join(output_dir, 'results.json')) as f:
    return json.load(f)


def test_a_checkpoint_predicts_what_its_savedmodel_recorded_and_tta_changes_it(
    golden_run, tmp_path):
  """Without augmentation: the golden SavedModel's recorded outputs, image
  by image (ids are the files' positions). With --test_flip: other
  detections, every one a valid result."""
  expected = np.load(os.path.join(golden.GOLDEN, 'expected_outputs.npz'))
  order = [n for n in golden.record()['images'] if n.endswith('.png')]
  plain = _predict(golden_run, tmp_path / 'plain')
  for image_id, name in enumerate(golden_run['names'], start=1):
    i = order.index(name)
    got = sorted((r for r in plain if r['image_id'] == image_id),
                 key=lambda r: -r['score'])
    num = int(expected[f'{i}/num_detections'])
    assert len(got) == num > 0
    boxes = expected[f'{i}/detection_boxes'][:num]  # ymin, xmin, ymax, xmax
    # The golden test's tolerance: recorded on a Zen 4 (AVX-512 kernels).
    np.testing.assert_allclose(
        [r['bbox'] for r in got],
        np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                  boxes[:, 2] - boxes[:, 0]], -1), atol=5e-4, rtol=1e-3)
    np.testing.assert_allclose([r['score'] for r in got],
                               expected[f'{i}/detection_scores'][:num],
                               atol=5e-4)
  assert sorted(os.listdir(tmp_path / 'plain')) == sorted(
      ['results.json'] + [f'{n[:-4]}_{kind}.png' for n in golden_run['names']
                          for kind in ('predictions', 'semantic')])

  augmented = _predict(golden_run, tmp_path / 'tta', '--test_flip')
  assert len(augmented) == len(plain)  # max_detections each
  assert sorted(r['score'] for r in augmented) != sorted(
      r['score'] for r in plain)
  assert {r['category_id'] for r in plain} <= {11, 12, 13, 14}
  for r in augmented:
    assert 11 <= r['category_id'] <= 14 and 0 <= r['score'] <= 1


def test_test_time_flags_need_a_model_dir(golden_run, tmp_path):
  with pytest.raises(app.UsageError, match='--test_flip applies to '
                     '--model_dir; an exported model runs the test-time'):
    with tool_flags(predict, '--saved_model=/nonexistent',
                    f'--images={golden_run["images"]}',
                    f'--output_dir={tmp_path}', '--test_flip') as argv:
      predict.main(argv)
  with pytest.raises(app.UsageError, match='--test_scales=0,1: give '
                     'positive factors'):
    _predict(golden_run, tmp_path, '--test_scales=0,1')
  with pytest.raises(app.UsageError, match='no configs.json'):
    with tool_flags(predict, f'--model_dir={tmp_path}',
                    f'--images={golden_run["images"]}',
                    f'--output_dir={tmp_path}') as argv:
      predict.main(argv)


def test_evaluate_scores_the_merged_passes(golden_run, shapes_dir,
                                           tmp_path, monkeypatch):
  """bin/evaluate --test_flip: pycocotools scores the merged passes, and
  metrics.json says so; a SavedModel refuses the flag."""
  from masklab_tf.tools import evaluate  # pylint: disable=g-import-not-at-top
  val = os.path.join(shapes_dir, 'val')
  args = (f'--model_dir={golden_run["model_dir"]}',
          f'--annotations={val}/annotations.json', f'--images={val}/images',
          f'--output_dir={tmp_path / "flip"}', '--test_flip')
  # The run's configs take the flags typed on the command line.
  monkeypatch.setattr(sys, 'argv', ['bin/evaluate', *args])
  with tool_flags(evaluate, *args) as argv:
    evaluate.main(argv)
  with open(tmp_path / 'flip' / 'metrics.json') as f:
    metrics = json.load(f)
  assert 'AP' in metrics['mask']
  assert metrics['test_time']['flip'] and metrics['test_time']['scales'] == [
      1.0]
  with open(tmp_path / 'flip' / 'results.json') as f:
    assert json.load(f)
  with pytest.raises(app.UsageError, match='--test_flip: a SavedModel runs '
                     'the test-time augmentation it was exported with'):
    with tool_flags(evaluate, '--saved_model=/nonexistent',
                    f'--annotations={val}/annotations.json',
                    f'--images={val}/images', f'--output_dir={tmp_path}',
                    '--test_flip') as argv:
      evaluate.main(argv)
