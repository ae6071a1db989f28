"""Pieces every method family builds its aliases from (one definition each)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_lr import _checks

try:  # the message optax itself raises when `params` are missing
  from optax._src.base import NO_PARAMS_MSG
except ImportError:  # pragma: no cover - optax moved it
  NO_PARAMS_MSG = (
      "You are using a transformation that requires the current value of parameters, but you "
      "are not passing `params` when calling `update`.")


def momentum_direction(momentum: float | None,
                       nesterov: bool) -> optax.GradientTransformation:
  """The SGD direction: a (Nesterov) momentum trace, or the gradient when ``momentum`` is None.

  As in ``optax.sgd``, the trace's presence depends on ``momentum is None`` only, never on its
  value, so the state has one structure whether ``momentum`` is a number or an injected
  hyperparameter (a trace with decay 0 is the gradient itself).
  """
  _checks.flag("nesterov", nesterov)
  if momentum is None:
    return optax.identity()
  _checks.in_range("momentum", momentum, 0.0, 1.0, high_open=True)
  return optax.trace(decay=momentum, nesterov=nesterov)


def reuses_heavy_ball_trace(momentum: float | None, nesterov: bool) -> bool:
  """Whether the SGD direction's state holds the previous direction: a heavy-ball trace.

  True unless ``momentum`` is None (no trace: the direction is the gradient) or ``nesterov``
  (the Nesterov direction ``g_t + momentum * trace_t`` is not in the state).
  """
  return not nesterov and momentum is not None


def heavy_ball_previous_direction(momentum: float):
  """``(d_t, g_t) -> d_{t-1}`` for a heavy-ball trace ``d_t = g_t + momentum * d_{t-1}``.

  Recovers the previous direction from this step's direction and gradient, so the wrapper keeps
  no copy of it (one parameter-sized buffer less). The recovered ``(d_t - g_t) / momentum``
  carries only the rounding of ``d_t`` itself: per element at most ``eps |d_t| / momentum``.
  """
  if momentum is None or _checks.is_static_zero(momentum):
    raise ValueError("heavy_ball_previous_direction needs momentum > 0")

  def previous_direction(directions, grads, inner_state=None):
    del inner_state  # the trace is the direction itself
    return jax.tree.map(lambda d, g: (d - g.astype(d.dtype)) / momentum, directions, grads)

  return previous_direction


def _states(inner_state: Any, kind: type) -> list[Any]:
  """The ``kind`` states (``optax.TraceState``, say) inside ``inner_state``."""
  return [x for x in jax.tree.leaves(inner_state, is_leaf=lambda x: isinstance(x, kind))
          if isinstance(x, kind)]


def _only_state(inner_state: Any, kind: type) -> Any:
  """The one ``kind`` state inside ``inner_state``."""
  found = _states(inner_state, kind)
  if len(found) != 1:
    raise ValueError(f"expected one optax.{kind.__name__} in the inner state, got {len(found)}")
  return found[0]


def _adam_state(inner_state: Any) -> optax.ScaleByAdamState:
  return _only_state(inner_state, optax.ScaleByAdamState)


def previous_direction_source(inner_state: Any) -> Any:
  """The params-shaped tree a previous direction is read from: Adam's first moment, or the trace.

  For helpers that need the parameters' structure and shapes from a state keeping no direction.
  """
  for kind, field in ((optax.ScaleByAdamState, "mu"), (optax.TraceState, "trace")):
    found = _states(inner_state, kind)
    if len(found) == 1:
      return getattr(found[0], field)
  raise ValueError("expected one optax.ScaleByAdamState or optax.TraceState in the inner state")


def trace_previous_direction():
  """``inner_state -> d_{t-1}`` for a heavy-ball ``optax.trace``: the trace before this step.

  For the ``previous_direction_fn`` of :func:`optax_lr.hypergradient` and
  :func:`optax_lr.cam_hd`, whose hypergradient ``<g_t, d_{t-1}>`` (Baydin et al. 2018, Section 2)
  needs the previous direction. A heavy-ball trace ``d_t = g_t + momentum * d_{t-1}`` (not
  Nesterov's, whose direction is not the trace) *is* that direction: the wrapper reads it from
  the inner state *before* this step's update, so it is the previous direction exactly (no
  rounding) and the wrapper keeps no copy of it (one parameter-sized buffer less).

  Returns:
    A function of the inner state (holding exactly one ``optax.TraceState``) returning its
    ``trace``.

  Example:
    >>> opt = optax_lr.hypergradient(optax.trace(0.9), 0.1, 1e-3,
    ...                              previous_direction_fn=optax_lr.trace_previous_direction())
  """

  def previous_direction(inner_state):
    return _only_state(inner_state, optax.TraceState).trace

  return previous_direction


def adam_previous_direction(b1: float, b2: float, eps: float, eps_root: float = 0.0):
  """``inner_state -> d_{t-1}`` for ``optax.scale_by_adam(b1, b2, eps, eps_root)``.

  Adam's previous direction ``m_hat_{t-1} / (sqrt(v_hat_{t-1} + eps_root) + eps)`` (0 before the
  first step), computed from the moments *before* this step's update with the bias corrections of
  step ``t - 1``: the operations ``optax.scale_by_adam`` applied at step ``t - 1`` to the same
  values, so the direction that step returned, bit for bit (in a jitted step; run eagerly, each
  scalar operation compiles on its own, and a ``b2^t`` rounded differently moves
  ``1 - b2^t`` by up to 1e-5 relative). A hypergradient wrapper then keeps no copy of it: the
  state is exactly Adam's plus the rate: the direction is derived where it is read, never
  stored.

  One exception: with a ``mu_dtype`` narrower than the second moment's dtype (``jnp.bfloat16``
  with float32 parameters) step ``t - 1`` divided the float32 first moment before its cast to
  ``mu_dtype``, and the stored moment is that value rounded once: the direction here (from the
  stored moment, upcast) differs from the returned one by at most the relative rounding of the
  cast per element (``2^-8 |d_{t-1}|`` for bfloat16, plus float32 roundings).

  For the ``previous_direction_fn`` of :func:`optax_lr.hypergradient` and
  :func:`optax_lr.cam_hd` (Adam-HD, Baydin et al. 2018, Section 2; :func:`optax_lr.adam_hd` uses
  it by default).

  Args:
    b1, b2, eps, eps_root: those of the ``optax.scale_by_adam`` it reads (decays in ``[0, 1)``,
      Python numbers or injected arrays; ``eps >= 0``; ``eps_root`` default 0).

  Returns:
    A function of the inner state (holding one ``optax.ScaleByAdamState``) returning ``d_{t-1}``
    with the structure of the moments, in the second moment's precision.

  Example:
    >>> opt = optax_lr.hypergradient(
    ...     optax.scale_by_adam(0.9, 0.999, 1e-8), 1e-3, 1e-8,
    ...     previous_direction_fn=optax_lr.adam_previous_direction(0.9, 0.999, 1e-8))
  """
  check_adam_arguments(b1, b2, eps)

  def previous_direction(inner_state):
    adam = _adam_state(inner_state)
    count = adam.count  # step t-1's count, after its increment
    # A narrowed first moment (mu_dtype) is divided in the second moment's precision, as step
    # t - 1 divided it before the cast.
    mu = jax.tree.map(lambda m, v: m.astype(jnp.promote_types(m.dtype, v.dtype)),
                      adam.mu, adam.nu)
    # optax's own bias correction and expression: the same operations as step t - 1.
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(adam.nu, b2, count)
    started = count > 0  # before the first step: 0 / 0 corrections, d_{-1} = 0

    def leaf(m, v):
      return jnp.where(started, m / (jnp.sqrt(v + eps_root) + eps), jnp.zeros((), m.dtype))

    return jax.tree.map(leaf, mu_hat, nu_hat)

  return previous_direction


def check_adam_arguments(b1: float, b2: float, eps: float) -> None:
  """Adam's decays in ``[0, 1)`` and ``eps >= 0``."""
  _checks.in_range("b1", b1, 0.0, 1.0, high_open=True)
  _checks.in_range("b2", b2, 0.0, 1.0, high_open=True)
  _checks.non_negative("eps", eps)


def check_mu_dtype(mu_dtype: Any) -> Any:
  """optax's ``mu_dtype``: ``None`` (the parameters' dtype) or a floating dtype, canonical.

  Raises ``TypeError`` for something that is not a dtype, ``ValueError`` for a non-floating one.
  """
  if mu_dtype is None:
    return None
  try:
    dtype = jnp.dtype(mu_dtype)
  except TypeError:
    raise TypeError("`mu_dtype` must be None or a floating dtype (jnp.bfloat16, say); got "
                    f"{mu_dtype!r}.") from None
  if not jnp.issubdtype(dtype, jnp.floating):
    _checks._fail("mu_dtype", mu_dtype, "None or a floating dtype (jnp.bfloat16, say)")
  return dtype


def adam_direction(b1: float, b2: float, eps: float,
                   mu_dtype: Any = None) -> optax.GradientTransformation:
  """Adam's unit-rate direction ``m_hat / (sqrt(v_hat) + eps)``, with validated arguments.

  ``mu_dtype``: optax's option, the dtype of the first moment (``None``: the parameters').
  """
  check_adam_arguments(b1, b2, eps)
  return optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=check_mu_dtype(mu_dtype))


def with_coupled_weight_decay(transform: optax.GradientTransformation,
                              weight_decay: float | None) -> optax.GradientTransformation:
  """``chain(add_decayed_weights(weight_decay), transform)``, or ``transform`` when it is None.

  Coupled L2 decay: added to the gradient before any rate sees it (PyTorch's SGD and Baydin's
  reference code do the same), so the rate methods adapt to the regularised objective. The
  stage's presence depends on ``weight_decay is None`` only, so the state has one structure
  whether the decay is a number or an injected hyperparameter.
  """
  if weight_decay is None:
    return transform
  _checks.non_negative("weight_decay", weight_decay)
  return optax.chain(optax.add_decayed_weights(weight_decay), transform)
