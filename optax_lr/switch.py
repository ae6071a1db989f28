"""``switch_at``: one transformation before a step boundary, another from it on.

The hybrid of Sasse's thesis, Section 4.5.2: SGD with cyclical rates for the first 13 epochs
of a 25-cycle, to escape sharp minima, then Simple AdaSecant as the local optimizer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_lr import _checks, _tree


class SwitchState(NamedTuple):
  """State of :func:`switch_at`.

  Attributes:
    count: int32, number of updates taken.
    first_state: the state of ``first`` (frozen from ``boundary_step`` on).
    second_state: the state of ``second`` (untouched, as ``init`` made it, before the boundary).
  """

  count: jax.Array
  first_state: Any
  second_state: Any


def switch_at(boundary_step: int, first: optax.GradientTransformation,
              second: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Use ``first`` for steps ``< boundary_step`` (counting from 0), then ``second``.

  Both states are kept in :class:`SwitchState`; only the active transformation's state advances,
  so ``second`` starts from its fresh ``init`` state at the boundary (its own step counters and
  schedules start there) and ``first``'s state is frozen. Each transformation runs in a loop of at
  most one iteration on the step count (a conditional run once, the semantics of
  ``jax.lax.cond`` with every state buffer updated in place): only the active one runs, and the
  idle state is left bit-identical. Under ``vmap`` with a batched step count both run, each
  element keeping its idle state. Extra ``update`` arguments (``next_grads``, ``value``, ...) are
  forwarded to both (``optax.with_extra_args_support``).

  Args:
    boundary_step: integer ``>= 0``; 0 means ``second`` from the start.
    first: the transformation for steps ``[0, boundary_step)``.
    second: the transformation from ``boundary_step`` on.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Updates keep the gradients' dtypes, and each
    transformation's state keeps the dtypes ``init`` gave it (integer leaves included).

  References:
    Sasse's thesis, Section 4.5.2 and Figure 4.21 (13 epochs of CLR-SGD, then Simple
    AdaSecant).

  Example:
    >>> steps_per_epoch = 391
    >>> opt = optax_lr.switch_at(
    ...     13 * steps_per_epoch,
    ...     optax.sgd(optax_lr.n_cycle_schedule(1e-3, 1.0, 25, steps_per_epoch)),
    ...     optax_lr.simple_adasecant(threshold=10.0))
  """
  _checks.integer_at_least("boundary_step", boundary_step, 0)
  for name, transform in (("first", first), ("second", second)):
    if not isinstance(transform, optax.GradientTransformation):
      raise TypeError(f"`{name}` must be an optax.GradientTransformation; got {transform!r}.")
  first = optax.with_extra_args_support(first)
  second = optax.with_extra_args_support(second)

  def init_fn(params):
    return SwitchState(count=jnp.zeros((), jnp.int32), first_state=first.init(params),
                       second_state=second.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    def like_grads(new_updates):
      return jax.tree.map(_cast_like, new_updates, updates)

    def like_before(new_state, old_state):
      # A loop's body must return its carry's types. A transformation whose state changes dtype on
      # its first update (optax.adam's moments of an integer leaf start as integers and come back
      # as floats) would not, so each state keeps its dtypes from init.
      return jax.tree.map(_cast_like, new_state, old_state)

    def run(transform):
      def body(carry):
        _, transform_state = carry
        new_updates, new_state = transform.update(updates, transform_state, params, **extra_args)
        return like_grads(new_updates), like_before(new_state, transform_state)
      return body

    # Exactly one of the two loops runs, so the updates' initial value is never returned.
    before = state.count < boundary_step
    new_updates, first_state = _tree.run_once_if(
        before, run(first), (_placeholders(updates), state.first_state))
    new_updates, second_state = _tree.run_once_if(
        ~before, run(second), (new_updates, state.second_state))
    return new_updates, SwitchState(count=optax.safe_int32_increment(state.count),
                                    first_state=first_state, second_state=second_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _cast_like(new: jax.Array, like: jax.Array) -> jax.Array:
  """``new`` in the dtype of ``like``; gradients of integer leaves (``float0``) pass through."""
  like_dtype = jnp.asarray(like).dtype
  if like_dtype == jax.dtypes.float0 or jnp.asarray(new).dtype == jax.dtypes.float0:
    return new
  return jnp.asarray(new).astype(like_dtype)


def _placeholders(updates: Any) -> Any:
  """Arrays shaped like ``updates``, the loops' initial carry, never returned.

  Each leaf is the broadcast of one element of its own gradient (one scalar read, under sharding
  too), not zeros: equal broadcasts are merged, and two loop carries that start from one buffer
  are each given a copy of it. Gradients of integer leaves (``float0``) and empty leaves stand
  for themselves.
  """
  def leaf(g):
    g = jnp.asarray(g)
    if g.size == 0 or g.dtype == jax.dtypes.float0:
      return g
    return jnp.broadcast_to(_tree.one_element(g), g.shape)
  return jax.tree.map(leaf, updates)
