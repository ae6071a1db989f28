"""Argument checks for the models: ``ValueError`` naming the attribute and its valid range.

The same message form as ``optax_lr._checks``; a separate copy because ``models/`` depends on flax
and jax only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _fail(name: str, value: Any, valid: str) -> None:
  raise ValueError(f"`{name}` must be {valid}; got {value!r}.")


def integer_at_least(name: str, value: Any, minimum: int) -> None:
  """A Python/NumPy integer ``>= minimum`` (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    _fail(name, value, f"an integer >= {minimum}")


def integers_at_least(name: str, values: Any, minimum: int) -> None:
  """A non-empty sequence of integers, each ``>= minimum``."""
  ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
  if not ok or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum
                   for v in values):
    _fail(name, values, f"a non-empty sequence of integers >= {minimum}")


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> None:
  """A real number with ``low <= value <= high``, either end optionally open."""
  ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else
                                                           value <= high)
  if not ok:
    _fail(name, value, f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def one_of(name: str, value: Any, choices: tuple[Any, ...]) -> None:
  """One of a fixed set of values."""
  if value not in choices:
    _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
