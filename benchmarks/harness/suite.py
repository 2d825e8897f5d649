"""What every suite shares: its flags, its work folder, and the run itself.

A suite is a module of benchmarks/suites/ with
  define_flags(): its own flags (the common ones below are defined for it);
  main(argv): plans its jobs and calls `run` (or measures in process, for
    suites whose rows are cheap);
  run_job(job, settings, work_dir) -> dict: one job, in a child process
    (only suites that plan jobs).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags

from benchmarks.harness import jobs as jobs_lib
from benchmarks.harness import render
from benchmarks.harness import results as results_lib
from benchmarks.harness import runner
from benchmarks.harness import scratch

FLAGS = flags.FLAGS


def define_common_flags() -> None:
  flags.DEFINE_string('work_dir', None,
                      'Scratch data, job logs and results.json (a rerun '
                      'with the same folder resumes); default: a temporary '
                      'folder, removed at the end.')
  flags.DEFINE_bool('quick', False,
                    'Smoke test: the smallest sizes and fewest repeats '
                    '(flags given explicitly win).')
  flags.DEFINE_string('publish', '',
                      'Store the result as benchmarks/results/<suite>/'
                      '<NAME>.json and re-render the docs from it.')
  flags.DEFINE_string('results_dir', results_lib.RESULTS_DIR,
                      'Where --publish stores results (tests: a scratch '
                      'folder; the docs are re-rendered only for the '
                      "repository's).")
  flags.DEFINE_integer('job_timeout_s', 4 * 3600,
                       'A job running longer is killed and counts as '
                       'failed.')
  flags.DEFINE_string('job', '', 'Internal: the job a child process runs.')
  flags.DEFINE_string('job_output', '', 'Internal: where a child writes.')


def chosen(name: str, quick: dict, active: bool | None = None):
  """Flag `name`'s value, or its --quick value unless given explicitly.

  Args:
    name: the flag.
    quick: the smoke mode's values.
    active: whether the smoke mode is on; None: --quick (a suite whose mode
      has its own flag, as device_check's --smoke, passes that).
  """
  active = FLAGS.quick if active is None else active
  if active and name in quick and not FLAGS[name].present:
    return quick[name]
  return FLAGS[name].value


def run(suite: str, plan: list[jobs_lib.Job], settings: dict,
        report: Callable[[jobs_lib.Store, dict, str], dict],
        summary: Callable[[jobs_lib.Job, dict], str] = lambda j, r: '',
        command: Callable[[jobs_lib.Job, str], list[str] | None] =
        lambda job, work_dir: None, redo: list[str] = (),
        keep_jobs: bool = False) -> dict:
  """Runs the missing jobs of `plan` in the work folder, then reports.

  Args:
    suite: the suite's name.
    plan: its jobs in running order.
    settings: what its jobs measure under (their store key).
    report: (store, settings, work_dir) -> a result (results.new).
    summary: (job, result) -> a progress line's text.
    command: (job, work_dir) -> another command for that job, or None for
      the suite's own child process.
    redo: names of jobs measured again even if stored.
    keep_jobs: whether the published result keeps every job's stored
      entry, and a run with the same --publish continues from them (for a
      suite of more machine-hours than one session has; the entries must
      be small).

  Returns:
    The result; it is printed as markdown and, with --publish, stored and
    rendered into the docs. Exits with status 1 when a job failed.
  """
  with scratch.work_dir(FLAGS.work_dir, f'masklab_{suite}_') as work_dir:
    work_dir = os.path.abspath(work_dir)
    store = jobs_lib.Store(os.path.join(work_dir, 'results.json'))
    store.begin(results_lib.shown_command())
    carried = _published_jobs(suite, store, settings)
    if carried:
      print(f'carried from the published result: {len(carried)} jobs',
            flush=True)
    store.forget(redo)
    failed = jobs_lib.run_plan(
        plan, store, settings,
        lambda job: runner.run_job(suite, job, settings, work_dir,
                                   FLAGS.job_timeout_s,
                                   command(job, work_dir)),
        summary=summary, log=lambda line: print(line, flush=True))
    result = report(store, settings, work_dir)
    if keep_jobs:
      result['jobs'] = results_lib.without_machine_paths(
          store.measured(settings))
  publish(result)
  if failed:
    print(f'\nfailed jobs (rerun the command to retry): {", ".join(failed)}')
    sys.exit(1)
  return result


def _published_jobs(suite: str, store: jobs_lib.Store,
                    settings: dict) -> list[str]:
  """Adopts into `store` the jobs kept in the result --publish names."""
  if not FLAGS.publish:
    return []
  path = results_lib.path(suite, FLAGS.publish, FLAGS.results_dir)
  if not os.path.exists(path):
    return []
  return store.adopt(results_lib.load(path).get('jobs', {}), settings)


def publish(result: dict) -> None:
  """Prints `result`; with --publish stores it and re-renders the docs."""
  print('\n' + '\n'.join(render.result_lines(result)))
  if not FLAGS.publish:
    return
  path = results_lib.write(result, FLAGS.publish, FLAGS.results_dir)
  print(f'stored {os.path.relpath(path)}')
  if os.path.abspath(FLAGS.results_dir) == results_lib.RESULTS_DIR:
    for changed in render.write_all():
      print(f'rendered {os.path.relpath(changed)}')


def child(run_job: Callable[[jobs_lib.Job, dict, str], dict]) -> None:
  runner.child_main(FLAGS.job, FLAGS.job_output, FLAGS.work_dir, run_job)
