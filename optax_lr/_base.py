"""Pieces every method family builds its aliases from (one definition each)."""

from __future__ import annotations

import jax
import optax

from optax_lr import _checks

try:  # the message optax itself raises when `params` are missing
  from optax._src.base import NO_PARAMS_MSG
except ImportError:  # pragma: no cover - optax moved it
  NO_PARAMS_MSG = (
      "You are using a transformation that requires the current value of parameters, but you "
      "are not passing `params` when calling `update`.")


def momentum_direction(momentum: float, nesterov: bool) -> optax.GradientTransformation:
  """The SGD direction: a (Nesterov) momentum trace, or the gradient when ``momentum`` is 0.

  A Python 0 leaves the trace out; an array (an injected hyperparameter, concrete or traced)
  always keeps it, so the state has the same structure at ``init`` and in a jitted ``update``
  (a trace with decay 0 is the gradient itself).
  """
  _checks.in_range("momentum", momentum, 0.0, 1.0, high_open=True)
  _checks.flag("nesterov", nesterov)
  if _checks.is_static_zero(momentum):
    return optax.identity()
  return optax.trace(decay=momentum, nesterov=nesterov)


def reuses_heavy_ball_trace(momentum: float, nesterov: bool) -> bool:
  """Whether a heavy-ball trace can give back the previous direction (a Python ``momentum > 0``).

  Only for a Python number: an injected ``momentum`` may be 0 at run time, where
  ``(d_t - g_t) / momentum`` is undefined, so it takes the general path (a kept copy).
  """
  known = _checks.static_number(momentum)
  return bool(known) and not nesterov


def heavy_ball_previous_direction(momentum: float):
  """``(d_t, g_t) -> d_{t-1}`` for a heavy-ball trace ``d_t = g_t + momentum * d_{t-1}``.

  Recovers the previous direction from this step's direction and gradient instead of reading the
  trace buffer before it is overwritten: a donated buffer read by a reduction and rewritten in
  place by the trace update makes XLA copy it every step (4-5x the update's time on CPU, see
  ``train/bench``). The recovered ``(d_t - g_t) / momentum`` carries only the rounding of ``d_t``
  itself: per element at most ``eps |d_t| / momentum``.
  """
  if not momentum:
    raise ValueError("heavy_ball_previous_direction needs momentum > 0")

  def previous_direction(directions, grads):
    return jax.tree.map(lambda d, g: (d - g.astype(d.dtype)) / momentum, directions, grads)

  return previous_direction


def check_adam_arguments(b1: float, b2: float, eps: float) -> None:
  """Adam's decays in ``[0, 1)`` and ``eps >= 0``."""
  _checks.in_range("b1", b1, 0.0, 1.0, high_open=True)
  _checks.in_range("b2", b2, 0.0, 1.0, high_open=True)
  _checks.non_negative("eps", eps)


def adam_direction(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam's unit-rate direction ``m_hat / (sqrt(v_hat) + eps)``, with validated arguments."""
  check_adam_arguments(b1, b2, eps)
  return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def with_coupled_weight_decay(transform: optax.GradientTransformation,
                              weight_decay: float) -> optax.GradientTransformation:
  """``chain(add_decayed_weights(weight_decay), transform)``, or ``transform`` when it is 0.

  Coupled L2 decay: added to the gradient before any rate sees it (PyTorch's SGD and Baydin's
  reference code do the same), so the rate methods adapt to the regularised objective.
  """
  _checks.non_negative("weight_decay", weight_decay)
  if _checks.is_static_zero(weight_decay):  # an injected array keeps the stage (general path)
    return transform
  return optax.chain(optax.add_decayed_weights(weight_decay), transform)


def sgd_chain(stage: optax.GradientTransformation, momentum: float, nesterov: bool,
              weight_decay: float) -> optax.GradientTransformation:
  """``add_decayed_weights -> trace -> stage``, leaving out what is off."""
  direction = momentum_direction(momentum, nesterov)
  chained = stage if _checks.is_static_zero(momentum) else optax.chain(direction, stage)
  return with_coupled_weight_decay(chained, weight_decay)
