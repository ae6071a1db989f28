"""Memory traffic of the compiled update: no parameter-sized ``copy`` outside the loop bodies.

XLA copies a donated state buffer when it cannot prove that every read of the old value runs before
the step's in-place write (a reduction that reads the buffer and an element-wise pass that
rewrites it), and copies a non-donated input (the gradient) that becomes a state field. Each such
copy is a parameter-sized read and write on every step. The check compiles each method of the
conformance registry the way a training step does (``jax.jit(..., donate_argnums=(0, 1))`` over
params and state, ``optax.apply_updates`` included) on a small multi-leaf tree and counts, in the
compiled HLO text, the ``copy`` instructions whose size is a parameter leaf's, outside
``while`` bodies (:func:`train.bench.hlo.parameter_sized_copies`, which the overhead
benchmark reports; the window and boundary loops of ``optax_lr._tree.run_once_if`` run only at a
window's end).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lr
from tests.test_conformance import CASES
from train.bench.hlo import parameter_sized_copies

# Leaf sizes all distinct from every per-filter or per-leaf rate vector (a bias of 8 has the shape
# of its kernel's filter rates), so a matched shape is a parameter-sized buffer.
_SHAPES = {"conv": {"kernel": (3, 3, 4, 8), "bias": (8,)},
           "dense": {"kernel": (16, 5), "bias": (5,)}}
_MIN_SIZE = 64  # kernels only: a bias has the size of its kernel's filter-rate vector

# Copies that remain, per method and per parameter leaf of at least _MIN_SIZE elements (with the
# reason; see the overhead benchmark's notes): a test multiplies by its tree's count of such leaves,
# so that tests/test_sharding.py pins the same figure on its tree, per device. The counts are exact,
# so that a regression and an improvement both show. Every other method of the conformance registry
# updates its state and the parameters in place.
KNOWN_COPIES: dict[str, int] = {
    # AdaSecant writes 12 statistics per element, and several of them need another's new value
    # (the rate needs the new averages, the step the new rate and averages). XLA:CPU writes one
    # buffer per fusion and recomputes a shared element-wise value inside each consumer, which
    # then reads an old buffer after its in-place write: 4 buffers (the rates, E[g], E[a] and
    # g_{t-1}) are copied per leaf. A backend with multi-output fusion computes the statistics
    # in one pass; the library does not steer XLA:CPU's fusion to avoid them.
    "adasecant": 4, "adasecant_next_grads": 4,
}


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
  leaves = sum(x.size >= _MIN_SIZE for x in jax.tree.leaves(params))
  assert len(copies) == KNOWN_COPIES.get(case.name, 0) * leaves, "\n".join(copies)


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


def read_then_replace(ordered: bool) -> optax.GradientTransformation:
  """SGD-HD's pattern, to see the counter work: a donated buffer read by a reduction and replaced
  by the gradient in the same step; written through ``_tree.after`` when ``ordered``."""
  def init(p):
    return jax.tree.map(jnp.zeros_like, p)

  def update(g, s, p=None):
    h = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(s), strict=True))
    return jax.tree.map(lambda x: -h * x, g), (optax_lr._tree.after(g, h) if ordered else g)

  return optax.GradientTransformation(init, update)


def test_counter_sees_a_copy():
  # Unordered, the buffer is copied twice per kernel (the old buffer, and the non-donated gradient
  # into the output); written through _tree.after, not at all.
  params = _tree()
  for ordered, expected in ((False, 4), (True, 0)):
    compiled = compiled_update(read_then_replace(ordered), params)
    assert len(parameter_sized_copies(compiled.as_text(), _sizes(params))) == expected


def test_after_keeps_values():
  # The ordering helper changes no value where its tokens are not NaN (inf, -0 and NaN values
  # included, bfloat16 too), and writes zeros under a NaN token; eager and jitted.
  x = jnp.array([1.5, -0.0, jnp.inf, jnp.nan])
  for after in (optax_lr._tree.after, jax.jit(optax_lr._tree.after)):
    out = after({"a": x}, (jnp.float32(3.0), jnp.ones(3)))["a"]
    assert jnp.array_equal(out, x, equal_nan=True) and jnp.signbit(out[1])
    assert jnp.array_equal(after(x, jnp.array([1.0, jnp.nan])), jnp.zeros(4))
  half = x.astype(jnp.bfloat16)
  out = optax_lr._tree.after(half, jnp.float32(2.0))
  assert out.dtype == jnp.bfloat16 and jnp.array_equal(out, half, equal_nan=True)


def test_one_element_reads_a_scalar():
  x = jnp.arange(24.0).reshape(2, 3, 4) + 7
  assert optax_lr._tree.one_element(x).shape == () and optax_lr._tree.one_element(x) == 7
  assert optax_lr._tree.one_element(jnp.float32(5.0)) == 5
  assert optax_lr._tree.one_element(jnp.zeros((0, 3))) == 0


_FILTER_LEVEL = {
    "sgdn": lambda: optax_lr.sgd_cam_hd(0.1, momentum=0.9, nesterov=True,
                                        levels=("filter", "global")),
    "sgd_momentum": lambda: optax_lr.sgd_cam_hd(0.1, momentum=0.9, levels=("filter", "global")),
    "adam": lambda: optax_lr.adam_cam_hd(1e-3, levels=("filter", "global")),
    "sgd_multiplicative": lambda: optax_lr.sgd_cam_hd(
        0.1, hypergrad_lr=0.01, levels=("filter", "layer", "global"),
        rule=optax_lr.RateRule("multiplicative")),
}


@pytest.mark.parametrize("make", _FILTER_LEVEL.values(), ids=_FILTER_LEVEL.keys())
def test_filter_rates_not_copied(make):
  # Leaves sharing filter groups (a kernel and its bias) hold the same rate vector; each is
  # updated from its own buffer, so no donated rate vector is read by another leaf's update
  # while its own is rewritten in place (which makes XLA copy it: bias-sized copies, below the
  # parameter-sized counter's threshold, so counted here at the rate vectors' sizes).
  params = _tree()
  compiled = compiled_update(make(), params)
  assert not parameter_sized_copies(compiled.as_text(), {8, 5})
