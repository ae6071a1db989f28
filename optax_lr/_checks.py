"""Argument validation shared by every constructor.

Each check raises ``TypeError`` for a value of the wrong kind (a bool where a number is meant,
``None``, a string, a schedule where a constant is needed, an array that is not a scalar) and
``ValueError`` for a number out of range, both naming the argument and what it accepts.

Only tracers pass unchecked: a hyperparameter injected with ``optax.inject_hyperparams`` arrives
as a ``jax.Array`` (concrete in ``init``, traced inside a jitted ``update``), and a traced value
cannot be inspected. A concrete ``jax.Array`` is checked like a Python number.

Structure. A state's structure depends only on static information, as in optax: whether an
optional argument is None (``momentum``, ``weight_decay``: the stage is left out), or an argument
documented as static (``update_every`` sets whether TLR keeps a window buffer, ``drop_delay``
whether AutoDrop keeps an average, ``smoothing`` a shape), which :func:`static_integer_at_least`
refuses as an array: under ``optax.inject_hyperparams`` such an argument goes in ``static_args``,
so ``inject_hyperparams(f)(**numeric_args)`` has the plain call's state.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def _is_tracer(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def _kind(value: Any) -> str:
  if callable(value):
    return "a callable (schedule)"
  return type(value).__name__


def _concrete(value: Any, name: str = "value", *, integer: bool = False) -> float | None:
  """The value as a Python float; None only when it is traced.

  Raises ``TypeError`` naming ``name`` for anything that is not a real number or a 0-d numeric
  array (bools, ``None``, strings, callables, arrays with elements).
  """
  if _is_tracer(value):
    if getattr(value, "shape", ()) != ():
      raise TypeError(f"`{name}` must be a scalar; got a traced array of shape {value.shape}.")
    return None
  if isinstance(value, bool | np.bool_) or value is None or isinstance(value, str | bytes):
    raise TypeError(f"`{name}` must be a number; got {value!r} ({_kind(value)}).")
  if callable(value):
    raise TypeError(f"`{name}` must be a number; got {value!r} ({_kind(value)}).")
  try:
    array = np.asarray(value)
  except Exception as error:  # noqa: BLE001 - report what was passed
    raise TypeError(f"`{name}` must be a number; got {value!r} ({_kind(value)}).") from error
  if array.shape != ():
    raise TypeError(f"`{name}` must be a scalar; got an array of shape {array.shape}.")
  if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
    raise TypeError(f"`{name}` must be a number; got {value!r} (dtype {array.dtype}).")
  if np.issubdtype(array.dtype, np.complexfloating):
    raise TypeError(f"`{name}` must be a real number; got {value!r}.")
  if integer and not np.issubdtype(array.dtype, np.integer):
    raise TypeError(f"`{name}` must be an integer; got {value!r} ({_kind(value)}).")
  return float(array)


def static_number(value: Any) -> float | None:
  """The value as a Python float when it is a Python or NumPy number, else None.

  For structural choices only: a ``jax.Array`` (concrete or traced, as an injected hyperparameter
  is) gives None, so the caller takes its general path whatever the array holds.
  """
  if isinstance(value, jax.Array) or _is_tracer(value) or isinstance(value, bool | np.bool_):
    return None
  if isinstance(value, int | float | np.integer | np.floating):
    return float(value)
  return None


def is_static_zero(value: Any) -> bool:
  """True for a Python (or NumPy) 0; False for anything else, an injected array included."""
  return static_number(value) == 0


def _fail(name: str, value: Any, valid: str) -> None:
  raise ValueError(f"`{name}` must be {valid}; got {value!r}.")


def positive(name: str, value: Any) -> None:
  """``value > 0`` (and finite)."""
  x = _concrete(value, name)
  if x is not None and not (x > 0 and math.isfinite(x)):
    _fail(name, value, "a finite number > 0")


def non_negative(name: str, value: Any) -> None:
  """``value >= 0`` (and finite)."""
  x = _concrete(value, name)
  if x is not None and not (x >= 0 and math.isfinite(x)):
    _fail(name, value, "a finite number >= 0")


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> None:
  """``low <= value <= high``, either end optionally open."""
  x = _concrete(value, name)
  if x is None:
    return
  ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
  if not ok:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    _fail(name, value, f"in {left}{low}, {high}{right}")


def ordered(low_name: str, low: Any, high_name: str, high: Any) -> None:
  """``low <= high`` (skipped when either is traced)."""
  x, y = _concrete(low, low_name), _concrete(high, high_name)
  if x is not None and y is not None and x > y:
    raise ValueError(f"`{low_name}` must be <= `{high_name}`; got {low_name}={low!r} > "
                     f"{high_name}={high!r}.")


def integer_at_least(name: str, value: Any, minimum: int) -> None:
  """An integer ``>= minimum``: a Python or NumPy int, or an integer ``jax.Array`` (injected).

  A traced integer passes unchecked; the caller must then not use it as a shape.
  """
  x = _concrete(value, name)
  if x is None:
    if not np.issubdtype(value.dtype, np.integer):
      raise TypeError(f"`{name}` must be an integer; got a traced {value.dtype} value.")
    return
  if not np.issubdtype(np.asarray(value).dtype, np.integer) or x < minimum:
    _fail(name, value, f"an integer >= {minimum}")


def static_integer_at_least(name: str, value: Any, minimum: int) -> int:
  """An integer ``>= minimum`` that sets the state's structure: a Python (or NumPy) int.

  Returns it as a Python int. A ``jax.Array`` (an injected hyperparameter, concrete in ``init``
  and traced in ``update``) raises ``TypeError``: the structure would differ between the two;
  pass the argument in ``optax.inject_hyperparams(..., static_args=...)``.
  """
  if isinstance(value, jax.Array) or _is_tracer(value):
    raise TypeError(f"`{name}` sets the structure of the optimizer state and must be a Python "
                    f"int; got {value!r}. Under optax.inject_hyperparams, pass it in "
                    f"static_args.")
  integer_at_least(name, value, minimum)
  return int(np.asarray(value))


def flag(name: str, value: Any) -> None:
  """A ``bool`` (a NumPy bool too); numbers and strings are refused, not read as truthy."""
  if not isinstance(value, bool | np.bool_):
    raise TypeError(f"`{name}` must be a bool (True or False); got {value!r} ({_kind(value)}).")


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
  """One of a fixed set of strings."""
  if not isinstance(value, str):
    raise TypeError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; got "
                    f"{value!r} ({_kind(value)}).")
  if value not in choices:
    _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


def training_loss(value: Any, method: str) -> Any:
  """The training loss ``value`` that ``method`` reads in ``update``.

  A ``ValueError`` when it is missing, naming ``method`` and saying how each kind of training
  loop passes it (Flax's ``TrainState.apply_gradients`` passes no keyword to the optimizer).
  """
  if value is None:
    raise ValueError(
        f"{method} needs the training loss, as the keyword `value` of update: "
        "opt.update(grads, opt_state, params, value=loss) in an optax loop, "
        "optimizer.update(model, grads, value=loss) with flax.nnx.Optimizer. Flax's "
        "TrainState.apply_gradients passes no keyword to the optimizer: there call "
        "state.tx.update(grads, state.opt_state, state.params, value=loss) and "
        "state.replace(...) with the new params and opt_state.")
  return value


def learned_initial_rate(value: Any, method: str) -> None:
  """``learning_rate > 0`` for a method that learns its rate from this initial value.

  Such a method updates the rate it holds in its state, so an optax schedule has nothing to apply
  to; it is refused with a ``TypeError`` that says so.
  """
  if callable(value):
    raise TypeError(
        f"`learning_rate` of {method} must be a number > 0, not a schedule ({value!r}): "
        f"{method} learns its rate from this initial value and keeps it in its state, so a "
        "schedule has no step to set. Schedule an outer multiplier instead, e.g. "
        "optax.chain(opt, optax.scale_by_schedule(schedule)).")
  positive("learning_rate", value)


def schedule_or_positive(name: str, value: Any) -> None:
  """An optax schedule (any callable of the step count) or a number ``> 0``."""
  if callable(value) and not _is_tracer(value) and not isinstance(value, jax.Array):
    return
  positive(name, value)
