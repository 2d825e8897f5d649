"""The chaos suite's kill and check, on real processes."""

import random
import sys
import time

import pytest

from benchmarks.suites import chaos


def test_kill_during_a_checkpoint_write(tmp_path):
  model_dir = tmp_path / 'model'
  # Reports a step, then "writes a checkpoint" (a temporary file) and
  # would run on for a minute.
  script = ('import os, sys, time\n'
            'print("step 3/10  loss 1.250", flush=True)\n'
            f'os.makedirs({str(model_dir)!r})\n'
            f'open(os.path.join({str(model_dir)!r}, "ckpt_temp"), "w")\n'
            'time.sleep(60)\n')
  start = time.time()
  lines, how = chaos.run_until_killed(
      [sys.executable, '-c', script], str(tmp_path / 'run.log'),
      str(model_dir), random.Random(0), during_save=True)
  assert how == 'during a checkpoint write'
  assert time.time() - start < 30
  assert [m[1] for m in map(chaos.STEP_LINE.match, lines) if m] == ['3']


def test_a_torn_latest_checkpoint_is_found(tmp_path):
  assert not chaos.saving(str(tmp_path / 'absent'))
  (tmp_path / 'checkpoint').write_text('model_checkpoint_path: "ckpt-9"\n')
  (tmp_path / 'ckpt-9.index').write_bytes(b'torn write')
  with pytest.raises(RuntimeError, match='does not load'):
    chaos.latest_step(str(tmp_path))
