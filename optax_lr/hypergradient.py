"""Hypergradient descent (HD): online gradient descent on a global learning rate.

Implements Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent" (ICLR 2018),
the baseline of the Trainable Learning Rate and CAM-HD papers. With ``g_t`` the incoming gradient
and ``d_t`` the direction of the inner transform::

  h_t = <g_t, d_{t-1}>          (d_{-1} = 0)
  lr_t = lr_{t-1} + hypergrad_lr * h_t
  update = -lr_t * d_t

The rate is applied immediately (the step that computes ``h_t`` already uses ``lr_t``). HD is a
wrapper over any direction transform, like ``optax.contrib.mechanize``: SGD-HD wraps the identity,
SGDN-HD a Nesterov trace, Adam-HD ``optax.scale_by_adam``.

Non-finite input: a step whose hypergradient step ``hypergrad_lr * h_t`` is not finite (an inf or
NaN gradient element, or finite gradients so large that ``h_t`` overflows) leaves the rate
unchanged (the new rate is kept only where finite); the update of that step is still
``-lr * d_t`` as the inner transform made it, as ``optax.sgd`` would give, so
``optax.apply_if_finite`` remains the tool that skips a whole step. With ``hypergrad_lr = 0`` the
rate never moves and the wrapper is the inner transform followed by
``optax.scale_by_learning_rate(learning_rate)``, bit for bit on every input (inf included) for
float32 and float64 parameters (a bfloat16 update is rounded once from the float32 product,
where optax multiplies in bfloat16).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _rate_rule, _tree
from optax_lr.safeguards import LossBacktrack, RateSearch


class HypergradientState(NamedTuple):
  """State of :func:`hypergradient`.

  Attributes:
    learning_rate: float32 scalar, the rate of the latest update.
    previous_direction: ``d_{t-1}``, the inner direction of the previous step (zeros at first).
    inner_state: the state of the wrapped direction transform.
    backtrack: the loss backtrack's state, a ``NamedTuple`` holding ``loss_average`` (the
      exponential average of the training losses, a scalar), with a
      :class:`~optax_lr.LossBacktrack`, else empty.
    searching: bool scalar, the rate search is on (with a :class:`~optax_lr.RateSearch`), else
      empty.
    search_peak: the largest ``cos(g_t, d_{t-1})`` seen while the search was on (a scalar in
      the rate's dtype, 0 at first), with a :class:`~optax_lr.RateSearch`, else empty.
  """

  learning_rate: jax.Array
  previous_direction: Any
  inner_state: Any
  backtrack: Any = optax.EmptyState()
  searching: Any = optax.EmptyState()
  search_peak: Any = optax.EmptyState()


def hypergradient(inner: optax.GradientTransformation, learning_rate: float,
                  hypergrad_lr: float, min_learning_rate: float | None = None,
                  previous_direction_fn: Callable[..., Any] | None = None,
                  *, rate_rule: str = "additive",
                  search: RateSearch | None = None,
                  backtrack: LossBacktrack | None = None,
                  ) -> optax.GradientTransformationExtraArgs:
  """Wrap a direction transform with a hypergradient-descent learning rate (Baydin et al. 2018).

  Args:
    inner: a unit-rate direction transform (``optax.identity()``, ``optax.trace(...)``,
      ``optax.scale_by_adam()``, or a chain of such); extra ``update`` arguments are forwarded.
    learning_rate: initial rate ``> 0`` (a number: the method learns the rate from it, so an
      optax schedule is refused with a ``TypeError``).
    hypergrad_lr: ``beta >= 0``; 0 keeps the rate fixed (the wrapper then equals the inner
      transform followed by ``optax.scale_by_learning_rate``, bit for bit, on every input).
    min_learning_rate: optional floor ``>= 0`` on the rate (not in the reference, which never
      clips); ``None`` (default) leaves it unbounded.
    previous_direction_fn: optional ``inner_state -> d_{t-1}``, for inner transforms whose
      state holds the direction they returned at the previous step (``inner_state`` is the
      state *before* this step's update): a heavy-ball trace
      (:func:`optax_lr.trace_previous_direction`) or Adam's moments
      (:func:`optax_lr.adam_previous_direction`). The wrapper then keeps no copy of
      ``d_{t-1}`` (one parameter-sized buffer less, and its read and write per step); the values
      are those of the kept buffer, bit for bit.
    rate_rule: ``"additive"`` (default, the paper's rule ``lr += beta <g_t, d_{t-1}>``) or
      ``"multiplicative"``: ``lr *= 1 + beta cos(g_t, d_{t-1})``, Baydin et al.'s normalised
      multiplicative rule, which does not depend on the scale of the gradients or of the rate
      (``beta`` in ``[0, 1)``; 1e-2 is the registry's untuned value). The rate moves by at most
      ``x(1 +- beta)`` per step, so a rate 100x off needs at least ``ln(100) / beta`` steps (460
      at 1e-2; several times more in practice, where ``|E cos| < 1``). Stationary where
      consecutive directions decorrelate (``E cos = 0``); the two norms come from the
      reduction pass of the inner product (sums of the same inputs). See
      :doc:`/methods/hypergradient` for the derivation.
    search: ``None`` (default: off) or a :class:`~optax_lr.RateSearch` (``rate_rule=
      "multiplicative"`` only): a bracketing phase before the rule, multiplying the rate by
      ``search.factor`` per step while ``<g_t, d_{t-1}> > 0`` and ending for good at the first
      step with a previous direction where it is not (or at a backtrack); it starts from
      ``learning_rate * search.start``. A rate ``k`` times too small is corrected in
      ``log(k) / log(factor)`` steps (10 for 1000x at 2) instead of ``ln(k) / (beta E cos)``.
      One boolean scalar of state; the sign comes from the same reduction.
    backtrack: ``None`` (default: the rate rule alone, the paper's behaviour) or a
      :class:`~optax_lr.LossBacktrack`: ``update`` then takes the training loss as ``value=``
      (as ``optax.contrib.reduce_on_plateau`` does), and a step whose loss is above
      ``threshold = m + tolerance |m|`` (``m`` its running average, decay ``decay``) or not
      finite multiplies the rate by ``min(factor, sqrt(threshold / loss))`` instead of the
      rule's step. It stops a rate past the stability edge within a few steps, where the rule's
      ``x(1 - beta)`` per step comes too late. One scalar of state (the average); either rule.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`HypergradientState`. The
    rate is float32 (float64 for float64 parameters). A step whose hypergradient step is not
    finite leaves the rate unchanged. Extra ``update`` keyword arguments are passed to ``inner``
    (which ignores those it does not take).

  References:
    Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
    Hypergradient Descent", ICLR 2018: Section 2 and Algorithms "SGD-HD", "SGDN-HD", "Adam-HD".

  Example:
    >>> opt = optax_lr.hypergradient(optax.scale_by_adam(), learning_rate=1e-3, hypergrad_lr=1e-8)
    >>> scale_free = optax_lr.hypergradient(optax.scale_by_adam(), learning_rate=1e-3,
    ...                                     hypergrad_lr=1e-2, rate_rule="multiplicative")
    >>> guarded = optax_lr.hypergradient(optax.scale_by_adam(), learning_rate=1e-3,
    ...                                  hypergrad_lr=0.1, rate_rule="multiplicative",
    ...                                  search=optax_lr.RateSearch(),
    ...                                  backtrack=optax_lr.LossBacktrack())
  """
  _checks.learned_initial_rate(learning_rate, "hypergradient descent")
  _checks.non_negative("hypergrad_lr", hypergrad_lr)
  multiplicative = _rate_rule.check(rate_rule, hypergrad_lr)
  rate_search = _rate_rule.check_search(search, multiplicative)
  backtracks = _rate_rule.check_backtrack(backtrack)
  if min_learning_rate is not None:
    _checks.non_negative("min_learning_rate", min_learning_rate)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return HypergradientState(
        learning_rate=_tree.full_rate(_rate_rule.initial_rate(learning_rate, search),
                                      _tree.rate_dtype(params)),
        previous_direction=(_tree.zeros_like(params) if previous_direction_fn is None
                            else optax.EmptyState()),
        inner_state=inner.init(params),
        backtrack=(_rate_rule.backtrack_init(_tree.rate_dtype(params)) if backtracks
                   else optax.EmptyState()),
        searching=jnp.ones((), bool) if rate_search else optax.EmptyState(),
        search_peak=(_rate_rule.search_init(_tree.rate_dtype(params)) if rate_search
                     else optax.EmptyState()),
    )

  def update_fn(updates, state, params=None, **extra_args):
    keeps_previous = previous_direction_fn is None
    # d_{t-1}: the kept buffer, or read off the inner state before this step's update (exactly).
    previous = (state.previous_direction if keeps_previous
                else previous_direction_fn(state.inner_state))
    old_rate = state.learning_rate
    # A non-finite hypergradient step (inf or NaN elements, or an overflowing product) leaves the
    # rate unchanged; the floor applies to a rate that moved.
    searching, search_peak = state.searching, state.search_peak
    if multiplicative:
      sums = _rate_rule.tree_dot_and_norms(updates, previous)
      rate = _rate_rule.multiplicative(old_rate, hypergrad_lr, *sums)
      if rate_search:
        grows, searching, search_peak = _rate_rule.search_decision(
            searching, search_peak, *sums, stop_ratio=search.stop_ratio)
        rate = _rate_rule.scaled_where(grows, search.factor, rate, old_rate)
    else:
      dot = _tree.vdot(updates, previous)
      rate = _tree.where_finite(old_rate + hypergrad_lr * dot, old_rate)
    backtrack_state = state.backtrack
    if backtracks:
      # A rise of the training loss replaces this step's rate change with a cut.
      rose, cut, backtrack_state = _rate_rule.loss_rose(extra_args.get("value"), backtrack_state,
                                                        backtrack)
      rate = _rate_rule.scaled_where(rose, cut, rate, old_rate)
      if rate_search:
        searching = searching & ~rose
    if min_learning_rate is not None:
      rate = jnp.maximum(rate, min_learning_rate).astype(old_rate.dtype)
    # A buffer the reduction above read (the kept direction, or the inner state it was derived
    # from) is rewritten after the new rate, so that it is updated in place (_tree.after).
    inner_state = state.inner_state if keeps_previous else _tree.after(state.inner_state, rate)
    directions, inner_state = inner.update(updates, inner_state, params, **extra_args)
    previous_direction = (_tree.after(directions, rate) if keeps_previous
                          else state.previous_direction)
    return _tree.scale_by_rate(rate, directions, False), HypergradientState(
        learning_rate=rate,
        previous_direction=previous_direction,
        inner_state=inner_state,
        backtrack=backtrack_state,
        searching=searching,
        search_peak=search_peak)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_hd(learning_rate: float, hypergrad_lr: float = 1e-3, momentum: float | None = None,
           nesterov: bool = False, weight_decay: float | None = None, *,
           rate_rule: str = "additive", search: RateSearch | None = None,
           backtrack: LossBacktrack | None = None,
           ) -> optax.GradientTransformationExtraArgs:
  """SGD-HD (``momentum=None``) and SGDN-HD (``nesterov=True``): SGD with a hypergradient rate.

  Args:
    learning_rate: initial rate ``> 0``.
    hypergrad_lr: ``beta >= 0`` (reference: 1e-3).
    momentum: in ``[0, 1)``, the direction is then the momentum trace; ``None`` (default):
      plain SGD, no trace (as ``optax.sgd``).
    nesterov: Nesterov momentum (SGDN-HD).
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage).
    rate_rule: ``"additive"`` (default, the paper's rule) or ``"multiplicative"`` (scale-free,
      ``lr *= 1 + beta cos(g_t, d_{t-1})``, ``beta`` in ``[0, 1)``), as :func:`hypergradient`.
    search: ``None`` (default: off) or a :class:`~optax_lr.RateSearch`, the rate search, as
      :func:`hypergradient`.
    backtrack: ``None`` (default: off) or a :class:`~optax_lr.LossBacktrack`, the loss
      backtrack (needs ``update(..., value=loss)``), as :func:`hypergradient`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``hypergrad_lr = 0`` equals ``optax.sgd`` bit
    for bit on every input, inf and NaN included (float32 and float64 parameters).

  References:
    Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
    Section 2.

  Example:
    >>> opt = optax_lr.sgd_hd(0.1, hypergrad_lr=1e-3, momentum=0.9, nesterov=True)
  """
  inner = _base.momentum_direction(momentum, nesterov)
  # A heavy-ball trace is the previous direction itself: read it, keep no copy.
  reuse_trace = _base.reuses_heavy_ball_trace(momentum, nesterov)
  previous_direction_fn = _base.trace_previous_direction() if reuse_trace else None
  return _base.with_coupled_weight_decay(
      hypergradient(inner, learning_rate, hypergrad_lr,
                    previous_direction_fn=previous_direction_fn, rate_rule=rate_rule,
                    search=search, backtrack=backtrack),
      weight_decay)


def adam_hd(learning_rate: float = 1e-3, hypergrad_lr: float = 1e-8, b1: float = 0.9,
            b2: float = 0.999, eps: float = 1e-8, weight_decay: float | None = None,
            mu_dtype: Any = None, store_previous_direction: bool = False, *,
            rate_rule: str = "additive", search: RateSearch | None = None,
            backtrack: LossBacktrack | None = None,
            ) -> optax.GradientTransformationExtraArgs:
  """Adam-HD: Adam with a hypergradient rate on the direction ``m_hat / (sqrt(v_hat) + eps)``.

  The hypergradient ``<g_t, d_{t-1}>`` reads Adam's previous direction. By default it is
  computed from Adam's moments before this step's update
  (:func:`optax_lr.adam_previous_direction`: the operations Adam applied at step ``t - 1``,
  so the same values bit for bit), inside the reduction that reads the gradient, so the state is
  exactly Adam's plus one scalar rate and no buffer is stored for it.
  ``store_previous_direction=True`` keeps the buffer, as the reference code does (the same
  trajectory, one more parameter-sized buffer read and written per step). With a ``mu_dtype``
  narrower than the parameters the two differ by the rounding of the stored first moment
  (``2^-8`` relative per element for bfloat16): the kept buffer holds the direction of the
  float32 moment before its cast.

  Args:
    learning_rate: initial rate ``> 0``.
    hypergrad_lr: ``beta >= 0`` (reference default 1e-8; 1e-7 for MLPs).
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``>= 0``.
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage) (added to the
      gradient, as the reference does).
    rate_rule: ``"additive"`` (default, the paper's rule) or ``"multiplicative"`` (scale-free,
      ``lr *= 1 + beta cos(g_t, d_{t-1})``, ``beta`` in ``[0, 1)``), as :func:`hypergradient`.
    search: ``None`` (default: off) or a :class:`~optax_lr.RateSearch`, the rate search, as
      :func:`hypergradient`.
    backtrack: ``None`` (default: off) or a :class:`~optax_lr.LossBacktrack`, the loss
      backtrack (needs ``update(..., value=loss)``), as :func:`hypergradient`.
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype.
    store_previous_direction: keep ``d_{t-1}`` as a state buffer instead of reading it off the
      moments.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``hypergrad_lr = 0`` equals ``optax.adam`` bit
    for bit (float32 and float64 parameters).

  References:
    Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
    Section 2 ("Adam-HD").

  Example:
    >>> opt = optax_lr.adam_hd(1e-3, hypergrad_lr=1e-8)
  """
  _checks.flag("store_previous_direction", store_previous_direction)
  inner = _base.adam_direction(b1, b2, eps, mu_dtype)
  derived = not store_previous_direction
  return _base.with_coupled_weight_decay(
      hypergradient(inner, learning_rate, hypergrad_lr,
                    previous_direction_fn=(_base.adam_previous_direction(b1, b2, eps)
                                           if derived else None),
                    rate_rule=rate_rule, search=search, backtrack=backtrack),
      weight_decay)
