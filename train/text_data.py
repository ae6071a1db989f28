"""A byte-level text corpus that needs no download: Python standard-library source files.

:func:`load_corpus` concatenates a fixed, sorted list of standard-library ``.py`` files (read from
the interpreter's own ``stdlib`` directory, so every machine has them), truncates the bytes to
``max_bytes`` and splits them by position: the first ``1 - held_out`` fraction trains, the rest is
held out, so no training window overlaps a held-out one. The text is the same on every machine
with the same Python minor version (the files are part of the release); a listed file that an
installation lacks is skipped.

:func:`sample_batch` draws ``batch_size`` windows of ``seq_len + 1`` bytes at positions from a
seeded generator and returns ``(inputs, targets)``, targets shifted by one byte (next-byte
prediction), as int32 arrays.
"""

from __future__ import annotations

import os
import sysconfig
from typing import NamedTuple

import numpy as np

# Long-lived, plain-Python modules of the standard library, relative to its directory.
STDLIB_FILES: tuple[str, ...] = tuple(sorted((
    "argparse.py", "ast.py", "calendar.py", "collections/__init__.py", "dataclasses.py",
    "difflib.py", "email/message.py", "enum.py", "fractions.py", "ftplib.py", "functools.py",
    "gettext.py", "heapq.py", "inspect.py", "locale.py", "logging/__init__.py", "mailbox.py",
    "optparse.py", "pathlib.py", "pickle.py", "pprint.py", "random.py", "shutil.py",
    "smtplib.py", "statistics.py", "string.py", "subprocess.py", "tarfile.py", "tempfile.py",
    "textwrap.py", "threading.py", "traceback.py", "typing.py", "zipfile.py",
)))

VOCAB_SIZE = 256


class Corpus(NamedTuple):
  """The corpus split by position.

  Attributes:
    train: uint8 bytes of the training part.
    held_out: uint8 bytes of the held-out part (after ``train`` in the concatenation).
    files: the files that were read, in order.
  """

  train: np.ndarray
  held_out: np.ndarray
  files: tuple[str, ...]


def load_corpus(max_bytes: int = 1_500_000, held_out: float = 0.1,
                stdlib_dir: str | None = None) -> Corpus:
  """Concatenated standard-library sources, truncated and split by position.

  Args:
    max_bytes: keep at most this many bytes (>= 2).
    held_out: fraction in ``(0, 1)`` of the kept bytes, at the end, held out.
    stdlib_dir: the directory to read :data:`STDLIB_FILES` from (default: this interpreter's).

  Returns:
    A :class:`Corpus`.
  """
  if not isinstance(max_bytes, int) or max_bytes < 2:
    raise ValueError(f"`max_bytes` must be an integer >= 2; got {max_bytes!r}.")
  if not 0.0 < held_out < 1.0:
    raise ValueError(f"`held_out` must be in (0, 1); got {held_out!r}.")
  root = stdlib_dir or sysconfig.get_paths()["stdlib"]
  chunks, files, total = [], [], 0
  for name in STDLIB_FILES:
    path = os.path.join(root, name)
    if not os.path.isfile(path):
      continue
    with open(path, "rb") as f:
      data = f.read()
    chunks.append(data)
    files.append(name)
    total += len(data)
    if total >= max_bytes:
      break
  text = np.frombuffer(b"".join(chunks)[:max_bytes], np.uint8)
  if text.size < 2:
    raise ValueError(f"no standard-library sources found under {root!r}.")
  split = int(round(text.size * (1.0 - held_out)))
  return Corpus(train=text[:split].copy(), held_out=text[split:].copy(), files=tuple(files))


def sample_batch(data: np.ndarray, rng: np.random.Generator, batch_size: int,
                 seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """``batch_size`` random windows of ``data``: inputs ``(B, seq_len)`` and next-byte targets.

  Args:
    data: uint8 bytes, longer than ``seq_len``.
    rng: the generator that draws the window starts (seed it for a reproducible stream).
    batch_size: windows per batch.
    seq_len: bytes per input window.

  Returns:
    ``(inputs, targets)``, int32, both ``(batch_size, seq_len)``; ``targets[:, t] = inputs[:, t+1]``
    within the window, the last target the byte after it.
  """
  if data.size <= seq_len:
    raise ValueError(f"data of {data.size} bytes is too short for windows of {seq_len + 1}.")
  starts = rng.integers(0, data.size - seq_len, size=batch_size)
  windows = data[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
  return windows[:, :-1], windows[:, 1:]


def batches(data: np.ndarray, seed: int, batch_size: int, seq_len: int):
  """An endless stream of :func:`sample_batch` batches from a generator seeded with ``seed``."""
  rng = np.random.default_rng(seed)
  while True:
    yield sample_batch(data, rng, batch_size, seq_len)


def held_out_batches(data: np.ndarray, batch_size: int, seq_len: int,
                     max_batches: int | None = None):
  """Consecutive non-overlapping windows of ``data`` in order, ``batch_size`` per batch (the
  last partial batch dropped): a fixed evaluation set."""
  n = (data.size - 1) // seq_len
  windows = data[:n * seq_len + 1]
  starts = np.arange(n) * seq_len
  count = n // batch_size if max_batches is None else min(n // batch_size, max_batches)
  for b in range(count):
    s = starts[b * batch_size:(b + 1) * batch_size]
    w = windows[s[:, None] + np.arange(seq_len + 1)].astype(np.int32)
    yield w[:, :-1], w[:, 1:]
