"""Reading learning rates out of any optimizer state, for logging.

Every state of this library that owns a rate names that field ``learning_rate`` (a scalar, one per
leaf, or one per element); ``optax.inject_hyperparams`` stores its rate under the same key. The
helpers here find every such field wherever it sits in a state (chains, wrappers, masks), so a
training loop can log the rates of any optimizer without knowing its type.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_lr import _tree
from optax_lr.adasecant import BLOW_UP_RATIO

_RATE_KEY = "learning_rate"
_STEP_RATIO_KEY = "largest_step_ratio"


def _key_name(key: Any) -> str:
  for attribute in ("name", "key", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _path_name(path: tuple[Any, ...]) -> str:
  return "/".join(_key_name(k) for k in path)


def learning_rates(opt_state: Any) -> dict[str, jax.Array]:
  """Every learning-rate field found anywhere in an optimizer state, keyed by its path.

  A field that holds a tree of rates (one per leaf, or per level) contributes one entry per leaf
  of that tree. Only floating-point leaves are rates: integer leaves under such a field (the step
  counter ``inject_hyperparams`` keeps for a scheduled ``learning_rate``) are left out. Keys are
  ``/``-joined paths such as ``"1/learning_rate"`` or
  ``"inner_state/learning_rate/params/Dense_0/kernel"``; each contains ``learning_rate``. Values
  are the arrays themselves (no host copy).

  Args:
    opt_state: the state of any optax transformation.

  Returns:
    A dict from path to rate array; empty when the state holds no rate.

  Example:
    >>> opt = optax_lr.tlr_sgd(0.1)
    >>> state = opt.init({"w": jnp.zeros(3)})
    >>> optax_lr.learning_rates(state)
    {'learning_rate': Array(0.1, dtype=float32)}
  """
  found = optax.tree.get_all_with_path(opt_state, _RATE_KEY)
  rates: dict[str, jax.Array] = {}
  for path, value in found:
    prefix = _path_name(path)
    leaves, _ = jax.tree_util.tree_flatten_with_path(value)
    for subpath, leaf in leaves:
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        continue
      name = prefix + ("/" + _path_name(subpath) if subpath else "")
      rates[name] = leaf
  return rates


def rate_summary(rates: Any) -> dict[str, jax.Array]:
  """Mean, min, max and Euclidean norm over every element of a tree of rates.

  Computed on device (no host copies), so it can be called inside ``jit``. The norm is the
  quantity the AdaSecant thesis plots (Figures 4.21-4.22).

  Args:
    rates: a rate array or tree of rate arrays (for example a per-element ``learning_rate``).

  Returns:
    ``{"mean", "min", "max", "norm"}`` float32 scalars over the elements of the non-empty leaves
    (size-0 leaves hold no rate and are left out; when every leaf is empty, mean, min and max are
    NaN and the norm 0).
  """
  leaves = [jnp.asarray(x, _tree.RATE_DTYPE) for x in jax.tree.leaves(rates)]
  if not leaves:
    raise ValueError("`rates` must contain at least one array; got an empty tree.")
  # Size-0 leaves (an empty bias, a zero-width layer) hold no rate: they are left out of every
  # statistic (min and max of an empty array have no value).
  leaves = [x for x in leaves if x.size]
  if not leaves:
    nan = jnp.full((), jnp.nan, _tree.RATE_DTYPE)
    return {"mean": nan, "min": nan, "max": nan, "norm": jnp.zeros((), _tree.RATE_DTYPE)}
  count = sum(x.size for x in leaves)
  total = sum(jnp.sum(x) for x in leaves)
  return {
      "mean": total / count,
      "min": jnp.min(jnp.stack([jnp.min(x) for x in leaves])),
      "max": jnp.max(jnp.stack([jnp.max(x) for x in leaves])),
      "norm": jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves)),
  }


def largest_step_ratio(opt_state: Any) -> jax.Array | None:
  """The largest ``largest_step_ratio`` field anywhere in an optimizer state, or None without one.

  AdaSecant and Simple AdaSecant keep this field: the largest ratio, over the updates taken, of an
  update's norm to the norm of the first update, the one the rule takes before it has measured
  any curvature (see :func:`optax_lr.adasecant` and :func:`optax_lr.simple_adasecant`, "Blow-up
  test", for the derivation and its limits).

  Args:
    opt_state: the state of any optax transformation.

  Returns:
    A float32 scalar (no host copy), or None when the state holds no such field.
  """
  found = [jnp.asarray(value, _tree.RATE_DTYPE)
           for _, value in optax.tree.get_all_with_path(opt_state, _STEP_RATIO_KEY)]
  if not found:
    return None
  return jnp.max(jnp.stack(found))


def blown_up(opt_state: Any) -> jax.Array:
  """Whether a method in ``opt_state`` has reported a blow-up: a step more than
  ``BLOW_UP_RATIO = 10`` times longer than its first step.

  Reads every ``largest_step_ratio`` field (AdaSecant, Simple AdaSecant, wherever they sit in a
  chain or wrapper); a state without one never reports a blow-up. The test is the method's own
  and needs no loss: the training loop's divergence rule (``train.reporting.divergence``) judges
  the loss.

  Args:
    opt_state: the state of any optax transformation.

  Returns:
    A boolean scalar (traceable: usable inside ``jit``).

  Example:
    >>> opt = optax_lr.simple_adasecant()
    >>> state = opt.init({"w": jnp.ones(3)})
    >>> optax_lr.blown_up(state)
    Array(False, dtype=bool)
  """
  ratio = largest_step_ratio(opt_state)
  if ratio is None:
    return jnp.zeros((), jnp.bool_)
  return ratio > BLOW_UP_RATIO
