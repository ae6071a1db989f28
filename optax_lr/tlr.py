"""Trainable Learning Rate (TLR): a Newton step on the learning rate from consecutive directions.

Implements seed 002 ("Trainable Learning Rate"): Efficient GD-TLR (Algorithm 2, Eq. 7-9), its SGD
extension that accumulates directions over a window of ``update_every`` steps (Section 4, Eq. 10,
App. D), the per-tensor variant ``sgd_tlr_pl`` (App. D.2), Naive GD-TLR (Algorithm 1) and the
fixed meta-rate variant (App. D.4). The exact reading is ``ALGORITHMS.md`` section 2.

Rate update (Eq. 9 with the bound ``c``), with ``u_t`` the sum of the directions of the window that
just closed and ``u_{t-1}`` that of the window before::

  ip = <u_t, u_{t-1}>
  lr <- lr * (1 + ip / max(4 * (||u_t||^2 - ip), ip / c))

The factor is at most ``1 + c``; when consecutive windows disagree (``ip < 0``) it lies in
``(3/4, 1)``; when both terms of the max vanish (zero directions) it is exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree
from optax_lr._base import NO_PARAMS_MSG

# A rate rule maps (learning_rate, <u_t, u_{t-1}>, ||u_t||^2) to the new learning rate.
RateRule = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class ScaleByTLRState(NamedTuple):
  """State of :func:`scale_by_tlr`, :func:`scale_by_tlr_fixed_meta_rate` and :func:`tlr_sgd`.

  Attributes:
    count: int32, number of updates taken so far.
    learning_rate: float32 rate; a scalar, or one scalar per leaf when ``per_tensor``.
    direction_sum: sum of the directions of the window in progress (empty when
      ``update_every == 1``: the window is the current direction alone).
    previous_direction_sum: the sum over the previous window, ``u_{t-1}`` (zeros before the first
      window closes; empty when the direction transform already holds ``u_{t-1}``, as a heavy-ball
      momentum trace does when ``update_every == 1``).
    inner_state: state of the direction transform (empty for the ``scale_by_*`` stages).
  """

  count: jax.Array
  learning_rate: Any
  direction_sum: Any
  previous_direction_sum: Any
  inner_state: Any


def newton_factor(inner_product: jax.Array, squared_norm: jax.Array,
                  bound: float | jax.Array) -> jax.Array:
  """The multiplicative TLR factor ``1 + ip / max(4 (||u||^2 - ip), ip / c)`` (Eq. 9).

  Args:
    inner_product: ``<u_t, u_{t-1}>``.
    squared_norm: ``||u_t||^2``.
    bound: ``c > 0``; the factor never exceeds ``1 + c``.

  Returns:
    The factor; exactly 1 when the denominator is not positive (both terms vanish: zero
    directions), so a zero gradient never produces a NaN rate.
  """
  denominator = jnp.maximum(4.0 * (squared_norm - inner_product), inner_product / bound)
  positive = denominator > 0
  return jnp.where(positive, 1.0 + inner_product / jnp.where(positive, denominator, 1.0), 1.0)


def update_every_from_fraction(steps_per_epoch: int, fraction: float = 1 / 3) -> int:
  """Steps per TLR window from an epoch fraction: ``max(1, round(fraction * steps_per_epoch))``.

  Seed 002 updates the rate every ``p N`` steps, ``N`` the steps per epoch and ``p = 1/3`` by
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


def _windowed_rate(inner: optax.GradientTransformation, learning_rate: float, update_every: int,
                   per_tensor: bool, rate_rule: RateRule,
                   previous_direction_fn: Callable[[Any, Any], Any] | None = None,
                   ) -> optax.GradientTransformation:
  """Shared machinery of the windowed TLR rules: directions, accumulate, close the window, scale.

  ``inner`` turns gradients into directions (``optax.identity()`` for the ``scale_by_*`` stages).
  At the last step of each window the rate is updated from ``(u_t, u_{t-1})`` and the new rate
  already scales that step's update, so ``update_every == 1`` is exactly Algorithm 2 (lines 5-6).
  The first window only fills ``previous_direction_sum``. Window-closing work (two reductions and
  the buffer swap) runs only at window ends, in :func:`optax_lr._tree.run_once_if`.

  ``previous_direction_fn(d_t, g_t)``, when given (only with ``update_every == 1``), gives
  ``d_{t-1}`` from this step's direction and gradient instead of a kept copy (a heavy-ball trace:
  :func:`optax_lr._base.heavy_ball_previous_direction`), saving a parameter-sized buffer and
  its write per step.
  """
  single_step_window = update_every == 1
  if previous_direction_fn is not None and not single_step_window:
    raise ValueError("previous_direction_fn needs update_every == 1")

  def init_fn(params):
    if per_tensor:
      rate = _tree.scalar_per_leaf(params, learning_rate)
    else:
      rate = jnp.full((), learning_rate, _tree.RATE_DTYPE)
    keeps_previous = previous_direction_fn is None
    return ScaleByTLRState(
        count=jnp.zeros((), jnp.int32),
        learning_rate=rate,
        direction_sum=optax.EmptyState() if single_step_window else _tree.zeros_like(params),
        previous_direction_sum=(_tree.zeros_like(params) if keeps_previous
                                else optax.EmptyState()),
        inner_state=inner.init(params),
    )

  def close_window(rate, window_sum, previous, has_previous):
    if per_tensor:
      inner_products = _tree.leaf_vdots(window_sum, previous)
      squared_norms = _tree.leaf_vdots(window_sum, window_sum)
      new_rate = jax.tree.map(rate_rule, rate, inner_products, squared_norms)
    else:
      new_rate = rate_rule(rate, _tree.vdot(window_sum, previous), _tree.squared_norm(window_sum))
    # The first window has no predecessor: it only fills the buffer.
    return jax.tree.map(lambda new, old: jnp.where(has_previous, new, old), new_rate, rate)

  def update_fn(updates, state, params=None, **extra_args):
    count = state.count
    has_previous = count >= update_every
    directions, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    if single_step_window:
      if previous_direction_fn is None:
        previous = state.previous_direction_sum
      else:
        previous = previous_direction_fn(directions, updates)
      rate = close_window(state.learning_rate, directions, previous, has_previous)
      direction_sum = state.direction_sum
      previous = directions if previous_direction_fn is None else state.previous_direction_sum
    else:
      window_sum = _tree.tree_add(state.direction_sum, directions)

      def close_and_swap(operands):
        rate, window_sum, previous = operands
        return (close_window(rate, window_sum, previous, has_previous),
                _tree.zeros_like(window_sum), window_sum)

      # Only at a window's last step; between them the buffers stay in place (see run_once_if
      # for why this is not lax.cond).
      rate, direction_sum, previous = _tree.run_once_if(
          count % update_every == update_every - 1, close_and_swap,
          (state.learning_rate, window_sum, state.previous_direction_sum))
    new_updates = _tree.scale_by_rate(rate, directions, per_tensor)
    return new_updates, ScaleByTLRState(
        count=optax.safe_increment(count),
        learning_rate=rate,
        direction_sum=direction_sum,
        previous_direction_sum=previous,
        inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _newton_rule(bound: float) -> RateRule:
  def rule(rate, inner_product, squared_norm):
    return rate * newton_factor(inner_product, squared_norm, bound)

  return rule


def _check_window_args(learning_rate, update_every):
  _checks.positive("learning_rate", learning_rate)
  _checks.integer_at_least("update_every", update_every, 1)


def scale_by_tlr(learning_rate: float, update_every: int = 1, bound: float = 0.25,
                 per_tensor: bool = False) -> optax.GradientTransformation:
  """Trainable Learning Rate stage: scale directions by a rate learned with a Newton step.

  The final stage of a chain: its input is a direction ``d`` (the gradient, a momentum trace, an
  Adam direction...), its output the update ``-lr * d``. Every ``update_every`` steps the rate is
  multiplied by :func:`newton_factor` of the summed directions of the window that just closed and
  of the window before (seed 002, Algorithm 2 and Eq. 10).

  Args:
    learning_rate: initial rate ``alpha_0 > 0``.
    update_every: window length ``K >= 1`` in steps (``K = p * steps_per_epoch`` in the paper, see
      :func:`update_every_from_fraction`); ``1`` is Algorithm 2 exactly.
    bound: ``c > 0``; each window multiplies the rate by at most ``1 + c`` (paper: 1/4).
    per_tensor: one rate per leaf (``sgd_tlr_pl``, App. D.2), all starting at ``learning_rate``.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`ScaleByTLRState`.

  References:
    Trainable Learning Rate (seed 002): Algorithm 2, Eq. 7-10, App. D.2.

  Example:
    >>> opt = optax.chain(optax.trace(0.8), optax_lr.scale_by_tlr(0.1, update_every=50))
  """
  _check_window_args(learning_rate, update_every)
  _checks.positive("bound", bound)
  return _windowed_rate(optax.identity(), learning_rate, update_every, per_tensor,
                        _newton_rule(bound))


def scale_by_tlr_fixed_meta_rate(learning_rate: float, meta_learning_rate: float,
                                 update_every: int = 1,
                                 per_tensor: bool = False) -> optax.GradientTransformation:
  """TLR with a fixed meta learning rate instead of the Newton step (seed 002, App. D.4).

  ``lr <- max(0, lr + meta_learning_rate * <u_t, u_{t-1}>)`` at the end of each window; the rest is
  as :func:`scale_by_tlr`. The paper shows this variant is as sensitive to ``meta_learning_rate`` as
  SGD is to its rate (Figure 9); it is offered for that comparison.

  Args:
    learning_rate: initial rate ``> 0``.
    meta_learning_rate: ``eta > 0``.
    update_every: window length ``>= 1``.
    per_tensor: one rate per leaf.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`ScaleByTLRState`.
  """
  _check_window_args(learning_rate, update_every)
  _checks.positive("meta_learning_rate", meta_learning_rate)

  def rule(rate, inner_product, squared_norm):
    del squared_norm
    return jnp.maximum(0.0, rate + meta_learning_rate * inner_product)

  return _windowed_rate(optax.identity(), learning_rate, update_every, per_tensor, rule)


def tlr_sgd(learning_rate: float, update_every: int = 1, momentum: float = 0.0,
            nesterov: bool = False, weight_decay: float = 0.0, bound: float = 0.25,
            per_tensor: bool = False) -> optax.GradientTransformation:
  """SGD with a Trainable Learning Rate: the paper's ``sgd_tlr`` (``sgd_tlr_pl`` when per tensor).

  ``add_decayed_weights(weight_decay) -> trace(momentum, nesterov) -> TLR rate``: the window sums
  therefore include momentum and weight decay, as in seed 002 App. D
  (``u = (w_start - w_end) / lr``). The result equals ``optax.chain(optax.add_decayed_weights(wd),
  optax.trace(momentum, nesterov), scale_by_tlr(...))`` (to float32 rounding: with heavy-ball
  momentum and ``update_every == 1`` the previous direction is recovered from the trace, see
  :func:`optax_lr._base.heavy_ball_previous_direction`, instead of kept as a copy).

  Args:
    learning_rate: initial rate ``> 0``.
    update_every: window length ``>= 1`` (paper: a third of an epoch,
      :func:`update_every_from_fraction`).
    momentum: in ``[0, 1)`` (paper: 0.8).
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 weight decay ``>= 0`` (paper: 5e-4).
    bound: ``c > 0`` (paper: 1/4).
    per_tensor: one rate per leaf (``sgd_tlr_pl``).

  Returns:
    An ``optax.GradientTransformation``; its last stage's state is :class:`ScaleByTLRState`.

  References:
    Trainable Learning Rate (seed 002): Section 4, App. D.

  Example:
    >>> opt = optax_lr.tlr_sgd(0.1, update_every=optax_lr.update_every_from_fraction(390),
    ...                        momentum=0.8, weight_decay=5e-4)
  """
  _check_window_args(learning_rate, update_every)
  _checks.positive("bound", bound)
  inner = _base.momentum_direction(momentum, nesterov)
  reuse_trace = bool(momentum) and not nesterov and update_every == 1
  previous_direction_fn = _base.heavy_ball_previous_direction(momentum) if reuse_trace else None
  stage = _windowed_rate(inner, learning_rate, update_every, per_tensor, _newton_rule(bound),
                         previous_direction_fn)
  return _base.with_coupled_weight_decay(stage, weight_decay)


class ScaleByNaiveTLRState(NamedTuple):
  """State of :func:`scale_by_naive_tlr`: ``learning_rate`` (float32 scalar)."""

  learning_rate: jax.Array


def scale_by_naive_tlr(learning_rate: float,
                       meta_learning_rate: float) -> optax.GradientTransformationExtraArgs:
  """Naive GD-TLR (seed 002, Algorithm 1): gradient descent on the rate with a look-ahead gradient.

  ``lr <- lr + meta_learning_rate * <grad_fn(params - lr * d), d>``, then the update ``-lr * d``
  with the new rate. It needs a second gradient evaluation at the look-ahead point, supplied as
  the keyword argument ``grad_fn`` of ``update`` (the way optax's line searches take
  ``value_fn``): ``grad_fn(params)`` returns the gradient of the same loss and batch.

  Args:
    learning_rate: initial rate ``> 0``.
    meta_learning_rate: ``eta > 0``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``;
    ``update(updates, state, params, *, grad_fn)``.

  Example:
    >>> opt = optax_lr.scale_by_naive_tlr(0.1, 0.01)
    >>> updates, state = opt.update(grads, state, params, grad_fn=jax.grad(loss_on_batch))
  """
  _checks.positive("learning_rate", learning_rate)
  _checks.positive("meta_learning_rate", meta_learning_rate)

  def init_fn(params):
    del params
    return ScaleByNaiveTLRState(learning_rate=jnp.full((), learning_rate, _tree.RATE_DTYPE))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    if grad_fn is None:
      raise ValueError("`grad_fn` must be passed to update(): the gradient function of the "
                       "current batch, evaluated at the look-ahead point (Algorithm 1).")
    look_ahead = optax.apply_updates(
        params, _tree.scale_by_rate(state.learning_rate, updates, False))
    rate = state.learning_rate + meta_learning_rate * _tree.vdot(grad_fn(look_ahead), updates)
    return (_tree.scale_by_rate(rate, updates, False), ScaleByNaiveTLRState(learning_rate=rate))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def naive_tlr(learning_rate: float,
              meta_learning_rate: float) -> optax.GradientTransformationExtraArgs:
  """Naive GD-TLR on plain gradient descent (Algorithm 1); see :func:`scale_by_naive_tlr`.

  The direction is the raw gradient, so ``grad_fn`` must return the gradient of the same objective.
  """
  return scale_by_naive_tlr(learning_rate, meta_learning_rate)
