"""The accuracy suite: its table from stored results, its baseline, its mIoU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.harness import jobs
from benchmarks.harness import results
from benchmarks.suites import accuracy
from masklab_tf.data import synthetic

SETTINGS = {'budget_s': 60.0, 'budget_mode': 'cpu', 'data_dir': '',
            'num_val': 4, 'data_seed': 1}


def _metrics(ap):
  return {'box': {'AP': ap - 1, 'AP50': 90.0, 'AP75': 70.0},
          'mask': {'AP': ap, 'AP50': 91.0, 'AP75': 71.0},
          'proposals': {'AR@10': 50.0, 'AR@100': 60.0}}


def test_report_rows_from_a_store_rescored_scores_win(tmp_path):
  store = jobs.Store(str(tmp_path / 'results.json'))
  trained = {'steps': 10, 'wall_s': 120.0, 'cpu_s': 60.0,
             'metrics': _metrics(70.0), 'mask_head_params': 98793,
             'semantic_miou': 80.0, 'instances_miou': 81.0,
             'semantic_miou_fused': 80.0, 'ms_per_image': 12.0}
  for name, result in (
      ('accuracy-masklab', trained),
      ('rescore-masklab', {'semantic_miou': 85.0, 'instances_miou': 86.0,
                           'semantic_miou_fused': 85.0, 'ms_per_image': 9.0}),
      ('accuracy-connected_components',
       {'steps': 0, 'metrics': {k: v for k, v in _metrics(30.0).items()
                                if k != 'proposals'}})):
    store.record(jobs.Job.parse(name), SETTINGS, jobs.Outcome(result))
  # Measured under other settings: not this run's, left out.
  store.record(jobs.Job('accuracy', 'fcis'), {}, jobs.Outcome(trained))
  result = accuracy.report(store, SETTINGS,
                           ['masklab', 'fcis', 'connected_components'])
  table = results.find_table(result, 'systems')
  masklab, components = table['rows']
  assert masklab == {
      'system': 'masklab', 'steps': 10, 'wall_min': 2.0, 'cpu_min': 1.0,
      'box_ap': 69.0, 'box_ap50': 90.0, 'box_ap75': 70.0, 'mask_ap': 70.0,
      'mask_ap50': 91.0, 'mask_ap75': 71.0, 'ar10': 50.0, 'ar100': 60.0,
      'mask_head_params': 98.793, 'semantic_miou': 85.0,
      'instances_miou': 86.0, 'semantic_miou_fused': 85.0,
      'ms_per_image': 9.0}
  # The baseline trains nothing: no steps or minutes, '-' in the table.
  assert components == {'system': 'connected_components', 'box_ap': 29.0,
                        'box_ap50': 90.0, 'box_ap75': 70.0, 'mask_ap': 30.0,
                        'mask_ap50': 91.0, 'mask_ap75': 71.0}
  keys = [column['key'] for column in table['columns']]
  assert keys[:2] == ['system', 'steps'] and 'semantic_miou' in keys
  # Columns no row has are left out, the headline's never.
  only_baseline = accuracy.systems_table([components])
  assert [c['key'] for c in only_baseline['table']['columns']] == [
      'system', 'steps', 'box_ap', 'box_ap50', 'box_ap75', 'mask_ap',
      'mask_ap50', 'mask_ap75']


def test_connected_components_merge_touching_instances(tmp_path):
  synthetic.make_shapes(str(tmp_path), num_train=1, num_val=4, seed=1)
  with open(tmp_path / 'val' / 'annotations.json') as f:
    instances = len(json.load(f)['annotations'])
  result = accuracy.connected_components(str(tmp_path))
  # Same-class shapes touch in most hard-set images: fewer components than
  # instances, and masks short of perfect.
  assert 0 < result['detections'] < instances
  assert 0 < result['metrics']['mask']['AP'] < 100


@pytest.mark.slow
def test_quick_run_to_the_end(tmp_path):
  """`python -m benchmarks accuracy --quick` trains, scores and publishes."""
  subprocess.run(
      [sys.executable, '-m', 'benchmarks', 'accuracy', '--quick',
       '--systems=masklab,connected_components,semantic_components',
       f'--work_dir={tmp_path}',
       '--publish=quick', f'--results_dir={tmp_path}/results'],
      check=True, cwd=results.REPO, env=dict(
          os.environ, PYTHONPATH=results.REPO), capture_output=True)
  published = results.load_all(str(tmp_path / 'results'))['accuracy/quick']
  rows = results.find_table(published, 'systems')['rows']
  assert [row['system'] for row in rows] == [
      'masklab', 'connected_components', 'semantic_components']
  assert rows[0]['steps'] >= 1 and 'semantic_miou' in rows[0]
  # The trained model's semantic map, in components: scored, untrained.
  assert 'steps' not in rows[2] and 'mask_ap' in rows[2]


@pytest.mark.slow
def test_model_garden_scores_the_ground_truth_at_its_ceiling(tmp_path):
  """Model Garden's row is only as fair as its evaluation: the ground
  truth through its parser, `image_results` and pycocotools must give box
  AP 100, and 28x28 masks the ceiling their paste allows."""
  from benchmarks.systems import model_garden
  from masklab_tf.data import coco
  from masklab_tf.data import tfrecord
  synthetic.make_shapes(str(tmp_path), num_train=0, num_val=6, seed=1)
  val = str(tmp_path / 'val')
  tfrecord.write_tfrecords(
      coco.read_coco(f'{val}/annotations.json', f'{val}/images'),
      str(tmp_path / 'tfrecords' / 'val'))
  metrics = model_garden.check_evaluation(
      f'{val}/annotations.json', str(tmp_path / 'tfrecords' / 'val-*'))
  assert metrics['box']['AP'] == pytest.approx(100.0)
  assert 85.0 < metrics['mask']['AP'] < 100.0
