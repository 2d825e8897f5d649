"""The README's main job (the Makefile's `make demo` config), end to end on
a tiny budget (slow: run by hand with `make test-all`)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
  output_dir = tmp_path / 'demo'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'bin', 'demo'),
       '--flagfile=' + os.path.join(REPO, 'configs', 'shapes_demo.flags'),
       f'--output_dir={output_dir}', '--num_train=8', '--num_val=4',
       '--num_batches=2', '--train_steps=2', '--log_every=1'],
      capture_output=True, text=True, timeout=1800, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  for stage in range(1, 7):
    assert f'[{stage}/6]' in result.stdout, result.stdout
  assert '| class | box AP | mask AP |' in result.stdout, result.stdout
  # Quiet by default (tools/quiet.py): nothing from TensorFlow's logs.
  assert result.stderr == '', result.stderr[-3000:]
  for path in ('pipeline_preview.png', 'predictions_preview.png',
               'model/metrics.json', 'export/1/saved_model.pb',
               'export/1/assets/categories.json'):
    assert os.path.exists(output_dir / path), path
