"""One process per job: fresh memory, its own peak, a crash costs one row.

The parent launches `python -m benchmarks <suite> --job=<name>` (or any
command, e.g. another interpreter for torchvision), waits with a timeout,
reads the child's peak resident set from the kernel (wait4's ru_maxrss:
the whole life of the process, model building included, whatever the child
does) and keeps the log's tail when it fails. The child runs its suite's
`run_job` and writes the result as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable

from benchmarks.harness import jobs as jobs_lib
from masklab_tf import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SETTINGS_ENV = 'BENCHMARK_SETTINGS'
LOG_TAIL_CHARS = 1500
POLL_S = 0.2


def run_process(command: list[str], log_path: str, timeout_s: float,
                env: dict | None = None
                ) -> tuple[int | None, float, float]:
  """Runs `command` with stdout and stderr into `log_path`.

  Returns:
    (exit status, or None when killed at the timeout; wall seconds; the
    process's peak resident set in MiB).
  """
  start = time.time()
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               cwd=REPO, env=env, start_new_session=True)
  status, usage, killed = 0, None, False
  while True:
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid:
      break
    if time.time() - start > timeout_s and not killed:
      # Its own session: the job's children (data workers) go too.
      os.killpg(process.pid, signal.SIGKILL)
      killed = True
    time.sleep(POLL_S)
  process.returncode = os.waitstatus_to_exitcode(status)
  peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
  return (None if killed else process.returncode), time.time() - start, \
      peak_mib


def log_tail(log_path: str) -> str:
  try:
    with open(log_path, errors='replace') as f:
      return f.read()[-LOG_TAIL_CHARS:]
  except OSError:
    return ''


def run_job(suite: str, job: jobs_lib.Job, settings: dict, work_dir: str,
            timeout_s: float, command: list[str] | None = None
            ) -> jobs_lib.Outcome:
  """Runs `job` of `suite` in a child process.

  Args:
    suite: the suite's name (`python -m benchmarks <suite>`).
    job: the job.
    settings: what the suite measures under; the child reads them from the
      environment.
    work_dir: where logs/<job>.log and logs/<job>.json go.
    timeout_s: the job is killed after this long and counts as failed.
    command: another command to run instead of the suite's child (it must
      write its JSON result to the path given as its last argument).
  """
  logs = os.path.join(work_dir, 'logs')
  os.makedirs(logs, exist_ok=True)
  log_path = os.path.join(logs, f'{job.name}.log')
  output = os.path.join(logs, f'{job.name}.json')
  if os.path.exists(output):
    os.remove(output)  # a result left by an earlier, failed try
  if command is None:
    command = [sys.executable, '-m', 'benchmarks', suite, f'--job={job.name}',
               f'--work_dir={work_dir}']
  command = [*command, f'--job_output={output}']
  env = dict(os.environ, **{SETTINGS_ENV: json.dumps(settings)})
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO] + [p for p in [env.get('PYTHONPATH')] if p])
  status, seconds, peak = run_process(command, log_path, timeout_s, env)
  if status is None:
    return jobs_lib.Outcome(None, f'killed after {timeout_s:.0f} s',
                            seconds, peak)
  if status != 0 or not os.path.exists(output):
    return jobs_lib.Outcome(
        None, f'exit status {status}; log {log_path}, its tail:\n'
        f'{log_tail(log_path)}', seconds, peak)
  with open(output) as f:
    return jobs_lib.Outcome(json.load(f), '', seconds, peak)


def child_main(job_name: str, output: str, work_dir: str,
               run: Callable[[jobs_lib.Job, dict, str], dict]) -> None:
  """In the child: runs `run(job, settings, work_dir)` and writes its result
  (atomically: the parent never reads half a file)."""
  settings = json.loads(os.environ.get(SETTINGS_ENV, '{}'))
  start = time.perf_counter()
  result = run(jobs_lib.Job.parse(job_name), settings, work_dir)
  result.setdefault('job_s', time.perf_counter() - start)
  files.write_json(output, result)
