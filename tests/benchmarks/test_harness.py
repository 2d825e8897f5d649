"""The benchmark harness: jobs, the resumable store, the job process, and
rendering tables from result data (no TensorFlow)."""

import json
import os
import shutil
import sys

import pytest

from benchmarks.harness import jobs as jobs_lib
from benchmarks.harness import render
from benchmarks.harness import results as results_lib
from benchmarks.harness import runner

SETTINGS = {'runs': 3, 'quick': False}


def test_job_names_round_trip():
  for job in (jobs_lib.Job('infer', 'masklab_fast', 512),
              jobs_lib.Job('peak', size=256), jobs_lib.Job('assemble'),
              jobs_lib.Job('pair', 'masklab_os8+model_garden', 800)):
    assert jobs_lib.Job.parse(job.name) == job
  assert jobs_lib.Job('infer', 'masklab_fast', 512).name == \
      'infer-masklab_fast-512'


@pytest.mark.parametrize('kind,system', [
    ('tta', 'scales_1-2'), ('infer', '512'), ('in-fer', 'masklab'),
    ('', 'masklab')])
def test_a_job_its_name_would_misread_is_refused(kind, system):
  # 'tta-scales_1-2' would parse back as system 'scales_1' at size 2.
  with pytest.raises(ValueError, match='kind|system'):
    jobs_lib.Job(kind, system)


def test_the_test_time_variants_make_readable_job_names():
  from benchmarks.suites import test_time
  for name in test_time.VARIANTS:
    job = jobs_lib.Job('tta', name)
    assert jobs_lib.Job.parse(job.name) == job


def test_a_rerun_redoes_only_missing_failed_and_changed_jobs(tmp_path):
  path = str(tmp_path / 'results.json')
  plan = [jobs_lib.Job('infer', 'a', 1), jobs_lib.Job('infer', 'b', 1)]
  ran = []

  def run(job):
    ran.append(job.name)
    if job.system == 'b' and ran.count(job.name) == 1:
      return jobs_lib.Outcome(None, 'exit status 1')
    return jobs_lib.Outcome({'ms': len(ran)})

  store = jobs_lib.Store(path)
  assert jobs_lib.run_plan(plan, store, SETTINGS, run, log=lambda _: None) \
      == ['infer-b-1']
  assert store.failed(SETTINGS) == ['infer-b-1']
  # A new process reads the store from disk: only the failed job reruns.
  store = jobs_lib.Store(path)
  assert jobs_lib.run_plan(plan, store, SETTINGS, run,
                           log=lambda _: None) == []
  assert ran == ['infer-a-1', 'infer-b-1', 'infer-b-1']
  assert store.result('infer-a-1', SETTINGS) == {'ms': 1}
  assert store.failed(SETTINGS) == []
  # Other settings: both are measured again; key order does not matter.
  jobs_lib.run_plan(plan, jobs_lib.Store(path), dict(SETTINGS, runs=5), run,
                    log=lambda _: None)
  assert ran[3:] == ['infer-a-1', 'infer-b-1']
  # Forgotten (--rerun): measured again though stored.
  store = jobs_lib.Store(path)
  store.forget(['infer-a-1'])
  jobs_lib.run_plan(plan, jobs_lib.Store(path), dict(SETTINGS, runs=5), run,
                    log=lambda _: None)
  assert ran[5:] == ['infer-a-1']
  assert jobs_lib.settings_hash({'a': 1, 'b': 2}) == \
      jobs_lib.settings_hash({'b': 2, 'a': 1})


def _python_job(tmp_path, code, timeout_s=60):
  """Runs `code` as a job command; its --job_output argument is argv[1]."""
  return runner.run_job(
      'none', jobs_lib.Job('probe'), SETTINGS, str(tmp_path), timeout_s,
      command=[sys.executable, '-c', code])


def test_a_job_reports_its_own_peak_memory_and_result(tmp_path):
  code = ('import json, os, sys\n'
          'block = bytearray(300 * 2**20)\n'  # touched: resident
          "settings = json.loads(os.environ['BENCHMARK_SETTINGS'])\n"
          "path = sys.argv[1].split('=', 1)[1]\n"
          "json.dump({'runs': settings['runs']}, open(path, 'w'))\n")
  outcome = _python_job(tmp_path, code)
  assert outcome.result == {'runs': 3}, outcome.error
  # The child's own peak (wait4), not this (test) process's.
  assert 300 <= outcome.peak_rss_mib < 600


def test_failures_and_timeouts_are_named_with_the_log_tail(tmp_path):
  failed = _python_job(tmp_path, "raise SystemExit('disk full at step 7')")
  assert failed.result is None
  assert 'exit status 1' in failed.error
  assert 'disk full at step 7' in failed.error
  slow = _python_job(tmp_path, 'import time; time.sleep(60)', timeout_s=1)
  assert slow.result is None and slow.error == 'killed after 1 s'
  assert slow.seconds < 30


def test_commands_in_results_name_no_folder_of_this_machine():
  shown = results_lib.shown_command(
      ['speed', '--work_dir=/work/bench/zen4', '--torchvision_python',
       '/home/me/tv/bin/python', f'--data={results_lib.REPO}/demo_data'])
  assert shown == ('python -m benchmarks speed --work_dir=<zen4> '
                   '--torchvision_python <python> --data=demo_data')


def _result(rows):
  columns = [results_lib.column('system', 'system'),
             results_lib.column('ms', 'ms/image', '.0f'),
             results_lib.column('share', 'share', '.1f', suffix=' %')]
  return {'suite': 'speed', 'title': 'Probe run', 'date': '2026-12-06',
          'machine': '2 cores, probe CPU', 'command': 'python -m benchmarks',
          'commit': 'abc1234', 'settings': {}, 'versions': {},
          'body': [results_lib.text('Why it was run.'),
                   results_lib.table('main', columns, rows)]}


def test_a_row_renders_its_numbers_through_the_column_formats():
  table = results_lib.find_table(_result(
      [{'system': 'MaskLab', 'ms': 683.4, 'share': 76.34},
       {'system': 'a | b', 'ms': None, 'share': 5}]), 'main')
  assert render.table_lines(table)[1:] == [
      '|---|---:|---:|', '| MaskLab | 683 | 76.3 % |',
      '| a \\| b | - | 5.0 % |']
  with pytest.raises(ValueError, match='row 0 has keys no column shows'):
    results_lib.table('t', table['columns'], [{'speed': 1}])


def test_editing_a_json_row_changes_the_rendered_docs(tmp_path):
  results_dir = tmp_path / 'results'
  shutil.copytree(results_lib.RESULTS_DIR, results_dir)
  results_lib.write(_result([{'system': 'MaskLab', 'ms': 68311, 'share': 1}]),
                    'probe', str(results_dir))
  readme = (f'intro\n{render.HEADLINE_BEGIN}\nold\n{render.HEADLINE_END}\n'
            'outro\n')
  before = render.rendered(str(results_dir), readme)
  assert '| MaskLab | 68311 | 1.0 % |' in before[render.DOCS_PATH]
  assert 'old' not in before[render.README_PATH]
  assert before[render.README_PATH].startswith('intro\n')
  path = results_dir / 'speed' / 'probe.json'
  data = json.loads(path.read_text())
  data['body'][1]['table']['rows'][0]['ms'] = 59022
  path.write_text(json.dumps(data))
  after = render.rendered(str(results_dir), readme)
  assert '| MaskLab | 59022 | 1.0 % |' in after[render.DOCS_PATH]
  assert '68311' not in after[render.DOCS_PATH]
  # The headline is the accuracy result's: the probe does not touch it.
  assert after[render.README_PATH] == before[render.README_PATH]
  # Editing the headline's own data changes the README.
  headline = results_dir / (render.HEADLINE['result'] + '.json')
  data = json.loads(headline.read_text())
  table = next(block['table'] for block in data['body']
               if block.get('table', {}).get('id') == render.HEADLINE['table'])
  table['rows'][0]['steps'] = 123456
  headline.write_text(json.dumps(data))
  assert '123456' in render.rendered(str(results_dir),
                                     readme)[render.README_PATH]


def test_the_committed_docs_are_rendered_from_the_committed_results():
  """A table in the docs can never disagree with its data: `python -m
  benchmarks render` after any edit of benchmarks/results."""
  for path, text in render.rendered().items():
    with open(path) as f:
      assert f.read() == text, (
          f'{os.path.relpath(path, results_lib.REPO)} is not what '
          'benchmarks/results renders: run `python -m benchmarks render`')
