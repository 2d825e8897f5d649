"""The hostile_inputs suite: its rows come from what the tools did.

Runs the cheap cases for real (bin/check_dataset subprocesses, no
TensorFlow) and checks the rows they give.
"""

import sys

import pytest

from benchmarks.harness import results
from benchmarks.suites import hostile_inputs


@pytest.fixture(scope='module')
def rows(tmp_path_factory):
  ctx = hostile_inputs.Context(str(tmp_path_factory.mktemp('hostile')))
  return hostile_inputs.case_checks(ctx, {1, 12})


def test_check_dataset_rows_say_what_happened(rows):
  extreme, labelme, missing, crowded = rows
  assert [row['item'] for row in rows] == [1, 12, 12, 12]
  # labelme's background category is a note: --strict passes, and the
  # note's sentence is the message.
  assert labelme['outcome'] == 'exit 0'
  assert labelme['message'].startswith('background_category: 1 category; ')
  assert labelme['lost'] == 'no: images=1 instances=1 problems=0'
  # Every image missing: exit 1 with the reason, not images=0 and 0.
  assert missing['outcome'] == 'exit 1'
  assert missing['message'] == ('error: missing/annotations.json: no usable '
                                'image is left')
  assert missing['lost'].endswith('images=0 instances=0 problems=3')
  assert crowded['message'].startswith('many_instances: 1 image; ')
  assert crowded['lost'] == 'no: images=1 instances=120 problems=0'
  assert extreme['outcome'] == 'exit 0'
  assert extreme['lost'].startswith('kept 3 of 3 ')
  for row in rows:  # clipped, one line, the temporary folder left out
    assert len(row['message']) <= hostile_inputs.MESSAGE_CHARS
    assert '\n' not in row['message'] and '/tmp' not in row['message']
  # The rows are the result table's: every key a column.
  results.table('cases', hostile_inputs.COLUMNS, rows)


def test_problem_line_finds_the_error_after_tensorflow_chatter():
  output = ('2026-01-01 oneDNN custom operations are on\n'
            'I1206 06:31:11.123456 1400 train.py:12] building\n'
            'Traceback (most recent call last):\n'
            '  File "x.py", line 1, in <module>\n'
            'ValueError: label value 6 outside [0, 5)\n')
  assert hostile_inputs.problem_line(output, 'no such', fallback=output) == (
      'ValueError: label value 6 outside [0, 5)')
  assert hostile_inputs.problem_line(output, 'building') == 'building'


def test_a_tool_reports_its_own_peak_memory_not_its_callers():
  """A child's peak RSS starts at its parent's: a tool started straight
  from a large process (a loaded SavedModel) reported the caller's."""
  ballast = bytearray(400 * 2**20)
  ballast[::4096] = b'\1' * len(ballast[::4096])  # touched: resident
  run = hostile_inputs.run_command(
      [sys.executable, '-c', 'import sys; print("out"); '
       'print("err", file=sys.stderr); sys.exit(3)'])
  assert (run.code, run.outcome) == (3, 'exit 3')
  assert (run.stdout, run.stderr) == ('out\n', 'err\n')
  assert 0 < run.peak_mib < 100, run.peak_mib
  del ballast
  assert hostile_inputs.run_command(
      [sys.executable, '-c', 'import time; time.sleep(30)'],
      timeout=1).outcome == 'killed at the timeout'
