"""Memory traffic of the compiled update: no parameter-sized ``copy`` outside the loop bodies.

XLA copies a donated state buffer when it cannot prove that every read of the old value runs before
the step's in-place write (a reduction that reads the buffer and an element-wise pass that
rewrites it), and copies a non-donated input (the gradient) that becomes a state field. Each such
copy is a parameter-sized read and write on every step. The check compiles each method of the
conformance registry the way a training step does (``jax.jit(..., donate_argnums=(0, 1))`` over
params and state, ``optax.apply_updates`` included) on a small multi-leaf tree and counts, in the
compiled HLO text, the ``copy`` instructions whose size is a parameter leaf's, outside
``while`` bodies (:func:`train.bench.overhead.parameter_sized_copies`, which the overhead
benchmark reports) (the window and boundary loops of ``optax_lr._tree.run_once_if``, which run
only at a window's end).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lr
from tests.test_conformance import CASES
from train.bench.overhead import parameter_sized_copies

# Leaf sizes all distinct from every per-filter or per-leaf rate vector (a bias of 8 has the shape
# of its kernel's filter rates), so a matched shape is a parameter-sized buffer.
_SHAPES = {"conv": {"kernel": (3, 3, 4, 8), "bias": (8,)},
           "dense": {"kernel": (16, 5), "bias": (5,)}}
_MIN_SIZE = 64  # kernels only: a bias has the size of its kernel's filter-rate vector

# Copies that remain, per method, with the reason (see the overhead benchmark's notes). The
# counts are exact, so that a regression and an improvement both show. Two kernels per tree:
# a count of 2 is one parameter-sized copy per kernel. None remains: every method of the
# conformance registry updates its state and the parameters in place.
KNOWN_COPIES: dict[str, int] = {}


def _tree():
  keys = iter(jax.random.split(jax.random.key(0), 4))
  return jax.tree.map(lambda shape: jax.random.normal(next(keys), shape), _SHAPES,
                      is_leaf=lambda x: isinstance(x, tuple))


def compiled_update(opt, params, extra_args=lambda grad_fn, params: {}):
  """The donated, jitted ``update + apply_updates`` step, compiled for ``params``."""
  grad_fn = jax.grad(lambda p: sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p)))

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params, **extra_args(grad_fn, params))
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  return jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grad_fn(params)).compile()


def _sizes(params):
  return {x.size for x in jax.tree.leaves(params) if x.size >= _MIN_SIZE}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_no_parameter_sized_copy(case):
  params = _tree()
  compiled = compiled_update(case.make(), params, case.extra_args)
  copies = parameter_sized_copies(compiled.as_text(), _sizes(params))
  assert len(copies) == KNOWN_COPIES.get(case.name, 0), "\n".join(copies)


def test_switch_at_copies_nothing_in_its_loops():
  # switch_at runs one of its two loops on every step, so their bodies count too. With lax.cond
  # over both states (the earlier form) this tree had 8 copies: each state buffer that the idle
  # branch passed through, and each state buffer out of the cond into the donated output.
  params = _tree()
  for boundary in (0, 5):
    opt = optax_lr.switch_at(boundary, optax.sgd(0.1, momentum=0.9), optax_lr.simple_adasecant())
    hlo = compiled_update(opt, params).as_text()
    assert "while" in hlo
    assert parameter_sized_copies(hlo, _sizes(params), loops=True) == []


def test_counter_sees_a_copy():
  # The counter itself, on SGD-HD's pattern: a donated buffer read by a reduction and replaced by
  # the (non-donated) gradient in the same step is copied twice per kernel (the old buffer, and
  # the gradient into the output); written through _tree.written_after, not at all.
  params = _tree()

  def transform(ordered):
    def init(p):
      return jax.tree.map(jnp.zeros_like, p)

    def update(g, s, p=None):
      h = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(s),
                                              strict=True))
      return jax.tree.map(lambda x: -h * x, g), (optax_lr._tree.written_after(g, h) if ordered
                                                  else g)

    return optax.GradientTransformation(init, update)

  for ordered, expected in ((False, 4), (True, 0)):
    compiled = compiled_update(transform(ordered), params)
    assert len(parameter_sized_copies(compiled.as_text(), _sizes(params))) == expected


def test_written_after_keeps_values():
  # The ordering helper changes no value where its tokens are not NaN (inf, -0 and NaN values
  # included), and writes zeros under a NaN token.
  x = jnp.array([1.5, -0.0, jnp.inf, jnp.nan])
  out = optax_lr._tree.written_after({"a": x}, jnp.float32(3.0))["a"]
  assert jnp.array_equal(out, x, equal_nan=True)
  assert jnp.signbit(out[1])
  per_element = optax_lr._tree.written_after(x, (), jnp.array([0.0, 1.0, 2.0, jnp.nan]))
  assert jnp.array_equal(per_element, jnp.array([1.5, -0.0, jnp.inf, 0.0]))
  assert jnp.array_equal(optax_lr._tree.written_after(x, jnp.float32(jnp.nan)), jnp.zeros(4))
