"""Orbax checkpoints of a whole run, each verified by a manifest of content hashes.

A checkpoint (one orbax step folder under ``WORKDIR/checkpoints``, named by the optimizer step)
holds two items: ``state``, the train state and the partial epoch loss (orbax ``StandardSave``),
and ``data``, the grain iterator state and the position (``JsonSave``). When orbax has committed
the save, process 0 writes ``manifest.json`` into the step folder: the SHA-256 and size of every
file. A checkpoint without a manifest was cut short; one whose files do not match it is damaged.

:meth:`Checkpointer.restore` verifies the checkpoints newest first, reports each damaged one in
one line, moves it to ``WORKDIR/damaged_checkpoints/`` (so the resumed run can save that step
again) and restores the newest intact one; when none is intact it raises
:class:`NoIntactCheckpointError` and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from train import io_utils

MANIFEST = "manifest.json"

PyTree = Any


class NoIntactCheckpointError(ValueError):
  """Checkpoints exist but none matches its manifest."""


def _files(folder: str) -> list[str]:
  found = []
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.relpath(os.path.join(root, name), folder)
      if path != MANIFEST:
        found.append(path)
  return sorted(found)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def write_manifest(folder: str) -> None:
  """Writes ``folder/manifest.json``: ``{"files": {relative path: [sha256, size]}}``."""
  files = {path: [_sha256(os.path.join(folder, path)), os.path.getsize(os.path.join(folder, path))]
           for path in _files(folder)}
  io_utils.write_atomic(os.path.join(folder, MANIFEST),
                        json.dumps({"files": files, "written": time.time()}, sort_keys=True))


def verify(folder: str) -> str | None:
  """``None`` when ``folder`` matches its manifest, else the first problem found (one phrase)."""
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      files = json.load(f)["files"]
  except FileNotFoundError:
    return "incomplete (no manifest: the save did not commit)"
  except (OSError, ValueError, KeyError) as error:
    return f"unreadable manifest ({error})"
  for path, (digest, size) in sorted(files.items()):
    full = os.path.join(folder, path)
    if not os.path.exists(full):
      return f"{path} is missing"
    if os.path.getsize(full) != size:
      return f"{path} has {os.path.getsize(full)} bytes, {size} were written"
    if _sha256(full) != digest:
      return f"{path} differs from what was written (content hash)"
  return None


def _steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted((int(name) for name in os.listdir(directory)
                 if name.isdigit() and os.path.isdir(os.path.join(directory, name))),
                reverse=True)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class Checkpointer:
  """Saves and restores ``{"state", "data"}`` checkpoints in ``workdir/checkpoints``.

  Args:
    workdir: the run's folder.
    keep: how many checkpoints to keep (>= 1); older ones are deleted once a newer one has its
      manifest.
    log: where the one-line reports of damaged checkpoints go.
  """

  def __init__(self, workdir: str, keep: int, log: Callable[[str], None] = print):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.keep = keep
    self.log = log
    self._manager: ocp.CheckpointManager | None = None

  def _open(self) -> ocp.CheckpointManager:
    if self._manager is None:
      # Retention is done here, after the manifest: orbax's own max_to_keep deletes the older
      # checkpoints as soon as the new one commits, so a run killed before the new manifest
      # would be left with no verifiable checkpoint (keep_checkpoints=1).
      options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                             enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def _intact_step(self) -> int | None:
    """The newest step that matches its manifest, after moving the damaged newer ones aside."""
    steps = _steps(self.directory)
    problems = []
    for step in steps:
      problem = verify(os.path.join(self.directory, str(step)))
      if problem is None:
        break
      problems.append((step, problem))
    else:
      if problems:
        raise NoIntactCheckpointError(
            f"no intact checkpoint in {self.directory}: " + "; ".join(
                f"step {s} {p}" for s, p in problems) + "; move the folder away to start over")
      return None
    _barrier("checkpoints verified")
    if problems and jax.process_index() == 0:
      damaged = os.path.join(self.workdir, "damaged_checkpoints")
      os.makedirs(damaged, exist_ok=True)
      for s, p in problems:
        target = os.path.join(damaged, f"{s}-{int(time.time())}")
        shutil.move(os.path.join(self.directory, str(s)), target)
        self.log(f"checkpoint step {s} is damaged: {p}; moved to {target}; using step {step}")
    _barrier("damaged checkpoints moved")
    return step

  def restore(self, state: PyTree, extra: PyTree) -> tuple[PyTree, PyTree, dict] | None:
    """The newest intact checkpoint restored into ``state``'s and ``extra``'s structure and
    shardings, and its ``data`` item; ``None`` when there is no checkpoint."""
    step = self._intact_step()
    if step is None:
      return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"state": state, "extra": extra})
    restored = self._open().restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return restored["state"]["state"], restored["state"]["extra"], dict(restored["data"])

  def save(self, step: int, state: PyTree, extra: PyTree, data: dict) -> None:
    """Saves and commits step ``step``, then writes its manifest (every process calls this)."""
    manager = self._open()
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"state": state, "extra": extra}),
        data=ocp.args.JsonSave(data)), force=True)
    manager.wait_until_finished()
    _barrier("checkpoint committed")
    if jax.process_index() == 0:
      write_manifest(os.path.join(self.directory, str(step)))
    _barrier("manifest written")
    for old in sorted(manager.all_steps())[:-self.keep]:
      manager.delete(old)

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()

