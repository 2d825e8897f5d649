"""benchmarks/hostile_inputs.py: its rows come from what the tools did.

Runs the cheap cases for real (bin/check_dataset subprocesses, no
TensorFlow) and checks the rows and the markdown table built from them.
"""

import pytest

from benchmarks import hostile_inputs


@pytest.fixture(scope='module')
def rows(tmp_path_factory):
  ctx = hostile_inputs.Context(str(tmp_path_factory.mktemp('hostile')))
  return (hostile_inputs.case_check_dataset_says(ctx) +
          hostile_inputs.case_extreme_aspect_check(ctx))


def test_check_dataset_rows_say_what_happened(rows):
  labelme, missing, crowded, extreme = rows
  assert [row.item for row in rows] == [12, 12, 12, 1]
  # labelme's background category is a note: --strict passes, and the
  # note's sentence is the message.
  assert labelme.outcome == 'exit 0'
  assert labelme.message.startswith('background_category: 1 category; ')
  assert labelme.lost == 'no: images=1 instances=1 problems=0'
  # Every image missing: exit 1 with the reason, not images=0 and 0.
  assert missing.outcome == 'exit 1'
  assert missing.message == ('error: missing/annotations.json: no usable '
                             'image is left')
  assert missing.lost.endswith('images=0 instances=0 problems=3')
  assert crowded.message.startswith('many_instances: 1 image; ')
  assert crowded.lost == 'no: images=1 instances=120 problems=0'
  assert extreme.outcome == 'exit 0'
  assert extreme.lost.startswith('kept 3 of 3 ')
  for row in rows:  # Clipped, one line, the temporary folder left out.
    assert len(row.message) <= hostile_inputs.MESSAGE_CHARS
    assert '\n' not in row.message and '/tmp' not in row.message


def test_table_has_a_row_per_case_and_escapes_pipes(rows):
  table = hostile_inputs.markdown_table(
      rows + [hostile_inputs.Row(4, 'a | b', 'exit 1', 'x|y', '-')])
  lines = table.splitlines()
  assert lines[0] == ('| item | input | outcome | message shown | '
                      'anything lost |')
  assert len(lines) == 2 + len(rows) + 1
  for line in lines[2:]:  # Five cells each: escaped pipes do not count.
    assert line.replace('\\|', '').count('|') == 6, line
  assert lines[2].startswith('| 12 | check_dataset --strict: labelme')
  assert lines[-1] == '| 4 | a \\| b | exit 1 | x\\|y | - |'


def test_problem_line_finds_the_error_after_tensorflow_chatter():
  output = ('2026-01-01 oneDNN custom operations are on\n'
            'I1206 06:31:11.123456 1400 train.py:12] building\n'
            'Traceback (most recent call last):\n'
            '  File "x.py", line 1, in <module>\n'
            'ValueError: label value 6 outside [0, 5)\n')
  assert hostile_inputs.problem_line(output, 'no such', fallback=output) == (
      'ValueError: label value 6 outside [0, 5)')
  assert hostile_inputs.problem_line(output, 'building') == 'building'
