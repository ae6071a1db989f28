"""AutoDrop: drop the learning rate when the angular velocity of the parameters saturates.

Implements Yunfei Teng, Jing Wang, Anna Choromanska, "AutoDrop: Training Deep Learning Models
with Automatic Learning Rate Drop": the angular velocity of Definition 1 and the drop rule of
Algorithm 1, as the final rate-scaling stage of any optax chain (the paper's "meta-scheme on top of
any optimizer").

At every window boundary (after each window of ``steps_per_epoch`` updates), with ``x_e`` the
parameters at that boundary and ``s_e = x_e - x_{e-1}`` the displacement over the window::

  omega_e = degrees(arccos(clip(<s_e, s_{e-1}> / (||s_e|| ||s_{e-1}|| + eps), -1, 1)))   (Def. 1)
  trigger when |mean(omega_{e-m+1..e}) - mean(omega_{e-m..e-1})| < threshold           (Alg. 1)
  then z += k x_e for k = 1, ..., drop_delay (k = 1 at the trigger boundary), and at
  k = drop_delay: x <- z / (drop_delay (drop_delay + 1) / 2),
                  lr <- max(min_learning_rate, drop_factor lr),
                  threshold <- min(max_threshold, threshold / drop_factor).

Timing. The boundary belongs to the ``update`` whose step ends the window: that call computes its
own step ``-lr d``, takes ``x_e = params + (-lr d)`` (exactly as ``optax.apply_updates`` will),
runs the boundary work on ``x_e``, and at a drop with averaging returns ``average - params``
instead, so ``optax.apply_updates`` lands on the average and the next gradient is taken there.
That is Algorithm 1: the step ending the epoch is part of ``x_e`` and of the average, and no
gradient is computed and then discarded. The new rate scales the next window's steps. A test
checks the trajectory against a float64 NumPy transcription of Algorithm 1 (with and without
averaging, with smoothing) to float64 rounding.

Cost. Between boundaries the stage is ``-lr * d`` (plus, with averaging on, a select that reads
the average buffer, so that the landing step needs no other code path): one extra read per
parameter. The boundary work (the window's end point ``x_e``, the three reductions of the angle,
the averaging, the drop and the landing step) runs once per window, inside a conditional taken
only at a boundary. State:
three parameter-sized buffers (the anchor ``x_{e-1}``, the previous displacement and, with
averaging, the running average), the least the rule allows: the angle needs ``x_{e-1}`` and
``s_{e-1}``, and the average, live from a trigger to its drop, coexists with them because angles
are still recorded during the delay.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks, _tree
from optax_lr._base import NO_PARAMS_MSG
from optax_lr.safeguards import check_option


class ScaleByAutoDropState(NamedTuple):
  """State of :func:`scale_by_autodrop`.

  Attributes:
    window_step: int32, updates taken in the current window, ``0 .. steps_per_epoch - 1``; the
      call that finds ``steps_per_epoch - 1`` takes the window's last step and processes the
      boundary on its end point ``x_e``.
    learning_rate: float32 scalar, the rate that scales the next update.
    threshold: float32 scalar, the current threshold on the change of angular velocity (degrees).
    angular_velocity: float32 scalar, the latest angle between consecutive window displacements,
      in degrees (Definition 1); NaN until the first angle is measured. Kept across drops (for
      plots), although the history the rule uses is cleared.
    num_drops: int32, number of learning-rate drops so far.
    drop_pending: bool scalar, the latch: a drop was triggered and the averaging delay runs.
    delay_count: int32, ``k``: boundaries averaged since the trigger (0 when no drop is pending).
    num_displacements: int32, window displacements measured since the start or the last drop,
      saturating at ``m + 2`` (enough to know that ``m + 1`` angles exist), ``m`` the trigger's
      ``smoothing``.
    angle_history: float32 ``[m + 1]``, the latest angles since the last reset, newest
      last (entries not yet measured are 0 and are never read).
    anchor: the parameters at the previous boundary, ``x_{e-1}`` (initially ``x_0``).
    previous_displacement: ``s_{e-1}``, the displacement over the previous window.
    average: the k-weighted running average of the boundary parameters during the delay,
      ``sum_k k x_k / sum_k k`` (in the parameters' dtype; after a drop it keeps the average that
      was landed on); ``optax.EmptyState()`` when averaging is off.
    mean_change: float32 scalar, with the trigger's ``threshold_rule="relative"``, the mean of
      the (smoothed) angle changes ``|omega_e - omega_{e-1}|`` measured since the start or the
      last drop (degrees); 0 under the fixed rule.
    num_changes: int32, how many changes that mean holds.
  """

  window_step: jax.Array
  learning_rate: jax.Array
  threshold: jax.Array
  angular_velocity: jax.Array
  num_drops: jax.Array
  drop_pending: jax.Array
  delay_count: jax.Array
  num_displacements: jax.Array
  angle_history: jax.Array
  anchor: Any
  previous_displacement: Any
  average: Any
  mean_change: jax.Array
  num_changes: jax.Array


THRESHOLD_RULES = ("fixed", "relative")
"""AutoDrop's threshold rules: the paper's fixed threshold in degrees, or one relative to the
angle's own boundary-to-boundary fluctuation."""


def angle_degrees(displacement: Any, previous_displacement: Any,
                  eps: float | jax.Array = 1e-8) -> jax.Array:
  """The angle between two parameter trees in degrees (AutoDrop paper, Definition 1).

  ``degrees(arccos(clip(<s, s'> / (||s|| ||s'|| + eps), -1, 1)))``, reductions in float32. The clip
  guards rounding just outside ``[-1, 1]``; two zero trees give 90 degrees (cosine 0).

  Args:
    displacement: ``s_e``.
    previous_displacement: ``s_{e-1}``, same structure.
    eps: ``>= 0``, added to the product of the norms (the paper's epsilon).

  Returns:
    A float32 scalar in ``[0, 180]``.
  """
  inner_product = _tree.vdot(displacement, previous_displacement)
  norms = (jnp.sqrt(_tree.squared_norm(displacement))
           * jnp.sqrt(_tree.squared_norm(previous_displacement)))
  cosine = jnp.clip(_tree.safe_divide(inner_product, norms + eps), -1.0, 1.0)
  return jnp.degrees(jnp.arccos(cosine))


@dataclasses.dataclass(frozen=True)
class DropTrigger:
  """When AutoDrop triggers a drop: the angular velocity it measures and the threshold it tests.

  Algorithm 1's test: at every window boundary, the change of the angular velocity (Definition 1,
  averaged over ``smoothing`` windows) is compared with a threshold that grows by
  ``1 / drop_factor`` at each drop, up to ``max_threshold``. The factories' ``trigger=None`` (the
  default) is ``DropTrigger()``: the paper's settings.

  The options are grouped, so ``optax.inject_hyperparams`` passes the object through as it is
  (it is not a number): ``smoothing`` sets the angle history's length, a shape, and the
  threshold's values take no schedule in the paper.

  Attributes:
    threshold: initial threshold ``theta_0 >= 0`` on the change of angular velocity, in degrees
      (paper: 0.01).
    max_threshold: the threshold's ceiling, ``>= threshold`` (paper: 1 degree).
    threshold_rule: ``"fixed"`` (default, Algorithm 1): trigger when the change of the angle is
      below ``threshold`` degrees (grown by ``1 / drop_factor`` at each drop up to
      ``max_threshold``). ``"relative"``: trigger also when the change is at most
      ``c = relative_threshold`` times the mean change measured since the start or the last
      drop (once two earlier changes exist), i.e. below ``max(threshold, c * mean change)``: a
      threshold in units of the angle's own fluctuation, which needs no per-task value. A fixed
      0.01 degrees is almost never reached where the angle moves by degrees between windows
      (short windows, small batches); the relative part reads saturation as "the change has
      fallen to a small fraction of the changes seen so far" (the early, still-turning windows
      included), and the fixed part keeps it never later than Algorithm 1. Where the angle is
      stationary from the start, each boundary triggers with a fixed probability (about
      ``2 c / pi`` for Gaussian changes, 13% at ``c = 0.2``), so drops come at a pace set by
      ``drop_delay`` and that probability.
    relative_threshold: ``c`` in ``(0, 1]`` of the relative rule (default 0.2).
    smoothing: ``m >= 1``, a Python int: angles averaged by the rule (paper: 1 for deep
      learning, 20 on the noisy quadratic model). It sets the length of the angle history.
    eps: ``>= 0``, guard in the cosine's denominator (paper: a small positive number, 1e-8).

  Example:
    >>> opt = optax_lr.autodrop_sgd(
    ...     0.1, steps_per_epoch=390,
    ...     trigger=optax_lr.DropTrigger(threshold_rule="relative", relative_threshold=0.2))
  """

  threshold: float = 0.01
  max_threshold: float = 1.0
  threshold_rule: str = "fixed"
  relative_threshold: float = 0.2
  smoothing: int = 1
  eps: float = 1e-8

  def __post_init__(self):
    _checks.non_negative("DropTrigger.threshold", self.threshold)
    _checks.non_negative("DropTrigger.max_threshold", self.max_threshold)
    low, high = _checks._concrete(self.threshold), _checks._concrete(self.max_threshold)
    if low is not None and high is not None and high < low:
      raise ValueError(f"`DropTrigger.max_threshold` must be >= threshold={self.threshold!r}; "
                       f"got {self.max_threshold!r}.")
    _checks.one_of("DropTrigger.threshold_rule", self.threshold_rule, THRESHOLD_RULES)
    _checks.in_range("DropTrigger.relative_threshold", self.relative_threshold, 0.0, 1.0,
                     low_open=True)
    # The angle history's length is a shape: a Python int, never an array.
    _checks.static_integer_at_least("DropTrigger.smoothing", self.smoothing, 1)
    _checks.non_negative("DropTrigger.eps", self.eps)


def _check_autodrop_args(learning_rate, steps_per_epoch, drop_factor, min_learning_rate,
                         drop_delay):
  _checks.learned_initial_rate(learning_rate, "AutoDrop")
  _checks.integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  _checks.in_range("drop_factor", drop_factor, 0.0, 1.0, low_open=True, high_open=True)
  _checks.non_negative("min_learning_rate", min_learning_rate)
  _checks.static_integer_at_least("drop_delay", drop_delay, 1)
  concrete = _checks._concrete  # traced values (inject_hyperparams) cannot be compared
  rate, floor = concrete(learning_rate), concrete(min_learning_rate)
  if rate is not None and floor is not None and floor > rate:
    raise ValueError(f"`min_learning_rate` must be in [0, learning_rate={learning_rate!r}]; "
                     f"got {min_learning_rate!r}.")


def scale_by_autodrop(learning_rate: float, steps_per_epoch: int, drop_factor: float = 0.2,
                      min_learning_rate: float = 1e-4, *, drop_delay: int = 20,
                      average: bool = True, trigger: DropTrigger | None = None,
                      ) -> optax.GradientTransformationExtraArgs:
  """AutoDrop stage: scale directions by a rate that drops when the angular velocity saturates.

  The final stage of a chain: its input is a direction ``d`` (the gradient, a momentum trace, an
  Adam direction, another method's scaled update...), its output the update ``-lr * d``. At every
  window boundary it measures the angle between the last two window displacements of the
  parameters (Definition 1). When the *change* of that angle (averaged over
  ``trigger.smoothing`` windows) falls below ``trigger.threshold``, a drop is triggered and
  latched; during ``drop_delay`` windows (the trigger boundary counts as ``k = 1``) the
  parameters at each boundary are averaged with weights ``k``; at ``k = drop_delay`` the rate is
  multiplied by ``drop_factor`` (never below ``min_learning_rate``), the threshold divided by it
  (never above ``trigger.max_threshold``), and the parameters move onto the weighted average
  (:class:`DropTrigger` holds the trigger's options). The angle history then restarts from the
  averaged parameters, so the first trigger after a drop is possible at the third boundary, as at
  the start (a documented departure from the authors' release, which keeps measuring across the
  averaging jump).

  Timing. A boundary is processed by the ``update`` call whose step ends the window: it computes
  its step ``-lr d`` at the current rate, takes ``x_e = params + (-lr d)``, and runs the boundary
  work on ``x_e``, so the state after ``n`` updates reflects every boundary up to the ``n``-th
  update. At a drop with averaging that call returns ``average - params`` instead of its step:
  ``optax.apply_updates`` lands on the average (exactly where ``params`` and the average are
  within a factor of 2 of each other, else up to the rounding of one addition), which already
  contains ``x_e`` with weight ``drop_delay``; the next window is ``steps_per_epoch`` gradient
  steps from the average. Without averaging (or with ``drop_delay = 1``, where the average is
  ``x_e`` itself) the call's own step stands. Either way the new rate scales the next window.

  The first displacement is measured from the initial parameters (Algorithm 1's ``y <- x``), so the
  first angle exists at the second boundary and, with ``trigger.smoothing = m``, the first
  trigger is possible at boundary ``m + 2`` (``t > 2`` in Algorithm 1 for ``m = 1``).

  :func:`with_autodrop` is the same rule over an inner transformation, as one transformation.

  Composition over a method that owns its own rate (TLR, hypergradient descent): that method's
  output is an update ``-lr' d``; turn it back into a direction with ``optax.scale(-1.0)`` and put
  AutoDrop with ``learning_rate=1.0`` after it, so AutoDrop's rate is a multiplier on the inner
  rate (1, then ``drop_factor``, ``drop_factor^2``, ... with ``min_learning_rate`` the floor of that
  multiplier); see the example below.

  Args:
    learning_rate: initial rate ``alpha_0 > 0`` (paper: the usual SOTA initial rate).
    steps_per_epoch: window length ``>= 1`` in steps (an epoch in the paper; 1 for the
      noisy-quadratic experiments, which measure the angle every iteration).
    drop_factor: ``rho`` in ``(0, 1)`` (paper: 0.2 on CIFAR, 0.1 on ImageNet, 0.5 on the noisy
      quadratic model).
    min_learning_rate: the rate floor, in ``[0, learning_rate]`` (paper: 1e-4).
    drop_delay: ``n_d >= 1``, windows from the trigger to the drop (paper: 20 epochs). Static:
      it decides whether the state keeps an average (under ``optax.inject_hyperparams`` pass it
      in ``static_args``).
    average: move onto the k-weighted parameter average at the drop (paper: on). Off (or with
      ``drop_delay = 1``), the drop happens after the delay without moving the parameters, and the
      stage keeps one parameter-sized buffer fewer and reads nothing extra between boundaries.
    trigger: ``None`` (default: ``DropTrigger()``, the paper's settings) or a
      :class:`DropTrigger`: the threshold (initial value, ceiling, fixed or relative rule), the
      angles' smoothing and the cosine's ``eps``.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`ScaleByAutoDropState`; its
    ``update`` requires ``params``.

  References:
    Yunfei Teng, Jing Wang, Anna Choromanska, "AutoDrop: Training Deep Learning Models with
    Automatic Learning Rate Drop": Definition 1 (angular velocity), Section 4 and Algorithm 1
    (drop rule, recommended hyperparameters), Section 3 (noisy quadratic model, Figure 3).

  Example:
    >>> opt = optax.chain(optax.scale_by_adam(),
    ...                   optax_lr.scale_by_autodrop(1e-3, steps_per_epoch=390))
    >>> over_tlr = optax.chain(optax.trace(0.8), optax_lr.scale_by_tlr(0.1, update_every=130),
    ...                        optax.scale(-1.0),
    ...                        optax_lr.scale_by_autodrop(1.0, steps_per_epoch=390))
  """
  init_fn, update_core = _autodrop_functions(
      learning_rate, steps_per_epoch, drop_factor, min_learning_rate, drop_delay, average,
      trigger)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    return update_core(state, params, updates)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _autodrop_functions(learning_rate, steps_per_epoch, drop_factor, min_learning_rate,
                        drop_delay, average, trigger):
  """``(init_fn, update_core)`` of the AutoDrop stage, its arguments checked.

  ``update_core(state, params, directions)`` returns ``(updates, state)`` for the direction
  ``d`` of this step.
  """
  _check_autodrop_args(learning_rate, steps_per_epoch, drop_factor, min_learning_rate,
                       drop_delay)
  _checks.flag("average", average)
  check_option("trigger", trigger, DropTrigger, none_means="DropTrigger()")
  trigger = trigger if trigger is not None else DropTrigger()
  threshold, max_threshold = trigger.threshold, trigger.max_threshold
  relative_threshold, smoothing, eps = trigger.relative_threshold, trigger.smoothing, trigger.eps
  relative = trigger.threshold_rule == "relative"
  # The angle history's length is a shape (DropTrigger.smoothing is a Python int).
  history_size = int(smoothing) + 1
  # The weighted average of a single point is that point: no landing, no buffer (drop_delay is
  # static, so the structure depends on no traced value).
  average = average and drop_delay > 1

  def init_fn(params):
    dtype = _tree.rate_dtype(params)  # float32, float64 for float64 parameters
    return ScaleByAutoDropState(
        window_step=jnp.zeros((), jnp.int32),
        learning_rate=_tree.full_rate(learning_rate, dtype),
        threshold=_tree.full_rate(threshold, dtype),
        angular_velocity=jnp.full((), jnp.nan, dtype),
        num_drops=jnp.zeros((), jnp.int32),
        drop_pending=jnp.zeros((), jnp.bool_),
        delay_count=jnp.zeros((), jnp.int32),
        num_displacements=jnp.zeros((), jnp.int32),
        angle_history=jnp.zeros((history_size,), dtype),
        # A fresh copy: the state must not alias params, so both can be donated.
        anchor=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        previous_displacement=_tree.zeros_like(params),
        average=_tree.zeros_like(params) if average else optax.EmptyState(),
        mean_change=jnp.zeros((), dtype),
        num_changes=jnp.zeros((), jnp.int32),
    )

  def process_boundary(state, end_point, params):
    """Algorithm 1's end-of-epoch block on the window's end point ``x_e = end_point``.

    ``params`` are the parameters the current ``update`` was called with (``x_e`` minus this
    step): at a drop with averaging the update lands from them onto the average.
    """
    dtype = state.learning_rate.dtype
    displacement = jax.tree.map(lambda x, a: x - a, end_point, state.anchor)
    has_previous = state.num_displacements >= 1
    angle = angle_degrees(displacement, state.previous_displacement, eps).astype(dtype)
    history = jnp.where(
        has_previous, jnp.concatenate([state.angle_history[1:], angle[None]]),
        state.angle_history)
    num_displacements = jnp.minimum(state.num_displacements + 1, history_size + 1)
    # mean(last m angles) - mean(the m before the newest) = (newest - oldest) / m, exactly.
    change = jnp.abs(history[-1] - history[0]) / smoothing
    has_change = num_displacements - 1 >= history_size
    if relative:
      # A threshold in units of the changes seen so far (this one excluded), or the paper's
      # fixed one, whichever is larger: never later than Algorithm 1, and a constant angle
      # (changes at rounding level, which a relative test reads as fluctuation) still
      # triggers. A non-finite change (non-finite parameters) neither triggers nor enters the
      # mean.
      counted = has_change & jnp.isfinite(change)
      small = ((change < state.threshold)
               | ((state.num_changes >= 2) & (change <= relative_threshold * state.mean_change)))
      triggered = counted & small & ~state.drop_pending
      num_changes = state.num_changes + counted.astype(jnp.int32)
      mean_change = jnp.where(
          counted, state.mean_change + (change - state.mean_change)
          / jnp.maximum(num_changes, 1).astype(dtype), state.mean_change).astype(dtype)
    else:
      triggered = has_change & (change < state.threshold) & ~state.drop_pending
      num_changes, mean_change = state.num_changes, state.mean_change
    pending = state.drop_pending | triggered
    delay_count = jnp.where(pending, state.delay_count + 1, 0)
    drop = pending & (delay_count >= drop_delay)
    anchor = end_point
    if average:
      # Running form of z / (k (k + 1) / 2) with z = sum_j j x_j: the newest point has weight
      # k / (k (k + 1) / 2) = 2 / (k + 1). It stays on the parameters' scale, so it is stored in
      # their dtype; k = 1 restarts it exactly at x_e.
      share = 2.0 / (delay_count.astype(dtype) + 1.0)

      def running_average(mean, x):
        wide = jnp.promote_types(x.dtype, dtype)
        mean_w, x_w = mean.astype(wide), x.astype(wide)
        new = jnp.where(delay_count == 1, x_w, mean_w + share.astype(wide) * (x_w - mean_w))
        return jnp.where(pending, new, mean_w).astype(mean.dtype)

      new_average = jax.tree.map(running_average, state.average, end_point)
      # After the drop the parameters are the average, as optax.apply_updates will compute them
      # from this call's parameters.
      landed = optax.apply_updates(params, _landing_updates(new_average, params))
      anchor = jax.tree.map(lambda y, x: jnp.where(drop, y, x), landed, end_point)
    else:
      new_average = state.average
    rate = jnp.maximum(min_learning_rate, drop_factor * state.learning_rate)
    new_threshold = jnp.minimum(max_threshold, state.threshold / drop_factor)
    if relative:
      # The mean restarts with the angle history after a drop.
      mean_change = jnp.where(drop, jnp.zeros_like(mean_change), mean_change)
      num_changes = jnp.where(drop, 0, num_changes)
    # The jump onto the average is not a step of the optimizer: after a drop the angle history
    # restarts from the new anchor.
    return state._replace(
        learning_rate=jnp.where(drop, rate, state.learning_rate).astype(dtype),
        threshold=jnp.where(drop, new_threshold, state.threshold).astype(dtype),
        angular_velocity=jnp.where(has_previous, angle, state.angular_velocity),
        num_drops=state.num_drops + drop.astype(jnp.int32),
        drop_pending=pending & ~drop,
        delay_count=jnp.where(drop, 0, delay_count),
        num_displacements=jnp.where(drop, 0, num_displacements),
        angle_history=jnp.where(drop, jnp.zeros_like(history), history),
        anchor=anchor, previous_displacement=displacement, average=new_average,
        mean_change=mean_change, num_changes=num_changes)

  def update_core(state, params, directions):
    # The boundary belongs to the update whose step ends the window (Algorithm 1: the epoch's
    # last step is part of x_e and of the average; no gradient is computed and then dropped).
    ends_window = state.window_step + 1 >= steps_per_epoch

    def boundary(state):
      # x_e, exactly as the caller will get it.
      end_point = optax.apply_updates(
          params, _tree.scale_by_rate(state.learning_rate, directions, False))
      return process_boundary(state, end_point, params)

    new_state = _tree.run_once_if(ends_window, boundary, state)
    # The step at the rate the window ran with (a drop changes the rate from the next window on),
    # read off the loop's result: the loop's rate where it did not drop (the same value), the
    # old one where it did. The parameters' in-place update then follows the loop's reads of
    # them (_tree.after's reason, through the data flow itself).
    landing = new_state.num_drops != state.num_drops
    rate = jnp.where(landing, state.learning_rate, new_state.learning_rate)
    new_updates = _tree.scale_by_rate(rate, directions, False)
    if average:
      # At a drop, land on the average instead: it already holds x_e (with weight n_d).
      new_updates = jax.tree.map(
          lambda u, y, p: jnp.where(landing, _landing_update(y, p).astype(u.dtype), u),
          new_updates, new_state.average, params)
    window_step = jnp.where(ends_window, 0, state.window_step + 1).astype(jnp.int32)
    return new_updates, new_state._replace(window_step=window_step)

  return init_fn, update_core


class WithAutoDropState(NamedTuple):
  """State of :func:`with_autodrop`.

  Attributes:
    inner: the state of the transformation that gives the direction.
    autodrop: the AutoDrop stage's state, :class:`ScaleByAutoDropState`.
  """

  inner: Any
  autodrop: ScaleByAutoDropState


def with_autodrop(inner: optax.GradientTransformation, learning_rate: float,
                  steps_per_epoch: int, *, drop_factor: float = 0.2,
                  min_learning_rate: float = 1e-4, drop_delay: int = 20, average: bool = True,
                  trigger: DropTrigger | None = None) -> optax.GradientTransformationExtraArgs:
  """``inner``'s direction scaled by AutoDrop: ``chain(inner, scale_by_autodrop(...))``.

  AutoDrop as a meta-scheme over any optimizer, in one transformation: the same updates and the
  same AutoDrop state as ``optax.chain(inner, scale_by_autodrop(learning_rate, steps_per_epoch,
  ...))``, with the two states named (:class:`WithAutoDropState`).

  Args:
    inner: the transformation whose output is the direction ``d`` (``optax.scale_by_adam()``, a
      momentum trace, a chain).
    learning_rate: as in :func:`scale_by_autodrop`.
    steps_per_epoch: as in :func:`scale_by_autodrop`.

  The keyword-only arguments ``drop_factor``, ``min_learning_rate``, ``drop_delay``,
  ``average`` and ``trigger`` (a :class:`DropTrigger`) are :func:`scale_by_autodrop`'s, with its
  defaults and ranges.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`WithAutoDropState`; its
    ``update`` requires ``params`` and passes extra keyword arguments to ``inner``.

  References:
    Teng, Wang, Choromanska, "AutoDrop: Training Deep Learning Models with Automatic Learning
    Rate Drop": Algorithm 1 ("a meta-scheme on top of any optimizer").

  Example:
    >>> opt = optax_lr.with_autodrop(optax.scale_by_adam(), 1e-3, steps_per_epoch=390)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params)
  """
  if not isinstance(inner, optax.GradientTransformation):
    raise TypeError("`inner` must be an optax.GradientTransformation; "
                    f"got {type(inner).__name__}.")
  inner = optax.with_extra_args_support(inner)
  stage_init, update_core = _autodrop_functions(
      learning_rate, steps_per_epoch, drop_factor, min_learning_rate, drop_delay, average,
      trigger)

  def init_fn(params):
    return WithAutoDropState(inner=inner.init(params), autodrop=stage_init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(NO_PARAMS_MSG)
    directions, inner_state = inner.update(updates, state.inner, params, **extra_args)
    new_updates, stage_state = update_core(state.autodrop, params, directions)
    return new_updates, WithAutoDropState(inner=inner_state, autodrop=stage_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _landing_update(average: jax.Array, params: jax.Array) -> jax.Array:
  """``average - params`` in the parameters' dtype: the update that lands on the average."""
  return (average - params).astype(params.dtype)


def _landing_updates(average: Any, params: Any) -> Any:
  return jax.tree.map(_landing_update, average, params)


def autodrop_sgd(learning_rate: float, steps_per_epoch: int, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float | None = None, *,
                 drop_factor: float = 0.2, min_learning_rate: float = 1e-4,
                 drop_delay: int = 20, average: bool = True,
                 trigger: DropTrigger | None = None) -> optax.GradientTransformationExtraArgs:
  """SGD (with momentum and coupled weight decay) whose rate is dropped by AutoDrop.

  ``chain(add_decayed_weights(weight_decay), trace(momentum, nesterov), scale_by_autodrop(...))``,
  the setting of the AutoDrop paper's experiments (momentum SGD, weight decay 5e-4, one window per
  epoch), built as :func:`with_autodrop` over the first two.

  Args:
    learning_rate: initial rate ``> 0``.
    steps_per_epoch: window length ``>= 1`` in steps.
    momentum: in ``[0, 1)``; ``None``: plain SGD, no trace.
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 weight decay ``>= 0`` (``None``, the default: no decay stage).

  The keyword-only arguments ``drop_factor``, ``min_learning_rate``, ``drop_delay``,
  ``average`` and ``trigger`` (a :class:`DropTrigger`) are :func:`scale_by_autodrop`'s, with its
  defaults and ranges. They are named rather than ``**options``, so that
  ``optax.inject_hyperparams(autodrop_sgd)`` sees and injects each number (``drop_delay`` sets
  the state's structure, so it goes in ``static_args`` there; the ``trigger`` object is passed
  through as it is).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`WithAutoDropState`
    (the SGD direction's state, then the AutoDrop state); its ``update`` requires ``params`` and
    ignores extra keyword arguments.

  References:
    Teng, Wang, Choromanska, "AutoDrop: Training Deep Learning Models with Automatic Learning
    Rate Drop": Algorithm 1 and Section 6 (momentum SGD as the base optimizer).

  Example:
    >>> opt = optax_lr.autodrop_sgd(0.1, steps_per_epoch=390, weight_decay=5e-4)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params)
  """
  direction = _base.with_coupled_weight_decay(_base.momentum_direction(momentum, nesterov),
                                             weight_decay)
  return with_autodrop(
      direction, learning_rate, steps_per_epoch, drop_factor=drop_factor,
      min_learning_rate=min_learning_rate, drop_delay=drop_delay, average=average,
      trigger=trigger)
