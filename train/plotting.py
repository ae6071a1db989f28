"""``curves.png``: a run's curves from its metric rows, one kind of quantity per panel.

Panels: loss; test accuracy; learning rates (every reading in units of a rate: a single rate, the
mean effective per-element rate with its min-max band, per-tensor and per-level rates); and, when
the run logs them, CAM-HD's combination weights (dimensionless), the rate norm over elements
(AdaSecant thesis, Figures 4.21-4.22; it grows with the parameter count, so it is not a rate) and
AutoDrop's angular velocity (degrees). A diverged epoch is marked on every panel.

:class:`CurveWriter` writes the file at most every few seconds during a run and once at its end:
drawing costs about as much as an epoch of the main job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from train import io_utils

#: At most this many per-tensor / per-level rate curves are drawn (there can be hundreds).
MAX_RATE_CURVES = 12

_RATE = "learning_rate"
_STATS = ("/mean", "/min", "/max", "/norm")


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
  """One metric per row; missing or null (non-finite) values as NaN gaps."""
  return [float("nan") if r.get(key) is None else r[key] for r in rows]


def _keys(rows: Sequence[dict[str, Any]]) -> list[str]:
  seen: dict[str, None] = {}
  for row in rows:
    seen.update(dict.fromkeys(row))
  return list(seen)


def rate_curves(keys: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """Split metric keys into (single rates, bases of effective-rate summaries, component rates).

  ``learning_rate`` is a single rate; ``learning_rate/mean|min|max`` is the summary with base
  ``learning_rate``; ``learning_rate/global``, ``learning_rate/Dense_0/kernel`` and the means of
  array levels (``learning_rate/filter/mean``) are component rates. Norms are left out.
  """
  singles = [k for k in keys if k.endswith(_RATE)]
  bases = [k[:-len("/mean")] for k in keys if k.endswith(f"{_RATE}/mean")]
  components = [k for k in keys if _RATE in k and k not in singles
                and not any(k == f"{b}{s}" for b in bases for s in _STATS)
                and not k.endswith(("/min", "/max", "/norm"))]
  return singles, bases, components


def figure(rows: Sequence[dict[str, Any]], title: str = "") -> tuple[Any, dict[str, Any]]:
  """The panels described in the module docstring.

  Args:
    rows: per-epoch metric rows as in ``metrics.jsonl``.
    title: the figure title.

  Returns:
    The matplotlib figure (close it with ``plt.close``) and its axes by panel: ``"loss"``,
    ``"accuracy"``, ``"rate"``, and ``"weights"``, ``"norm"``, ``"angle"`` when logged.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  epochs = [r["epoch"] for r in rows]
  keys = _keys(rows)
  singles, bases, components = rate_curves(keys)
  weights = [k for k in keys if k.startswith("combination_weights/")]
  norms = [k for k in keys if _RATE in k and k.endswith("/norm")]
  angles = [k for k in keys if k.startswith("angular_velocity")]
  panels = ["loss", "accuracy", "rate"] + [name for name, present in (
      ("weights", weights), ("norm", norms), ("angle", angles)) if present]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
  ax = dict(zip(panels, axes[0], strict=True))

  ax["loss"].plot(epochs, _series(rows, "train_loss"), label="train")
  ax["loss"].plot(epochs, _series(rows, "test_loss"), label="test")
  ax["loss"].set(xlabel="epoch", ylabel="loss", yscale="log")
  ax["loss"].legend(fontsize=7)
  ax["accuracy"].plot(epochs, _series(rows, "test_accuracy"))
  ax["accuracy"].set(xlabel="epoch", ylabel="test accuracy")

  rate_axis = ax["rate"]
  drawn: list[float] = []
  for key in singles:
    rate_axis.plot(epochs, _series(rows, key), label=key)
    drawn += _series(rows, key)
  for base in bases:
    mean = _series(rows, f"{base}/mean")
    rate_axis.plot(epochs, mean, lw=2, label=f"{base} mean (band: min-max)")
    low, high = _series(rows, f"{base}/min"), _series(rows, f"{base}/max")
    rate_axis.fill_between(epochs, low, high, alpha=0.2)
    drawn += mean + low + high
  shown = components[:MAX_RATE_CURVES]
  for key in shown:
    rate_axis.plot(epochs, _series(rows, key), lw=0.8, alpha=0.7, label=key)
    drawn += _series(rows, key)
  label = "learning rate (end of epoch)"
  if len(components) > len(shown):
    label += f"; {len(shown)} of {len(components)} components"
  rate_axis.set(xlabel="epoch", ylabel=label)
  finite = [v for v in drawn if v == v]
  if finite and min(finite) > 0:
    rate_axis.set_yscale("log")
  if singles or bases or shown:
    rate_axis.legend(fontsize=6)
  if weights:
    for key in weights:
      ax["weights"].plot(epochs, _series(rows, key), label=key.split("/", 1)[1])
    ax["weights"].set(xlabel="epoch", ylabel="combination weight", ylim=(-0.05, 1.05))
    ax["weights"].legend(fontsize=7)
  if norms:
    for key in norms:
      ax["norm"].plot(epochs, _series(rows, key), label=key)
    ax["norm"].set(xlabel="epoch", ylabel="rate norm over elements")
    ax["norm"].legend(fontsize=6)
  if angles:
    for key in angles:
      ax["angle"].plot(epochs, _series(rows, key), label=key)
    ax["angle"].set(xlabel="epoch", ylabel="angular velocity (deg)")

  for axis in ax.values():
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
  for row in rows:
    if row.get("diverged"):
      for axis in ax.values():
        axis.axvline(row["epoch"], color="red", ls="--", lw=1)
      ax["loss"].text(row["epoch"], 0.5, " diverged", color="red", fontsize=8,
                      transform=ax["loss"].get_xaxis_transform())
  fig.suptitle(title)
  fig.tight_layout()
  return fig, ax


def render_curves(rows: Sequence[dict[str, Any]], title: str = "") -> bytes:
  """:func:`figure` as PNG bytes (the caller writes them, atomically)."""
  fig, _ = figure(rows, title)  # selects the Agg backend before pyplot is imported here
  import matplotlib.pyplot as plt

  try:
    return io_utils.figure_png(fig, dpi=100)
  finally:
    plt.close(fig)


class CurveWriter:
  """Writes ``curves.png`` at most every ``every_seconds`` during a run and once at its end.

  Args:
    path: the PNG file.
    title: the figure title.
    every_seconds: the least time between two writes; the first comes this long after the
      writer is made (a short run draws only once, at its end).
    clock: seconds, monotonic (for tests).
  """

  def __init__(self, path: str | os.PathLike, title: str, every_seconds: float,
               clock: Callable[[], float] = time.monotonic):
    self.path, self.title, self.every_seconds, self._clock = path, title, every_seconds, clock
    self._last = clock()
    self._written: int | None = None
    self.writes = 0

  def _write(self, rows: Sequence[dict[str, Any]]) -> None:
    io_utils.write_atomic(self.path, render_curves(rows, self.title))
    self._last, self._written = self._clock(), len(rows)
    self.writes += 1

  def update(self, rows: Sequence[dict[str, Any]]) -> bool:
    """Writes when ``every_seconds`` have passed since the last write; True if it wrote."""
    if rows and self._clock() - self._last >= self.every_seconds:
      self._write(rows)
      return True
    return False

  def finish(self, rows: Sequence[dict[str, Any]]) -> bool:
    """The final write (skipped when the file already shows every row); True if it wrote."""
    if rows and self._written != len(rows):
      self._write(rows)
      return True
    return False
