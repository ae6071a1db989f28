"""AdaBound and AMSBound: Adam whose per-element rates are clipped into bounds that close on SGD's.

Implements L. Luo, Y. Xiong, Y. Liu and X. Sun, *Adaptive Gradient Methods with Dynamic Bound of
Learning Rate*, ICLR 2019 (Algorithm 2 AdaBound, Algorithm 3 AMSBound, the bound functions of
Section 4 and Section 5), with the semantics of the authors' PyTorch release. At step ``t``
(from 1) with gradient ``g``::

  m      = b1 m + (1 - b1) g
  v      = b2 v + (1 - b2) g^2                   (AMSBound: v_max = max(v_max, v), used below)
  rate   = clip(lr_t sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps), eta_l(t), eta_u(t))
  update = -rate * m

  eta_l(t) = final_lr_t (1 - 1 / (gamma t + 1)),   eta_u(t) = final_lr_t (1 + 1 / (gamma t))
  final_lr_t = final_lr * lr_t / lr_0

The bounds start at ``[0, inf)`` (Adam) and both converge to ``final_lr`` (SGD with that rate).
The paper writes them with ``1 - b2`` where the release has ``gamma``: the same for the defaults
(``b2 = 0.999``, ``gamma = 1e-3``). As in the release (and unlike the paper's Algorithm 2, whose
extra ``1/sqrt(t)`` serves the regret bound), the rate has no ``1/sqrt(t)`` factor, and the bias
corrections are folded into the step size as in Adam's implementation. ``final_lr`` follows a
schedule of ``lr`` (``final_lr * lr_t / lr_0``), the release's rule for rate schedulers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree


class ScaleByAdaBoundState(NamedTuple):
  """State of :func:`scale_by_adabound`.

  Attributes:
    count: int32, updates taken.
    mu: first-moment moving average ``m``.
    nu: second-moment moving average ``v``.
    max_nu: AMSBound's running maximum of ``v`` (``optax.EmptyState()`` for AdaBound).
    learning_rate: the clipped per-element rate of the latest update (parameter-shaped; float32,
      float64 for float64 leaves, so that a float16 or bfloat16 rate keeps its digits; zeros
      before the first update).
  """

  count: jax.Array
  mu: Any
  nu: Any
  max_nu: Any
  learning_rate: Any


def adabound_bounds(final_learning_rate: Any, gamma: Any, count: jax.Array,
                    dtype: Any = _tree.RATE_DTYPE) -> tuple[jax.Array, jax.Array]:
  """``(eta_l(t), eta_u(t))`` for step ``count = t >= 1``, scalars in ``dtype`` (float32).

  Example: ``final_learning_rate=0.1, gamma=1e-3, t=1`` -> ``(0.1 (1 - 1/1.001), 0.1 * 1001)``.
  """
  t = jnp.asarray(count).astype(dtype)
  final = jnp.asarray(final_learning_rate).astype(dtype)
  return final * (1.0 - 1.0 / (gamma * t + 1.0)), final * (1.0 + 1.0 / (gamma * t))


def scale_by_adabound(learning_rate: optax.ScalarOrSchedule = 1e-3,
                      final_learning_rate: float = 0.1, b1: float = 0.9, b2: float = 0.999,
                      gamma: float = 1e-3, eps: float = 1e-8, amsbound: bool = False,
                      mu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
  """AdaBound's update ``-clip(adam_rate, eta_l(t), eta_u(t)) * m`` (the rate included).

  Args:
    learning_rate: Adam's rate ``> 0`` or an optax schedule (default 1e-3, the release's).
    final_learning_rate: the SGD rate ``> 0`` both bounds converge to (default 0.1). With a
      schedule it is scaled by ``schedule(t) / schedule(0)``. Under ``optax.inject_hyperparams``
      a schedule passed as ``learning_rate`` is evaluated by the wrapper and arrives here as a
      number, so ``final_learning_rate`` no longer follows it: inject the schedule's numbers
      instead (a factory that builds the schedule from them and passes it on).
    b1: first-moment decay in ``[0, 1)`` (default 0.9).
    b2: second-moment decay in ``[0, 1)`` (default 0.999).
    gamma: convergence speed of the bounds, in ``(0, 1)`` (default 1e-3; the paper's
      ``1 - b2``).
    eps: ``>= 0``, added to ``sqrt(v)`` (default 1e-8).
    amsbound: AMSBound (Algorithm 3): normalise by the running maximum of ``v``.
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype. The update uses the first moment before
      its cast, as ``optax.scale_by_adam`` does.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`ScaleByAdaBoundState`.
    The moments keep each parameter's dtype (the first ``mu_dtype`` when given); the rates are
    float32 (float64 for float64 parameters) and the update is cast back to the parameter's
    dtype. Extra ``update`` keyword arguments (``value`` of ``optax.contrib.reduce_on_plateau``
    in a chain) are ignored.

  References:
    Luo, Xiong, Liu and Sun, *Adaptive Gradient Methods with Dynamic Bound of Learning Rate*,
    ICLR 2019: Algorithm 2 (AdaBound), Algorithm 3 (AMSBound), the bound functions
    ``eta_l(t) = 0.1 - 0.1 / ((1 - b2) t + 1)``, ``eta_u(t) = 0.1 + 0.1 / ((1 - b2) t)`` of
    Section 4 and the settings of Section 5.

  Example:
    >>> opt = optax_lr.scale_by_adabound(1e-3, final_learning_rate=0.1)
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
  """
  _checks.schedule_or_positive("learning_rate", learning_rate)
  _checks.positive("final_learning_rate", final_learning_rate)
  _base.check_adam_arguments(b1, b2, eps)
  _checks.in_range("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
  if not isinstance(amsbound, bool):
    raise TypeError(f"`amsbound` must be a bool; got {amsbound!r}.")
  mu_dtype = _base.check_mu_dtype(mu_dtype)

  def init_fn(params):
    return ScaleByAdaBoundState(
        count=jnp.zeros((), jnp.int32), mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        nu=_tree.zeros_like(params),
        max_nu=_tree.zeros_like(params) if amsbound else optax.EmptyState(),
        # Rates in float32 (float64 for float64 leaves): a float16 rate would round the clipped
        # Adam rate to 3 digits and flush the lower bound's first steps (1e-5 to 1e-4) to 0.
        learning_rate=jax.tree.map(
            lambda x: jnp.zeros_like(x, dtype=_tree.rate_dtype(x)), params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args  # AdaBound reads only the gradient; other keywords are ignored
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_int32_increment(state.count)
    if amsbound:
      max_nu = jax.tree.map(jnp.maximum, state.max_nu, nu)
      denominator_nu = max_nu
    else:
      max_nu = state.max_nu
      denominator_nu = nu
    dtype = _tree.rate_dtype(state.learning_rate)
    if callable(learning_rate):
      # The release's rule for schedulers: final_lr follows lr's changes (lr_t / lr_0).
      rate_now = jnp.asarray(learning_rate(state.count)).astype(dtype)
      final = final_learning_rate * rate_now / jnp.asarray(learning_rate(0)).astype(dtype)
    else:
      rate_now, final = jnp.asarray(learning_rate).astype(dtype), final_learning_rate
    t = count.astype(dtype)
    step_size = rate_now * jnp.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
    lower, upper = adabound_bounds(final, gamma, count, dtype)
    rates = jax.tree.map(
        lambda v, r: jnp.clip(step_size / (jnp.sqrt(v.astype(r.dtype)) + eps), lower,
                              upper).astype(r.dtype),
        denominator_nu, state.learning_rate)
    new_updates = jax.tree.map(lambda r, m, g: (-r * m).astype(g.dtype), rates, mu, updates)
    return new_updates, ScaleByAdaBoundState(
        count=count, mu=optax.tree.cast_like(mu, state.mu),
        nu=optax.tree.cast_like(nu, state.nu),
        max_nu=max_nu if not amsbound else optax.tree.cast_like(max_nu, state.max_nu),
        learning_rate=rates)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adabound(learning_rate: optax.ScalarOrSchedule = 1e-3, final_learning_rate: float = 0.1,
             b1: float = 0.9, b2: float = 0.999, gamma: float = 1e-3, eps: float = 1e-8,
             amsbound: bool = False, weight_decay: float | None = None,
             mu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
  """AdaBound (``amsbound=False``) or AMSBound, with the authors' defaults.

  Args:
    learning_rate: Adam's rate ``> 0`` or a schedule (default 1e-3).
    final_learning_rate: the SGD rate ``> 0`` the bounds converge to (default 0.1).
    b1: in ``[0, 1)`` (default 0.9).
    b2: in ``[0, 1)`` (default 0.999).
    gamma: bound convergence speed in ``(0, 1)`` (default 1e-3).
    eps: ``>= 0`` (default 1e-8).
    amsbound: the AMSBound variant.
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage), added to the
      gradient (as the release does).
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16``, say), as
      :func:`scale_by_adabound`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra ``update`` keywords are ignored).

  References:
    Luo, Xiong, Liu and Sun, ICLR 2019, Algorithms 2 and 3, Section 5.

  Example:
    >>> opt = optax_lr.adabound(1e-3, final_learning_rate=0.1)
  """
  return _base.with_coupled_weight_decay(
      scale_by_adabound(learning_rate, final_learning_rate, b1, b2, gamma, eps, amsbound,
                        mu_dtype),
      weight_decay)
