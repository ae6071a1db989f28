"""Argument validation shared by every constructor.

Each check raises ``ValueError`` naming the argument and the valid range. Values that are traced
(for example hyperparameters injected with ``optax.inject_hyperparams`` and read inside ``jit``)
cannot be inspected and are passed through unchecked.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def _concrete(value: Any) -> float | None:
  """The value as a Python float, or None when it is traced or not a real scalar."""
  if isinstance(value, jax.core.Tracer) or callable(value):
    return None
  try:
    array = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything that is not array-like is checked elsewhere
    return None
  if array.shape != () or not np.issubdtype(array.dtype, np.number):
    return None
  return float(array)


def _fail(name: str, value: Any, valid: str) -> None:
  raise ValueError(f"`{name}` must be {valid}; got {value!r}.")


def positive(name: str, value: Any) -> None:
  """``value > 0`` (and finite)."""
  x = _concrete(value)
  if x is not None and not (x > 0 and math.isfinite(x)):
    _fail(name, value, "a finite number > 0")


def non_negative(name: str, value: Any) -> None:
  """``value >= 0`` (and finite)."""
  x = _concrete(value)
  if x is not None and not (x >= 0 and math.isfinite(x)):
    _fail(name, value, "a finite number >= 0")


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> None:
  """``low <= value <= high``, either end optionally open."""
  x = _concrete(value)
  if x is None:
    return
  ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
  if not ok:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    _fail(name, value, f"in {left}{low}, {high}{right}")


def ordered(low_name: str, low: Any, high_name: str, high: Any) -> None:
  """``low <= high`` (skipped when either is traced)."""
  x, y = _concrete(low), _concrete(high)
  if x is not None and y is not None and x > y:
    raise ValueError(f"`{low_name}` must be <= `{high_name}`; got {low_name}={low!r} > "
                     f"{high_name}={high!r}.")


def integer_at_least(name: str, value: Any, minimum: int) -> None:
  """An integer ``>= minimum`` (a static Python int: it sets shapes or the trace)."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    _fail(name, value, f"an integer >= {minimum}")


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
  """One of a fixed set of strings."""
  if value not in choices:
    _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
