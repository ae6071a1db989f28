"""Writing run outputs so that nothing half-written is ever left on disk."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

  The file gets the mode a plain ``open()`` would give it (0666 less the umask; ``mkstemp``
  alone would leave it private).
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(handle, "wb" if isinstance(data, bytes) else "w") as file:
      file.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def figure_png(fig: Any, dpi: int = 72) -> bytes:
  """A matplotlib figure rendered to PNG bytes (to be written with :func:`write_atomic`)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  return buffer.getvalue()
