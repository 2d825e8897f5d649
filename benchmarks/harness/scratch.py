"""Scratch folders of the benchmarks: fresh ones by default, and a run
deletes only what it made.

Without --work_dir a benchmark works in a new temporary folder, removed when
it ends (however it ends), so runs never share or clobber a fixed /tmp name.
A folder the user names is theirs: nothing already in it is deleted or
overwritten; a run writes into folders it creates (`fresh_folder`) and
removes only those it made for itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def work_dir(given: str | None, prefix: str):
  """Yields the folder a run works in: `given` (created if missing, never
  removed), or a fresh temporary one (`prefix` in its name) that is removed
  when the block ends."""
  if given:
    os.makedirs(given, exist_ok=True)
    yield given
    return
  path = tempfile.mkdtemp(prefix=prefix)
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def fresh_folder(parent: str, prefix: str) -> str:
  """A new, empty folder under `parent` that no one else has: this run's
  own to fill, and to remove."""
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(dir=parent, prefix=prefix)


def set_aside(path: str) -> str | None:
  """Renames an existing `path` (an earlier run's output) to a free
  `path.earlier-N` so that a new run can take its name; returns the new
  name, or None when there was nothing there. Nothing is deleted."""
  if not os.path.lexists(path):
    return None
  number = 1
  while os.path.lexists(f'{path}.earlier-{number}'):
    number += 1
  os.rename(path, f'{path}.earlier-{number}')
  return f'{path}.earlier-{number}'
