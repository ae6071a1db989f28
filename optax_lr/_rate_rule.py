"""The rate rules of the hypergradient family (additive, Baydin et al.'s Eq.; multiplicative) and
their safeguards (the rate search and the loss backtrack).

With ``g_t`` the gradient, ``d_{t-1}`` the previous direction of the group a rate belongs to and
``beta`` the hypergradient rate:

- ``"additive"`` (the paper-exact rule of every paper-named alias):
  ``lr_t = lr_{t-1} + beta * <g_t, d_{t-1}>``. The step has the units of a squared gradient, so
  one ``beta`` suits one gradient scale: a ``beta`` right for a rate of 1e-1 barely moves a rate of
  1e-3, and one right for 1e-3 makes 1e-1 diverge.
- ``"multiplicative"`` (the normalised, multiplicative rule of Baydin et al. 2018):
  ``lr_t = lr_{t-1} * (1 + beta * cos(g_t, d_{t-1}))``, with
  ``cos = <g_t, d_{t-1}> / (||g_t|| ||d_{t-1}||)`` over the group (0 when either norm is 0, so
  the first step, with ``d_{-1} = 0``, keeps the rate).

Derivation. The hypergradient of the loss after the step with respect to ``log lr`` is
``dL(theta_t)/d log lr = -lr <g_t, d_{t-1}>``. A gradient step on ``log lr`` whose size is
normalised by ``lr ||g_t|| ||d_{t-1}||`` (the largest value ``|lr <g_t, d_{t-1}>|`` can take) gives
``log lr_t = log lr_{t-1} + beta cos(g_t, d_{t-1})``, and ``exp(beta c) = 1 + beta c`` to first
order in ``beta``. The rule is invariant to scaling the loss, the gradients or the rate: ``cos``
has no units, and the rate moves by a factor in ``[1 - beta, 1 + beta]`` per step whatever its
value (``beta < 1`` keeps it positive). From an initial rate ``k`` times too large or too small it
needs about ``ln(k) / (beta |E cos|)`` steps to get there.

Fixed points. The rate is stationary where ``E[cos(g_t, d_{t-1})] = 0``: consecutive directions
decorrelate. Below it successive steps keep agreeing (``cos > 0``: the rate grows); above it
they overshoot and reverse (``cos < 0``: it shrinks). For SGD on a quadratic with curvature
``lambda`` along one axis, ``g_t = (1 - lr lambda) g_{t-1}``, so ``cos = sign(1 - lr lambda)`` and
the fixed point is ``lr = 1 / lambda``; with several curvatures the rate settles where the
components that still agree balance those that overshoot. On noisy gradients the noise pulls
``cos`` towards 0, so the fixed point lies below the deterministic one.

Cost. ``||g_t||^2`` and ``||d_{t-1}||^2`` are reduced from the same inputs as
``<g_t, d_{t-1}>`` (:func:`dot_and_norms`; per leaf, and per filter in CAM-HD), which a
multi-output fusion reads in one pass. Three scalars per group instead of one; no extra
parameter-sized buffer. The parameter level needs no norms (its cosine is a sign).

Choosing ``beta``. It sets the speed, not the fixed point: the rate needs at least
``ln(k) / beta`` steps to correct a factor ``k``. On a deterministic, ill-conditioned problem
``E cos = 0`` only where the stiffest direction starts to oscillate, i.e. at the stability edge,
so ``beta`` must keep the overshoot past it small.

Two safeguards (options of every hypergradient-family method, off by default; the registry's
"auto" entries turn both on). The rule alone fails in two ways that no ``beta`` fixes: from a
rate far too small it spends most of a run getting up (``ln(k) / (beta E cos)`` steps, and
``E cos`` is small on noisy gradients), and a larger ``beta`` only reaches sooner the fixed point
``E cos = 0``, which noise pulls below the rate a longer horizon would pick (the short-horizon
bias of greedy rate adaptation: Wu, Ren, Liao and Grosse, "Understanding Short-Horizon Bias in
Stochastic Meta-Optimization", ICLR 2018). From a rate far too large, the loss grows
geometrically, faster than the ``x(1 - beta)`` per step the rule takes off.

- The rate search (``search=RateSearch(factor, start)``, multiplicative rule only) is the bracketing
  phase of a line search, applied to the rate: while ``<g_t, d_{t-1}> > 0`` (the previous step
  stopped short of the minimum along its direction, so the sign of the hypergradient asks for a
  larger rate) the rate is multiplied by ``factor`` (2) per step; the first step with a previous
  direction where the inner product is not positive (the rate has passed the minimum along
  ``d_{t-1}``), or a backtrack, ends the search for good, and the rule takes over. A rate ``k``
  times too small is corrected in ``log_2 k`` steps (10 for 1000x), early, where gradients agree
  most (far from any minimum), so the search lands near the edge of stable rates rather than at the
  noisy fixed point. It overshoots by at most ``factor`` (times the lag of a momentum trace), which
  the rule and the backtrack then take off. From a rate too large it ends at the second step, after
  one step at that rate, which can already ruin a network (Adam's first step moves every weight by
  about the rate). ``start`` below 1 (the auto entries: 1e-3) starts the search that far below the
  given rate, so it brackets from below and a rate that is too large is never applied; the given
  rate is then an upper guess that costs ``log2(1 / start)`` steps. Scale-free like the rule (a
  sign); no fixed point of its own (a one-off phase). Cost: a boolean scalar; the sign is the
  inner product's, from the same reduction.
- The loss backtrack (``backtrack=LossBacktrack(factor, tolerance, decay)``, either rule) reads the
  training loss ``value`` (``update(..., value=loss)``): a step whose loss is above ``m + tolerance
  |m|``, ``m`` the loss's exponential average (decay ``decay``, 0.9: about 10 steps), or is not
  finite, multiplies the rate by ``min(factor, sqrt(threshold / loss))`` (``factor`` 0.5;
  ``threshold = m + tolerance |m|``) instead of the rule's step. The square root: along a direction
  of curvature ``lambda`` a step multiplies the error by ``|1 - lr lambda|`` and the loss by its
  square, so a loss ``L`` times the threshold asks for a rate about ``sqrt(L)`` times smaller;
  halving alone cannot catch a loss that grows more than 4x per step. Every finite loss joins the
  average, the rising ones too, so a loss that settles at a higher level stops the cuts once the
  average catches up (a rate never collapses to 0 on one jump). Invariant to scaling the loss by a
  positive constant, not to shifting it. Cost: one scalar and a comparison per step. The
  tolerance must clear the noise of a mini-batch loss: at 1 (a loss twice its average) it fires in
  the first steps from a rate that is too large and rarely afterwards.

Measurements (the choice of ``beta``, the safeguards, the variants rejected): the documentation's
hypergradient page (:doc:`/methods/hypergradient`).

Non-finite input. The new rate goes through :func:`optax_lr._tree.where_finite` like every rate
of the library: a step whose cosine is not finite leaves the rate unchanged; ``cos`` is clipped to
``[-1, 1]`` (rounding can push it past), and norms that overflow to inf give ``cos = 0`` or NaN,
both of which leave the rate unchanged. The search's and the backtrack's rates go through it
too; a NaN loss is a rise (a cut), and a step whose sums are not finite neither grows nor ends
the search.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_lr import _checks, _tree, safeguards

RATE_RULES = ("additive", "multiplicative")
"""The rate rules of the hypergradient family: ``"additive"`` (paper-exact) and
``"multiplicative"`` (normalised, scale-free)."""


def check(rate_rule: Any, hypergrad_lr: Any) -> bool:
  """Validates ``rate_rule`` (and ``hypergrad_lr < 1`` for the multiplicative rule).

  Returns:
    True for the multiplicative rule.
  """
  _checks.one_of("rate_rule", rate_rule, RATE_RULES)
  if rate_rule == "multiplicative":
    _checks.in_range("hypergrad_lr", hypergrad_lr, 0.0, 1.0, high_open=True)
    return True
  return False


def dot_and_norms(x: jax.Array, y: jax.Array, axis: Any = None):
  """``(sum(x y), sum(x x), sum(y y))`` over ``axis`` (all axes when None).

  Accumulates in float32 (float64 for float64 input), as every reduction of the library.
  """
  x = _tree._as_float32(x)
  y = _tree._as_float32(y)
  return jnp.sum(x * y, axis=axis), jnp.sum(x * x, axis=axis), jnp.sum(y * y, axis=axis)


def tree_dot_and_norms(tree_x: Any, tree_y: Any):
  """Global ``(<x, y>, ||x||^2, ||y||^2)`` over two trees (per-leaf sums added as scalars)."""
  sums = [dot_and_norms(x, y) for x, y in
          zip(jax.tree.leaves(tree_x), jax.tree.leaves(tree_y), strict=True)]
  zero = jnp.zeros((), _tree.RATE_DTYPE)
  return tuple(sum((s[i] for s in sums), zero) for i in range(3))


def cosine(dot: jax.Array, x_squared: jax.Array, y_squared: jax.Array) -> jax.Array:
  """``dot / (sqrt(x_squared) sqrt(y_squared))`` clipped to ``[-1, 1]``; 0 where a norm is 0.

  A NaN input gives NaN (the caller's :func:`optax_lr._tree.where_finite` keeps the rate).
  """
  denominator = jnp.sqrt(x_squared) * jnp.sqrt(y_squared)
  return jnp.clip(_tree.safe_divide(dot, denominator), -1.0, 1.0)


def multiplicative(rate: Any, step: Any, dot: Any, x_squared: Any, y_squared: Any) -> Any:
  """``rate * (1 + step * cos)``, with ``cos`` from :func:`cosine`, kept where not finite.

  Args:
    rate: the old rate(s) (a scalar or an array broadcastable against the sums).
    step: ``beta`` (times any level weight), a scalar.
    dot, x_squared, y_squared: the group sums of ``g d_prev``, ``g^2`` and ``d_prev^2``.

  Returns:
    The new rate(s), in the dtype of ``rate``; the old rate where the new one is not finite.
  """
  new = rate * (1 + step * cosine(dot, x_squared, y_squared))
  return _tree.where_finite(new, rate)


def check_search(search: Any, multiplicative: bool) -> bool:
  """Validates the ``search`` option (a :class:`optax_lr.RateSearch` or None; the search needs
  the multiplicative rule). Returns True when the search is on."""
  if not safeguards.check_option("search", search, safeguards.RateSearch):
    return False
  if not multiplicative:
    raise ValueError("`search` needs rate_rule='multiplicative' (the search ends where the "
                     "cosine of the multiplicative rule turns non-positive).")
  return True


def initial_rate(learning_rate: Any, search: Any) -> Any:
  """The rate a method starts from: ``learning_rate``, times ``search.start`` under the search."""
  return learning_rate if search is None else learning_rate * search.start


def search_decision(searching: jax.Array, peak: jax.Array, dot: Any, x_squared: Any,
                    y_squared: Any, stop_ratio: float = 0.0,
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step of the rate search: whether the rate grows, whether the search goes on, and the
  largest cosine seen while it did.

  With ``cos = cos(g_t, d_{t-1})`` and ``peak`` the largest cosine of the search so far (this
  step's included), the rate grows (by the search's ``factor``) while ``cos > stop_ratio * peak``;
  the search ends at the first step with a previous direction (both norms positive) where it does
  not. ``stop_ratio = 0`` is the sign test ``<g_t, d_{t-1}> > 0``. Before a previous direction
  exists, and at a step whose sums are not finite, it neither grows nor ends, and the peak stays.

  Returns:
    ``(grows, searching, peak)``: two boolean scalars and the new peak (a scalar of ``peak``'s
    dtype).
  """
  finite = jnp.isfinite(dot) & jnp.isfinite(x_squared) & jnp.isfinite(y_squared)
  has_previous = finite & (x_squared > 0) & (y_squared > 0)
  cos = cosine(dot, x_squared, y_squared).astype(peak.dtype)
  peak = jnp.where(searching & has_previous, jnp.maximum(peak, cos), peak)
  agrees = cos > stop_ratio * peak
  return (searching & has_previous & agrees, searching & ~(has_previous & ~agrees), peak)


def search_init(dtype: Any) -> jax.Array:
  """The search's peak cosine before any step: 0 (so the first test is the sign test)."""
  return jnp.zeros((), dtype)


def scaled_where(condition: jax.Array, factor: float, new: Any, old: Any) -> Any:
  """``factor * old`` where ``condition`` (a boolean scalar), else ``new``; leafwise over rate
  trees, kept at ``old`` where not finite (:func:`optax_lr._tree.where_finite`)."""
  chosen = jax.tree.map(lambda n, o: jnp.where(condition, factor * o, n), new, old)
  return _tree.where_finite(chosen, old)


class LossBacktrackState(NamedTuple):
  """State of the loss backtrack (``backtrack=LossBacktrack(...)``), a scalar.

  Attributes:
    loss_average: the exponential moving average of the finite ``value`` arguments (training
      losses) seen so far (NaN before the first).
  """

  loss_average: jax.Array


def check_backtrack(backtrack: Any) -> bool:
  """Validates the ``backtrack`` option (a :class:`optax_lr.LossBacktrack` or None). Returns True
  when the backtrack is on."""
  return safeguards.check_option("backtrack", backtrack, safeguards.LossBacktrack)


def backtrack_init(dtype: Any) -> LossBacktrackState:
  return LossBacktrackState(loss_average=jnp.full((), jnp.nan, dtype))


def loss_rose(value: Any, state: LossBacktrackState, backtrack: safeguards.LossBacktrack,
              ) -> tuple[jax.Array, jax.Array, LossBacktrackState]:
  """Whether ``value`` rose past ``threshold = average + tolerance |average|``, and the cut.

  With ``backtrack``'s ``factor``, ``tolerance`` and ``decay``, the cut is
  ``min(factor, sqrt(threshold / value))``: along a direction of curvature
  ``lambda`` a step multiplies the error by ``|1 - lr lambda|`` and the loss by its square, so a
  loss ``L`` times the threshold asks for a rate about ``sqrt(L)`` times smaller to be stable
  again; halving alone cannot catch a loss that grows faster than 4x per step. A non-finite loss
  (or a threshold that is not positive) cuts by ``factor``.

  Returns:
    ``(rose, cut, new_state)``: a boolean scalar (False at the first finite value, where there is
    no average yet), the factor for the rate where it rose, and the state with ``value`` averaged
    in when finite.
  """
  backtrack_factor, loss_tolerance, loss_decay = (backtrack.factor, backtrack.tolerance,
                                                  backtrack.decay)
  average = state.loss_average
  value = jnp.asarray(
      _checks.training_loss(value, "hypergradient descent with a LossBacktrack"), average.dtype)
  finite = jnp.isfinite(value)
  threshold = average + loss_tolerance * jnp.abs(average)
  # A NaN or inf loss is a rise; a NaN comparison (no average yet) is not.
  rose = ~finite | (value > threshold)
  measured = finite & (threshold > 0)
  ratio = jnp.where(measured, threshold / jnp.where(measured, value, 1.0), 1.0)
  cut = jnp.where(measured, jnp.minimum(backtrack_factor, jnp.sqrt(ratio)), backtrack_factor)
  new_average = jnp.where(jnp.isfinite(average),
                          loss_decay * average + (1.0 - loss_decay) * value, value)
  return rose, cut, LossBacktrackState(loss_average=jnp.where(finite, new_average, average))
