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
from train.bench.overhead import compiled_figures, parameter_sized_copies

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


def test_written_after_read_back_keeps_values():
  # The read-back form divides by 1: every float unchanged, bit for bit (inf, -0, NaN,
  # bfloat16 included), and a subnormal kept or as the backend's own arithmetic gives it
  # (XLA:CPU flushes subnormals to zero in every operation, so a computation reading it sees the
  # same value); a NaN token writes NaN, a NaN per-element token 0 (as without read_back).
  # Eager and jitted, with the token known to the compiler and not.
  x = jnp.array([1.5, -0.0, jnp.inf, -jnp.inf, jnp.nan, 1e-40, -1e-40], jnp.float32)
  bits = lambda a: jax.lax.bitcast_convert_type(a, jnp.int32)
  as_computed = jax.jit(lambda x, one: x * one)(x, jnp.float32(1.0))  # a runtime 1
  read_back = lambda x, token: optax_lr._tree.written_after({"a": x}, token,
                                                            read_back=True)["a"]
  for out in (read_back(x, jnp.float32(3.0)), jax.jit(read_back)(x, jnp.float32(3.0)),
              jax.jit(lambda x: read_back(x, jnp.float32(3.0)))(x)):
    assert out.dtype == x.dtype
    assert jnp.array_equal(bits(out[:5]), bits(x[:5]))
    assert jnp.all((bits(out) == bits(x)) | (bits(out) == bits(as_computed)))
  half = x.astype(jnp.bfloat16)[:5]
  out = optax_lr._tree.written_after(half, jnp.float32(3.0), read_back=True)
  assert out.dtype == jnp.bfloat16 and jnp.array_equal(out, half, equal_nan=True)
  assert jnp.all(jnp.isnan(read_back(x, jnp.float32(jnp.nan))))
  per_element = optax_lr._tree.written_after(
      x[:5], (), jnp.array([0.0, 1.0, jnp.nan, 2.0, 3.0]), read_back=True)
  assert jnp.array_equal(per_element, jnp.array([1.5, -0.0, 0.0, -jnp.inf, jnp.nan]),
                         equal_nan=True)
  assert jnp.signbit(per_element[1]) and not jnp.signbit(per_element[2])


def _bytes_per_param(opt, params):
  compiled = compiled_update(opt, params)
  return compiled_figures(compiled, params)["bytes_per_param"], compiled


_NESTEROV_HD = {
    "sgdn_hd": lambda: optax_lr.sgd_hd(0.1, momentum=0.9, nesterov=True),
    "sgdn_hd_multiplicative": lambda: optax_lr.sgd_hd(
        0.1, hypergrad_lr=0.01, momentum=0.9, nesterov=True, rate_rule="multiplicative"),
    "sgdn_cam_hd_filter_global": lambda: optax_lr.sgd_cam_hd(
        0.1, momentum=0.9, nesterov=True, levels=("filter", "global")),
    "sgdn_cam_hd_filter_global_multiplicative": lambda: optax_lr.sgd_cam_hd(
        0.1, hypergrad_lr=0.01, momentum=0.9, nesterov=True, levels=("filter", "global"),
        rate_rule="multiplicative"),
}
# The multiplicative filter level's squared norms per filter are two more library sums, reading
# g_t and d_{t-1} once more (8 bytes): one variadic reduction would read them once, but XLA:CPU
# runs its own reduction over a kernel's leading axes about 15x slower than the library's.
_ABOVE_FLOOR = {"sgdn_cam_hd_filter_global_multiplicative": 8.0}


@pytest.mark.parametrize("name", _NESTEROV_HD)
def test_nesterov_hypergradient_at_its_floor(name):
  # SGDN-HD keeps d_{t-1} = g_{t-1} + mu m_{t-1} (the new trace does not give it back). With one
  # output per element-wise pass (XLA:CPU), the floor per float32 parameter is 44 bytes: the
  # reduction <g_t, d_{t-1}> reads 8 (the global cosine's norms in the same pass; the per-filter
  # sums too, their leaf totals taken from them, not from a second pass over g * d_prev), the
  # trace pass reads g_t and m_{t-1} and writes m_t (12), the direction pass reads g_t and m_t
  # and writes d_t (12), and the parameter pass reads the parameter and the written d_t and
  # writes the parameter (12; recomputing d_t there from g_t and m_t would read 4 more). One
  # 256-filter kernel, so the rates and scalars add under half a byte per parameter.
  params = {"conv": {"kernel": jnp.ones((3, 3, 64, 256)), "bias": jnp.ones((256,))}}
  per_param, compiled = _bytes_per_param(_NESTEROV_HD[name](), params)
  floor = 44.0 + _ABOVE_FLOOR.get(name, 0.0)
  assert floor <= per_param < floor + 0.5
  assert not parameter_sized_copies(compiled.as_text(), {256, 3 * 3 * 64 * 256})


_FILTER_LEVEL = {
    "sgdn": lambda: optax_lr.sgd_cam_hd(0.1, momentum=0.9, nesterov=True,
                                        levels=("filter", "global")),
    "sgd_momentum": lambda: optax_lr.sgd_cam_hd(0.1, momentum=0.9, levels=("filter", "global")),
    "adam": lambda: optax_lr.adam_cam_hd(1e-3, levels=("filter", "global")),
    "sgd_multiplicative": lambda: optax_lr.sgd_cam_hd(
        0.1, hypergrad_lr=0.01, levels=("filter", "layer", "global"), rate_rule="multiplicative"),
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
