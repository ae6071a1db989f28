"""Safeguards of the learned rates: options grouped by the rule they turn on.

Each option is a small frozen dataclass whose fields are checked when it is built; a factory takes
it as one argument, ``None`` (the default) meaning off, so the optimizer state's structure depends
only on whether the option is given, never on its values. ``optax.inject_hyperparams`` passes these
objects through unchanged (they are not numbers).

- :class:`RateSearch` (hypergradient family, multiplicative rule only): the bracketing phase of a
  line search, applied to the rate. While ``<g_t, d_{t-1}> > 0`` the rate is multiplied by
  ``factor`` per step; the first step with a previous direction where the inner product is not
  positive, or a backtrack, ends the search for good.
- :class:`LossBacktrack` (hypergradient family): a step whose training loss is above
  ``threshold = m + tolerance |m|`` (``m`` the loss's exponential average with decay ``decay``)
  or not finite multiplies the rate by ``min(factor, sqrt(threshold / loss))`` instead of the
  rule's step.
- :class:`WindowBacktrack` (TLR, :func:`optax_lr.scale_by_tlr`): at the end of a window whose mean
  loss exceeds ``(1 + tolerance)`` times the previous window's (or is not finite) the rate is
  multiplied by ``factor`` and that rate becomes a ceiling. A different rule from
  :class:`LossBacktrack` (window means compared with each other, a fixed cut, a ceiling), hence a
  different name.

The derivations and measurements are in :doc:`/methods/hypergradient` and :doc:`/methods/tlr`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from optax_lr import _checks


@dataclasses.dataclass(frozen=True)
class RateSearch:
  """The rate search of the hypergradient family (``rate_rule="multiplicative"`` only).

  A rate ``k`` times too small is corrected in ``log(k) / log(factor)`` steps (10 for 1000x at
  2), early, where consecutive gradients agree most, instead of the rule's
  ``ln(k) / (beta E cos)``. The rate grows while ``cos(g_t, d_{t-1}) > stop_ratio * peak``,
  ``peak`` the largest cosine seen during the search; the first step with a previous direction
  where it is not ends the search for good.

  Why a fraction of the peak. Along a direction of curvature ``lambda`` a step of rate ``lr``
  multiplies the gradient's component by ``1 - lr lambda``, so consecutive gradients agree, relative
  to their agreement at a negligible rate, as ``1 - lr lambda``: the ratio ``cos / peak`` halves at
  ``lr = 1 / (2 lambda)``, half the greedy rate ``1 / lambda``, and turns negative only past it.
  The sign test (``stop_ratio = 0``) therefore stops at or past ``1 / lambda``, and with a
  momentum or Adam direction, which lags the gradient by several steps, several doublings past
  it, up to and beyond the stability edge ``2 / lambda``; ``stop_ratio = 1/2`` stops within a
  factor ``factor`` below ``1 / lambda``, and the rule takes it the rest of the way.

  Two scalars of state (a boolean and the peak); the cosine comes from the sums that give the
  rule's.

  Attributes:
    factor: ``> 1``, the rate's growth per step while the search goes on (default 2).
    start: in ``(0, 1]``, where the search starts, relative to the factory's ``learning_rate``
      (default 1). Below 1 the search brackets from below, so a rate that is too large is never
      applied: ``learning_rate`` becomes an upper guess that costs ``log2(1 / start)`` steps
      (10 at 1e-3, :func:`optax_lr.auto_adam_hd`'s value).
    stop_ratio: in ``[0, 1)``, the fraction of the search's largest cosine below which it ends
      (default 0, as in :func:`optax_lr.auto_adam_hd`: the sign test, the bracketing phase of a
      line search; 1/2 stops below the greedy rate, measured on the comparison page).

  Example:
    >>> opt = optax_lr.adam_hd(1e-3, 0.1, rate_rule="multiplicative",
    ...                        search=optax_lr.RateSearch(start=1e-3))
  """

  factor: float = 2.0
  start: float = 1.0
  stop_ratio: float = 0.0

  def __post_init__(self):
    _checks.in_range("RateSearch.factor", self.factor, 1.0, math.inf, low_open=True,
                     high_open=True)
    _checks.in_range("RateSearch.start", self.start, 0.0, 1.0, low_open=True)
    _checks.in_range("RateSearch.stop_ratio", self.stop_ratio, 0.0, 1.0, high_open=True)


@dataclasses.dataclass(frozen=True)
class LossBacktrack:
  """The loss backtrack of the hypergradient family (either rate rule).

  ``update`` then needs the training loss as ``value=`` (as ``optax.contrib.reduce_on_plateau``
  does). The cut ``min(factor, sqrt(threshold / loss))``: along a direction of curvature
  ``lambda`` a step multiplies the loss by ``(1 - lr lambda)^2``, so a loss ``L`` times the
  threshold asks for a rate about ``sqrt(L)`` times smaller. Every finite loss joins the average,
  the rising ones too, so a loss that settles higher stops the cuts. One scalar of state.

  Attributes:
    factor: in ``(0, 1)``, the smallest cut (default 0.5; a larger rise cuts by the square root
      of its ratio to the threshold).
    tolerance: ``>= 0``, the rise relative to the average's magnitude that cuts (default 1: a
      loss twice its average; the "auto" entries use 0.5).
    decay: in ``[0, 1)``, the decay of the loss's exponential average (default 0.9, about 10
      steps).

  Example:
    >>> opt = optax_lr.sgd_hd(0.1, 1e-3, backtrack=optax_lr.LossBacktrack(tolerance=0.5))
  """

  factor: float = 0.5
  tolerance: float = 1.0
  decay: float = 0.9

  def __post_init__(self):
    _checks.in_range("LossBacktrack.factor", self.factor, 0.0, 1.0, low_open=True,
                     high_open=True)
    _checks.non_negative("LossBacktrack.tolerance", self.tolerance)
    _checks.in_range("LossBacktrack.decay", self.decay, 0.0, 1.0, high_open=True)


@dataclasses.dataclass(frozen=True)
class WindowBacktrack:
  """TLR's loss backtrack: window means of the training loss compared with each other.

  ``update`` then needs the training loss as ``value=``. When a window's mean loss exceeds
  ``(1 + tolerance)`` times the previous window's (or is not finite), the rate is multiplied by
  ``factor`` instead of the Newton factor, and that reduced rate becomes a ceiling the rate never
  grows past again. Window means of minibatch losses rarely double, so the default tolerance
  leaves noisy runs alone.

  Attributes:
    factor: in ``(0, 1)``, the rate multiplier of a backtrack (default 0.5).
    tolerance: ``>= 0``, the relative rise of the window's mean loss that backtracks (default 1:
      the mean loss doubled).

  Example:
    >>> opt = optax_lr.tlr_sgd(1e-3, momentum=0.9, backtrack=optax_lr.WindowBacktrack())
  """

  factor: float = 0.5
  tolerance: float = 1.0

  def __post_init__(self):
    _checks.in_range("WindowBacktrack.factor", self.factor, 0.0, 1.0, low_open=True,
                     high_open=True)
    _checks.non_negative("WindowBacktrack.tolerance", self.tolerance)


def check_option(name: str, value: Any, kind: type, none_means: str = "off") -> bool:
  """``value`` is ``None`` or a ``kind``; returns True when the option is given.

  ``none_means`` says what ``None`` stands for in the error message (``"off"`` for a safeguard,
  the defaults for an option that is always on).
  """
  if value is None:
    return False
  if not isinstance(value, kind):
    raise TypeError(f"`{name}` must be None ({none_means}) or an optax_lr.{kind.__name__}; got "
                    f"{value!r} ({type(value).__name__}).")
  return True
