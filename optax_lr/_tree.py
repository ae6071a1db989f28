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


def full_rate(value: Any, dtype: Any, shape: tuple[int, ...] = ()) -> jax.Array:
  """A fresh rate buffer holding ``value`` (a number or an injected 0-d array) in ``dtype``."""
  return jnp.full(shape, jnp.asarray(value).astype(dtype), dtype)


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


def written_after(tree: PyTree, tokens: PyTree, elementwise: PyTree | None = None, *,
                  read_back: bool = False) -> PyTree:
  """``tree`` itself, each leaf computed by an operation that reads ``tokens``.

  For a state buffer that reductions read and the same step rewrites: a donated buffer ``b``
  read by the computations behind ``tokens`` (the new rates) and overwritten by this step's value
  makes XLA copy ``b`` on every step (copy insertion cannot prove the overwrite runs after every
  read), and, when the new value is an input that is not donated (the gradient), copy that input
  into the output as well. Writing the value through ``where(no token is NaN, value, 0)`` makes
  the write depend on every read, so XLA updates the buffer in place inside the element-wise
  fusion (no extra bytes: the select reads ``value`` and scalars only). The value is exact
  whenever no token is NaN: rates kept by :func:`where_finite` never are; a NaN token (a NaN
  initial rate, which poisons every update anyway) writes zeros.

  Args:
    tree: the new values of the buffer.
    tokens: a tree of (small) arrays computed from every read of the old buffer, typically the
      new rates.
    elementwise: optional tree with the structure of ``tree`` of arrays broadcastable to its
      leaves (per-element rates), also read before the write, element by element.
    read_back: the same step also reads the written value (the update reads the direction it
      stores). XLA:CPU, which has no multi-output fusion, recomputes an element-wise value inside
      each of its consumers, so the update would read the value's inputs again (a Nesterov
      direction: the gradient and the new trace, one buffer more per element than the written
      direction). With ``read_back`` the value is written as ``value / 1`` (exact for every
      float, inf, -0 and NaN included; a subnormal as the backend's arithmetic gives it: XLA:CPU
      flushes it to zero in every operation, so any computation reading it sees the same), and
      XLA never duplicates a division into its consumers: they read the written buffer. The
      divisor is element-wise, as XLA turns a division by a broadcast scalar into a
      multiplication, which it does duplicate. A NaN token then writes NaN (``value / NaN``)
      instead of zeros; a NaN ``elementwise`` element still writes 0.

  Returns:
    ``tree``, leafwise in its dtypes.
  """
  later = functools.reduce(jnp.logical_and,
                           [~jnp.any(jnp.isnan(t)) for t in jax.tree.leaves(tokens)],
                           jnp.ones((), jnp.bool_))
  if read_back:
    def divided(x, e=None):
      x = jnp.asarray(x)
      if e is not None:
        x = jnp.where(jnp.isnan(e), jnp.zeros((), x.dtype), x)
      # Element-wise (a NaN element divides by 1: NaN either way), see above.
      one = jnp.where(later | jnp.isnan(x), jnp.ones((), x.dtype), jnp.full((), jnp.nan, x.dtype))
      return x / one

    if elementwise is None:
      return jax.tree.map(divided, tree)
    return jax.tree.map(divided, tree, elementwise)
  if elementwise is None:
    return jax.tree.map(lambda x: jnp.where(later, x, jnp.zeros((), jnp.asarray(x).dtype)), tree)
  return jax.tree.map(
      lambda x, e: jnp.where(later & ~jnp.isnan(e), x, jnp.zeros((), jnp.asarray(x).dtype)),
      tree, elementwise)


def first_elements(tree: PyTree) -> list[jax.Array]:
  """One element of each leaf of ``tree`` (a ``(1,)`` array each): :func:`written_after` tokens.

  For a write that must wait for an element-wise pass: when the pass computing ``tree`` reads a
  buffer that the write overwrites in place (the old moments, read by the per-element rate
  update), ``written_after(buffer, first_elements(tree))`` makes the write depend on that pass
  while reading one element of its output, not all of it (as the ``elementwise`` argument
  would). XLA then orders the in-place write after the pass instead of copying the buffer.
  """
  return [jnp.ravel(x)[:1] for x in jax.tree.leaves(tree)]


def finite_or_zero(tree: PyTree) -> PyTree:
  """Each non-finite element replaced by 0: a missing value in a sum or a moving average input."""
  return jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, jnp.zeros((), jnp.asarray(x).dtype)),
                      tree)


def fused_sum(x: jax.Array, axis: Any = None) -> jax.Array:
  """``jnp.sum(x, axis)`` (all axes when None), as a reduction that computes ``x`` inside it.

  XLA:CPU (jax 0.10) hands a single-operand sum over a large array to its YNNPACK library fusion,
  which takes neither an element-wise select nor a broadcast scalar from its producer: the
  producer of ``x`` (Adam's direction from its moments and bias corrections) is then written to a
  temporary array and read back, 8 bytes per element for nothing. A two-operand reduction stays
  XLA's own reduction fusion, which computes the producer element by element inside the
  reduction. Both operands are ``x`` and both results are used (their select keeps XLA from
  dropping the second): the sum of ``x`` in XLA's own reduction order, at one more add per
  element and no memory. Only for such a computed ``x``: on a stored operand the library fusion
  is faster (XLA's own reduction loop is not vectorised like it).
  """
  x = jnp.asarray(x)
  if not x.ndim:
    return x
  axes = tuple(range(x.ndim)) if axis is None else tuple(axis)
  if not axes:
    return x
  first, second = joint_sums(x, x, axis=axes)
  # Equal (the same sums), or both NaN: the value of either.
  return jnp.where(first == second, first, second)


def joint_sums(*xs: jax.Array, axis: Any = None) -> tuple[jax.Array, ...]:
  """The sums of same-shaped arrays over ``axis`` (all axes when None) as one reduction.

  One pass reads every input (and computes any producer of them inside the reduction); each sum
  in XLA's own reduction order. A 0-d input, or no axis, gives the inputs themselves.
  """
  xs = tuple(jnp.asarray(x) for x in xs)
  if not xs[0].ndim:
    return xs
  axes = tuple(range(xs[0].ndim)) if axis is None else tuple(axis)
  if not axes:
    return xs
  return tuple(jax.lax.reduce(xs, tuple(jnp.zeros((), x.dtype) for x in xs),
                              lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)),
                              axes))


def leaf_vdots(tree_x: PyTree, tree_y: PyTree, fused: bool = False) -> PyTree:
  """Per-leaf inner products ``<x_l, y_l>`` (float32 accumulation), one scalar per leaf.

  ``fused``: each in a reduction that computes ``x`` and ``y`` inside it (:func:`fused_sum`),
  for a ``y`` computed element-wise from buffers (Adam's direction from its moments), which is
  then never stored. Otherwise ``jnp.sum``, which XLA:CPU runs faster on stored operands (its
  own reduction loop is not vectorised like the library fusion: 7 ms against 2.3 ms for
  ``<g, g>`` over 11.2M float32 parameters).
  """
  total = fused_sum if fused else jnp.sum
  return jax.tree.map(lambda x, y: total(_as_float32(x) * _as_float32(y)), tree_x, tree_y)


def vdot(tree_x: PyTree, tree_y: PyTree, fused: bool = False) -> jax.Array:
  """Global inner product ``<x, y>`` over the whole tree (float32 accumulation).

  ``fused``: as :func:`leaf_vdots`.
  """
  return sum(jax.tree.leaves(leaf_vdots(tree_x, tree_y, fused)), jnp.zeros((), RATE_DTYPE))


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
  rescaled pass runs inside :func:`run_once_if`, so the common case costs nothing extra. A
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
  result = run_once_if(overflowed, rescaled, first)
  if per_leaf:
    return jax.tree.map(lambda r: r[0], result), jax.tree.map(lambda r: r[1], result)
  return result[0], result[1]


def zeros_like(tree: PyTree) -> PyTree:
  """Fresh zero buffers shaped like ``tree``.

  Every call allocates new arrays: no buffer is shared with ``tree`` or with another state field,
  so a training step can donate both the parameters and the optimizer state.
  """
  return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.asarray(x).dtype), tree)


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


def run_once_if(predicate: jax.Array, body, operand):
  """``body(operand)`` when ``predicate`` holds, else ``operand`` unchanged.

  The semantics of ``lax.cond(predicate, body, identity, operand)``, written as a while loop of at
  most one iteration because XLA keeps a loop's carried buffers in place. With ``lax.cond``, XLA
  copies every parameter-sized buffer that one branch passes through while the other rewrites it
  from another buffer, on every step (jax 0.10, XLA:CPU: a 12.5M-parameter SGD step went from
  7 ms to 70-170 ms). In a loop those copies sit in the body, which runs only when ``predicate``
  holds. (A while loop is not reverse-differentiable; nothing differentiates an optimizer's rate
  bookkeeping here.)
  """
  def cond_fn(carry):
    return carry[0]

  def body_fn(carry):
    return jnp.zeros((), jnp.bool_), body(carry[1])

  return jax.lax.while_loop(cond_fn, body_fn, (predicate, operand))[1]
