"""``curves.png``: loss, accuracy and learning-rate curves of a run from its metric rows."""

from __future__ import annotations

from typing import Any

from train import io_utils

#: At most this many rate curves are drawn (per-tensor rates can number in the hundreds).
MAX_RATE_CURVES = 12


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
  """One metric per row; missing or null (non-finite) values as NaN gaps."""
  return [float("nan") if r.get(key) is None else r[key] for r in rows]


def _rate_keys(rows: list[dict[str, Any]]) -> list[str]:
  keys = [k for k in rows[-1] if "learning_rate" in k and not k.endswith(("/min", "/max"))]
  return keys[:MAX_RATE_CURVES]


def render_curves(rows: list[dict[str, Any]], title: str = "") -> bytes:
  """Loss / accuracy / rate (and angular velocity, when logged) panels as PNG bytes.

  Args:
    rows: per-epoch metric rows as in ``metrics.jsonl``.
    title: the figure title.

  Returns:
    The PNG file's bytes (the caller writes them, atomically).
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  epochs = [r["epoch"] for r in rows]
  has_angle = any("angular_velocity" in r for r in rows)
  panels = 4 if has_angle else 3
  fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
  axes[0].plot(epochs, _series(rows, "train_loss"), label="train")
  axes[0].plot(epochs, _series(rows, "test_loss"), label="test")
  axes[0].set(xlabel="epoch", ylabel="loss", yscale="log")
  axes[0].legend()
  axes[1].plot(epochs, _series(rows, "test_accuracy"))
  axes[1].set(xlabel="epoch", ylabel="test accuracy")
  rate_axis = axes[2]
  for key in _rate_keys(rows):
    rate_axis.plot(epochs, _series(rows, key), label=key)
  rate_axis.set(xlabel="epoch", ylabel="learning rate (end of epoch)")
  if any(v is not None and v > 0 for r in rows for k, v in r.items() if k in _rate_keys(rows)):
    rate_axis.set_yscale("log")
  if _rate_keys(rows):
    rate_axis.legend(fontsize=6)
  if has_angle:
    axes[3].plot(epochs, _series(rows, "angular_velocity"))
    axes[3].set(xlabel="epoch", ylabel="angular velocity (deg)")
  fig.suptitle(title)
  fig.tight_layout()
  try:
    return io_utils.figure_png(fig, dpi=100)
  finally:
    plt.close(fig)
