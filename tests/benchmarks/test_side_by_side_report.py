"""benchmarks/side_by_side.py's plan and report, from a hand-made store (no
TensorFlow: the report is plain Python over the jobs' json)."""

from benchmarks import side_by_side

SETTINGS = {'runs': 3, 'num_images': 16, 'data_batches': 20,
            'peak_repeats': 5, 'quick': False,
            'model_garden_score_threshold': 0.0}


def _peak(conv_f32, conv_bf16):
  return {'matmul_shape': '4096x4096 @ 4096x4096',
          'conv_shape': '[1, 128, 128, 256] * 3x3 -> 256',
          'conv_batched_shape': '[64, 16, 16, 512] * 3x3 -> 512',
          'matmul_gflops_per_s': 50.0, 'conv_gflops_per_s': 60.0,
          'conv_batched_gflops_per_s': conv_f32,
          'matmul_bf16_gflops_per_s': 70.0, 'conv_bf16_gflops_per_s': 80.0,
          'conv_batched_bf16_gflops_per_s': conv_bf16}


def _inference(gflops, ms, precision):
  return {'ms_per_image_b1': ms, 'ms_per_image_b4': ms,
          'rss_mib_b1': 1.0, 'rss_mib_b4': 2.0,
          'flops': {'gflops': gflops, 'uncounted_top': [],
                    'unknown_shape_ops': 0},
          'backbone_flops': {'gflops': gflops / 2},
          'backbone_ms_b1': ms / 2, 'info': {'precision': precision}}


def _job(result, clock):
  return {'settings': SETTINGS, 'result': result, 'invocation': 0,
          'date': '2026-11-22', 'time': clock}


def _limit_rows(report):
  section = report[report.index("## The limit"):]
  section = section[:section.index('## Input pipeline')]
  return [line.split(' | ') for line in section.splitlines()
          if line.startswith('| MaskLab')]


def test_each_size_is_planned_after_its_own_peak():
  plan = side_by_side._plan([512, 256], ['masklab_fast'],  # pylint: disable=protected-access
                            skip_assemble=False)
  assert plan == ['peak-512', 'infer-masklab_fast-512', 'data-512',
                  'train-masklab_fast-512', 'peak-256',
                  'infer-masklab_fast-256', 'data-256',
                  'train-masklab_fast-256', 'assemble']


def test_rows_are_read_against_the_peak_of_their_size():
  # 100 GFLOPs in 1 s on both sizes; the machine was twice as fast (peak
  # 400 instead of 200) when the 512 px rows were measured.
  store = {'invocations': [{'command': 'python benchmarks/side_by_side.py',
                            'date': '2026-11-22T15:00:00'}],
           'failed': {},
           'jobs': {
               'peak-256': _job(_peak(200.0, 1000.0), '15:00'),
               'infer-masklab_fast_fp32-256': _job(
                   _inference(100.0, 1000.0, 'float32'), '15:05'),
               'peak-512': _job(_peak(400.0, 2000.0), '16:00'),
               'infer-masklab_fast_fp32-512': _job(
                   _inference(100.0, 1000.0, 'float32'), '16:05'),
               'infer-masklab_fast-512': _job(
                   _inference(100.0, 1000.0, 'mixed_bfloat16'), '16:10'),
           }}
  report = side_by_side.format_report(store, SETTINGS)
  assert "measured before each size's jobs" in report
  # px, measured at, three float32 kernels, three bfloat16, the two peaks.
  assert '| 256 | 15:00 | 50 | 60 | 200 | 70 | 80 | 1000 | 200 | 1000 |' in (
      report)
  assert '| 512 | 16:00 | 50 | 60 | 400 | 70 | 80 | 2000 | 400 | 2000 |' in (
      report)
  rows = {(row[0], row[1]): row for row in _limit_rows(report)}
  # Columns: model, px, GFLOPs, peak, GFLOP/s b1, % of peak, ...
  assert rows[('| MaskLab R50 fast, float32', '256')][3:6] == [
      '200', '100.0', '50.0 %']
  assert rows[('| MaskLab R50 fast, float32', '512')][3:6] == [
      '400', '100.0', '25.0 %']
  assert rows[('| MaskLab R50 fast, bfloat16', '512')][3:6] == [
      '2000', '100.0', '5.0 %']
  # The time each row was measured is in the details.
  assert '| 15:05 / - |' in report


def test_a_single_peak_of_an_older_run_serves_every_size():
  store = {'invocations': [{'command': 'c', 'date': 'd'}], 'failed': {},
           'jobs': {'peak': _job(_peak(300.0, 900.0), None),
                    'infer-masklab_fast_fp32-256': _job(
                        _inference(150.0, 1000.0, 'float32'), None)}}
  report = side_by_side.format_report(store, SETTINGS)
  assert 'measured once, before all sizes' in report
  row, = _limit_rows(report)
  assert row[3:6] == ['300', '150.0', '50.0 %']


def test_the_paper_config_and_model_garden_are_paired_after_their_rows():
  plan = side_by_side._plan([512], ['masklab_os8', 'model_garden'],  # pylint: disable=protected-access
                            skip_assemble=True)
  assert plan == ['peak-512', 'infer-masklab_os8-512',
                  'infer-model_garden-512',
                  'pair-masklab_os8+model_garden-512', 'data-512',
                  'train-masklab_os8-512', 'train-model_garden-512']
  # Without both systems there is nothing to pair.
  assert not any(job.startswith('pair') for job in side_by_side._plan(  # pylint: disable=protected-access
      [512], ['masklab_os8'], skip_assemble=True))


def test_paired_rounds_are_read_round_by_round():
  # 900 and 450 GFLOPs; round by round MaskLab's GFLOP/s is 150, 100, 200
  # against Model Garden's 150, 150, 150.
  pair = {'systems': ['masklab_os8', 'model_garden'],
          'samples_ms': {'masklab_os8': [6000.0, 9000.0, 4500.0],
                         'model_garden': [3000.0, 3000.0, 3000.0]},
          'ms_b1': {'masklab_os8': 6000.0, 'model_garden': 3000.0}}
  store = {'invocations': [{'command': 'c', 'date': 'd'}], 'failed': {},
           'jobs': {'peak-512': _job(_peak(200.0, 1000.0), '15:00'),
                    'infer-masklab_os8-512': _job(
                        _inference(900.0, 7000.0, 'float32'), '15:05'),
                    'infer-model_garden-512': _job(
                        _inference(450.0, 3000.0, 'float32'), '15:10'),
                    'pair-masklab_os8+model_garden-512': _job(pair, '15:15')}}
  report = side_by_side.format_report(store, SETTINGS)
  assert 'Interleaved in one process' in report
  # px, rounds, ms, ms, GFLOP/s medians, ratio, rounds won (ties count).
  assert ('| 512 | 3 | 6000 | 3000 | 150.0 | 150.0 | 1.00 | 2 of 3 |'
          in report)


def test_backbones_are_read_against_the_peak_of_their_own_rounds():
  # Round by round the backbone ran at 40, 60, 30 GFLOP/s while the peak
  # kernels ran at 100, 100, 50: 40 %, 60 %, 60 %, whatever the peak job
  # measured an hour apart (200 here).
  infer = _inference(100.0, 1000.0, 'float32')
  infer['backbone_vs_peak'] = {'backbone_gflops_per_s': [40.0, 60.0, 30.0],
                               'peak_gflops_per_s': [100.0, 100.0, 50.0],
                               'percent_of_peak': [40.0, 60.0, 60.0]}
  store = {'invocations': [{'command': 'c', 'date': 'd'}], 'failed': {},
           'jobs': {'peak-512': _job(_peak(200.0, 1000.0), '15:00'),
                    'infer-masklab_os16-512': _job(infer, '15:05'),
                    # Stored before jobs measured it: no row, no error.
                    'infer-masklab_os8-512': _job(
                        _inference(100.0, 1000.0, 'float32'), '15:10')}}
  report = side_by_side.format_report(store, SETTINGS)
  assert 'Backbones against the peak in one process' in report
  # model, px, rounds, backbone and peak medians, % of peak, its range.
  assert ('| MaskLab R50, OS 16 | 512 | 3 | 40.0 | 100 | 60.0 % '
          '| 40.0-60.0 % |') in report
  assert report.count('| 512 | 3 |') == 1


def test_models_as_measured_leave_the_image_size_to_the_px_column():
  # torchvision's info names the size of the job it came from; with rows at
  # 256 and 512 px, "min_size=256" would misdescribe the 512 px row.
  def torchvision(size):
    infer = _inference(100.0, 1000.0, 'float32')
    infer['info'] = {'precision': 'float32', 'threads': 2, 'min_size': size}
    return infer
  store = {'invocations': [{'command': 'c', 'date': 'd'}], 'failed': {},
           'jobs': {'peak-256': _job(_peak(200.0, 1000.0), '15:00'),
                    'infer-torchvision-256': _job(torchvision(256), '15:05'),
                    'peak-512': _job(_peak(200.0, 1000.0), '16:00'),
                    'infer-torchvision-512': _job(torchvision(512), '16:05')}}
  report = side_by_side.format_report(store, SETTINGS)
  models = report[report.index('## Models as measured'):]
  line, = [line for line in models.splitlines()
           if line.startswith('- torchvision Mask R-CNN R50-FPN (PyTorch):')
           and 'precision=' in line]
  assert line.endswith('precision=float32, threads=2')
