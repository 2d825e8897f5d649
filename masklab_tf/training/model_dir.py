"""The training directory: one trainer at a time, writable, saves that fail
in one sentence.

Two bin/train processes on one --model_dir would each save over the
other's checkpoints and configs.json and both exit 0, so the writer of a
model_dir holds `ModelDirLock` for the whole run: an flock on
MODEL_DIR/.lock, which the operating system releases on any exit, SIGKILL
included. The file names the holder (PID and host) for the message the next
process gets; a name left in it by a process that is gone says that run
ended without releasing (killed), which is reported and taken over.

A read-only model_dir or a full disk are found before data and model are
built (`check_writable`); a save that fails anyway (the disk filled up while
training) becomes `SaveFailed`, a sentence that says where, why, and that
the last complete checkpoint is intact: tf.train.CheckpointManager writes a
checkpoint into `<prefix>-N_temp/` and renames it into place only once
complete, so a failed save leaves that folder and nothing else, which
`remove_partial_saves` clears at the next start.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile

from absl import logging
import tensorflow as tf

LOCK_FILE = '.lock'


class ModelDirError(RuntimeError):
  """The model_dir cannot be trained into (in use, not writable)."""


class SaveFailed(RuntimeError):
  """A checkpoint could not be written (the disk is full, ...)."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  return True


class ModelDirLock:
  """An exclusive lock on a model_dir, held while the `with` block runs.

  Raises:
    ModelDirError: on entry, when another process holds it (the message
      names its PID and host).
  """

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._file = None

  def __enter__(self) -> ModelDirLock:
    # 'a+': never truncates what a holder wrote before we know we hold it.
    handle = open(self.path, 'a+', encoding='utf-8')
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      handle.seek(0)
      holder = handle.read().strip() or 'another process'
      handle.close()
      if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise ModelDirError(
          f'{self.model_dir} is in use by another training ({holder}, lock '
          f'file {self.path}): wait for it to end or stop it, or train into '
          'another --model_dir') from None
    handle.seek(0)
    previous = handle.read().strip()
    self._warn_if_stale(previous)
    handle.seek(0)
    handle.truncate()
    handle.write(f'PID {os.getpid()} on {socket.gethostname()}\n')
    handle.flush()
    self._file = handle
    return self

  def _warn_if_stale(self, previous: str) -> None:
    """A name left in the file: its process ended without releasing."""
    match = re.fullmatch(r'PID (\d+) on (\S+)', previous)
    if not match:
      return
    pid, host = int(match.group(1)), match.group(2)
    if host == socket.gethostname() and _pid_alive(pid) and (
        pid != os.getpid()):
      state = 'a process of that PID runs, but does not hold the lock'
    else:
      state = 'it is gone'
    logging.warning('%s: taking over the lock of PID %d on %s (%s): that '
                    'training ended without releasing it (killed?); its '
                    'last complete checkpoint is resumed', self.path, pid,
                    host, state)

  def __exit__(self, *exc_info) -> None:
    # Emptied, not removed: a process that opened the file just now waits
    # on this inode; removing it would let a third one lock a new file.
    self._file.seek(0)
    self._file.truncate()
    self._file.flush()
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    self._file = None


def check_writable(model_dir: str) -> None:
  """Creates model_dir and writes (then removes) a file in it.

  Raises:
    ModelDirError: what fails and why (read-only, not a folder, no space).
  """
  try:
    os.makedirs(model_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix='.write_check'):
      pass
  except OSError as error:
    raise ModelDirError(
        f'--model_dir={model_dir} is not writable: '
        f'{error.strerror or error}'
        + (f' ({error.filename})' if error.filename else '') +
        ': choose a folder training can write into') from None


# tf.train.CheckpointManager's folder of a save in progress (its default
# prefix, the one the trainer's and the best checkpoint's managers use).
_PARTIAL_SAVE = re.compile(r'ckpt-\d+_temp')


def remove_partial_saves(folder: str) -> list[str]:
  """Removes the `ckpt-N_temp` folders of saves that never completed (a
  full disk, a kill mid-save) from `folder`; returns their paths. Only the
  holder of the lock may call it: another run's save in progress looks the
  same."""
  removed = []
  if not os.path.isdir(folder):
    return removed
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if _PARTIAL_SAVE.fullmatch(name) and os.path.isdir(path):
      shutil.rmtree(path)
      removed.append(path)
  return removed


_REASONS = {
    'No space left on device': 'no space left on device',
    'File too large': 'file too large (the size limit of one file, '
                      'ulimit -f)',
    'Disk quota exceeded': 'disk quota exceeded',
}


def save(manager: tf.train.CheckpointManager, step, check_interval=True):
  """manager.save(step); a failure is a SaveFailed sentence.

  Returns:
    What manager.save returns: the path saved, or None (interval not up).

  Raises:
    SaveFailed: where, why, and the last complete checkpoint (intact).
  """
  try:
    return manager.save(checkpoint_number=step, check_interval=check_interval)
  except (tf.errors.OpError, OSError) as error:
    text = getattr(error, 'message', None) or str(error)
    reason = next((short for long, short in _REASONS.items() if long in text),
                  None)
    if reason is None:  # TF's "path; reason [Op:...]": keep the reason.
      reason = re.sub(r'\s*\[Op:\w+\]$', '', text.split('; ')[-1]).strip()
    latest = manager.latest_checkpoint
    kept = (f'the last complete checkpoint, {latest}, is intact: make room '
            'and run again to resume from it' if latest else
            'no checkpoint had been saved yet')
    raise SaveFailed(
        f'cannot save the checkpoint of step {int(step)} in '
        f'{manager.directory}: {reason}; {kept}') from None
