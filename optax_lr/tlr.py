"""Trainable Learning Rate (TLR): a Newton step on the learning rate from consecutive windows.

Implements "Trainable Learning Rate" (anonymous authors, under review at ICLR 2021): Efficient
GD-TLR (Algorithm 2, Eq. 7-9), its SGD extension that sums over a window of ``update_every`` steps
(Section 4, Eq. 10, App. D), the per-tensor variant ``sgd_tlr_pl`` (App. D.2), Naive GD-TLR
(Algorithm 1) and the fixed meta-rate variant (App. D.4).

Rate update (Eq. 9 with the bound ``c``), with ``u_t`` the window sum of the window that just
closed and ``u_{t-1}`` that of the window before::

  ip = <u_t, u_{t-1}>
  lr <- lr * (1 + ip / max(4 * (||u_t||^2 - ip), ip / c))

The factor is at most ``1 + c``; when consecutive windows disagree (``ip < 0``) it lies in
``(3/4, 1)``; when both terms of the max vanish (zero sums) it is exactly 1.

Two readings of the window sum ``u`` (``window_sum``):

- ``"gradient"`` (default): the sum of the stochastic gradients of the window as they enter the
  direction transform, ``sum_k g(w_k; x_k)`` (Eq. 10), coupled weight decay included. With
  ``update_every = 1`` this is Algorithm 2 exactly: ``u_t = g_t``, ``u_{t-1} = g_{t-1}``.
- ``"displacement"``: the sum of the applied directions, ``(w_start - w_end) / lr`` when the rate is
  constant inside the window (the paper's App. D wording). With momentum ``mu`` the directions of
  consecutive windows are correlated even on pure noise (expected ``<u_t, u_{t-1}> / ||u_t||^2``
  about 0.80, 0.56, 0.40, 0.12 for windows of 1, 4, 7, 22 steps at ``mu = 0.8``), so short windows
  push the rate up by ``1 + c`` per window until training diverges. The two readings agree without
  momentum and approach each other when ``update_every >> 1 / (1 - mu)``; :func:`tlr_sgd` warns
  when the displacement reading is asked for with ``update_every < 10 / (1 - mu)``.

Measurements of the two readings (``python -m train.bench tlr-grid``): the documentation's TLR
page.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree, safeguards
from optax_lr._base import NO_PARAMS_MSG
from optax_lr.safeguards import WindowBacktrack

# A rate rule maps (learning_rate, <u_t, u_{t-1}>, ||u_t||^2) to the new learning rate.
RateRule = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class ScaleByTLRState(NamedTuple):
  """State of :func:`scale_by_tlr`, :func:`scale_by_tlr_fixed_meta_rate` and :func:`tlr_sgd`.

  Attributes:
    count: int32, number of updates taken so far.
    learning_rate: float32 rate; a scalar, or one scalar per leaf when ``per_tensor``.
    direction_sum: the window sum of the window in progress: summed gradients under
      ``window_sum="gradient"``, summed directions under ``"displacement"`` (empty when
      ``update_every == 1``: the window is the current step alone).
    previous_direction_sum: the sum over the previous window, ``u_{t-1}`` (zeros before the first
      window closes; with ``update_every == 1`` the previous gradient ``g_{t-1}``, or the previous
      direction; empty when the direction transform already holds that direction, as a
      heavy-ball momentum trace does under the displacement reading).
    inner_state: state of the direction transform (empty when it is the identity).
    backtrack: :class:`TLRBacktrackState` with a :class:`~optax_lr.WindowBacktrack`, else empty.
  """

  count: jax.Array
  learning_rate: Any
  direction_sum: Any
  previous_direction_sum: Any
  inner_state: Any
  backtrack: Any = optax.EmptyState()


class TLRBacktrackState(NamedTuple):
  """State of TLR's loss backtrack (``backtrack=WindowBacktrack(...)``), all scalars.

  Attributes:
    window_value: the sum of the ``value`` arguments (training losses) of the window in progress.
    previous_value: the mean ``value`` of the previous window (NaN before the first closes).
    max_learning_rate: the ceiling on the rate, the rate after the latest backtrack (inf before);
      a scalar, or one per leaf when ``per_tensor``.
  """

  window_value: jax.Array
  previous_value: jax.Array
  max_learning_rate: Any


def newton_factor(inner_product: jax.Array, squared_norm: jax.Array,
                  bound: float | jax.Array) -> jax.Array:
  """The multiplicative TLR factor ``1 + ip / max(4 (||u||^2 - ip), ip / c)`` (Eq. 9).

  Args:
    inner_product: ``<u_t, u_{t-1}>``.
    squared_norm: ``||u_t||^2``.
    bound: ``c > 0``; the factor never exceeds ``1 + c``.

  Returns:
    The factor; exactly 1 when the denominator is not positive (both terms vanish: zero
    directions), so a zero gradient never produces a NaN rate, and exactly 1 when an input is
    not finite (a Newton term that cannot be computed leaves the rate unchanged). The factor
    depends only on the ratio of the inputs and is computed from the inputs divided by a power
    of two near the larger of ``|ip|`` and ``||u||^2``, so inputs up to the largest finite float
    give a finite factor (``4 (||u||^2 - ip)`` itself would overflow); dividing by a power of two
    is exact, so the factor equals the unscaled formula wherever that is finite.
  """
  inner_product = jnp.asarray(inner_product)
  squared_norm = jnp.asarray(squared_norm)
  largest = jnp.maximum(jnp.abs(inner_product), squared_norm)
  usable = jnp.isfinite(largest) & (largest > 0)
  # A power of two: the quotients are exact, so ||u||^2 - ip keeps all its digits.
  scale = _tree.power_of_two_scale(largest)
  ip, sq = inner_product / scale, squared_norm / scale
  denominator = jnp.maximum(4.0 * (sq - ip), ip / bound)
  positive = usable & (denominator > 0)
  return jnp.where(positive, 1.0 + ip / jnp.where(positive, denominator, 1.0), 1.0)


def update_every_from_fraction(steps_per_epoch: int, fraction: float = 1 / 3) -> int:
  """Steps per TLR window from an epoch fraction: ``max(1, round(fraction * steps_per_epoch))``.

  The paper updates the rate every ``p N`` steps, ``N`` the steps per epoch and ``p = 1/3`` by
  default (Section 4, App. D.1).

  Args:
    steps_per_epoch: ``N >= 1``.
    fraction: ``p > 0`` (values above 1 give windows longer than an epoch).

  Returns:
    ``update_every`` for :func:`scale_by_tlr` / :func:`tlr_sgd`.
  """
  _checks.integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  _checks.positive("fraction", fraction)
  return max(1, round(fraction * steps_per_epoch))


WINDOW_SUMS = ("gradient", "displacement")
"""The readings of the window sum ``u``: summed gradients (default) or summed directions."""


def _windowed_rate(inner: optax.GradientTransformation, learning_rate: float, update_every: int,
                   per_tensor: bool, rate_rule: RateRule, window_sum: str,
                   backtrack: WindowBacktrack | None = None,
                   previous_direction_fn: Callable[[Any, Any], Any] | None = None,
                   ) -> optax.GradientTransformationExtraArgs:
  """Shared machinery of the windowed TLR rules: directions, accumulate, close the window, scale.

  ``inner`` turns gradients into directions (``optax.identity()`` for a bare stage). Under
  ``window_sum="gradient"`` the window sums the incoming gradients (the inputs of ``inner``),
  under ``"displacement"`` its outputs. At the last step of each window the rate is updated from
  ``(u_t, u_{t-1})`` and the new rate already scales that step's update, so ``update_every == 1``
  is exactly Algorithm 2 (lines 5-6). The first window only fills ``previous_direction_sum``.
  Window-closing work (two reductions and the buffer swap) runs only at window ends, inside a
  conditional taken only then.

  ``previous_direction_fn(d_t, g_t)``, when given (only with ``update_every == 1`` and the
  displacement reading), gives ``d_{t-1}`` from this step's direction and gradient instead of a
  kept copy (a heavy-ball trace: ``(d_t - g_t) / momentum``), saving a
  parameter-sized buffer and its write per step. The gradient reading always keeps ``g_{t-1}``
  (or the two window sums): a gradient cannot be recovered from the trace alone.
  """
  # update_every is static: 1 keeps no window buffer.
  single_step_window = update_every == 1
  sums_gradients = window_sum == "gradient"
  if previous_direction_fn is not None and (not single_step_window or sums_gradients):
    raise ValueError("previous_direction_fn needs update_every == 1 and the displacement reading")
  inner = optax.with_extra_args_support(inner)
  backtracks = backtrack is not None

  def rate_dtype_of(rate):
    return jax.tree.leaves(rate)[0].dtype

  def window_backtrack(state, rate, value):
    """At a window's end: the rate times ``backtrack.factor`` when the window's mean loss rose
    above ``(1 + backtrack.tolerance)`` times the previous window's (or is not finite), which
    also becomes the rate's ceiling; else the new rate, at most the ceiling."""
    backtrack_factor, loss_tolerance = backtrack.factor, backtrack.tolerance
    bt = state.backtrack
    dtype = bt.window_value.dtype
    closes = state.count % update_every == update_every - 1
    window_value = bt.window_value + jnp.asarray(value, dtype)
    mean = window_value / jnp.asarray(update_every, dtype)
    # A NaN or inf mean is a rise; before the first window closes there is nothing to compare.
    rose = closes & jnp.isfinite(bt.previous_value) & ~(
        mean <= (1.0 + loss_tolerance) * bt.previous_value)
    reduced = jax.tree.map(lambda r: (backtrack_factor * r).astype(r.dtype), state.learning_rate)
    new_rate = jax.tree.map(
        lambda new, low, ceiling: jnp.where(rose, low, jnp.minimum(new, ceiling)).astype(new.dtype),
        rate, reduced, bt.max_learning_rate)
    ceiling = jax.tree.map(lambda low, c: jnp.where(rose, low, c), reduced, bt.max_learning_rate)
    return new_rate, TLRBacktrackState(
        window_value=jnp.where(closes, jnp.zeros((), dtype), window_value),
        previous_value=jnp.where(closes & jnp.isfinite(mean), mean, bt.previous_value),
        max_learning_rate=ceiling)

  def init_fn(params):
    if per_tensor:
      rate = _tree.scalar_per_leaf(params, learning_rate)
    else:
      rate = _tree.full_rate(learning_rate, _tree.rate_dtype(params))
    keeps_previous = previous_direction_fn is None
    return ScaleByTLRState(
        count=jnp.zeros((), jnp.int32),
        learning_rate=rate,
        direction_sum=optax.EmptyState() if single_step_window else _tree.zeros_like(params),
        previous_direction_sum=(_tree.zeros_like(params) if keeps_previous
                                else optax.EmptyState()),
        inner_state=inner.init(params),
        backtrack=(optax.EmptyState() if not backtracks else TLRBacktrackState(
            window_value=jnp.zeros((), rate_dtype_of(rate)),
            previous_value=jnp.full((), jnp.nan, rate_dtype_of(rate)),
            max_learning_rate=jax.tree.map(lambda r: jnp.full_like(r, jnp.inf), rate))),
    )

  def close_window(rate, window_total, previous, has_previous):
    if getattr(rate_rule, "scale_invariant", False):
      # A rule of the ratio <u_t, u_{t-1}> / ||u_t||^2 only: sums that overflow (gradients of
      # 1e19 and more in float32) are recomputed rescaled, so the Newton factor stays exact.
      inner_products, squared_norms = _tree.scale_invariant_dots(window_total, previous,
                                                                 per_tensor)
    elif per_tensor:
      inner_products = _tree.leaf_vdots(window_total, previous)
      squared_norms = _tree.leaf_vdots(window_total, window_total)
    else:
      inner_products = _tree.vdot(window_total, previous)
      squared_norms = _tree.squared_norm(window_total)
    if per_tensor:
      new_rate = jax.tree.map(rate_rule, rate, inner_products, squared_norms)
    else:
      new_rate = rate_rule(rate, inner_products, squared_norms)
    # A non-finite rate step (inf or NaN in a window sum) leaves the rate unchanged; the first
    # window has no predecessor: it only fills the buffer.
    new_rate = _tree.where_finite(new_rate, rate)
    return jax.tree.map(lambda new, old: jnp.where(has_previous, new, old), new_rate, rate)

  def update_fn(updates, state, params=None, **extra_args):
    value = extra_args.get("value")
    count = state.count
    has_previous = count >= update_every
    directions, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    # What the window sums: this step's gradient (Eq. 10) or its direction.
    summand = updates if sums_gradients else directions
    if single_step_window:
      if previous_direction_fn is None:
        previous = state.previous_direction_sum
      else:
        previous = previous_direction_fn(directions, updates)
      rate = close_window(state.learning_rate, summand, previous, has_previous)
      direction_sum = state.direction_sum
      if previous_direction_fn is None:
        # This step's summand in the state's dtype becomes u_{t-1} of the next step, written
        # after the new rate has read the old one (in place: _tree.after).
        previous = _tree.after(jax.tree.map(lambda s, p: s.astype(p.dtype), summand,
                                            state.previous_direction_sum), rate)
      else:
        previous = state.previous_direction_sum
    else:
      window_total = _tree.tree_add(state.direction_sum, summand)

      def close_and_swap(operands):
        rate, window_total, previous = operands
        return (close_window(rate, window_total, previous, has_previous),
                _tree.zeros_like(window_total), window_total)

      # Only at a window's last step.
      rate, direction_sum, previous = _tree.run_once_if(
          count % update_every == update_every - 1, close_and_swap,
          (state.learning_rate, window_total, state.previous_direction_sum))
    backtrack_state = state.backtrack
    if backtracks:
      rate, backtrack_state = window_backtrack(
          state, rate, _checks.training_loss(value, "TLR with a WindowBacktrack"))
    new_updates = _tree.scale_by_rate(rate, directions, per_tensor)
    return new_updates, ScaleByTLRState(
        count=optax.safe_increment(count),
        learning_rate=rate,
        direction_sum=direction_sum,
        previous_direction_sum=previous,
        inner_state=inner_state,
        backtrack=backtrack_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _newton_rule(bound: float) -> RateRule:
  def rule(rate, inner_product, squared_norm):
    return rate * newton_factor(inner_product, squared_norm, bound)

  # The factor depends only on ip / ||u||^2: close_window may pass both rescaled.
  rule.scale_invariant = True
  return rule


def _check_window_args(learning_rate, update_every, window_sum, per_tensor=False,
                       backtrack=None):
  safeguards.check_option("backtrack", backtrack, WindowBacktrack)
  _checks.learned_initial_rate(learning_rate, "TLR")
  _checks.static_integer_at_least("update_every", update_every, 1)
  _checks.flag("per_tensor", per_tensor)
  _checks.one_of("window_sum", window_sum, WINDOW_SUMS)


def scale_by_tlr(learning_rate: float, update_every: int = 1, bound: float = 0.25,
                 per_tensor: bool = False, *, window_sum: str = "gradient",
                 inner: optax.GradientTransformation | None = None,
                 backtrack: WindowBacktrack | None = None,
                 ) -> optax.GradientTransformationExtraArgs:
  """Trainable Learning Rate: scale directions by a rate learned with a Newton step.

  The update is ``-lr * d`` with ``d`` the direction ``inner`` makes of the incoming gradient
  (the gradient itself by default). Every ``update_every`` steps the rate is multiplied by
  :func:`newton_factor` of the window sums ``u_t`` of the window that just closed and ``u_{t-1}``
  of the window before, and the new rate already scales that step's update (Algorithm 2 and
  Eq. 10 of "Trainable Learning Rate").

  Window sums (``window_sum``): under ``"gradient"`` (default) ``u`` is the sum of the window's
  incoming gradients, the inputs of ``inner`` (Eq. 10's ``sum_k g(w_k; x_k)``); under
  ``"displacement"`` the sum of ``inner``'s directions, ``(w_start - w_end) / lr``. With the
  default ``inner`` (the identity) both are the sum of this transform's inputs: placed after a
  momentum trace in a chain, it sees directions only, which is the displacement reading; pass the
  trace as ``inner`` for the gradient reading. With momentum the displacement reading makes the
  rate grow on pure noise when windows are short (see :mod:`optax_lr.tlr`).

  Memory: the gradient reading keeps one parameter-sized buffer (``g_{t-1}``) when
  ``update_every == 1`` and two (the running and the previous window sum) otherwise; the
  displacement reading the same, except that :func:`tlr_sgd` with heavy-ball momentum and
  ``update_every == 1`` recovers ``d_{t-1}`` from the trace and keeps none.

  Non-finite and extreme input: a window whose Newton factor cannot be computed (an inf or NaN
  element in either window sum) leaves the rate unchanged (the new rate is kept only where finite);
  finite sums whose squares overflow (gradients of 1e19 and more in float32) are recomputed
  rescaled by a power of two, so 1e30 gradients give the factor of the unscaled ones. The
  update of a bad step is still ``-lr * d`` as computed (``optax.apply_if_finite`` skips steps).

  Args:
    learning_rate: initial rate ``alpha_0 > 0`` (a number: a schedule is refused, the method
      learns the rate from it).
    update_every: window length ``K >= 1`` in steps (``K = p * steps_per_epoch`` in the paper, see
      :func:`update_every_from_fraction`); ``1`` is Algorithm 2 exactly. Static: it decides
      whether the state keeps a window buffer (under ``optax.inject_hyperparams`` pass it in
      ``static_args``).
    bound: ``c > 0``; each window multiplies the rate by at most ``1 + c`` (paper: 1/4).
    per_tensor: one rate per leaf (``sgd_tlr_pl``, App. D.2), all starting at ``learning_rate``.
    window_sum: ``"gradient"`` (default) or ``"displacement"``, see above.
    inner: the unit-rate direction transform (``optax.trace(0.8)``, ``optax.scale_by_adam()``,
      a chain); ``None`` (default) is the identity. Extra ``update`` arguments are forwarded to it.
    backtrack: ``None`` (default: the paper's rule, exactly) or a
      :class:`~optax_lr.WindowBacktrack`: ``update`` then takes the training loss as ``value=``
      (as ``optax.contrib.reduce_on_plateau`` does); when a window's mean loss exceeds
      ``(1 + tolerance)`` times the previous window's (or is not finite), the rate is multiplied
      by ``factor`` instead of the Newton factor, and that reduced rate becomes a ceiling the
      rate never grows past again. On a smooth problem consecutive windows keep agreeing and the
      paper's rule multiplies the rate by ``1 + c`` per window past the stability limit
      ``2 / lambda_max`` (the stiff directions have converged, so the window sums do not see
      them, until they blow up); the first blow-up halves the rate and fixes the ceiling below
      the limit. Window means of minibatch losses rarely double, so the default tolerance leaves
      noisy runs alone.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`ScaleByTLRState`.

  References:
    "Trainable Learning Rate" (anonymous authors, under review at ICLR 2021): Algorithm 2,
    Eq. 7-10, Section 4, App. D.2.

  Example:
    >>> opt = optax_lr.scale_by_tlr(0.1, update_every=50, inner=optax.trace(0.8))
  """
  _check_window_args(learning_rate, update_every, window_sum, per_tensor, backtrack)
  _checks.positive("bound", bound)
  return _windowed_rate(optax.identity() if inner is None else inner, learning_rate,
                        update_every, per_tensor, _newton_rule(bound), window_sum, backtrack)


def scale_by_tlr_fixed_meta_rate(learning_rate: float, meta_learning_rate: float,
                                 update_every: int = 1, per_tensor: bool = False, *,
                                 window_sum: str = "gradient",
                                 inner: optax.GradientTransformation | None = None,
                                 ) -> optax.GradientTransformationExtraArgs:
  """TLR with a fixed meta learning rate instead of the Newton step (App. D.4).

  ``lr <- max(0, lr + meta_learning_rate * <u_t, u_{t-1}>)`` at the end of each window; the
  window sums, ``inner`` and the timing are as in :func:`scale_by_tlr`. The paper shows this
  variant is as sensitive to ``meta_learning_rate`` as SGD is to its rate (Figure 9); it is
  offered for that comparison.

  Args:
    learning_rate: initial rate ``> 0``.
    meta_learning_rate: ``eta > 0``.
    update_every: window length ``>= 1``, static (as in :func:`scale_by_tlr`).
    per_tensor: one rate per leaf.
    window_sum: ``"gradient"`` (default: summed incoming gradients) or ``"displacement"``
      (summed directions of ``inner``).
    inner: the unit-rate direction transform; ``None`` is the identity.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`ScaleByTLRState`.

  References:
    "Trainable Learning Rate" (anonymous authors, under review at ICLR 2021): App. D.4.

  Example:
    >>> opt = optax_lr.scale_by_tlr_fixed_meta_rate(0.1, 1e-3, update_every=8,
    ...                                             inner=optax.trace(0.8))
  """
  _check_window_args(learning_rate, update_every, window_sum, per_tensor)
  _checks.positive("meta_learning_rate", meta_learning_rate)

  def rule(rate, inner_product, squared_norm):
    del squared_norm
    # The guard acts before the clip at 0: a step of -inf must leave the rate, not zero it.
    return jnp.maximum(0.0, _tree.where_finite(rate + meta_learning_rate * inner_product, rate))

  return _windowed_rate(optax.identity() if inner is None else inner, learning_rate,
                        update_every, per_tensor, rule, window_sum)


def shortest_displacement_window(momentum: float) -> float:
  """``10 / (1 - momentum)``: windows shorter than this make the displacement reading unreliable.

  With momentum ``mu`` the directions of a window keep ``mu^k`` of a gradient ``k`` steps old, so
  the summed directions of two consecutive ``K``-step windows share about ``1 / (1 - mu)`` steps'
  worth of gradients; their correlation on pure noise falls to about 0.1 only when ``K`` is
  about ten times that.
  """
  return 10.0 / (1.0 - momentum)


def tlr_sgd(learning_rate: float, update_every: int = 1, momentum: float | None = None,
            nesterov: bool = False, weight_decay: float | None = None, bound: float = 0.25,
            per_tensor: bool = False, *,
            window_sum: str = "gradient",
            backtrack: WindowBacktrack | None = None) -> optax.GradientTransformationExtraArgs:
  """SGD with a Trainable Learning Rate: the paper's ``sgd_tlr`` (``sgd_tlr_pl`` when per tensor).

  ``add_decayed_weights(weight_decay) -> scale_by_tlr(inner=trace(momentum, nesterov))``. Under
  the default ``window_sum="gradient"`` the window sums the stochastic gradients as they enter
  the momentum trace, weight decay included (Eq. 10); with ``update_every == 1`` the rate update
  is Algorithm 2's, ``u_t = g_t`` and ``u_{t-1} = g_{t-1}``, and the update ``-lr * d_t`` uses the
  momentum direction. Under ``window_sum="displacement"`` it sums the directions (momentum
  included, ``u = (w_start - w_end) / lr``); that reading warns when ``momentum > 0`` and
  ``update_every < 10 / (1 - momentum)`` (:func:`shortest_displacement_window`), where the
  correlation of consecutive windows' momentum makes the rate grow on pure noise. With heavy-ball
  momentum, ``update_every == 1`` and the displacement reading the previous direction is
  recovered from the trace (``(d_t - g_t) / momentum``, equal to a kept
  copy to float32 rounding) instead of kept.

  Args:
    learning_rate: initial rate ``> 0``.
    update_every: window length ``>= 1`` (paper: a third of an epoch,
      :func:`update_every_from_fraction`), static (as in :func:`scale_by_tlr`).
    momentum: in ``[0, 1)`` (paper: 0.8); ``None`` (default): no trace.
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 weight decay ``>= 0`` (``None``, the default: no decay stage) (paper:
      5e-4).
    bound: ``c > 0`` (paper: 1/4).
    per_tensor: one rate per leaf (``sgd_tlr_pl``).
    window_sum: ``"gradient"`` (default) or ``"displacement"``, see above.
    backtrack: ``None`` (default, the paper's rule) or a :class:`~optax_lr.WindowBacktrack`
      (needs ``update(..., value=loss)``), as :func:`scale_by_tlr`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its last stage's state is
    :class:`ScaleByTLRState`.

  References:
    "Trainable Learning Rate" (anonymous authors, under review at ICLR 2021): Algorithm 2,
    Section 4 (Eq. 10), App. D.

  Example:
    >>> opt = optax_lr.tlr_sgd(0.1, update_every=optax_lr.update_every_from_fraction(390),
    ...                        momentum=0.8, weight_decay=5e-4)
  """
  _check_window_args(learning_rate, update_every, window_sum, per_tensor, backtrack)
  _checks.positive("bound", bound)
  inner = _base.momentum_direction(momentum, nesterov)
  known_momentum = _checks.static_number(momentum)  # None for an injected (array) momentum
  if (window_sum == "displacement" and known_momentum and 0 < known_momentum < 1
      # (the tolerance keeps 10 / (1 - 0.8) = 50.000000000000007 from flagging 50 steps)
      and update_every < shortest_displacement_window(known_momentum) - 1e-9):
    warnings.warn(
        f"tlr_sgd(window_sum='displacement') with momentum={momentum!r} and "
        f"update_every={update_every}: windows shorter than 10 / (1 - momentum) = "
        f"{shortest_displacement_window(known_momentum):.0f} steps correlate through the momentum "
        "trace even on pure noise, which drives the rate up until training diverges; use "
        "window_sum='gradient' (the default) or longer windows.", UserWarning, stacklevel=2)
  # The structure depends on momentum's None-ness and the static update_every only; a momentum of
  # exactly 0 cannot give the previous direction back from the trace.
  if window_sum == "displacement" and update_every == 1 and _checks.is_static_zero(momentum):
    raise ValueError("tlr_sgd(window_sum='displacement', update_every=1) reads the previous "
                     "direction off the momentum trace: `momentum` must be None or in (0, 1); "
                     "got 0.")
  reuse_trace = (window_sum == "displacement" and _base.reuses_heavy_ball_trace(momentum, nesterov)
                 and update_every == 1)
  previous_direction_fn = _base.heavy_ball_previous_direction(momentum) if reuse_trace else None
  stage = _windowed_rate(inner, learning_rate, update_every, per_tensor, _newton_rule(bound),
                         window_sum, backtrack,
                         previous_direction_fn)
  return _base.with_coupled_weight_decay(stage, weight_decay)


class ScaleByNaiveTLRState(NamedTuple):
  """State of :func:`scale_by_naive_tlr`: ``learning_rate`` (float32 scalar)."""

  learning_rate: jax.Array


def scale_by_naive_tlr(learning_rate: float,
                       meta_learning_rate: float) -> optax.GradientTransformationExtraArgs:
  """Naive GD-TLR ("Trainable Learning Rate", Algorithm 1): descent on the rate with a look-ahead.

  ``lr <- lr + meta_learning_rate * <grad_fn(params - lr * d), d>``, then the update ``-lr * d``
  with the new rate. It needs a second gradient evaluation at the look-ahead point, supplied as
  the keyword argument ``grad_fn`` of ``update`` (the way optax's line searches take
  ``value_fn``): ``grad_fn(params)`` returns the gradient of the same loss and batch.

  Non-finite input: a non-finite element of the look-ahead gradient is missing (it adds nothing
  to the inner product); a step whose inner product is still not finite (inf or NaN in the
  direction) leaves the rate unchanged.

  Args:
    learning_rate: initial rate ``> 0``.
    meta_learning_rate: ``eta > 0``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``;
    ``update(updates, state, params, *, grad_fn)``.

  Example:
    >>> opt = optax_lr.scale_by_naive_tlr(0.1, 0.01)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, grad_fn=jax.grad(loss_on_batch))
  """
  _checks.learned_initial_rate(learning_rate, "naive TLR")
  _checks.positive("meta_learning_rate", meta_learning_rate)

  def init_fn(params):
    return ScaleByNaiveTLRState(
        learning_rate=_tree.full_rate(learning_rate, _tree.rate_dtype(params)))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    if grad_fn is None:
      raise ValueError("`grad_fn` must be passed to update(): the gradient function of the "
                       "current batch, evaluated at the look-ahead point (Algorithm 1).")
    look_ahead = optax.apply_updates(
        params, _tree.scale_by_rate(state.learning_rate, updates, False))
    # A non-finite look-ahead gradient element is missing (it adds nothing to the inner
    # product); a non-finite rate step (inf or NaN in the direction) leaves the rate unchanged.
    look_ahead_grads = _tree.finite_or_zero(grad_fn(look_ahead))
    rate = _tree.where_finite(
        state.learning_rate + meta_learning_rate * _tree.vdot(look_ahead_grads, updates),
        state.learning_rate)
    return (_tree.scale_by_rate(rate, updates, False), ScaleByNaiveTLRState(learning_rate=rate))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def naive_tlr(learning_rate: float,
              meta_learning_rate: float) -> optax.GradientTransformationExtraArgs:
  """Naive GD-TLR on plain gradient descent (Algorithm 1); see :func:`scale_by_naive_tlr`.

  The direction is the raw gradient, so ``grad_fn`` must return the gradient of the same objective.
  """
  return scale_by_naive_tlr(learning_rate, meta_learning_rate)
