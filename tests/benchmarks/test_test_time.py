"""The test_time suite: each variant's flags, and a quick run to the end."""

import os
import subprocess
import sys
import tarfile

import pytest

import golden
from benchmarks.harness import results
from benchmarks.suites import test_time


def test_variants_say_their_flags():
  assert test_time.describe((), False, False) == 'one pass'
  assert test_time.describe((0.8, 1.0, 1.2), True, True) == (
      '--test_scales=0.8,1,1.2 --test_flip --test_box_voting')
  assert all(',' not in name for name in test_time.VARIANTS)  # a list flag


@pytest.mark.slow
def test_quick_run_to_the_end_and_resumed(tmp_path, shapes_dir):
  """`python -m benchmarks test_time --quick` on the golden checkpoint; the
  same command again measures nothing twice (each variant is a stored job)."""
  with tarfile.open(os.path.join(golden.GOLDEN, 'model.tar.xz')) as tar:
    tar.extractall(tmp_path, filter='data')
  val = os.path.join(shapes_dir, 'val')
  command = [
      sys.executable, '-m', 'benchmarks', 'test_time', '--quick',
      f'--model_dir={tmp_path}/model', f'--annotations={val}/annotations.json',
      f'--images={val}/images', '--publish=quick',
      f'--results_dir={tmp_path}/results', f'--work_dir={tmp_path}/work']
  env = dict(os.environ, PYTHONPATH=results.REPO)
  runs = [subprocess.run(command, cwd=results.REPO, env=env, text=True,
                         capture_output=True) for _ in range(2)]
  for run in runs:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  published = results.load_all(str(tmp_path / 'results'))['test_time/quick']
  rows = results.find_table(published, 'variants')['rows']
  assert [row['variant'] for row in rows] == ['one pass', '--test_flip']
  assert [row['passes'] for row in rows] == [1, 2]
  assert all(row['ms_per_image'] > 0 and 'mask_ap' in row for row in rows)
  assert runs[1].stdout.count('measured before') == 2, runs[1].stdout
  assert 'running' not in runs[1].stdout
