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

  def previous_direction(directions, grads, inner_state=None):
    del inner_state  # the trace is the direction itself
    return jax.tree.map(lambda d, g: (d - g.astype(d.dtype)) / momentum, directions, grads)

  return previous_direction


def reuses_adam_moments(b1: float, b2: float) -> bool:
  """Whether Adam's previous direction can be recovered from its moments (Python ``b1, b2 > 0``).

  An injected decay may be 0 at run time, where ``m_{t-1}`` is lost: it takes the general path
  (a kept copy), as does a decay of 0.
  """
  return bool(_checks.static_number(b1)) and bool(_checks.static_number(b2))


def _adam_state(inner_state: Any) -> optax.ScaleByAdamState:
  found = [x for x in jax.tree.leaves(
      inner_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
           if isinstance(x, optax.ScaleByAdamState)]
  if len(found) != 1:
    raise ValueError(f"expected one optax.ScaleByAdamState in the inner state, got {len(found)}")
  return found[0]


def adam_previous_direction(b1: float, b2: float, eps: float):
  """``(d_t, g_t, inner_state) -> d_{t-1}`` for ``optax.scale_by_adam(b1, b2, eps)``.

  Adam's previous direction ``m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)`` (0 before the first
  step), recovered from the moments *after* this step's update and this step's gradient, so a
  hypergradient wrapper keeps no copy of it (the state is exactly Adam's plus the rate) and reads
  no buffer the step rewrites (which would make XLA copy it)::

    m_{t-1} = (m_t - (1 - b1) g_t) / b1
    v_{t-1} = max(0, (v_t - (1 - b2) g_t^2) / b2)
    d_{t-1} = clip((m_{t-1} / c1) / (sqrt(v_{t-1} / c2) + eps), -D, D)

  with ``c1 = 1 - b1^(t-1)``, ``c2 = 1 - b2^(t-1)`` the bias corrections of step ``t - 1`` and
  ``D = (1 - b1) sqrt(c2) / (c1 sqrt((1 - b2)(1 - b1^2 / b2)))`` (for ``b1^2 < b2``, else no
  clip), a bound every Adam direction obeys (Cauchy-Schwarz on the two moving sums), so the clip
  never changes an exact value.

  Rounding bound. With ``u`` the unit roundoff of the moments (2^-24 in float32; 2^-8 for a
  bfloat16 first moment, whose storage rounds ``m_t`` once more), ``m_t`` and ``v_t`` carry the
  roundings of their update and the recovery adds two more, so per element
  ``|dm| <= 4u (|m_t| + (1 - b1)|g_t|) / b1`` and ``|dv| <= 4u (v_t + (1 - b2) g_t^2) / b2``,
  and, with ``m_hat``, ``v_hat`` the corrected recovered moments, ``s = sqrt(v_hat)``,
  ``ds = sqrt(|dv| / c2)`` (as ``|sqrt(a) - sqrt(b)| <= sqrt(|a - b|)``) and
  ``s_low = max(s - ds, 0)`` a lower bound of the true ``sqrt(v_hat_{t-1})``::

    |d_rec - d_{t-1}| <= E = min(2D, |dm| / (c1 (s_low + eps))
                                 + (|m_hat| + |dm| / c1) ds / ((s + eps)(s_low + eps))
                                 + 4u |d_{t-1}|).

  A hypergradient sum over a group ``j`` then differs from the stored-buffer one by at most
  ``sum_{p in j} |g_p| E_p`` plus the rounding of the sums. ``E`` is a few ``u |d|`` except
  where ``v_{t-1} << (1 - b2) g_t^2 / b2`` (a tiny early gradient, or a spike ``g_t``): there the
  recovered ``v_{t-1}`` keeps only ``sqrt(u)`` of its digits, and the element's error is up to
  ``2D`` (the clip). Such elements weigh little in a sum over many, so the recovery serves
  sums (HD's global rate, CAM-HD's layer, filter and global levels); a per-element rate keeps
  the stored direction.
  """
  check_adam_arguments(b1, b2, eps)
  _checks.in_range("b1", b1, 0.0, 1.0, low_open=True, high_open=True)
  _checks.in_range("b2", b2, 0.0, 1.0, low_open=True, high_open=True)
  clipped = b1 * b1 < b2

  def previous_direction(directions, grads, inner_state):
    adam = _adam_state(inner_state)
    previous_count = adam.count - 1  # the count after this step's increment, minus one
    started = previous_count > 0

    def leaf(d, g, m, v):
      dtype = jnp.promote_types(jnp.promote_types(m.dtype, v.dtype), g.dtype)
      g, m, v = g.astype(dtype), m.astype(dtype), v.astype(dtype)
      c1 = jnp.where(started, 1 - b1 ** previous_count, 1).astype(dtype)
      c2 = jnp.where(started, 1 - b2 ** previous_count, 1).astype(dtype)
      m_prev = (m - (1 - b1) * g) / b1
      v_prev = jnp.maximum((v - (1 - b2) * jnp.square(g)) / b2, 0)
      d_prev = (m_prev / c1) / (jnp.sqrt(v_prev / c2) + eps)
      if clipped:
        bound = ((1 - b1) / ((1 - b2) * (1 - b1 * b1 / b2)) ** 0.5) * jnp.sqrt(c2) / c1
        d_prev = jnp.clip(d_prev, -bound, bound)
      return jnp.where(started, d_prev, 0).astype(d.dtype)

    return jax.tree.map(leaf, directions, grads, adam.mu, adam.nu)

  return previous_direction


def check_adam_arguments(b1: float, b2: float, eps: float) -> None:
  """Adam's decays in ``[0, 1)`` and ``eps >= 0``."""
  _checks.in_range("b1", b1, 0.0, 1.0, high_open=True)
  _checks.in_range("b2", b2, 0.0, 1.0, high_open=True)
  _checks.non_negative("eps", eps)


def adam_direction(b1: float, b2: float, eps: float,
                   mu_dtype: Any = None) -> optax.GradientTransformation:
  """Adam's unit-rate direction ``m_hat / (sqrt(v_hat) + eps)``, with validated arguments.

  ``mu_dtype``: optax's option, the dtype of the first moment (``None``: the parameters').
  """
  check_adam_arguments(b1, b2, eps)
  if mu_dtype is not None:
    try:
      mu_dtype = jnp.dtype(mu_dtype)
    except TypeError:
      raise TypeError("`mu_dtype` must be None or a floating dtype (jnp.bfloat16, say); got "
                      f"{mu_dtype!r}.") from None
    if not jnp.issubdtype(mu_dtype, jnp.floating):
      _checks._fail("mu_dtype", mu_dtype, "None or a floating dtype (jnp.bfloat16, say)")
  return optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype)


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
