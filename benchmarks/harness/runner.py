"""One process per job: fresh memory, its own peak, a crash costs one row.

The parent launches `python -m benchmarks <suite> --job=<name>` (or any
command, e.g. another interpreter for torchvision), waits with a timeout,
reads the child's peak resident set from the kernel (wait4's ru_maxrss,
through a small relay process: the whole life of the job, model building
included, whatever it does) and keeps the log's tail when it fails. The child runs its suite's
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


# Starts the job and reports its exit status and peak RSS. Why a relay: a
# child's peak counts from its fork, and a forked (or vforked, then exec'd)
# child starts with its parent's high-water mark: from an 800 MiB parent,
# `python -c pass` peaked at 817 MiB. The relay is small, so the job's peak
# is its own whoever launches it. argv: status file, file size limit
# (bytes, 0: none), the command.
RELAY = """
import os, resource, signal, subprocess, sys
status_path, limit, command = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if limit:
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
_, status, usage = os.wait4(subprocess.Popen(command).pid, 0)
with open(status_path, 'w') as f:
  f.write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')
"""


def run_process(command: list[str], log_path: str, timeout_s: float,
                env: dict | None = None, cwd: str = REPO,
                stderr_path: str | None = None, file_size_limit: int = 0
                ) -> tuple[int | None, float, float]:
  """Runs `command` (stdin empty) with its output into `log_path`.

  Args:
    command: the program and its arguments.
    log_path: receives stdout, and stderr unless `stderr_path` is given.
    timeout_s: the process and its children are killed after this long.
    env: its environment (default: this one's).
    cwd: its working folder.
    stderr_path: where stderr goes, if apart from stdout.
    file_size_limit: the largest file it may write (bytes; 0: no limit):
      a full disk without a small filesystem.

  Returns:
    (exit status, None when killed at the timeout; wall seconds; the
    command's own peak resident set in MiB, 0.0 when killed).
  """
  start = time.time()
  status_path = log_path + '.status'
  with open(log_path, 'w') as log, open(stderr_path or os.devnull, 'w') as e:
    process = subprocess.Popen(
        [sys.executable, '-c', RELAY, status_path, str(file_size_limit),
         *command], stdin=subprocess.DEVNULL, stdout=log,
        stderr=e if stderr_path else subprocess.STDOUT, cwd=cwd, env=env,
        start_new_session=True)
  try:
    process.wait(timeout_s)
  except subprocess.TimeoutExpired:
    # Its own session: the job's children (data workers) go too.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return None, time.time() - start, 0.0
  try:
    with open(status_path) as f:
      status, peak_kib = (int(field) for field in f.read().split())
    os.remove(status_path)
  except (OSError, ValueError):  # the relay itself failed
    status, peak_kib = process.returncode or 1, 0
  return status, time.time() - start, peak_kib / 1024


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
