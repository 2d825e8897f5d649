"""The device check: its script runs end to end here in --smoke mode, its
plan puts what matters first, and a traced error reads as its cause."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from benchmarks.suites import device_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run_script(output_dir, *flags, timeout_s=900):
  """benchmarks/device_check.sh with this interpreter (nothing installed)."""
  return subprocess.run(
      ['bash', 'benchmarks/device_check.sh', str(output_dir), '--smoke',
       *flags], cwd=REPO, env=dict(os.environ, PYTHON=sys.executable),
      capture_output=True, text=True, timeout=timeout_s, check=False)


def check_result(output_dir, systems, precisions, checks=()):
  """The rows of a run that should have measured everything and passed
  `checks`."""
  with open(output_dir / 'device_check.json') as f:
    result = json.load(f)
  tables = {block['table']['id']: block['table']['rows']
            for block in result['body'] if 'table' in block}
  assert [c['check'] for c in tables['checks']] == list(checks)
  assert all(c['passed'] for c in tables['checks']), tables['checks']
  rows = tables['timings']
  assert not [r for r in rows if 'error' in r], rows
  planned = device_check.plan(dict(
      systems=systems, precisions=precisions, sizes=[128], batches=[1],
      train_batch=2))
  assert len(rows) == sum(len(g.systems) for g in planned)
  for row in rows:
    key = 'ms_per_image' if row['kind'] == 'infer' else 's_per_step'
    assert row[key] > 0 and row['first_call_s'] > 0, row
  assert result['device'] == 'no GPU: the CPU'
  assert 'Left out' not in json.dumps(result['body'])
  table = (output_dir / 'device_check.md').read_text()
  assert table.count('| masklab_fast |') == sum(
      'masklab_fast' in g.systems for g in planned)
  return rows


def test_smoke_run_passes_on_the_cpu(tmp_path):
  done = run_script(tmp_path)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert 'built with CUDA' in done.stdout
  rows = check_result(tmp_path, ['masklab_fast'], ['float32'])
  assert {(r['kind'], r['xla']) for r in rows} == {
      ('infer', 'on'), ('train', 'on'), ('infer', 'off')}


@pytest.mark.slow
def test_smoke_run_of_model_garden_in_float16(tmp_path):
  """Model Garden's adapter, and both systems' float16 loss scaling (slow
  here: CPUs emulate float16)."""
  systems, precisions = ['masklab_fast', 'model_garden'], ['mixed_float16']
  done = run_script(tmp_path, f'--systems={",".join(systems)}',
                    f'--precisions={",".join(precisions)}', '--tests=',
                    '--deadline_s=3000', '--mirrored_check',
                    timeout_s=3600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  check_result(tmp_path, systems, precisions, ['mirrored training steps'])


def test_checks_run_pytest_and_name_what_failed(tmp_path):
  """The checks' pytest child, on a file of one passing and one failing
  test (outside tests/: no conftest, a second)."""
  test_file = tmp_path / 'test_example.py'
  test_file.write_text('def test_fine():\n  pass\n\n\n'
                       'def test_broken():\n  assert 1 == 2\n')
  failed = device_check.run_tests([str(test_file)], timeout_s=120)
  assert not failed['passed']
  assert 'test_example.py::test_broken' in failed['detail'], failed
  assert 'test_fine' not in failed['detail']
  passed = device_check.run_tests([f'{test_file}::test_fine'], timeout_s=120)
  assert passed['passed'] and '1 passed' in passed['detail'], passed


def test_plan_puts_what_matters_first():
  groups = device_check.plan(dict(
      systems=['masklab_fast', 'masklab_paper', 'model_garden'],
      precisions=['float32', 'mixed_bfloat16'], sizes=[512, 800],
      batches=[1, 8], train_batch=4))
  names = [g.name for g in groups]
  assert names[:6] == [
      'infer float32 512 px b1', 'infer mixed_bfloat16 512 px b1',
      'train float32 512 px b4', 'train mixed_bfloat16 512 px b4',
      'infer float32 512 px b1 no XLA', 'infer mixed_bfloat16 512 px b1 no XLA']
  assert len(names) == len(set(names)) == 6 + 3 * 2
  # XLA is MaskLab's assembling layer: Model Garden has no such row.
  assert all('model_garden' not in g.systems for g in groups if not g.xla)
  assert all(len(g.systems) == 3 for g in groups if g.xla)


def test_a_traced_error_reads_as_its_cause():
  @tf.function
  def failing(x):
    return tf.nn.top_k(x, k=5)

  with pytest.raises(Exception) as raised:
    failing(tf.zeros([2, 3]))
  summary = device_check._summary(raised.value)  # pylint: disable=protected-access
  assert summary.startswith('ValueError: ') and 'k = 5' in summary, summary
  assert device_check._summary(KeyError('x')) == "KeyError: 'x'"  # pylint: disable=protected-access


def test_fast_over_model_garden_pairs_rows_of_one_group():
  row = lambda system, ms, **kw: dict(dict(  # pylint: disable=g-long-lambda
      system=system, kind='infer', xla='on', precision='float32', size=512,
      batch=1, ms_per_image=ms), **kw)
  rows = [row('masklab_fast', 30.0), row('model_garden', 60.0),
          row('masklab_fast', 10.0, xla='off'),
          row('masklab_fast', 50.0, batch=8), row('model_garden', 40.0,
                                                  batch=8),
          row('masklab_fast', 20.0, precision='mixed_bfloat16'),
          dict(row('model_garden', 0.0), kind='train', s_per_step=1.0)]
  assert device_check.fast_over_model_garden(rows) == {
      'float32 512 px b1': 0.5, 'float32 512 px b8': 1.25}
