"""The report writers the benchmarks share: number formats for the markdown tables, the
results and figures folders, matplotlib without a display, figures and JSON written atomically.
Imports no other benchmark module but ``stats``."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import jax

from train import io_utils
from train.bench.stats import TIE

RESULTS_DIR = os.path.join("docs", "results")
FIGURES_DIR = os.path.join("docs", "figures")


def platform_name() -> str:
  return f"{jax.devices()[0].platform}, {os.cpu_count()} cores, {platform.machine()}"


def fmt(stats: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
  if stats["mean"] is None:
    return "-"
  text = f"{scale * stats['mean']:.{digits}f}"
  if stats["se"] is not None:
    text += f" ± {scale * stats['se']:.{digits}f}"
  return text


def fmt_lr(lr: float | None) -> str:
  return "own" if lr is None else f"{lr:g}"


def fmt_value(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
  return "-" if value is None else f"{scale * value:.{digits}f}"


def fmt_worst(worst: dict[str, Any], scale: float = 100.0) -> str:
  """``value ± se (at rate)`` of one :func:`worst_case` pick."""
  text = fmt({"mean": worst["value"], "se": worst.get("se")}, scale)
  return text if worst["value"] is None else f"{text} ({fmt_lr(worst['learning_rate'])})"


def fmt_versus(diff: dict[str, Any]) -> str:
  """A difference of :func:`train.bench.compare.goal`: ``+0.3 (1.2 s.e.)`` in accuracy points."""
  if diff["difference"] is None:
    return "-"
  if abs(diff["difference"]) <= TIE:
    return "0.0 (tie)"
  in_se = "-" if diff["in_se"] is None else f"{diff['in_se']:+.1f}"
  return f"{100 * diff['difference']:+.1f} ({in_se} s.e.)"


def pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig: Any, path: str) -> None:
  """Writes a PNG atomically, then closes the figure."""
  try:
    io_utils.write_atomic(path, io_utils.figure_png(fig))
  finally:
    pyplot().close(fig)


def write_json(path: str, document: dict[str, Any]) -> None:
  io_utils.write_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")

