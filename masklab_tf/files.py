"""Writing files so that nothing half-written is ever seen or left behind.

Every file a run produces for someone else to read (configs.json,
results.json, TFRecord shards, benchmark tables) goes through `atomic_write`:
the bytes go to a temporary file in the same folder, which is flushed,
synced and renamed over the target. A reader, or a kill mid-write, sees the
old file or the new one, never a mix; two writers of one path each write
their own temporary file, so the last rename wins whole. On any error the
temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid


def temporary_path(path: str) -> str:
  """A fresh hidden name beside `path`: same folder (so the rename is
  atomic, one filesystem), unique per writer (so writers never collide)."""
  folder, name = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f'.{name}.{uuid.uuid4().hex}.tmp')


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w', **open_kwargs):
  """Opens a temporary file that replaces `path` when the block succeeds.

  Args:
    path: the file to write.
    mode: 'w' (text) or 'wb' (bytes).
    **open_kwargs: passed to open() (e.g. encoding).

  Yields:
    The open temporary file.
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f'mode must be "w" or "wb", got {mode!r}')
  temp = temporary_path(path)
  try:
    with open(temp, mode.replace('w', 'x'), **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


def write_json(path: str, value, **dump_kwargs) -> None:
  """json.dump(value) to `path`, atomically (see atomic_write)."""
  with atomic_write(path, encoding='utf-8') as f:
    json.dump(value, f, **dump_kwargs)
