"""Ready-made automatic rates: the library's recommendation when the rate is unknown.

:func:`auto_adam` is the recommendation: ``optax_lr.auto_adam(total_steps=n)``, or
``optax_lr.auto_adam()`` with no argument when the run's length is open, is what the
documentation tells a user who does not know the rate. It is Adam whose rate is a peak times a
decay, each answering the question the other cannot:

- **the peak: a distance estimate.** Prodigy's lower bound on the distance to the solution
  (Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML
  2024; D-Adaptation, Defazio and Mishchenko, ICML 2023, Adam form) sets the rate ``d_k``. It is
  not greedy: it grows while the gradients keep pointing back along the path travelled from the
  initial point (``<g_k, x_0 - x_k> > 0`` on average), whatever a single step's outcome, and it
  never decreases. On a plateau (no one-step signal) it still grows; under a lagging direction it
  does not overshoot, since it measures the distance travelled, not the agreement of two steps.
- **the decay, when the run's length is known: a tail.** A linear decay to 0 over the last 20% of
  the run (Prodigy's authors advise a schedule decaying to 0; this is its warm-up-stable-decay
  form, which leaves the estimate most of the run at full rate).
- **the decay, when it is not: the hypergradient, only downwards.** Baydin et al.'s scale-free
  multiplicative rule (Hypergradient Descent, ICLR 2018, Section 4) on a factor ``s_k`` in
  ``[min_scale, 1]``: ``s_k = clip(s_{k-1} (1 + beta cos(g_k, d_{k-1})), min_scale, 1)`` with
  ``d_{k-1}`` the previous Adam direction. While consecutive steps agree (the start of training)
  ``s`` stays at 1 and the distance estimate alone sets the rate; once they disagree on average
  (the iterate bounces across a valley, the noisy end of training) ``s`` falls, so the rate decays
  when the loss surface says so, without knowing the run's length. The hypergradient's own rate
  estimate is greedy (it settles where one step's improvement is largest, below the best rate for
  a whole run); capped at the distance estimate it can only take the rate down, which is the
  direction where the greedy signal is right.

The applied rate is ``learning_rate * d_k * s_k * tail_k``. Measured with one setting on four
tasks (an MLP on the digits and on warped digits, a CNN on generated shapes, a byte-level
transformer) against Prodigy, D-Adaptation, schedule-free AdamW and a tuned AdamW with warm-up and
cosine decay, with the ablations of each part, on the documentation's comparison page
(:doc:`/benchmarks/compare`).

:func:`auto_adam_hd` and :func:`auto_sgd` are the earlier hypergradient presets (Adam-HD and
SGDN-HD with the multiplicative rule, the rate search and the loss backtrack): they follow the
greedy rate and need the loss as ``value=``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _checks, _rate_rule, _tree
from optax_lr._base import NO_PARAMS_MSG
from optax_lr.hypergradient import adam_hd, sgd_hd
from optax_lr.safeguards import LossBacktrack, RateSearch

#: The hypergradient presets' safeguards (:func:`auto_adam_hd`, :func:`auto_sgd`): a search from
#: 1e-3 x the given rate, and a backtrack at a loss 1.5x its running average.
AUTO_SEARCH = RateSearch(factor=2.0, start=1e-3)
AUTO_BACKTRACK = LossBacktrack(factor=0.5, tolerance=0.5, decay=0.9)


def _needs_loss(transform: optax.GradientTransformationExtraArgs,
                name: str) -> optax.GradientTransformationExtraArgs:
  """``transform`` whose ``update`` names ``name`` in the error for a missing ``value=``."""

  def update_fn(updates, state, params=None, **extra_args):
    _checks.training_loss(extra_args.get("value"), name)
    return transform.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(transform.init, update_fn)


class AutoAdamState(NamedTuple):
  """State of :func:`auto_adam`.

  Attributes:
    count: int32 scalar, the number of updates so far.
    mu: Adam's first moment of the estimate-weighted gradients ``d_k g_k``.
    nu: Adam's second moment of ``d_k g_k``.
    gradient_sum: ``s_k``, the discounted sum of weighted gradients whose l1 norm is the
      estimate's denominator (float32, float64 for float64 parameters).
    initial_params: ``x_0``, a copy of the parameters given to ``init``.
    rate_estimate: ``d_k``, the distance estimate in Adam's rate units (a scalar).
    numerator: ``r_k``, the discounted sum of ``<g_k, x_0 - x_k>`` (a scalar).
    decay: ``s_k`` in ``[min_scale, 1]``, the hypergradient factor (a scalar, 1 at first).
    learning_rate: the rate of the latest update, ``learning_rate * d_k * s_k`` (a scalar; the
      initial estimate before the first update).
  """

  count: jax.Array
  mu: Any
  nu: Any
  gradient_sum: Any
  initial_params: Any
  rate_estimate: jax.Array
  numerator: jax.Array
  decay: jax.Array
  learning_rate: jax.Array


#: The share of a run of known length over which :func:`auto_adam` takes the rate linearly to 0.
TAIL_FRACTION = 0.2


def auto_adam(*, learning_rate: float = 1.0, hypergrad_lr: float | None = None, b1: float = 0.9,
              b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
              initial_rate: float = 1e-6, min_scale: float = 1e-3,
              total_steps: int | None = None, tail_fraction: float = TAIL_FRACTION,
              ) -> optax.GradientTransformation:
  """Adam with its rate estimated: the library's recommendation when the rate is unknown.

  The rate is ``learning_rate * d_k * s_k * tail_k`` (module docstring): ``d_k`` the distance
  estimate (Prodigy's, Adam form); ``s_k <= 1`` the hypergradient decay, for a run of unknown
  length; ``tail_k`` a linear decay to 0 over the last ``tail_fraction`` of a run of known length
  (``total_steps``), 1 before it. With ``x_k`` the parameters, ``g_k`` the gradient, ``t = k + 1``,
  ``b3 = sqrt(b2)`` and ``lambda_k = learning_rate * d_k sqrt(1 - b2^t) / (1 - b1^t)``::

    s_k    = clip(s_{k-1} (1 + hypergrad_lr cos(g_k, d_{k-1})), min_scale, 1)
    m_k    = b1 m_{k-1} + (1 - b1) d_k g_k,   v_k = b2 v_{k-1} + (1 - b2) d_k^2 g_k^2
    r_k    = b3 r_{k-1} + (d_k / d_0) lambda_k <g_k, x_0 - x_k>
    S_k    = b3 S_{k-1} + (d_k / d_0) lambda_k g_k
    d_k+1  = max(d_k, r_k / ||S_k||_1)
    tail_k = clip((total_steps - k) / (tail_fraction total_steps), 0, 1)
    x_k+1  = x_k - s_k tail_k lambda_k (m_k / (sqrt(v_k) + d_k+1 eps) + weight_decay x_k)

  ``d_{k-1} = m_{k-1} / (sqrt(v_{k-1}) + d_k eps)`` is the previous step's direction, read off
  the moments (no copy is kept; the first step's cosine is 0). The division by ``d_0`` cancels in
  ``r / ||S||_1`` and keeps both near 1 while the estimate is small. With the decay and the tail
  off the method is Prodigy at a constant rate (``optax.contrib.prodigy(learning_rate)``, to
  float32 rounding); the tail is Prodigy's authors' advice (a schedule decaying to 0) in the
  warm-up-stable-decay shape, which leaves the estimate the whole run at full rate.

  Two decays, one per case, each measured against its ablation on four tasks
  (:doc:`/benchmarks/compare`): when the run's length is known the tail alone does better (the
  hypergradient decay on top of it cost on three tasks of four); when it is not, the
  hypergradient decay is what takes the rate down.

  Every argument is keyword-only: ``learning_rate`` multiplies the estimate (as Prodigy's
  does) and is not Adam's rate, so ``auto_adam(1e-3)``, written as for ``optax.adam``, is refused
  rather than run a thousand times below the estimate.

  Needs no loss; ``update`` needs ``params``. State: Adam's two moments, the sum ``S`` and a copy
  of the initial parameters (four parameter-sized buffers, as Prodigy's), and scalars. A step
  whose estimate or factor would not be finite keeps the old one.

  Args:
    learning_rate: a multiplier ``> 0`` on the estimated rate (default 1: the estimate itself).
    hypergrad_lr: ``beta`` in ``[0, 1)``, the hypergradient decay's largest relative change per
      step; 0 turns it off. ``None`` (default): 0.1 (the hypergradient presets' value) when
      ``total_steps`` is None, 0 when the tail decays the rate.
    b1, b2, eps: Adam's (``optax.adam``'s defaults); the estimate's decay is ``sqrt(b2)``.
    weight_decay: decoupled (AdamW) weight decay ``>= 0``, scaled by the step (default 0).
    initial_rate: ``d_0 > 0``, the estimate before the first step (default 1e-6, Prodigy's): an
      underestimate, from which the estimate grows within tens of steps.
    min_scale: the hypergradient decay's floor, in ``(0, 1]`` (default 1e-3).
    total_steps: the run's length, an integer ``>= 1``, when known (default None: no tail).
    tail_fraction: the share of the run the tail takes, in ``(0, 1]`` (default 0.2).

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`AutoAdamState`.

  References:
    Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML
    2024 (Algorithm 4, Adam form: the estimate). Baydin, Cornish, Martinez Rubio, Schmidt, Wood,
    "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018 (Section 4, the
    multiplicative rule: the decay).

  Example:
    >>> opt = optax_lr.auto_adam()                     # length unknown
    >>> opt = optax_lr.auto_adam(total_steps=10_000)   # length known: a linear tail
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params)
  """
  if hypergrad_lr is None:
    hypergrad_lr = 0.1 if total_steps is None else 0.0
  _checks.positive("learning_rate", learning_rate)
  _checks.in_range("hypergrad_lr", hypergrad_lr, 0.0, 1.0, high_open=True)
  _checks.in_range("b1", b1, 0.0, 1.0, high_open=True)
  _checks.in_range("b2", b2, 0.0, 1.0, high_open=True)
  _checks.non_negative("eps", eps)
  _checks.non_negative("weight_decay", weight_decay)
  _checks.positive("initial_rate", initial_rate)
  _checks.in_range("min_scale", min_scale, 0.0, 1.0, low_open=True)
  if total_steps is not None:
    _checks.integer_at_least("total_steps", total_steps, 1)
  _checks.in_range("tail_fraction", tail_fraction, 0.0, 1.0, low_open=True)

  def init_fn(params):
    dtype = _tree.rate_dtype(params)
    return AutoAdamState(
        count=jnp.zeros((), jnp.int32),
        mu=_tree.zeros_like(params),
        nu=_tree.zeros_like(params),
        gradient_sum=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_tree.rate_dtype(p)),
                                  params),
        # A copy, never `params` itself: the training step donates both (shared contract).
        initial_params=jax.tree.map(jnp.copy, params),
        rate_estimate=_tree.full_rate(initial_rate, dtype),
        numerator=_tree.full_rate(0.0, dtype),
        decay=_tree.full_rate(1.0, dtype),
        learning_rate=_tree.full_rate(initial_rate * learning_rate, dtype))

  # A hypergradient decay fixed at 0 (the default with a tail) reads nothing: no cosine pass.
  decays = not _checks.is_static_zero(hypergrad_lr)

  def tail(count, dtype):
    if total_steps is None:
      return jnp.ones((), dtype)
    remaining = (total_steps - count.astype(dtype)) / (tail_fraction * total_steps)
    return jnp.clip(remaining, 0.0, 1.0).astype(dtype)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    dtype = state.rate_estimate.dtype
    d = state.rate_estimate
    count = optax.safe_int32_increment(state.count)
    t = count.astype(dtype)
    b3 = jnp.sqrt(jnp.asarray(b2, dtype))
    step = learning_rate * d * jnp.sqrt(1 - b2**t) / (1 - b1**t)  # lambda_k
    weight = d / initial_rate * step

    travelled = _tree.vdot(updates, jax.tree.map(lambda p0, p: p0 - p, state.initial_params,
                                                 params))
    numerator = _tree.where_finite(b3 * state.numerator + weight * travelled, state.numerator)
    if decays:  # the cosine of the gradient with the previous direction
      previous = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + d * eps), state.mu, state.nu)
      dot, g_squared, d_squared = _rate_rule.tree_dot_and_norms(updates, previous)
      decay = jnp.clip(_rate_rule.multiplicative(state.decay, hypergrad_lr, dot, g_squared,
                                                 d_squared), min_scale, 1.0).astype(dtype)
    else:
      decay = state.decay
    # The moments are read above: rewritten after those reads, so in place (_tree.after).
    mu, nu = _tree.after((state.mu, state.nu), (numerator, decay))
    mu = jax.tree.map(lambda m, g: (b1 * m + (1 - b1) * d * g).astype(m.dtype), mu, updates)
    nu = jax.tree.map(lambda v, g: (b2 * v + (1 - b2) * jnp.square(d * g)).astype(v.dtype), nu,
                      updates)
    gradient_sum = jax.tree.map(
        lambda s, g: _tree.where_finite(b3 * s + weight * _tree._as_float32(g), s),
        state.gradient_sum, updates)
    l1 = sum(jax.tree.leaves(jax.tree.map(lambda s: jnp.sum(jnp.abs(s)), gradient_sum)),
             jnp.zeros((), dtype))
    estimate = _tree.where_finite(jnp.maximum(d, _tree.safe_divide(numerator, l1)), d)
    scale = decay * tail(state.count, dtype)
    applied = scale * step
    new_updates = jax.tree.map(
        lambda m, v, p: (-applied * (m / (jnp.sqrt(v) + estimate * eps) + weight_decay * p)
                         ).astype(p.dtype), mu, nu, params)
    return new_updates, AutoAdamState(
        count=count, mu=mu, nu=nu, gradient_sum=gradient_sum,
        initial_params=state.initial_params, rate_estimate=estimate, numerator=numerator,
        decay=decay, learning_rate=(learning_rate * d * scale).astype(dtype))

  return optax.with_extra_args_support(optax.GradientTransformation(init_fn, update_fn))


def auto_adam_hd(learning_rate: float = 1e-3, hypergrad_lr: float = 0.1, b1: float = 0.9,
                 b2: float = 0.999, eps: float = 1e-8, weight_decay: float | None = None,
                 mu_dtype: Any = None, *, search: RateSearch | None = AUTO_SEARCH,
                 backtrack: LossBacktrack | None = AUTO_BACKTRACK,
                 ) -> optax.GradientTransformationExtraArgs:
  """Adam-HD with the multiplicative rule, the rate search and the loss backtrack.

  :func:`optax_lr.adam_hd` with the multiplicative rule, the rate search and the loss backtrack
  at the settings chosen on the digits tasks (module docstring). The library's recommendation
  until :func:`auto_adam` replaced it: it follows the greedy rate, which trails the
  learning-rate-free peers on a CNN and a transformer (:doc:`/methods/hypergradient`). The
  state is Adam's plus the rate, a search flag and the loss average; the previous direction is
  read off Adam's moments.

  Args:
    learning_rate: an upper guess ``> 0`` of the rate (default 1e-3): the run starts at
      ``search.start * learning_rate`` and the search raises it while consecutive directions
      agree.
    hypergrad_lr: ``beta`` in ``[0, 1)``, the rule's largest relative change per step
      (default 0.1).
    b1, b2, eps: Adam's (``optax.adam``'s defaults).
    weight_decay: coupled L2 decay ``>= 0`` added to the gradient; ``None`` (default): none.
    mu_dtype: the first moment's dtype (``None``: the parameters').
    search: the rate search (default :data:`AUTO_SEARCH`; ``None`` turns it off).
    backtrack: the loss backtrack (default :data:`AUTO_BACKTRACK`; ``None`` turns it off).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the training loss as
    ``value=`` when ``backtrack`` is on (a missing one raises a ``ValueError`` saying how to pass
    it from an optax loop, ``flax.nnx.Optimizer`` or a Flax ``TrainState``).

  References:
    Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
    Hypergradient Descent", ICLR 2018 (Adam-HD, and the multiplicative rule of Section 4).

  Example:
    >>> opt = optax_lr.auto_adam_hd()
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, value=loss(params, batch))
  """
  transform = adam_hd(learning_rate, hypergrad_lr, b1=b1, b2=b2, eps=eps,
                      weight_decay=weight_decay, mu_dtype=mu_dtype, rate_rule="multiplicative",
                      search=search, backtrack=backtrack)
  return _needs_loss(transform, "optax_lr.auto_adam_hd") if backtrack is not None else transform



def auto_sgd(learning_rate: float = 0.1, hypergrad_lr: float = 0.03, momentum: float = 0.9,
             weight_decay: float | None = None, *, search: RateSearch | None = AUTO_SEARCH,
             backtrack: LossBacktrack | None = AUTO_BACKTRACK,
             ) -> optax.GradientTransformationExtraArgs:
  """Nesterov SGD with a learned rate, set up as :func:`auto_adam_hd`.

  :func:`optax_lr.sgd_hd` with Nesterov momentum, the multiplicative rule, the rate search and
  the loss backtrack at their recommended settings (module docstring).

  Args:
    learning_rate: an upper guess ``> 0`` of the rate (default 0.1; the run starts at
      ``search.start * learning_rate``).
    hypergrad_lr: ``beta`` in ``[0, 1)`` (default 0.03).
    momentum: Nesterov momentum in ``[0, 1)`` (default 0.9).
    weight_decay: coupled L2 decay ``>= 0``; ``None`` (default): none.
    search: the rate search (default :data:`AUTO_SEARCH`; ``None`` turns it off).
    backtrack: the loss backtrack (default :data:`AUTO_BACKTRACK`; ``None`` turns it off).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` takes ``value=loss`` when
    ``backtrack`` is on.

  References:
    Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018
    (SGDN-HD, and the multiplicative rule of Section 4).

  Example:
    >>> opt = optax_lr.auto_sgd()
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, value=loss(params, batch))
  """
  transform = sgd_hd(learning_rate, hypergrad_lr, momentum=momentum, nesterov=True,
                     weight_decay=weight_decay, rate_rule="multiplicative", search=search,
                     backtrack=backtrack)
  return _needs_loss(transform, "optax_lr.auto_sgd") if backtrack is not None else transform
