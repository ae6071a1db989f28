"""L4: a step size from the loss value, over any direction (Adam, momentum SGD).

Implements M. Rolínek and G. Martius, *L4: Practical loss-based stepsize adaptation for deep
learning*, NeurIPS 2018 (Section 2, Eq. 3 and Algorithm 1), with the details of the authors'
TensorFlow release. With ``L_t`` the loss at the current parameters, ``v_t`` the unit-rate
direction of the wrapped transform and ``g_hat_t`` a gradient estimate (the bias-corrected
exponential moving average of the gradients, time scale 10 steps), step ``t`` (from 0) is::

  L_min    = gamma0 * L_0                    at t = 0     (gamma0 = 0.75)
  L_min    = min(L_min, L_t)                 otherwise
  eta_t    = alpha * (L_t - gamma * L_min) / (<g_hat_t, v_t> + eps)       (Eq. 3; gamma = 0.9)
  update   = -eta_t * v_t
  L_min   <- (1 + 1 / tau) * L_min                         (forget the minimum; tau = 1000)

``eta_t`` is the step that would bring the linearised loss ``L + <g_hat, -eta v>`` down to the
attainable value ``gamma * L_min``; ``alpha`` (the "L4 learning rate", 0.15 recommended, 0.1-0.3
useful) takes that fraction of it. The rate is invariant to the scale of ``v`` and to affine
transformations of the loss. L4Adam takes Adam's direction (``eps = 1e-4`` inside it, the
release's), L4Mom the gradient estimate itself (``v = g_hat``, so no second buffer).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree


class ScaleByL4State(NamedTuple):
  """State of :func:`scale_by_l4`.

  Attributes:
    learning_rate: scalar (float32, float64 for float64 params), ``eta_t`` of the latest
      update (0 before the first).
    min_loss: scalar in the rate's dtype, the running ``L_min`` (after the latest forgetting step).
    count: int32, updates taken.
    gradient_average: the (not yet bias-corrected) moving average of the gradients.
    inner_state: the state of the wrapped direction transform (``optax.EmptyState()`` for
      L4Mom, whose direction is the gradient estimate).
  """

  learning_rate: jax.Array
  min_loss: jax.Array
  count: jax.Array
  gradient_average: Any
  inner_state: Any


def scale_by_l4(inner: optax.GradientTransformation | None = None, fraction: float = 0.15,
                min_loss_factor: float = 0.9, initial_min_loss_factor: float = 0.75,
                min_loss_forget_time: float = 1000.0, gradient_decay: float = 0.9,
                eps: float = 1e-12) -> optax.GradientTransformationExtraArgs:
  """The L4 step size over a direction transform; the applied update is ``-eta_t v_t``.

  ``update`` needs the keyword argument ``value``: the loss at ``params`` (the loss whose
  gradient ``updates`` is; a scalar), the keyword ``optax.contrib.reduce_on_plateau`` reads, so
  one ``value=loss`` serves both in a chain. Without it ``update`` raises a ``ValueError`` that
  says how to pass it (Flax's ``TrainState.apply_gradients`` passes no keyword); other keywords
  are ignored (or forwarded to ``inner``, with ``value``).

  Args:
    inner: a unit-rate direction transform (``optax.scale_by_adam(eps=1e-4)`` for L4Adam);
      None (default) uses the gradient estimate as the direction (L4Mom). ``value`` and the
      extra ``update`` arguments are forwarded to it (a plain transform ignores them).
    fraction: ``alpha > 0``, the fraction of the step to the linearised minimum (default 0.15,
      the paper's recommendation; 0.1-0.3 useful, lower for small batches).
    min_loss_factor: ``gamma`` in ``(0, 1]``, the share of the lowest seen loss taken as
      attainable (default 0.9).
    initial_min_loss_factor: ``gamma0`` in ``(0, 1]``: ``L_min = gamma0 L_0`` at the first step
      (default 0.75).
    min_loss_forget_time: ``tau > 0`` in steps; ``L_min`` grows by ``1 + 1/tau`` per step, so an
      old minimum is forgotten (default 1000).
    gradient_decay: decay in ``[0, 1)`` of the gradient estimate's moving average (default 0.9,
      the release's time scale of 10 steps).
    eps: ``>= 0``, added to ``<g_hat, v>`` (default 1e-12).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`ScaleByL4State`.

  References:
    Rolínek and Martius, *L4: Practical loss-based stepsize adaptation for deep learning*,
    NeurIPS 2018: Eq. 3 (the step size), Section 2.3 (``L_min`` with ``gamma``, ``gamma0``,
    ``tau``), Section 2.4 (``alpha``), Algorithm 1.

  Example:
    >>> opt = optax_lr.scale_by_l4(optax.scale_by_adam(eps=1e-4))
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(1.5))
  """
  _checks.positive("fraction", fraction)
  _checks.in_range("min_loss_factor", min_loss_factor, 0.0, 1.0, low_open=True)
  _checks.in_range("initial_min_loss_factor", initial_min_loss_factor, 0.0, 1.0, low_open=True)
  _checks.positive("min_loss_forget_time", min_loss_forget_time)
  _checks.in_range("gradient_decay", gradient_decay, 0.0, 1.0, high_open=True)
  _checks.non_negative("eps", eps)
  inner = None if inner is None else optax.with_extra_args_support(inner)

  def init_fn(params):
    dtype = _tree.rate_dtype(params)
    return ScaleByL4State(
        learning_rate=jnp.zeros((), dtype),
        min_loss=jnp.zeros((), dtype),
        count=jnp.zeros((), jnp.int32),
        gradient_average=_tree.zeros_like(params),
        inner_state=optax.EmptyState() if inner is None else inner.init(params))

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    value = _checks.training_loss(value, "L4")
    count = optax.safe_int32_increment(state.count)
    gradient_average = optax.tree.update_moment(updates, state.gradient_average,
                                                gradient_decay, 1)
    gradient_estimate = optax.tree.bias_correction(gradient_average, gradient_decay, count)
    if inner is None:
      directions, inner_state = gradient_estimate, state.inner_state
    else:
      # `value` goes on too: optax's chains give every member all keywords, and an inner chain
      # may hold a member that reads the loss (optax.contrib.reduce_on_plateau).
      directions, inner_state = inner.update(updates, state.inner_state, params, value=value,
                                             **extra_args)
    loss = jnp.asarray(value).astype(state.min_loss.dtype)
    min_loss = jnp.where(state.count == 0, initial_min_loss_factor * loss,
                         jnp.minimum(state.min_loss, loss))
    # A non-finite loss leaves L_min as it was: one bad batch must not poison every later step.
    min_loss = _tree.where_finite(min_loss, state.min_loss, finite=jnp.isfinite(loss))
    rate = fraction * (loss - min_loss_factor * min_loss) / (
        _tree.vdot(gradient_estimate, directions) + eps)
    rate = _tree.finite_or_zero(rate).astype(state.learning_rate.dtype)
    new_state = ScaleByL4State(
        learning_rate=rate,
        min_loss=((1.0 + 1.0 / min_loss_forget_time) * min_loss).astype(state.min_loss.dtype),
        count=count,
        gradient_average=optax.tree.cast_like(gradient_average, state.gradient_average),
        inner_state=inner_state)
    return _tree.scale_by_rate(rate, directions, False), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def l4_adam(fraction: float = 0.15, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-4,
            min_loss_factor: float = 0.9, initial_min_loss_factor: float = 0.75,
            min_loss_forget_time: float = 1000.0, weight_decay: float | None = None,
            mu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
  """L4Adam: the L4 step size over Adam's direction ``m_hat / (sqrt(v_hat) + eps)``.

  Args:
    fraction: ``alpha > 0`` (default 0.15, the paper's recommended L4 learning rate).
    b1: Adam's first-moment decay in ``[0, 1)`` (default 0.9, the release's time scale 10).
    b2: Adam's second-moment decay in ``[0, 1)`` (default 0.999, time scale 1000).
    eps: ``>= 0``, added to ``sqrt(v_hat)`` (default 1e-4, the release's value for L4Adam).
    min_loss_factor: ``gamma`` in ``(0, 1]`` (default 0.9).
    initial_min_loss_factor: ``gamma0`` in ``(0, 1]`` (default 0.75).
    min_loss_forget_time: ``tau > 0`` steps (default 1000).
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage); ``value``
      must then include ``weight_decay/2 ||w||^2``.
    mu_dtype: optax's option for Adam's first moment (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``value`` (the loss).

  References:
    Rolínek and Martius, NeurIPS 2018, Section 3 ("L4Adam"), Algorithm 1.

  Example:
    >>> opt = optax_lr.l4_adam()
  """
  return _base.with_coupled_weight_decay(
      scale_by_l4(_base.adam_direction(b1, b2, eps, mu_dtype), fraction, min_loss_factor,
                  initial_min_loss_factor, min_loss_forget_time, gradient_decay=b1),
      weight_decay)


def l4_momentum(fraction: float = 0.15, momentum: float = 0.9, min_loss_factor: float = 0.9,
                initial_min_loss_factor: float = 0.75, min_loss_forget_time: float = 1000.0,
                weight_decay: float | None = None) -> optax.GradientTransformationExtraArgs:
  """L4Mom: the L4 step size over momentum SGD (the direction is the gradient estimate).

  The momentum direction is the bias-corrected moving average ``(1 - momentum)``-weighted, as in
  the release; its scale does not matter (``eta`` divides it out), so this is heavy-ball
  momentum with the L4 rate.

  Args:
    fraction: ``alpha > 0`` (default 0.15).
    momentum: in ``[0, 1)`` (default 0.9, the release's time scale of 10 steps).
    min_loss_factor: ``gamma`` in ``(0, 1]`` (default 0.9).
    initial_min_loss_factor: ``gamma0`` in ``(0, 1]`` (default 0.75).
    min_loss_forget_time: ``tau > 0`` steps (default 1000).
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage); ``value``
      must then include ``weight_decay/2 ||w||^2``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``value`` (the loss). The
    update is ``-alpha (L - gamma L_min) g_hat / ||g_hat||^2``.

  References:
    Rolínek and Martius, NeurIPS 2018, Section 3 ("L4Mom"), Algorithm 1.

  Example:
    >>> opt = optax_lr.l4_momentum()
  """
  _checks.in_range("momentum", momentum, 0.0, 1.0, high_open=True)
  return _base.with_coupled_weight_decay(
      scale_by_l4(None, fraction, min_loss_factor, initial_min_loss_factor,
                  min_loss_forget_time, gradient_decay=momentum), weight_decay)
