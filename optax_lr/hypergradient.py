"""Hypergradient descent (HD): online gradient descent on a global learning rate.

Implements Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent" (ICLR 2018),
the baseline of seeds 002 and 003 (``ALGORITHMS.md`` section 3). With ``g_t`` the incoming gradient
and ``d_t`` the direction of the inner transform::

  h_t = <g_t, d_{t-1}>          (d_{-1} = 0)
  lr_t = lr_{t-1} + hypergrad_lr * h_t
  update = -lr_t * d_t

The rate is applied immediately (the step that computes ``h_t`` already uses ``lr_t``). HD is a
wrapper over any direction transform, like ``optax.contrib.mechanize``: SGD-HD wraps the identity,
SGDN-HD a Nesterov trace, Adam-HD ``optax.scale_by_adam``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree


class HypergradientState(NamedTuple):
  """State of :func:`hypergradient`.

  Attributes:
    learning_rate: float32 scalar, the rate of the latest update.
    previous_direction: ``d_{t-1}``, the inner direction of the previous step (zeros at first).
    inner_state: the state of the wrapped direction transform.
  """

  learning_rate: jax.Array
  previous_direction: Any
  inner_state: Any


def hypergradient(inner: optax.GradientTransformation, learning_rate: float,
                  hypergrad_lr: float, min_learning_rate: float | None = None,
                  previous_direction_fn: Callable[[Any, Any], Any] | None = None,
                  ) -> optax.GradientTransformationExtraArgs:
  """Wrap a direction transform with a hypergradient-descent learning rate (Baydin et al. 2018).

  Args:
    inner: a unit-rate direction transform (``optax.identity()``, ``optax.trace(...)``,
      ``optax.scale_by_adam()``, or a chain of such); extra ``update`` arguments are forwarded.
    learning_rate: initial rate ``> 0``.
    hypergrad_lr: ``beta >= 0``; 0 keeps the rate fixed (the wrapper then equals the inner
      transform followed by ``optax.scale_by_learning_rate``, bit for bit).
    min_learning_rate: optional floor ``>= 0`` on the rate (not in the reference, which never
      clips); ``None`` (default) leaves it unbounded.
    previous_direction_fn: optional ``(d_t, g_t) -> d_{t-1}``, for inner transforms whose previous
      direction follows from the current one (a heavy-ball trace:
      ``optax_lr._base.heavy_ball_previous_direction(momentum)``); the wrapper then keeps no copy
      of it, saving a parameter-sized buffer, its write, and (on XLA) a copy per step.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`HypergradientState`.

  References:
    Baydin et al., ICLR 2018, Algorithms "SGD-HD", "SGDN-HD", "Adam-HD" (Section 2).

  Example:
    >>> opt = optax_lr.hypergradient(optax.scale_by_adam(), learning_rate=1e-3, hypergrad_lr=1e-8)
  """
  _checks.positive("learning_rate", learning_rate)
  _checks.non_negative("hypergrad_lr", hypergrad_lr)
  if min_learning_rate is not None:
    _checks.non_negative("min_learning_rate", min_learning_rate)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return HypergradientState(
        learning_rate=jnp.full((), learning_rate, _tree.RATE_DTYPE),
        previous_direction=(_tree.zeros_like(params) if previous_direction_fn is None
                            else optax.EmptyState()),
        inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    directions, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    if previous_direction_fn is None:
      previous = state.previous_direction
    else:
      previous = previous_direction_fn(directions, updates)
    rate = state.learning_rate + hypergrad_lr * _tree.vdot(updates, previous)
    if min_learning_rate is not None:
      rate = jnp.maximum(rate, min_learning_rate)
    return _tree.scale_by_rate(rate, directions, False), HypergradientState(
        learning_rate=rate,
        previous_direction=(directions if previous_direction_fn is None
                            else state.previous_direction),
        inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_hd(learning_rate: float, hypergrad_lr: float = 1e-3, momentum: float = 0.0,
           nesterov: bool = False, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """SGD-HD (``momentum = 0``) and SGDN-HD (``nesterov=True``): SGD with a hypergradient rate.

  Args:
    learning_rate: initial rate ``> 0``.
    hypergrad_lr: ``beta >= 0`` (reference: 1e-3).
    momentum: in ``[0, 1)``; the direction is the momentum trace.
    nesterov: Nesterov momentum (SGDN-HD).
    weight_decay: coupled L2 decay ``>= 0``.

  Returns:
    An ``optax.GradientTransformation``; ``hypergrad_lr = 0`` equals ``optax.sgd`` bit for bit.

  References:
    Baydin et al., ICLR 2018, Section 2.
  """
  inner = _base.momentum_direction(momentum, nesterov)
  # With a heavy-ball trace the previous direction follows from this step's: keep no copy.
  reuse_trace = bool(momentum) and not nesterov
  previous_direction_fn = _base.heavy_ball_previous_direction(momentum) if reuse_trace else None
  return _base.with_coupled_weight_decay(
      hypergradient(inner, learning_rate, hypergrad_lr,
                    previous_direction_fn=previous_direction_fn), weight_decay)


def adam_hd(learning_rate: float = 1e-3, hypergrad_lr: float = 1e-8, b1: float = 0.9,
            b2: float = 0.999, eps: float = 1e-8,
            weight_decay: float = 0.0) -> optax.GradientTransformation:
  """Adam-HD: Adam with a hypergradient rate on the direction ``m_hat / (sqrt(v_hat) + eps)``.

  Args:
    learning_rate: initial rate ``> 0``.
    hypergrad_lr: ``beta >= 0`` (reference default 1e-8; 1e-7 for MLPs).
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``>= 0``.
    weight_decay: coupled L2 decay ``>= 0`` (added to the gradient, as the reference does).

  Returns:
    An ``optax.GradientTransformation``; ``hypergrad_lr = 0`` equals ``optax.adam`` bit for bit.

  References:
    Baydin et al., ICLR 2018, Section 2 ("Adam-HD").
  """
  return _base.with_coupled_weight_decay(
      hypergradient(_base.adam_direction(b1, b2, eps), learning_rate, hypergrad_lr),
      weight_decay)
