"""Tree math shared by every method of the library.

One helper per operation (a global inner product, per-leaf inner products, fresh zero buffers, the
guarded division, scaling directions by a rate, keeping a rate when its step is not finite), so
that every method computes them the same way: reductions accumulate in float32 (float64 for
float64 inputs) whatever the parameter dtype, and updates keep each leaf's dtype.

Non-finite input. :func:`where_finite` is the one mechanism every method uses for "a step whose
hypergradient, Newton term or secant statistic is not finite leaves that rate (or statistic)
unchanged": the method computes its new rate as usual and passes it with the old one; where the new
value is NaN or infinite the old one is kept, in the old one's dtype. One inf or NaN gradient
element therefore costs at most that step's rate update, never the rate itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

# Rates and reductions are kept in float32 even for bf16 parameters: a bf16 rate cannot represent
# a hypergradient step of 1e-8, and a bf16 sum over millions of elements loses every digit.
# Updates are cast back to each leaf's dtype, so nothing promotes a bf16 model to float32.
RATE_DTYPE = jnp.float32


def _as_float32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.promote_types(jnp.asarray(x).dtype, RATE_DTYPE))


def rate_dtype(tree: PyTree) -> jnp.dtype:
  """The dtype of rates for parameters ``tree``: float32, or float64 when a leaf is float64.

  Float16 and bfloat16 parameters get float32 rates (see ``RATE_DTYPE``); float64 parameters
  (under ``jax_enable_x64``) get float64 rates, so that the float64 reductions of ``update`` do
  not change the state's dtype after ``init`` (which would recompile ``jit`` and break
  ``lax.scan``).
  """
  dtype = RATE_DTYPE
  for leaf in jax.tree.leaves(tree):
    leaf_dtype = jnp.asarray(leaf).dtype
    if jnp.issubdtype(leaf_dtype, jnp.floating):
      dtype = jnp.promote_types(dtype, leaf_dtype)
  return dtype


def full_rate(value: Any, dtype: Any) -> jax.Array:
  """A fresh scalar rate holding ``value`` (a number or an injected 0-d array) in ``dtype``.

  Per-element or per-filter rates are built from their parameter instead (``jnp.full_like``,
  :func:`per_filter_like`), so that they keep its sharding.
  """
  return jnp.full((), jnp.asarray(value).astype(dtype), dtype)


def where_finite(new: PyTree, old: PyTree, *, jointly: bool = False,
                 finite: PyTree | None = None) -> PyTree:
  """``new`` where it is finite, else ``old``, leafwise, in the dtypes of ``old``.

  The library's guard for rate and statistic updates: a step whose input (hypergradient, Newton
  term, secant statistic) is NaN or infinite leaves the value it would update unchanged. With
  ``jointly`` the whole of each leaf is kept when any of its elements is not finite (for values
  that only make sense together, such as combination weights on a simplex).

  Args:
    new: the updated values.
    old: the values before the update, same structure (scalars broadcast against arrays).
    jointly: keep each leaf of ``old`` whole when any element of ``new`` is not finite.
    finite: optional boolean mask (one leaf, broadcast to every leaf of ``new``): the step's
      inputs were finite; values where it is False are kept too. For several statistics of one
      element updated together, so that they stay consistent.

  Returns:
    A tree with the structure and dtypes of ``old``.
  """
  def keep(n, o):
    n = jnp.asarray(n)
    o = jnp.asarray(o)
    ok = jnp.isfinite(n)
    if finite is not None:
      ok = ok & finite
    if jointly:
      ok = jnp.all(ok)
    return jnp.where(ok, n, o).astype(o.dtype)

  return jax.tree.map(keep, new, old)


def after(tree: PyTree, tokens: PyTree) -> PyTree:
  """``tree`` itself, each leaf written by an operation that depends on ``tokens``.

  The library's one ordering helper. A state buffer that a step reads (in a reduction, or in the
  pass that computes the new rates) and rewrites in place must be rewritten after every read.
  XLA's copy insertion (shared by its backends) keeps the in-place write only when it can prove
  that order from the data flow; otherwise it copies the donated buffer on every step, a
  parameter-sized read and write per leaf. Writing the new value through
  ``where(no token is NaN, value, 0)`` makes the write depend on the reads' results, so the
  buffer is updated in place; the select reads ``value`` and scalars only.

  ``tokens`` are small: the new rates (scalars, per-layer or per-filter), a sum, or one element
  of an element-wise result (:func:`one_element`), so that under sharding the dependency moves
  no more than those.
  The value is exact wherever no token is NaN; rates kept by :func:`where_finite` never are, and
  a NaN token (a NaN initial rate, which poisons every update anyway) writes zeros.

  Args:
    tree: the new values of the buffer.
    tokens: a tree of small arrays computed from every read of the old buffer.

  Returns:
    ``tree``, leafwise in its dtypes.
  """
  later = functools.reduce(jnp.logical_and,
                           [~jnp.any(jnp.isnan(t)) for t in jax.tree.leaves(tokens)],
                           jnp.ones((), jnp.bool_))
  return jax.tree.map(lambda x: jnp.where(later, x, jnp.zeros((), jnp.asarray(x).dtype)), tree)


def one_element(x: jax.Array) -> jax.Array:
  """The first element of ``x`` as a scalar: an :func:`after` token for an element-wise pass.

  Indexing one element moves one scalar under sharding (never the array).
  """
  x = jnp.asarray(x)
  return x[(0,) * x.ndim] if x.size else jnp.zeros((), x.dtype)


def finite_or_zero(tree: PyTree) -> PyTree:
  """Each non-finite element replaced by 0: a missing value in a sum or a moving average input."""
  return jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, jnp.zeros((), jnp.asarray(x).dtype)),
                      tree)


def leaf_vdots(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Per-leaf inner products ``<x_l, y_l>`` (float32 accumulation), one scalar per leaf.

  Each is a ``jnp.sum`` over its leaf, so under sharding a leaf's partial sums are combined as
  one scalar; the tree's total adds those scalars.
  """
  return jax.tree.map(lambda x, y: jnp.sum(_as_float32(x) * _as_float32(y)), tree_x, tree_y)


def vdot(tree_x: PyTree, tree_y: PyTree) -> jax.Array:
  """Global inner product ``<x, y>`` over the whole tree (float32 accumulation)."""
  return sum(jax.tree.leaves(leaf_vdots(tree_x, tree_y)), jnp.zeros((), RATE_DTYPE))


def squared_norm(tree: PyTree) -> jax.Array:
  """Global squared Euclidean norm ``||x||^2`` (float32 accumulation)."""
  return vdot(tree, tree)


def power_of_two_scale(max_abs: jax.Array) -> jax.Array:
  """A power of two near ``max_abs`` (1 for 0 or non-finite values), at most ``max_abs``.

  Dividing by a power of two is exact (no rounding, short of underflow), so a quotient by it
  keeps every digit while bringing ``|x| <= max_abs`` to ``|x / s| < 2`` (about).
  """
  usable = (max_abs > 0) & jnp.isfinite(max_abs)
  exponent = jnp.floor(jnp.log2(jnp.where(usable, max_abs, 1.0)))
  return jnp.exp2(exponent).astype(max_abs.dtype)


def scale_invariant_dots(tree_x: PyTree, tree_y: PyTree, per_leaf: bool = False):
  """``(<x, y>, ||x||^2)`` up to one common positive factor, finite for any finite input.

  For quantities that depend only on the ratio of the two (the TLR Newton factor): computed as
  :func:`vdot` and :func:`squared_norm` (per leaf when ``per_leaf``), and, only where that
  overflows (gradients of 1e19 and more overflow a float32 sum of squares), recomputed from
  ``x / s`` and ``y / s`` with ``s`` a power of two near the largest ``|x|, |y|`` element, so
  the pair is then ``(<x, y> / s^2, ||x||^2 / s^2)``: the same ratio, without overflow. The
  rescaled pass runs under ``lax.cond``, so the common case costs nothing extra. A
  non-finite element (inf or NaN) still gives a non-finite pair, which the caller's
  :func:`where_finite` turns into "rate unchanged".

  Returns:
    Two float32 (float64 for float64 input) scalars, or two trees of per-leaf scalars.
  """
  def pair(xs, ys):
    xs, ys = _as_float32(xs), _as_float32(ys)
    return jnp.stack([jnp.sum(xs * ys), jnp.sum(xs * xs)])

  def leaf_max(x, y):
    return jnp.maximum(jnp.max(jnp.abs(_as_float32(x)), initial=0.0),
                       jnp.max(jnp.abs(_as_float32(y)), initial=0.0))

  def rescaled(_):
    # Closes over the inputs: only the two results travel through the loop's carry.
    maxima = jax.tree.map(leaf_max, tree_x, tree_y)
    if per_leaf:
      return jax.tree.map(lambda x, y, m: pair(_as_float32(x) / power_of_two_scale(m),
                                               _as_float32(y) / power_of_two_scale(m)),
                          tree_x, tree_y, maxima)
    s = power_of_two_scale(functools.reduce(jnp.maximum, jax.tree.leaves(maxima)))
    xs = jax.tree.map(lambda x: _as_float32(x) / s, tree_x)
    ys = jax.tree.map(lambda y: _as_float32(y) / s, tree_y)
    return jnp.stack([vdot(xs, ys), squared_norm(xs)])

  if per_leaf:
    first = jax.tree.map(pair, tree_x, tree_y)
  else:
    first = jnp.stack([vdot(tree_x, tree_y), squared_norm(tree_x)])
  overflowed = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(first)]))
  result = jax.lax.cond(overflowed, rescaled, lambda _: first, None)
  if per_leaf:
    return jax.tree.map(lambda r: r[0], result), jax.tree.map(lambda r: r[1], result)
  return result[0], result[1]


def zeros_like(tree: PyTree) -> PyTree:
  """Fresh zero buffers shaped like ``tree``, each with its leaf's sharding.

  Every call allocates new arrays: no buffer is shared with ``tree`` or with another state field,
  so a training step can donate both the parameters and the optimizer state. Made with
  ``jnp.zeros_like``, so a state buffer of a sharded parameter is sharded the same way, eagerly
  and under ``jit``.
  """
  return jax.tree.map(jnp.zeros_like, tree)


def per_filter_like(x: jax.Array, value: Any, dtype: Any) -> jax.Array:
  """A fresh vector holding ``value``, one element per index of ``x``'s last axis.

  Built from ``x``'s first row along its leading axes (one per-filter vector read, never the
  whole parameter), so that a kernel sharded on its filter axis gets filter values sharded the
  same way. A 0-d ``x`` gives a scalar.
  """
  x = jnp.asarray(x)
  row = x[(0,) * (x.ndim - 1)] if x.ndim > 1 else x
  return jnp.full_like(row, value, dtype=dtype)


def scalar_per_leaf(tree: PyTree, value: float | jax.Array) -> PyTree:
  """One rate scalar per leaf of ``tree`` (float32, float64 for a float64 leaf), fresh buffers."""
  return jax.tree.map(lambda x: full_rate(value, rate_dtype(x)), tree)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """``numerator / denominator``, and 0 where the denominator is 0 (guards 0/0 and x/0)."""
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def scale_by_rate(learning_rate: PyTree, directions: PyTree, per_leaf: bool) -> PyTree:
  """The applied update ``-learning_rate * d``, in each direction leaf's dtype.

  ``learning_rate`` is one scalar when ``per_leaf`` is False, otherwise a tree of rates (scalars or
  arrays broadcastable to their leaf) with the structure of ``directions``.
  """
  if per_leaf:
    return jax.tree.map(lambda r, d: (-r * d).astype(d.dtype), learning_rate, directions)
  return jax.tree.map(lambda d: (-learning_rate * d).astype(d.dtype), directions)


def tree_add(tree_x: PyTree, tree_y: PyTree) -> PyTree:
  """Leafwise ``x + y`` in the dtype of ``x``."""
  return jax.tree.map(lambda x, y: (x + y).astype(x.dtype), tree_x, tree_y)


def run_once_if(predicate: jax.Array, body: Callable[[Any], Any], operand: Any) -> Any:
  """``body(operand)`` when ``predicate`` holds, else ``operand`` unchanged.

  The semantics of ``lax.cond(predicate, body, identity, operand)``, for work that runs at a
  window's end and rewrites parameter-sized state (TLR's window sums, AutoDrop's anchor and
  average, ``switch_at``'s states). Written as a while loop of at most one iteration: XLA updates
  a loop's carried buffers in place, whereas a conditional whose branches place buffers in
  different outputs (the identity passes a buffer through, the body moves or replaces it) makes
  XLA's copy insertion, which every backend runs, copy each such buffer on every step, whichever
  branch is taken. (A while loop is not reverse-differentiable; nothing differentiates an
  optimizer's rate bookkeeping here.)
  """
  def cond_fn(carry):
    return carry[0]

  def body_fn(carry):
    return jnp.zeros((), jnp.bool_), body(carry[1])

  return jax.lax.while_loop(cond_fn, body_fn, (predicate, operand))[1]
