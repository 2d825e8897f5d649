"""Jobs, their settings, and the resumable store of what they measured.

A job is one measurement: a kind ('infer', 'train', 'accuracy', ...) of a
system at an image size. Each runs in its own process (harness/runner.py)
and its result is stored, under the hash of the settings it ran with, in the
work folder's results.json as soon as it ends: running the same command
again redoes only the jobs that are missing, failed, or were measured under
other settings, so a run of hours survives being interrupted.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from typing import Callable

from benchmarks.harness import machine
from masklab_tf import files


@dataclasses.dataclass(frozen=True)
class Job:
  """One measurement. `name` ('kind-system-size', empty parts left out) is
  its key in the store and the name of its log."""
  kind: str
  system: str = ''
  size: int = 0

  def __post_init__(self):
    # The name is the job's only identity between processes (the runner is
    # handed it on its command line) and in stores, so a job whose name
    # `parse` would read back as another job is refused here rather than
    # measured and stored under the wrong size.
    if not self.kind or '-' in self.kind:
      raise ValueError(f'job kind {self.kind!r}: must be non-empty, no "-"')
    if self.system.split('-')[-1].isdigit():
      raise ValueError(
          f'job system {self.system!r}: its last "-" part is a number, which '
          f'the name {self.kind}-{self.system} would read back as a size; '
          'rename it (e.g. "scales_1-2" -> "scales_1to2")')
    if self.size < 0:
      raise ValueError(f'job size {self.size}: must be >= 0')

  @property
  def name(self) -> str:
    parts = [self.kind, self.system, str(self.size) if self.size else '']
    return '-'.join(part for part in parts if part)

  @classmethod
  def parse(cls, name: str) -> 'Job':
    """The job of a `name`; a trailing number is its size."""
    parts = name.split('-')
    size = int(parts.pop()) if len(parts) > 1 and parts[-1].isdigit() else 0
    return cls(parts[0], '-'.join(parts[1:]), size)


def settings_hash(settings: dict) -> str:
  """A short digest of `settings` (key order does not matter)."""
  canonical = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclasses.dataclass
class Outcome:
  """What running a job gave: its result, or why there is none."""
  result: dict | None
  error: str = ''
  seconds: float = 0.0
  peak_rss_mib: float | None = None


class Store:
  """results.json of a work folder: jobs measured, jobs failed, and the
  commands that ran there. Saved atomically after every job."""

  def __init__(self, path: str):
    self.path = path
    self.data = {'jobs': {}, 'failed': {}, 'invocations': []}
    if os.path.exists(path):
      with open(path) as f:
        try:
          self.data = json.load(f)
        except json.JSONDecodeError as error:
          raise ValueError(f'{path}: not a results store ({error}); move it '
                           'away to start afresh') from error
    self.invocation = len(self.data['invocations'])

  def begin(self, command: str) -> None:
    self.data['invocations'].append({
        'command': command,
        'date': datetime.datetime.now().isoformat(timespec='seconds')})
    self.save()

  def save(self) -> None:
    files.write_json(self.path, self.data, indent=1)

  def entry(self, job: Job | str, settings: dict) -> dict | None:
    """The stored entry of `job` measured under `settings`, else None."""
    name = job if isinstance(job, str) else job.name
    entry = self.data['jobs'].get(name)
    if entry and entry['settings_hash'] == settings_hash(settings):
      return entry
    return None

  def result(self, job: Job | str, settings: dict) -> dict | None:
    entry = self.entry(job, settings)
    return entry['result'] if entry else None

  def record(self, job: Job, settings: dict, outcome: Outcome) -> None:
    now = datetime.datetime.now()
    stamp = {'settings_hash': settings_hash(settings), 'settings': settings,
             'machine': machine.describe(),
             'invocation': self.invocation, 'seconds': outcome.seconds,
             'peak_rss_mib': outcome.peak_rss_mib,
             'date': now.date().isoformat(), 'time': now.strftime('%H:%M')}
    if outcome.result is None:
      self.data['failed'][job.name] = dict(stamp, error=outcome.error)
    else:
      self.data['failed'].pop(job.name, None)
      self.data['jobs'][job.name] = dict(stamp, result=outcome.result)
    self.save()

  def measured(self, settings: dict) -> dict[str, dict]:
    """{name: entry} of every job measured under `settings`."""
    digest = settings_hash(settings)
    return {name: entry for name, entry in self.data['jobs'].items()
            if entry['settings_hash'] == digest}

  def adopt(self, entries: dict[str, dict], settings: dict) -> list[str]:
    """Takes over the entries (from a published result) measured under
    `settings` that this store lacks; returns their names.

    A suite that runs for longer than a machine lives (the ablations'
    ~50 training runs) keeps its runs in the published result, and a
    fresh work folder continues from them instead of measuring them again.
    """
    adopted = [name for name, entry in entries.items()
               if entry['settings_hash'] == settings_hash(settings)
               and not self.entry(name, settings)]
    for name in adopted:
      self.data['failed'].pop(name, None)
      self.data['jobs'][name] = dict(entries[name], invocation='published')
    self.save()
    return adopted

  def forget(self, names: list[str]) -> None:
    """Drops the stored results of `names`: the next run measures them
    again."""
    for name in names:
      self.data['jobs'].pop(name, None)
    self.save()

  def failed(self, settings: dict) -> list[str]:
    digest = settings_hash(settings)
    return [name for name, entry in self.data['failed'].items()
            if entry['settings_hash'] == digest]


def run_plan(plan: list[Job], store: Store, settings: dict,
             run: Callable[[Job], Outcome],
             summary: Callable[[Job, dict], str] = lambda job, result: '',
             log: Callable[[str], None] = print) -> list[str]:
  """Runs the jobs of `plan` the store does not hold under `settings`, in
  order; returns the names of the jobs that failed."""
  failed = []
  for job in plan:
    done = store.entry(job, settings)
    if done:
      log(f'{job.name}: measured before (invocation {done["invocation"]})')
      continue
    log(f'{job.name}: running')
    start = time.time()
    outcome = run(job)
    outcome.seconds = outcome.seconds or time.time() - start
    store.record(job, settings, outcome)
    if outcome.result is None:
      failed.append(job.name)
      log(f'{job.name}: FAILED after {outcome.seconds:.0f} s: '
          f'{outcome.error}')
    else:
      peak = (f', peak {outcome.peak_rss_mib:.0f} MiB'
              if outcome.peak_rss_mib else '')
      shown = summary(job, outcome.result)
      log(f'{job.name}: {outcome.seconds:.0f} s{peak}'
          + (f'; {shown}' if shown else ''))
  return failed
