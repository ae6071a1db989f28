"""A workdir that one run owns at a time, and the clean-up of a killed run's leftovers.

:func:`lock` takes an exclusive ``flock`` on ``WORKDIR/.lock`` for the run's lifetime; the kernel
drops it when the process ends, however it ends (a SIGKILLed run leaves no stale lock). A second
run on the same workdir fails at once with :class:`WorkdirBusyError`, naming the workdir and the
process that holds it, before it writes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator

LOCK_NAME = ".lock"

#: Prefix of :func:`train.io_utils.write_atomic`'s temporary files.
TEMPORARY_PREFIX = ".tmp-"

#: Marker in the names of orbax's not-yet-committed checkpoint folders.
ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"


class WorkdirBusyError(ValueError):
  """Another live process holds the workdir's lock."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      owner = json.load(f)
    return (f"process {owner['pid']} on {owner['host']} (started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner['started']))}: "
            f"{owner['command']})")
  except (OSError, ValueError, KeyError):
    return "another process"


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds ``workdir``'s lock for the ``with`` block (creating the folder if missing).

  Raises:
    WorkdirBusyError: a live process holds the lock; nothing has been changed.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(f"workdir {workdir} is in use by {_holder(path)}; wait for it to "
                             "finish or pass another --workdir") from None
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
             "command": " ".join(sys.argv)}
    os.ftruncate(handle, 0)
    os.pwrite(handle, json.dumps(owner).encode(), 0)
    yield
  finally:
    os.close(handle)  # releases the flock


def remove_temporary_files(workdir: str) -> list[str]:
  """Removes what a killed write left: ``.tmp-*`` files anywhere under ``workdir`` and orbax's
  uncommitted checkpoint folders. Returns the removed paths (call it holding the lock)."""
  removed = []
  for folder, dirs, files in os.walk(workdir):
    for name in list(dirs):
      if ORBAX_TEMPORARY in name or name.startswith(TEMPORARY_PREFIX):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(os.path.join(folder, name))
        dirs.remove(name)
    for name in files:
      if name.startswith(TEMPORARY_PREFIX):
        os.remove(os.path.join(folder, name))
        removed.append(os.path.join(folder, name))
  return removed
