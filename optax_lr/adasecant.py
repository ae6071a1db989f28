"""AdaSecant and Simple AdaSecant: per-element learning rates from secants of consecutive gradients.

Implements Sasse's thesis, *Investigating the Influence of Learning Rates on the Learning Speed of
Neural Networks* (University of Stuttgart, 2021; Section 2.6, Algorithms 2.3, 3.1 and 3.2, Eq.
2.40-2.45 and 3.1-3.3) and the paper it re-implements, Gulcehre, Sotelo, Moczulski and Bengio, "A
Robust Adaptive Stochastic Gradient Method for Deep Learning" (IJCNN 2017, arXiv:1703.00788), with
the readings and departures documented in :func:`adasecant` and on the documentation's thesis page.

The idea (Eq. 2.33-2.40): a directional Newton step along the previous update ``Delta`` needs the
curvature ``h_i . Delta``, which the secant ``a = g_t - g_{t-1}`` measures for free, so element
``i`` gets the rate ``|Delta_{t-1,i} / a_{t,i}|``; on a quadratic with a diagonal Hessian this is
exactly ``1 / h_i`` (the secant property).

- :func:`simple_adasecant` uses the bare secant (Eq. 3.1) with a threshold on the rates.
- :func:`adasecant` averages every statistic with an adaptive memory ``tau`` (Eq. 2.41-2.42),
  reduces the gradient's variance (Eq. 2.44-2.45), resets the memory on outliers, takes the
  rate from the averaged secant statistics, and, as the paper and the authors' code, measures the
  first step and a rate cap against the block-normalised gradient ``g / ||E[g]||`` (without the
  cap, a few elements with a secant near 0 get rates of 1e4-1e6 and a network diverges).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _checks, _tree

_SIMPLE_MODES = ("zero", "clip")
_RATE_RULES = ("least_squares", "paper")
_NORMALIZE = ("block", "global", "none")

#: A step this many times longer than the steps the secant statistics were measured on is a
#: blow-up (``largest_step_ratio`` of :class:`SimpleAdaSecantState` and :class:`AdaSecantState`;
#: :func:`optax_lr.blown_up`).
BLOW_UP_RATIO = 10.0


def _stat_dtype(x: jax.Array) -> jnp.dtype:
  """Statistics and rates are float32 (or wider) whatever the parameter dtype."""
  return jnp.promote_types(jnp.asarray(x).dtype, _tree.RATE_DTYPE)


def _zeros_f32(tree: Any) -> Any:
  """Fresh statistics buffers, each with its parameter's shape and sharding."""
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=_stat_dtype(x)), tree)


def _full_f32(tree: Any, value: float) -> Any:
  return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=_stat_dtype(x)), tree)


def _unzip(tree_def_source: Any, leaves_tuple_tree: Any, n: int) -> tuple[Any, ...]:
  """Split a tree whose leaves are n-tuples into n trees shaped like ``tree_def_source``."""
  treedef = jax.tree.structure(tree_def_source)
  tuples = treedef.flatten_up_to(leaves_tuple_tree)
  return tuple(treedef.unflatten([t[k] for t in tuples]) for k in range(n))


def _record_step(step_sq: Any, first_step_norm: jax.Array,
                 largest_step_ratio: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The blow-up record after a step whose per-leaf squared norms are ``step_sq``.

  Returns ``(first_step_norm, largest_step_ratio)``: the norm of the first step that moved
  anything (kept once set), and the largest ``||Delta_t|| / first_step_norm`` so far. A step
  whose squared norm overflows gives ``inf``; 0/0 (nothing has moved yet) gives 0.
  """
  dtype = largest_step_ratio.dtype
  norm = jnp.sqrt(sum(jax.tree.leaves(step_sq), jnp.zeros((), dtype)))
  first = jnp.where(first_step_norm > 0, first_step_norm, jnp.where(jnp.isfinite(norm), norm, 0.0))
  ratio = _tree.safe_divide(norm, first)
  ratio = jnp.where(jnp.isnan(ratio), 0.0, ratio)
  return first.astype(dtype), jnp.maximum(largest_step_ratio, ratio).astype(dtype)


# --------------------------------------------------------------------------------------------
# Simple AdaSecant (thesis Eq. 3.1-3.3, Algorithm 3.2).
# --------------------------------------------------------------------------------------------


class SimpleAdaSecantState(NamedTuple):
  """State of :func:`simple_adasecant`: two parameter-sized buffers and a counter.

  Attributes:
    count: int32, number of updates taken.
    learning_rate: per-element rates of the latest update (float32, shaped like the params);
      ones before the first update.
    previous_grad: ``g_{t-1}`` (float32; zeros before the first update: Eq. 3.3's ``g_0 = 0``).
    first_step_norm: scalar, ``||Delta_0||``, the norm of the first update that moved anything
      (0 before it).
    largest_step_ratio: scalar, the largest ``||Delta_t|| / ||Delta_0||`` over the updates taken
      (0 before the first): the blow-up test of :func:`simple_adasecant`, read by
      :func:`optax_lr.blown_up`.
  """

  count: jax.Array
  learning_rate: Any
  previous_grad: Any
  first_step_norm: jax.Array
  largest_step_ratio: jax.Array


def simple_adasecant(threshold: float = 10.0, mode: str = "zero",
                     step_growth: float = math.inf) -> optax.GradientTransformationExtraArgs:
  """Simple AdaSecant: the bare per-element secant rate ``|Delta_{t-1} / (g_t - g_{t-1})|``.

  Every element gets the rate ``alpha_i = |Delta_{t-1,i} / a_i|`` with ``a = g_t - g_{t-1}``
  (thesis Eq. 3.1), and the update is ``Delta_t = -alpha * g_t``; the first step uses
  ``Delta_0 = -g`` and ``a_1 = g`` (Eq. 3.2-3.3), so its rate is 1. ``0/0`` and ``x/0`` give
  rate 0. Because ``Delta_{t-1} = -alpha_{t-1} g_{t-1}``, the previous step is rebuilt from the
  stored rate and gradient, bit for bit the product the previous update computed: the state is
  two parameter-sized buffers (rates and the previous gradient), and an update reads
  ``g, g_prev, rates`` and writes ``g_prev, rates``: a floor of 28 bytes per f32 parameter with
  the parameter read and write, 1.4x ``optax.sgd(momentum=...)``'s 20.

  On a quadratic with a diagonal Hessian ``h`` the second step's rates are exactly ``1 / h_i``
  and the iterate lands on the minimum (the secant property). Rates at or above ``threshold``
  are set to 0 (``mode="zero"``, the thesis's choice: "the algorithm only performs well when
  values which surpass this threshold are set to zero") or to ``threshold`` (``mode="clip"``).
  The thesis trained ResNets with thresholds 3 and 10; infinity diverged (Table 4.3).

  Non-finite input: an element whose gradient is not finite keeps its rate and previous gradient
  unchanged on that step (a new value is kept only where finite), so an inf or NaN element is a
  missing observation, not a permanent NaN; its update is still ``-alpha * g`` as computed
  (``optax.apply_if_finite`` skips whole steps). A finite gradient whose rate comes out non-finite
  keeps its rate and becomes the previous gradient: an inf rate (``threshold=math.inf`` in
  ``"clip"`` mode) or a NaN secant ``inf / inf``, which needs a previous step and a secant that
  both overflow float32 (only after an update that was already infinite). Rates are therefore
  finite after any input, 1e30 gradients included.

  Growth bound (``step_growth``, off by default; not in the thesis). The secant rate makes the
  step ``|Delta_{t,i}| = |Delta_{t-1,i}| |g_{t,i}| / |a_{t,i}|``: it grows more than
  ``step_growth`` times exactly where the gradient changed by less than ``1 / step_growth`` of
  itself across the previous step, a secant that measured almost no curvature. With a finite
  ``step_growth`` the rate is lowered to ``step_growth |Delta_{t-1,i}| / |g_{t,i}|`` there (after
  the threshold; an element restarting at rate 1 is not bounded), the trust region of the same
  name in :func:`adasecant`. It stops the blow-up of a small transformer but costs about one
  point of test accuracy on the digits MLP, so the thesis's rule stays the default (figures on
  the documentation's thesis page).

  Blow-up test (``largest_step_ratio`` of the state, read by :func:`optax_lr.blown_up`): the
  largest ``||Delta_t|| / ||Delta_0||`` so far, where ``Delta_0 = -g_0`` is the first step that
  moved anything (the norms over the elements with a finite gradient); a blow-up when it
  exceeds ``BLOW_UP_RATIO = 10``. Derivation: the first step is the only one taken without a
  secant; on a diagonal quadratic the second step lands on the minimum,
  ``|Delta_{1,i}| = |g_{0,i}| |1 - h_i| / h_i``, and a rate ``1 / h_i`` below the threshold 10
  means ``h_i > 0.1``, so ``|Delta_1| < 9 |Delta_0|`` element by element and every later step is
  0: a step ten times the first is longer than any step the rule takes on a quadratic it
  solves. It is a symptom test on the steps, not on the loss: a run can blow up with steps
  below ten first steps for a while (measured on the transformer, the thesis page).

  Args:
    threshold: rate threshold ``> 0`` (``math.inf`` disables it). A threshold ``<= 1`` zeroes
      the first step's rate of 1 in ``"zero"`` mode and nothing ever moves.
    mode: ``"zero"`` (default) or ``"clip"``.
    step_growth: ``> 0`` (``math.inf``, default, is the thesis's rule), the largest factor by
      which an element's step may grow from one update to the next:
      ``alpha <- min(alpha, step_growth |Delta_{t-1}| / |g|)`` where ``Delta_{t-1} != 0``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that produces the full update (it is a complete
    optimizer: do not chain a learning rate after it); extra ``update`` keyword arguments are
    ignored. State: :class:`SimpleAdaSecantState` (float32 rates, float64 for float64 params;
    two scalars for the blow-up test).

  References:
    Robin Sasse, "Investigating the Influence of Learning Rates on the Learning Speed of Neural
    Networks" (B.Sc. thesis, University of Stuttgart, 2021), Section 3.3 "Simple AdaSecant",
    Eq. 3.1-3.3, Algorithm 3.2; Section 4.5.2 and Table 4.3 for the thresholds.

  Example:
    >>> opt = optax.chain(optax.clip_by_global_norm(1.0), optax_lr.simple_adasecant(threshold=3.0))
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params)
  """
  _checks.in_range("threshold", threshold, 0.0, math.inf, low_open=True)
  _checks.one_of("mode", mode, _SIMPLE_MODES)
  _checks.in_range("step_growth", step_growth, 0.0, math.inf, low_open=True)

  def init_fn(params):
    return SimpleAdaSecantState(
        count=jnp.zeros((), jnp.int32),
        learning_rate=_full_f32(params, 1.0),
        previous_grad=_zeros_f32(params),
        first_step_norm=jnp.zeros((), _tree.rate_dtype(params)),
        largest_step_ratio=jnp.zeros((), _tree.rate_dtype(params)),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    first = state.count == 0

    def leaf(g, rate_prev, g_prev):
      g32 = g.astype(rate_prev.dtype)
      curvature = g32 - g_prev  # a_t (Eq. 2.36); equals g at the first step (Eq. 3.3).
      # Delta_{t-1} = -alpha_{t-1} g_{t-1}; at the first step Delta_0 = -g (Eq. 3.2).
      previous_step = jnp.where(first, -g32, -rate_prev * g_prev)
      # An element that did not move has no secant: it restarts with the first step's rate 1
      # (otherwise a zero gradient or a zeroed rate would freeze it for good, Section 3.3).
      secant = jnp.abs(_tree.safe_divide(previous_step, curvature))
      rate = jnp.where(previous_step == 0, 1.0, secant)
      above = rate >= threshold
      if mode == "zero":
        rate = jnp.where(above, 0.0, rate)
      else:
        rate = jnp.where(above, threshold, rate)
      # The secant's trust region: |alpha g| <= step_growth |Delta_{t-1}|, the step it was
      # measured on; an element that did not move keeps its restart rate. No Python branch on
      # step_growth (inject_hyperparams passes it as an array); inf bounds nothing.
      magnitude = jnp.abs(g32)
      reach = step_growth * jnp.abs(previous_step)
      beyond = (previous_step != 0) & (rate * magnitude > reach)
      rate = jnp.where(beyond, _tree.safe_divide(reach, magnitude), rate)
      # A non-finite gradient element is a missing observation: it keeps its rate and previous
      # gradient. A finite gradient whose rate is not finite (a NaN secant, inf / inf, only
      # after an update that overflowed; an inf rate, threshold=inf in "clip" mode) keeps its
      # rate and takes the gradient.
      finite = jnp.isfinite(g32)
      rate = _tree.where_finite(rate, rate_prev, finite=finite)
      # Written after the rate pass has read the old g_prev (in place: _tree.after).
      g_kept = _tree.after(jnp.where(finite, g32, g_prev), _tree.one_element(rate))
      step = -rate * g32
      # The blow-up test's squared norms, over the observed (finite-gradient) elements.
      step_sq = jnp.sum(jnp.where(finite, step * step, 0.0))
      return step.astype(g.dtype), rate, g_kept, step_sq

    out = jax.tree.map(leaf, updates, state.learning_rate, state.previous_grad)
    new_updates, rates, grads, step_sq = _unzip(updates, out, 4)
    first_step_norm, largest_step_ratio = _record_step(step_sq, state.first_step_norm,
                                                       state.largest_step_ratio)
    return new_updates, SimpleAdaSecantState(
        count=optax.safe_int32_increment(state.count), learning_rate=rates, previous_grad=grads,
        first_step_norm=first_step_norm, largest_step_ratio=largest_step_ratio)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# AdaSecant (thesis Algorithm 2.3 / 3.1, Eq. 2.41-2.45; arXiv:1703.00788).
# --------------------------------------------------------------------------------------------


class AdaSecantState(NamedTuple):
  """State of :func:`adasecant`: 12 parameter-sized buffers (13 with ``rate_rule="paper"``).

  Every ``*_mean`` is a moving average with the adaptive memory ``tau`` (Eq. 2.41). Each field is
  one the rule reads on the next step and none can be rebuilt from the others; the previous
  corrected gradient ``g~_{t-1}`` is not stored: it is recomputed from ``previous_grad``,
  ``grad_mean`` and the two ``gamma_*`` statistics with the operations the previous step used
  (the same value up to rounding: a compiler may contract ``a * b + c`` into a fused
  multiply-add in one place and not in the other).

  Attributes:
    count: int32, number of updates taken.
    learning_rate: per-element rates ``alpha`` of the latest update (ones before the first); with
      ``g~_{t-1}`` it gives the previous step ``Delta_{t-1} = -alpha_{t-1} g~_{t-1}``.
    tau: per-element memory size (Eq. 2.42), ones before the first update: the weight of every
      average.
    grad_mean, grad_sq_mean: ``E[g]``, ``E[g^2]`` of the raw gradient: the outlier test on ``g``,
      the block norm, the variance reduction and ``g~``.
    curvature_mean, curvature_sq_mean: ``E[a]``, ``E[a^2]`` with ``a = g_t - g_{t-1}``: the
      outlier test on ``a`` (and the rate of ``rate_rule="paper"``).
    curvature_step_mean: ``E[a Delta]`` (pairing depends on ``rate_rule``): the rate.
    step_mean, step_sq_mean: ``E[Delta]``, ``E[Delta^2]``: the memory update and the rate.
    gamma_numerator_mean, gamma_denominator_mean: the two statistics of Eq. 2.45 (``gamma``).
    previous_grad: ``g_{t-1}``: the secant ``a_t`` and ``g~_{t-1}``.
    previous_curvature: ``a_{t-1}``, kept only for ``rate_rule="paper"`` (its ``E[a Delta]``
      pairs ``a_t`` with ``Delta_t``); an empty state otherwise.
    first_step_norm: scalar, ``||Delta_0||``, the norm of the first update that moved anything
      (0 before it).
    largest_step_ratio: scalar, the largest ``||Delta_t|| / ||Delta_0||`` over the updates taken
      (0 before the first): the blow-up test of :func:`adasecant`, read by
      :func:`optax_lr.blown_up`.
  """

  count: jax.Array
  learning_rate: Any
  tau: Any
  grad_mean: Any
  grad_sq_mean: Any
  curvature_mean: Any
  curvature_sq_mean: Any
  curvature_step_mean: Any
  step_mean: Any
  step_sq_mean: Any
  gamma_numerator_mean: Any
  gamma_denominator_mean: Any
  previous_grad: Any
  previous_curvature: Any
  first_step_norm: jax.Array
  largest_step_ratio: jax.Array


def adasecant(rate_rule: str = "least_squares", gamma_clip: float = 1.8,
              tau_bounds: tuple[float, float] = (1.5, 1e7), outlier_reset: float = 2.2,
              normalize: str = "block", max_rate: float = 25.0,
              eps: float = 1e-20,
              step_growth: float = 2.0) -> optax.GradientTransformationExtraArgs:
  """AdaSecant: per-element secant rates from moving averages with an adaptive memory.

  Non-finite input: an element whose gradient is not finite, or whose secant statistics overflow,
  keeps every statistic, its rate and its memory unchanged on that step
  (a new value is kept only where finite); a non-finite ``next_grads`` element is missing for that
  element (its two variance-reduction statistics stay as they were). Rates are therefore finite
  after any input, 1e30 gradients included. The update of such an element is ``-alpha g~`` with
  its kept rate and ``g~`` from its kept statistics and this step's gradient, as in
  :func:`simple_adasecant` (non-finite where the gradient is; ``optax.apply_if_finite`` skips
  whole steps).

  Per element, with ``a = g_t - g_{t-1}`` and every average ``E[v] <- (1 - 1/tau) E[v] + v/tau``
  (Eq. 2.41), each step:

  1. ``E[g]``, ``E[g^2]`` take the gradient.
  2. Block norm (paper Section "blockwise gradient normalisation"; Algorithm 2.3's
     ``g <- g / ||E[g]||``): ``n = ||E[g]||`` over each parameter leaf (``"block"``, default: each
     weight matrix and bias vector, as the paper and the authors' code), over the whole tree
     (``"global"``, the thesis's reading) or ``n = 1`` (``"none"``).
  3. Variance reduction (Eq. 2.44-2.45): ``gamma = E[(g - g')(g - E[g])] /
     E[(g - E[g])(g' - E[g])]`` clipped to ``[0, gamma_clip]`` (0/0 and NaN give 0), and
     ``g~ = (g + gamma E[g]) / (1 + gamma)``. ``g'`` is ``next_grads`` (the gradient of the next
     mini-batch at the same parameters); without it the previous corrected gradient stands in,
     as in the authors' workshop code.
  4. ``E[a]``, ``E[a^2]`` take ``a_t``; ``E[Delta]``, ``E[Delta^2]`` and ``E[a Delta]`` take the
     previous step ``Delta_{t-1}`` with the *same* weight, so every average of a secant pair
     ``(Delta_{t-1}, a_t)`` weighs the pair's two halves alike.
  5. Rate: ``alpha = E[Delta^2] / |E[a Delta]|`` (``"least_squares"``, default) or
     ``sqrt(E[Delta^2]) / sqrt(E[a^2]) - E[a Delta] / E[a^2]`` (``"paper"``, thesis Eq. 2.43);
     non-finite rates are 0; then ``alpha <- clip(alpha, 0, max_rate / n)``: at most
     ``max_rate`` times the block-normalised gradient (the authors' code clips the rate at 25),
     never against ``-g~`` (Eq. 2.40's absolute value).
  6. Memory (Eq. 2.42): ``tau <- (1 - E[Delta]^2 / E[Delta^2]) tau + 1``, clipped to
     ``tau_bounds``; then if ``|g - E[g]| > 2 sd(g)`` or ``|a - E[a]| > 2 sd(a)`` (an outlier),
     ``tau <- outlier_reset`` (the thesis's Section 3.3 order: update, clip, reset).
  7. ``Delta_t = -alpha g~``.

  Initialisation (thesis Section 3.3, in block-normalised units): averages 0 and ``tau = 1``, so
  each first average is the first value; the first step is ``Delta_0 = -g~ / n``, rate 1 on the
  normalised gradient (a unit-norm step per block), and its ``Delta``-statistics pair it with
  ``a = g``. The memory stays 1 for the second step, so that fictitious pair is replaced by the
  first real one.

  Where the normalisation acts. The secant statistics are invariant to the gradient's scale:
  with ``g`` divided by ``n``, ``a`` is divided by ``n``, the rate multiplied by ``n`` and the
  step ``-alpha g~`` is unchanged. So the paper's normalisation only matters for the three
  scale-dependent constants: the first step, the rate cap and ``eps``. This implementation keeps
  the statistics in the gradient's own units and applies ``1/n`` exactly there (the first step
  and the cap; ``eps`` stays in raw units). That equals normalising ``g`` when ``n`` is constant
  over the memory, and keeps the rate exactly ``1/h`` on a quadratic while ``n`` shrinks. The
  reported ``learning_rate`` is the rate on the raw gradient (comparable to an SGD rate).

  Why the cap. On a network some elements see a secant ``a`` near 0 while they move (their
  gradient barely changes, or ``E[a Delta]`` changes sign inside a memory of 1.5 to 2.2 steps),
  and the secant rate of such an element is unbounded, enough to make training diverge in the
  first epoch, with either rate rule. Eq. 2.40 without a bound is Simple AdaSecant with
  threshold infinity, which the thesis also saw diverge (Table 4.3). The paper leaves the bound
  implicit; the authors' code clips the rate at 25 (``delta_clip``).

  Why the growth bound (``step_growth=2``, not in either paper). The secant rate is a Newton
  step fitted to the pairs ``(Delta, a)`` in the memory; a step much longer than those pairs
  extrapolates the fit where it was never measured. In the first steps the memory holds one or
  two pairs, so the rates are bare secants across the unit-norm first step, and elements whose
  ``a`` is near 0 by chance get rates up to the cap, which on a block of small ``||E[g]||``
  lets a block move by several times its own norm per step, without anything becoming
  non-finite. Bounding each step by twice the RMS of the steps the secant statistics were
  measured on (a statistic the rule keeps) is the fit's trust region; on a deterministic
  quadratic the rates then climb to ``1/h`` within a few steps instead of landing at once.
  Measurements (the cap on the digits MLP, the bound on a small transformer): the
  documentation's thesis page.

  Blow-up test (``largest_step_ratio`` of the state, read by :func:`optax_lr.blown_up`): the
  largest ``||Delta_t|| / ||Delta_0||`` so far, where ``Delta_0 = -g~ / n`` is the first step
  that moved anything (one unit per block; the norms over the observed elements); a blow-up
  when it exceeds ``BLOW_UP_RATIO = 10``. Derivation: the first step is the one the rule takes
  before it has measured any curvature, and every later step is a secant step bounded by the
  growth bound, ``|Delta_{t,i}| <= step_growth sqrt(E[Delta^2]_i)``, and the averages decay
  while the steps shrink; so a run that is settling keeps its steps below the first (measured:
  at most 1.0 times on the transformer and the digits MLP with the defaults), and a step ten
  times the first is a step the statistics grew into, not one they started from. Not a proof:
  on a problem whose minimum lies more than ten unit steps away (a flat quadratic started far
  off) a healthy run can pass it, and a blow-up can stay under it for a while; the training
  loop judges the loss (``train.reporting.divergence``).

  Why the default rate rule departs from Eq. 2.43. On a deterministic quadratic every secant pair
  satisfies ``a = h Delta``, so ``sqrt(E[Delta^2]) / sqrt(E[a^2]) = E[a Delta] / E[a^2] = 1/h``
  and Eq. 2.43 read literally gives ``alpha = 0``: the collapse the thesis reports (rates below
  1e-4 within an epoch). The authors' code pairs ``a_t`` with ``Delta_t`` instead (the pairing
  ``rate_rule="paper"`` reproduces); there the correction pushes rates up while an element
  oscillates, and rates settle at the edge of stability ``2/h`` instead of ``1/h``. The
  least-squares secant ``E[Delta^2] / E[a Delta]`` (the slope ``h`` that fits ``a = h Delta``
  over the memory window, inverted) is exactly ``1/h`` on a deterministic quadratic and, on a
  noisy one, decays roughly like ``1/t`` (gradient noise in ``a`` correlates with ``Delta_{t-1}``)
  instead of collapsing geometrically like the RMS ratio alone. The absolute value keeps the step
  along ``-g~`` as Eq. 2.40 does.

  Not implemented from the authors' code: its clipped-AdaGrad divisor ``max(sqrt(sum g~^2), 1)``
  (not in the paper's algorithm; not needed here), the bias correction of some averages, and its
  initial memory 2.1 (the thesis's ``tau = 1`` initialisation is kept).

  Cost. 12 parameter-sized float32 buffers (13 with ``rate_rule="paper"``): the floor of a
  single fused pass is about 100 bytes per float32 parameter (each statistic read and written,
  the gradient, ``next_grads`` and the parameters read, the parameters written), 3.6x
  ``optax.adam``, plus one reduction per leaf for the block norm.

  Args:
    rate_rule: ``"least_squares"`` (default) or ``"paper"`` (Eq. 2.43 with the authors' pairing;
      kept to reproduce the thesis, not recommended).
    gamma_clip: upper clip ``>= 0`` of the variance-reduction factor (authors' code: 1.8).
    tau_bounds: ``(low, high)`` with ``1 <= low <= high``; the memory is clipped to it
      (authors' code: 1.5 and 1e7; the thesis found the bounds essential).
    outlier_reset: memory ``>= 1`` set on an outlier (paper: 2.2).
    normalize: ``"block"`` (default), ``"global"`` or ``"none"``: the norm ``n`` of ``E[g]``
      that sets the first step ``-g~ / n`` and the rate cap ``max_rate / n``.
    max_rate: ``> 0`` (``math.inf`` disables the cap), the largest rate on the normalised
      gradient (authors' code: 25).
    eps: ``>= 0``, added to the rate's denominators (units of ``a * Delta``).
    step_growth: ``> 0`` (``math.inf`` turns it off: the papers' rule), the largest step of an
      element as a multiple of the RMS of its steps in the secant statistics:
      ``alpha <- min(alpha, step_growth sqrt(E[Delta^2]) / |g~|)`` where ``E[Delta^2] > 0``.
      A departure from both papers, on by default (see "Why the growth bound").

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with
    ``update(grads, state, params=None, *, next_grads=None)`` producing the full update (it is a
    complete optimizer). State: :class:`AdaSecantState` (its two scalars for the blow-up test).

  References:
    Sasse's thesis, Section 2.6 (Eq. 2.40-2.45, Algorithm 2.3) and Section 3.3 (Algorithm
    3.1, the order of operations and initialisation), Table 4.3; Gulcehre et al.,
    arXiv:1703.00788 (block-wise gradient normalisation, Algorithm 1) and the authors' Theano
    code (rate clip 25, memory bounds 1.5 and 1e7).

  Example:
    >>> opt = optax_lr.adasecant()
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, batch), state, params,
    ...                             next_grads=grad_fn(params, next_batch))
  """
  _checks.one_of("rate_rule", rate_rule, _RATE_RULES)
  _checks.non_negative("gamma_clip", gamma_clip)
  if not isinstance(tau_bounds, tuple | list) or len(tau_bounds) != 2:
    raise ValueError(f"`tau_bounds` must be a pair (low, high); got {tau_bounds!r}.")
  low, high = tau_bounds
  _checks.in_range("tau_bounds[0]", low, 1.0, math.inf)
  _checks.in_range("tau_bounds[1]", high, 1.0, math.inf)
  if high < low:
    raise ValueError(f"`tau_bounds` must be in order low <= high; got {tau_bounds!r}.")
  _checks.in_range("outlier_reset", outlier_reset, 1.0, math.inf)
  _checks.one_of("normalize", normalize, _NORMALIZE)
  _checks.in_range("max_rate", max_rate, 0.0, math.inf, low_open=True)
  _checks.non_negative("eps", eps)
  _checks.in_range("step_growth", step_growth, 0.0, math.inf, low_open=True)
  paper = rate_rule == "paper"

  def _corrected(g, m_g, m_num, m_den):
    """``g~ = (g + gamma E[g]) / (1 + gamma)`` with ``gamma`` from the two statistics (Eq. 2.44)."""
    gamma = jnp.clip(_tree.finite_or_zero(_tree.safe_divide(m_num, m_den)), 0.0, gamma_clip)
    return (g + gamma * m_g) / (1.0 + gamma)

  def init_fn(params):
    zeros = lambda: _zeros_f32(params)  # noqa: E731 - a fresh buffer per field
    return AdaSecantState(
        count=jnp.zeros((), jnp.int32),
        learning_rate=_full_f32(params, 1.0),
        tau=_full_f32(params, 1.0),
        grad_mean=zeros(), grad_sq_mean=zeros(), curvature_mean=zeros(),
        curvature_sq_mean=zeros(), curvature_step_mean=zeros(), step_mean=zeros(),
        step_sq_mean=zeros(), gamma_numerator_mean=zeros(), gamma_denominator_mean=zeros(),
        previous_grad=zeros(),
        previous_curvature=zeros() if paper else optax.EmptyState(),
        first_step_norm=jnp.zeros((), _tree.rate_dtype(params)),
        largest_step_ratio=jnp.zeros((), _tree.rate_dtype(params)),
    )

  def inverse_norms(updates, state):
    """``1 / ||E[g]_t||`` per leaf (or one for the tree); 1 where the norm is 0 or not finite.

    The one reduction before the element-wise pass."""
    if normalize == "none":
      return jax.tree.map(lambda m: jnp.ones((), m.dtype), state.grad_mean)
    squares = jax.tree.map(
        lambda g, m, tau: jnp.sum(jnp.square(((tau - 1) * m + g.astype(m.dtype)) / tau)),
        updates, state.grad_mean, state.tau)
    if normalize == "global":
      total = sum(jax.tree.leaves(squares))
      squares = jax.tree.map(lambda _: total, squares)
    return jax.tree.map(
        lambda q: jnp.where((q > 0) & jnp.isfinite(q), jax.lax.rsqrt(jnp.where(q > 0, q, 1)),
                            1).astype(q.dtype), squares)

  def update_fn(updates, state, params=None, *, next_grads=None, **extra_args):
    del params, extra_args
    first = state.count == 0
    has_next = next_grads is not None
    inv_norm = inverse_norms(updates, state)

    def leaf(g, g_next, c, lr, tau, m_g, m_g2, m_a, m_a2, m_ad, m_d, m_d2, m_num, m_den, g_prev,
             a_prev):
      dtype = lr.dtype
      largest = jnp.finfo(dtype).max
      g32 = g.astype(dtype)
      ema = lambda mean, value, w: (1.0 - w) * mean + w * value  # noqa: E731 - Eq. 2.41, w = 1/tau
      # An average of finite values is a convex combination, finite in exact arithmetic; where
      # rounding would carry it past the largest float it is held there, so that the averages
      # of squares and of a * Delta are finite exactly when their new values are.
      ema_sq = lambda mean, value, w: jnp.minimum(ema(mean, value * value, w), largest)  # noqa: E731

      # From the old buffers only: a_t (equal to g at the first step), g~_{t-1}
      # (recomputed from the kept statistics with the previous step's operations: every
      # element's statistics are kept or replaced together, so they belong to one step) and
      # Delta_{t-1} = -alpha_{t-1} g~_{t-1}; the first step pairs a = g with Delta_0 = -g~ / n,
      # and g~ = g there (every average is its first value, so gamma = 0 / 0 = 0).
      curvature = g32 - g_prev
      if has_next:
        other = g_next.astype(dtype)
        gc_prev = _corrected(g_prev, m_g, m_num, m_den)
      else:  # g~_{t-1} stands in for g' (the authors' workshop code), read by three passes
        other = gc_prev = _corrected(g_prev, m_g, m_num, m_den)
      previous_step = jnp.where(first, -c * g32, -lr * gc_prev)

      # The weight of this step's averages, which every state write reads: 1/tau
      # where the element is observed (negative where it is an outlier, for the memory reset),
      # 0 where it is missing and keeps every statistic, its rate and its memory. The element is
      # missing where a new statistic would not be finite (a non-finite gradient, or secant
      # statistics that overflow: squares of 1e19 and more in float32). Given a state of finite
      # statistics, that is where g^2, a^2 or Delta^2 is not finite: E[g], E[a] and E[Delta]
      # then average values below the square root of the largest float in magnitude (2^64 in
      # float32), far from overflow, |a Delta| <= max(a^2, Delta^2) is finite,
      # the averages of squares and of a Delta are finite with their new values (above), the
      # variance-reduction statistics keep their old values where not finite, the rate is
      # clipped to a finite range and the memory to tau_bounds, and g~ combines g and E[g]. So
      # the weight needs only the old statistics that the outlier test reads.
      inv = 1.0 / tau
      m_g_step = ema(m_g, g32, inv)
      sd_g = jnp.sqrt(jnp.maximum(ema_sq(m_g2, g32, inv) - m_g_step * m_g_step, 0.0))
      m_a_step = ema(m_a, curvature, inv)
      sd_a = jnp.sqrt(jnp.maximum(ema_sq(m_a2, curvature, inv) - m_a_step * m_a_step, 0.0))
      outlier = ((jnp.abs(g32 - m_g_step) > 2.0 * sd_g)
                 | (jnp.abs(curvature - m_a_step) > 2.0 * sd_a))
      observed = (jnp.isfinite(g32 * g32) & jnp.isfinite(curvature * curvature)
                  & jnp.isfinite(previous_step * previous_step))
      weight = jnp.where(observed, jnp.where(outlier, -inv, inv), 0.0)

      # The state writes. A statistic that needs another new one uses its written value (which
      # differs from the new value only where the element is missing, and there this statistic
      # keeps its own old value too).
      kept = weight != 0
      w = jnp.abs(weight)
      new_m_g = jnp.where(kept, ema(m_g, g32, w), m_g)
      new_m_g2 = jnp.where(kept, ema_sq(m_g2, g32, w), m_g2)
      # Variance reduction (Eq. 2.44-2.45). A non-finite g' element (next_grads) is missing for
      # that element: its two statistics stay as they were, and gamma comes from them.
      num = ema(m_num, (g32 - other) * (g32 - new_m_g), w)
      den = ema(m_den, (g32 - new_m_g) * (other - new_m_g), w)
      new_m_num = jnp.where(kept & jnp.isfinite(num), num, m_num)
      new_m_den = jnp.where(kept & jnp.isfinite(den), den, m_den)
      new_m_a = jnp.where(kept, ema(m_a, curvature, w), m_a)
      new_m_a2 = jnp.where(kept, ema_sq(m_a2, curvature, w), m_a2)
      new_m_d = jnp.where(kept, ema(m_d, previous_step, w), m_d)
      new_m_d2 = jnp.where(kept, ema_sq(m_d2, previous_step, w), m_d2)
      # E[a Delta]: the least-squares rule pairs a_t with Delta_{t-1}; the authors' pairing
      # ("paper") holds a_t Delta_t up to the previous step, so it folds in a_{t-1} Delta_{t-1}
      # (a_{t-1}^2 is finite: it was observed).
      pair = (a_prev if paper else curvature) * previous_step
      m_ad_kept = jnp.clip(ema(m_ad, pair, w), -largest, largest)
      if paper:
        m_ad_kept = jnp.where(first, 0.0, m_ad_kept)
      new_m_ad = jnp.where(kept, m_ad_kept, m_ad)
      new_g_prev = jnp.where(kept, g32, g_prev)
      # a_{t-1} for the authors' pairing.
      new_a_prev = jnp.where(kept, curvature, a_prev) if paper else a_prev

      if paper:
        rate = (jnp.sqrt(new_m_d2) / jnp.sqrt(new_m_a2 + eps)
                - new_m_ad / (new_m_a2 + eps))
        rate = jnp.where(first, c, rate)
      else:
        rate = new_m_d2 / (jnp.abs(new_m_ad) + eps)
      # An element that has not moved yet has no secant: it restarts with the first step's
      # rate 1 / n, as in simple_adasecant.
      rate = jnp.where(new_m_d2 > 0, rate, c)
      # At most max_rate on the block-normalised gradient, never against -g~ (Eq. 2.40).
      rate = jnp.clip(_tree.finite_or_zero(rate), 0.0, max_rate * c)
      # The secant's trust region: |alpha g~| <= step_growth sqrt(E[Delta^2]) (the RMS of the
      # steps the secant statistics were measured on, this step's pair included); an element
      # that has not moved yet (E[Delta^2] = 0) keeps its restart rate. No Python branch on
      # step_growth (inject_hyperparams passes it as an array); inf bounds nothing.
      corrected = jnp.abs(_corrected(g32, new_m_g, new_m_num, new_m_den))
      reach = step_growth * jnp.sqrt(new_m_d2)
      beyond = (new_m_d2 > 0) & (corrected * rate > reach)
      rate = jnp.where(beyond, _tree.safe_divide(reach, corrected), rate)
      new_rate = jnp.where(kept, rate, lr)

      # Memory (Eq. 2.42), clipped, then reset on outliers (thesis Section 3.3, steps 7-9).
      ratio = _tree.safe_divide(new_m_d * new_m_d, new_m_d2)
      new_tau = jnp.clip((1.0 - ratio) * tau + 1.0, low, high)
      new_tau = jnp.where(weight < 0, outlier_reset, new_tau)
      # Keep tau = 1 for the second step: the first real pair replaces the fictitious one.
      new_tau = jnp.where(kept, jnp.where(first, 1.0, new_tau), tau)

      # Delta_t = -alpha g~ with the written rate and statistics (a missing element steps with
      # its kept rate, as in simple_adasecant).
      step = -new_rate * _corrected(g32, new_m_g, new_m_num, new_m_den)
      # The blow-up test's squared norms, over the observed elements.
      step_sq = jnp.sum(jnp.where(kept, step * step, 0.0))
      return (step.astype(g.dtype), new_rate, new_tau, new_m_g, new_m_g2, new_m_a, new_m_a2,
              new_m_ad, new_m_d, new_m_d2, new_m_num, new_m_den, new_g_prev, new_a_prev, step_sq)

    a_prev_tree = state.previous_curvature if paper else updates
    next_tree = next_grads if has_next else updates
    out = jax.tree.map(
        leaf, updates, next_tree, inv_norm, state.learning_rate, state.tau, state.grad_mean,
        state.grad_sq_mean, state.curvature_mean, state.curvature_sq_mean,
        state.curvature_step_mean, state.step_mean, state.step_sq_mean,
        state.gamma_numerator_mean, state.gamma_denominator_mean, state.previous_grad,
        a_prev_tree)
    (new_updates, rate, tau, m_g, m_g2, m_a, m_a2, m_ad, m_d, m_d2, m_num, m_den, g_prev,
     a_prev, step_sq) = _unzip(updates, out, 15)
    first_step_norm, largest_step_ratio = _record_step(step_sq, state.first_step_norm,
                                                       state.largest_step_ratio)
    return new_updates, AdaSecantState(
        count=optax.safe_int32_increment(state.count), learning_rate=rate, tau=tau,
        grad_mean=m_g, grad_sq_mean=m_g2, curvature_mean=m_a, curvature_sq_mean=m_a2,
        curvature_step_mean=m_ad, step_mean=m_d, step_sq_mean=m_d2,
        gamma_numerator_mean=m_num, gamma_denominator_mean=m_den, previous_grad=g_prev,
        previous_curvature=a_prev if paper else optax.EmptyState(),
        first_step_norm=first_step_norm, largest_step_ratio=largest_step_ratio)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
