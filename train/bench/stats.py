"""The statistics the benchmarks share: mean and standard error over seeds, differences of two
such summaries, the worst case over initial rates, epochs to a fraction of the best accuracy, the
per-epoch curves and the tie tolerance. Pure numpy; imports no other benchmark module."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: "Epochs to reach this fraction of the best test accuracy" is the speed measure.
BEST_FRACTION = 0.95

# --- aggregation (pure numpy; tested on hand-made curves)

def epochs_to_fraction_of_best(accuracy: Sequence[float],
                               fraction: float = BEST_FRACTION) -> int | None:
  """The first epoch (1-based) whose accuracy reaches ``fraction`` of the curve's best.

  Non-finite entries never count as reached. None when the curve has no finite value.

  Example: ``[0.5, 0.9, 0.96, 1.0]`` with 0.95 -> 3 (0.96 >= 0.95 * 1.0).
  """
  values = np.asarray(accuracy, np.float64)
  finite = np.isfinite(values)
  if not finite.any():
    return None
  target = fraction * np.max(values[finite])
  reached = np.flatnonzero(finite & (values >= target))
  return int(reached[0]) + 1


def mean_and_standard_error(values: Sequence[float | None]) -> dict[str, Any]:
  """``{"mean", "se", "n", "values"}`` over the finite values (None and NaN are left out).

  The standard error is ``std(ddof=1) / sqrt(n)``; None when fewer than two values remain.
  """
  kept = [float(v) for v in values if v is not None and math.isfinite(v)]
  n = len(kept)
  mean = float(np.mean(kept)) if n else None
  se = float(np.std(kept, ddof=1) / math.sqrt(n)) if n > 1 else None
  return {"mean": mean, "se": se, "n": n, "values": [finite_or_none(v) for v in values]}


def summarize_setting(accuracy: np.ndarray, train_loss: np.ndarray | None = None,
                      fraction: float = BEST_FRACTION) -> dict[str, Any]:
  """Best and final test accuracy and epochs to ``fraction`` of the best, over seeds.

  Args:
    accuracy: ``(seeds, epochs)`` test accuracy.
    train_loss: ``(seeds, epochs)`` training loss; a seed whose final loss is not finite counts as
      diverged.
    fraction: the share of the best accuracy that counts as reached.

  Returns:
    ``{"best_accuracy", "final_accuracy", "epochs_to_fraction_of_best"}`` (each
    :func:`mean_and_standard_error` over seeds; epochs measured on each seed's own curve) and
    ``"diverged_seeds"``.
  """
  accuracy = np.asarray(accuracy, np.float64)
  best = [float(np.nanmax(a)) if np.isfinite(a).any() else None for a in accuracy]
  final = [float(a[-1]) for a in accuracy]
  epochs = [epochs_to_fraction_of_best(a, fraction) for a in accuracy]
  diverged = 0
  if train_loss is not None:
    diverged = int(np.sum(~np.isfinite(np.asarray(train_loss)[:, -1])))
  return {"best_accuracy": mean_and_standard_error(best),
          "final_accuracy": mean_and_standard_error(final),
          "epochs_to_fraction_of_best": mean_and_standard_error(epochs),
          "diverged_seeds": diverged}


def worst_case(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The worst case of one method over its settings (initial rates).

  Lowest mean best accuracy, lowest mean final accuracy and highest mean epochs-to-95%, each with
  its standard error over seeds and the rate where it happens (the first such setting on a tie),
  plus the spread (max - min) of the mean final accuracy.

  Args:
    entries: the method's entries as :func:`summarize_setting` returns them, each with a
      ``"learning_rate"`` key.

  Returns:
    ``{"best_accuracy", "final_accuracy", "epochs_to_fraction_of_best"}``, each
    ``{"value", "se", "learning_rate"}`` (all None when no setting has a number), and
    ``"final_accuracy_spread"``, ``"diverged_seeds"`` (summed over the settings), ``"settings"``.
  """
  def pick(key: str, worst: Callable[[Sequence[float]], float]) -> dict[str, Any]:
    scored = [e for e in entries if e[key]["mean"] is not None]
    if not scored:
      return {"value": None, "se": None, "learning_rate": None}
    value = worst([e[key]["mean"] for e in scored])
    chosen = next(e for e in scored if e[key]["mean"] == value)
    return {"value": value, "se": chosen[key].get("se"), "learning_rate": chosen["learning_rate"]}

  finals = [e["final_accuracy"]["mean"] for e in entries if e["final_accuracy"]["mean"] is not None]
  return {"best_accuracy": pick("best_accuracy", min),
          "final_accuracy": pick("final_accuracy", min),
          "epochs_to_fraction_of_best": pick("epochs_to_fraction_of_best", max),
          "final_accuracy_spread": (max(finals) - min(finals)) if finals else None,
          "diverged_seeds": sum(e.get("diverged_seeds", 0) for e in entries),
          "settings": len(entries)}


def finite_or_none(value: Any) -> Any:
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def curve(values: np.ndarray) -> list[float | None]:
  """Mean over seeds per epoch (NaN where every seed is NaN) as JSON-safe floats."""
  values = np.asarray(values, np.float64)
  with np.errstate(all="ignore"):
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  return [finite_or_none(v) for v in mean]


def per_seed(values: np.ndarray) -> list[list[float | None]]:
  """Each seed's own curve (rows of a seeds x epochs array) as JSON-safe floats: the spread of a
  method over seeds is read from these (a mean curve hides which seed went where)."""
  return [[finite_or_none(v) for v in row] for row in np.asarray(values, np.float64)]


def curve_se(values: np.ndarray) -> list[float | None]:
  """Standard error over seeds per epoch of :func:`curve` (finite seeds; None below two)."""
  return [mean_and_standard_error(column)["se"] for column in np.asarray(values, np.float64).T]



#: Accuracies closer than this are a tie: a mean over seeds of k/360 accuracies differs from an
#: equal one only by float rounding (1e-8), and one test image in 5 seeds is 5.6e-4.
TIE = 1e-6


def beats(a: float | None, b: float | None) -> bool:
  """``a > b`` beyond float rounding (:data:`TIE`); False when either is missing."""
  return a is not None and b is not None and a - b > TIE


def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
  """``a - b`` of two :func:`~train.bench.mean_and_standard_error` summaries, its
  standard error ``sqrt(se_a^2 + se_b^2)``, and whether it exceeds twice that."""
  if a["mean"] is None or b["mean"] is None:
    return {"difference": None, "se": None, "beyond_2se": False}
  value = a["mean"] - b["mean"]
  se = math.sqrt((a["se"] or 0.0) ** 2 + (b["se"] or 0.0) ** 2)
  return {"difference": value, "se": se, "beyond_2se": abs(value) > 2 * se}


def pooled(entries: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
  """:func:`~train.bench.mean_and_standard_error` over the seeds of several settings."""
  return mean_and_standard_error([v for e in entries for v in e[key]["values"]])


def worst_setting(entries: Sequence[dict[str, Any]], key: str,
                  higher_is_better: bool = True) -> dict[str, Any]:
  """The setting with the worst mean ``key`` (lowest when higher is better, else highest):
  ``{"mean", "se", "learning_rate"}`` (all None when no setting has a number; the first such
  setting on a tie)."""
  return _pick(entries, key, min if higher_is_better else max)


def best_setting(entries: Sequence[dict[str, Any]], key: str,
                 higher_is_better: bool = True) -> dict[str, Any]:
  """The setting with the best mean ``key``, as :func:`worst_setting` returns it."""
  return _pick(entries, key, max if higher_is_better else min)


def _pick(entries: Sequence[dict[str, Any]], key: str,
          choose: Callable[[Sequence[float]], float]) -> dict[str, Any]:
  scored = [e for e in entries if key in e and e[key]["mean"] is not None]
  if not scored:
    return {"mean": None, "se": None, "learning_rate": None}
  value = choose([e[key]["mean"] for e in scored])
  chosen = next(e for e in scored if e[key]["mean"] == value)
  return {"mean": value, "se": chosen[key].get("se"), "learning_rate": chosen["learning_rate"]}
