"""The speed suite's plan and report, on hand-made stores (no TensorFlow:
the report is plain Python over the jobs' results)."""

import pytest

from benchmarks.harness import jobs as jobs_lib
from benchmarks.harness import results
from benchmarks.suites import speed

SETTINGS = {'runs': 3, 'num_images': 16, 'data_batches': 20,
            'peak_repeats': 5, 'quick': False,
            'model_garden_score_threshold': 0.0}


def _peak(conv_f32, conv_bf16):
  return {'matmul_gflops_per_s': 50.0, 'conv_gflops_per_s': 60.0,
          'conv_batched_gflops_per_s': conv_f32,
          'matmul_bf16_gflops_per_s': 70.0, 'conv_bf16_gflops_per_s': 80.0,
          'conv_batched_bf16_gflops_per_s': conv_bf16}


def _inference(gflops, ms, precision):
  return {'ms_per_image_b1': ms, 'ms_per_image_b4': ms,
          'rss_mib_b1': 1.0, 'rss_mib_b4': 2.0, 'load': [1.0, 2.0],
          'flops': {'gflops': gflops, 'uncounted_top': [['Cast', 1.5]],
                    'unknown_shape_ops': 0},
          'backbone_flops': {'gflops': gflops / 2},
          'backbone_ms_b1': ms / 2, 'info': {'precision': precision}}


def _store(tmp_path, jobs, failed=(), settings=SETTINGS):
  """A store holding `jobs` ({name: (result, 'HH:MM')}) and `failed`."""
  store = jobs_lib.Store(str(tmp_path / 'results.json'))
  store.begin('python -m benchmarks speed')
  for name, (result, clock) in jobs.items():
    store.record(jobs_lib.Job.parse(name), settings,
                 jobs_lib.Outcome(result, seconds=10.0))
    store.data['jobs'][name]['time'] = clock
  for name in failed:
    store.record(jobs_lib.Job.parse(name), settings,
                 jobs_lib.Outcome(None, 'exit status 1'))
  return store


def _rows(result, table_id):
  return {(row.get('model') or row.get('first'), row['px']): row
          for row in results.find_table(result, table_id)['rows']}


def test_each_size_is_planned_after_its_own_peak():
  names = [job.name for job in speed.plan([512, 256], ['masklab_fast'])]
  assert names == ['peak-512', 'infer-masklab_fast-512', 'data-512',
                   'train-masklab_fast-512', 'peak-256',
                   'infer-masklab_fast-256', 'data-256',
                   'train-masklab_fast-256']


def test_the_paper_config_and_model_garden_are_paired_after_their_rows():
  names = [job.name for job in speed.plan([512], ['masklab_os8',
                                                   'model_garden'])]
  assert names == ['peak-512', 'infer-masklab_os8-512',
                   'infer-model_garden-512',
                   'pair-masklab_os8+model_garden-512', 'data-512',
                   'train-masklab_os8-512', 'train-model_garden-512']
  assert jobs_lib.Job.parse(names[3]).system == 'masklab_os8+model_garden'
  assert not any(job.kind == 'pair'
                 for job in speed.plan([512], ['masklab_os8']))


def test_rows_are_read_against_the_peak_of_their_size(tmp_path):
  # 100 GFLOPs in 1 s at both sizes; the machine was twice as fast (peak
  # 400 instead of 200) when the 512 px rows were measured.
  store = _store(tmp_path, {
      'peak-256': (_peak(200.0, 1000.0), '15:00'),
      'infer-masklab_fast_fp32-256': (
          _inference(100.0, 1000.0, 'float32'), '15:05'),
      'peak-512': (_peak(400.0, 2000.0), '16:00'),
      'infer-masklab_fast_fp32-512': (
          _inference(100.0, 1000.0, 'float32'), '16:05'),
      'infer-masklab_fast-512': (
          _inference(100.0, 1000.0, 'mixed_bfloat16'), '16:10')})
  result = speed.report(store, SETTINGS)
  peaks = {row['px']: row for row in
           results.find_table(result, 'peaks')['rows']}
  assert (peaks[256]['at'], peaks[256]['f32'], peaks[256]['bf16']) == (
      '15:00', 200.0, 1000.0)
  assert (peaks[512]['at'], peaks[512]['f32'], peaks[512]['bf16']) == (
      '16:00', 400.0, 2000.0)
  limit = _rows(result, 'limit')
  fp32, bf16 = 'MaskLab R50 fast, float32', 'MaskLab R50 fast, bfloat16'
  assert limit[(fp32, 256)]['peak'] == 200.0
  assert limit[(fp32, 256)]['b1_pct'] == pytest.approx(50.0)
  assert limit[(fp32, 512)]['b1_pct'] == pytest.approx(25.0)
  assert limit[(bf16, 512)]['peak'] == 2000.0
  assert limit[(bf16, 512)]['b1_pct'] == pytest.approx(5.0)
  assert limit[(fp32, 256)]['bb_share'] == pytest.approx(50.0)
  # When each row was measured is in the details; training not measured.
  details = _rows(result, 'details')[(fp32, 256)]
  assert (details['at_i'], details['at_t'], details['load_t']) == (
      '15:05', None, None)
  assert _rows(result, 'speed')[(fp32, 256)]['train'] is None


def test_rows_of_other_settings_and_failed_jobs(tmp_path):
  other = dict(SETTINGS, runs=1)
  store = _store(tmp_path, {'infer-model_garden-512': (
      _inference(100.0, 1000.0, 'float32'), '15:05')},
                 failed=['train-model_garden-512'])
  _store(tmp_path, {'infer-masklab_os8-512': (
      _inference(100.0, 1000.0, 'float32'), '15:05')}, settings=other)
  store = jobs_lib.Store(store.path)
  result = speed.report(store, SETTINGS)
  assert list(_rows(result, 'speed')) == [('Model Garden R50-FPN', 512)]
  # No peak measured: no share of it.
  assert _rows(result, 'limit')[('Model Garden R50-FPN', 512)][
      'b1_pct'] is None
  texts = [block['text'] for block in result['body'] if 'text' in block]
  assert 'Failed jobs (no numbers): train-model_garden-512.' in texts
  assert any('Model Garden R50-FPN: Cast (1.5M)' in text for text in texts)


def test_paired_rounds_are_read_round_by_round(tmp_path):
  # 900 and 450 GFLOPs; round by round MaskLab's GFLOP/s is 150, 100, 200
  # against Model Garden's 150, 150, 150 (ties count as wins).
  pair = {'systems': ['masklab_os8', 'model_garden'],
          'samples_ms': {'masklab_os8': [6000.0, 9000.0, 4500.0],
                         'model_garden': [3000.0, 3000.0, 3000.0]},
          'ms_b1': {'masklab_os8': 6000.0, 'model_garden': 3000.0}}
  store = _store(tmp_path, {
      'infer-masklab_os8-512': (_inference(900.0, 7000.0, 'float32'), 'a'),
      'infer-model_garden-512': (_inference(450.0, 3000.0, 'float32'), 'b'),
      'pair-masklab_os8+model_garden-512': (pair, 'c')})
  row, = results.find_table(speed.report(store, SETTINGS), 'pair')['rows']
  assert row == {'first': 'MaskLab R50, OS 8',
                 'second': 'Model Garden R50-FPN', 'px': 512, 'rounds': 3,
                 'ms1': 6000.0, 'ms2': 3000.0, 'rate1': 150.0,
                 'rate2': 150.0, 'ratio': 1.0, 'wins': 2}


def test_backbones_are_read_against_the_peak_of_their_own_rounds(tmp_path):
  # Round by round the backbone ran at 40, 60, 30 GFLOP/s while the peak
  # kernels ran at 100, 100, 50, whatever the peak job measured (200).
  infer = _inference(100.0, 1000.0, 'float32')
  infer['backbone_vs_peak'] = {'backbone_gflops_per_s': [40.0, 60.0, 30.0],
                               'peak_gflops_per_s': [100.0, 100.0, 50.0],
                               'percent_of_peak': [40.0, 60.0, 60.0]}
  store = _store(tmp_path, {
      'peak-512': (_peak(200.0, 1000.0), '15:00'),
      'infer-masklab_os16-512': (infer, '15:05'),
      'infer-masklab_os8-512': (_inference(100.0, 1000.0, 'float32'), 'x')})
  rows = _rows(speed.report(store, SETTINGS), 'backbone')
  assert list(rows) == [('MaskLab R50, OS 16', 512)]
  assert rows[('MaskLab R50, OS 16', 512)] == {
      'model': 'MaskLab R50, OS 16', 'px': 512, 'rounds': 3, 'low': 40.0,
      'high': 60.0, 'percent': 60.0, 'rate': 40.0, 'peak': 100.0}
