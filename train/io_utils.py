"""Writing run outputs so that nothing half-written is ever left on disk."""

from __future__ import annotations

import os
import tempfile


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file in the same folder and a rename."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(handle, "w") as file:
      file.write(text)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise
