"""Non-finite and extreme input: one bad step never leaves a NaN rate behind.

The contract (``optax_lr._tree.where_finite``, used by every rate method): a step whose
hypergradient, Newton term or secant statistic is not finite leaves that rate or statistic
unchanged; 1e30 gradients give finite rates; a non-finite look-ahead gradient or ``next_grads``
element is missing for that element; with ``hypergrad_lr = 0`` the HD methods are ``optax.sgd`` /
``optax.adam`` bit for bit on every input.

The property tests draw random positions and values (inf, -inf, NaN, +-1e30) for one bad step in
a stream of finite gradients. Gradients do not depend on the parameters (the state is what is
tested: an inf update applied to the parameters would make every later gradient NaN).
"""

from __future__ import annotations

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from optax_lr import _tree

SHAPES = {"b": (4,), "w": (3, 4)}  # sorted keys: the leaf order of the dict
SIZES = {k: int(np.prod(s)) for k, s in SHAPES.items()}
PARAMS = {k: jnp.zeros(s) for k, s in SHAPES.items()}
BAD_VALUES = (np.inf, -np.inf, np.nan, 1e30, -1e30)


def _look_ahead_grad(params):
  # A finite gradient at any finite look-ahead point (the parabola's), for naive TLR.
  return jax.tree.map(lambda p: p - 1.0, params)


# name -> (factory, extra update arguments, kind of rate: "scalar", "leaf", "element", "cam_hd")
METHODS = {
    "sgd_hd": (lambda: optax_lr.sgd_hd(0.1, 1e-3), {}, "scalar"),
    "sgd_hd_heavy_ball": (lambda: optax_lr.sgd_hd(0.1, 1e-3, momentum=0.9), {}, "scalar"),
    "sgdn_hd": (lambda: optax_lr.sgd_hd(0.1, 1e-3, momentum=0.9, nesterov=True), {}, "scalar"),
    "adam_hd": (lambda: optax_lr.adam_hd(0.01, 1e-4), {}, "scalar"),
    "hypergradient_floor": (lambda: optax_lr.hypergradient(
        optax.trace(0.5), 0.1, 1e-3, min_learning_rate=0.0), {}, "scalar"),
    "sgd_cam_hd": (lambda: optax_lr.sgd_cam_hd(
        0.1, 1e-3, combination=optax_lr.CombinationWeights(learning_rate=0.01)), {}, "cam_hd"),
    "adam_cam_hd_all_levels": (lambda: optax_lr.adam_cam_hd(
        0.01, 1e-4, levels=("parameter", "filter", "layer", "global"),
        combination=optax_lr.CombinationWeights(learning_rate=0.01),
        blending=optax_lr.Blending(1e-3)), {}, "cam_hd"),
    "naive_tlr": (lambda: optax_lr.naive_tlr(0.1, 0.01), {"grad_fn": _look_ahead_grad},
                  "scalar"),
    "tlr_fixed_meta_rate": (lambda: optax_lr.scale_by_tlr_fixed_meta_rate(0.1, 0.01), {},
                            "scalar"),
    "tlr_sgd": (lambda: optax_lr.tlr_sgd(0.1, momentum=0.8), {}, "scalar"),
    "tlr_sgd_window": (lambda: optax_lr.tlr_sgd(0.1, update_every=3, momentum=0.8), {},
                       "scalar"),
    "tlr_sgd_per_tensor_window": (lambda: optax_lr.tlr_sgd(
        0.1, update_every=3, per_tensor=True), {}, "leaf"),
    "tlr_displacement": (lambda: optax_lr.tlr_sgd(
        0.1, update_every=3, window_sum="displacement"), {}, "scalar"),
    "adasecant": (lambda: optax_lr.adasecant(), {}, "element"),
    "adasecant_next_grads": (lambda: optax_lr.adasecant(), "next_grads", "element"),
    "simple_adasecant": (lambda: optax_lr.simple_adasecant(), {}, "element"),
    # The recommendation: its estimate and its decay factor are kept through a bad step (its
    # `learning_rate` field reports the step's applied rate, from the estimate of the step before).
    "auto_adam": (lambda: optax_lr.auto_adam(), {}, "auto"),
}


@functools.cache
def _jitted(name):
  factory, extra, _ = METHODS[name]
  opt = factory()
  if extra == "next_grads":
    update = lambda g, s, p, n: opt.update(g, s, p, next_grads=n)  # noqa: E731
  else:
    update = lambda g, s, p, n: opt.update(g, s, p, **extra)  # noqa: E731
  return opt, jax.jit(update)


def _finite_grads(step):
  key = jax.random.PRNGKey(step)
  keys = jax.random.split(key, len(SHAPES))
  return {k: 1.0 + 0.3 * jax.random.normal(subkey, s)
          for (k, s), subkey in zip(SHAPES.items(), keys, strict=True)}


def _with_bad(grads, bad):
  out = {k: np.array(v) for k, v in grads.items()}
  for leaf, index, value in bad:
    out[leaf].reshape(-1)[index % SIZES[leaf]] = value
  return {k: jnp.asarray(v) for k, v in out.items()}


def _rates(state):
  return {k: np.asarray(v) for k, v in optax_lr.learning_rates(state).items()}


bad_elements = st.lists(
    st.tuples(st.sampled_from(sorted(SHAPES)), st.integers(0, 11), st.sampled_from(BAD_VALUES)),
    min_size=1, max_size=4)

# The bad step is the sixth: a window end for update_every = 3 (steps 2, 5, 8 close windows).
BAD_STEP = 5
STEPS = 12


@pytest.mark.parametrize("name", sorted(METHODS))
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(bad=bad_elements)
def test_one_bad_step_leaves_rates_finite_and_unchanged(name, bad):
  opt, update = _jitted(name)
  _, extra, kind = METHODS[name]
  state = opt.init(PARAMS)
  # From the gradients themselves: a later draw may overwrite an earlier one's position.
  nonfinite = not all(np.all(np.isfinite(np.asarray(v)))
                      for v in _with_bad(_finite_grads(BAD_STEP), bad).values())
  for step in range(STEPS):
    grads = _finite_grads(step)
    if step == BAD_STEP:
      grads = _with_bad(grads, bad)
    next_grads = _finite_grads(1000 + step) if extra == "next_grads" else None
    before = _rates(state)
    old_state = state
    _, state = update(grads, state, PARAMS, next_grads)
    after = _rates(state)
    for path, rate in after.items():
      assert np.all(np.isfinite(rate)), (step, path, rate)
    if step != BAD_STEP or not nonfinite:
      continue
    # The bad step itself: the rates its non-finite elements feed are unchanged.
    if kind == "auto":
      for field in ("rate_estimate", "decay", "numerator"):
        np.testing.assert_array_equal(getattr(state, field), getattr(old_state, field))
    elif kind == "scalar":
      for path in after:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    elif kind == "leaf":
      for leaf, value in grads.items():
        if not np.all(np.isfinite(np.asarray(value))):
          path = next(p for p in after if p.endswith(f"/{leaf}"))
          np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    elif kind == "element":
      mask = {k: ~np.isfinite(np.asarray(v)) for k, v in grads.items()}
      for leaf, bad_mask in mask.items():
        path = f"learning_rate/{leaf}"
        np.testing.assert_array_equal(after[path][bad_mask], before[path][bad_mask])
    else:  # CAM-HD: the global rate and the combination weights see every element
      for path in after:
        if path.endswith("/global") or path == "learning_rate/global":
          np.testing.assert_array_equal(after[path], before[path], err_msg=path)
      for leaf, value in grads.items():
        if np.all(np.isfinite(np.asarray(value))):
          continue
        for path in after:
          if path.endswith(f"layer/{leaf}"):
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_huge_finite_gradients_give_finite_rates(name):
  opt, update = _jitted(name)
  extra = METHODS[name][1]
  state = opt.init(PARAMS)
  for step, scale in enumerate([1.0, 1e19, 1e30, -1e30, 1e30, 1.0, 1.0]):
    grads = jax.tree.map(lambda g: scale * g, _finite_grads(step))  # noqa: B023
    next_grads = (jax.tree.map(lambda g: scale * g, _finite_grads(99 + step))  # noqa: B023
                  if extra == "next_grads" else None)
    _, state = update(grads, state, PARAMS, next_grads)
    for path, rate in _rates(state).items():
      assert np.all(np.isfinite(rate)), (step, path, rate)


def test_newton_factor_is_exact_for_huge_and_safe_for_infinite_inputs():
  # Scale invariance: the factor of (ip, ||u||^2) = (0.9 s, s) is 1 + 0.9 / max(0.4, 3.6) = 1.25
  # for every s, up to the largest float32; non-finite inputs give 1 (rate unchanged).
  for s in [1.0, 1e19, 1e30, 3e38]:
    np.testing.assert_allclose(
        float(optax_lr.newton_factor(jnp.float32(0.9 * s), jnp.float32(s), 0.25)), 1.25,
        rtol=1e-6)
  # ip = -||u||^2: 1 + (-1) / max(8, -4) = 0.875.
  np.testing.assert_allclose(float(optax_lr.newton_factor(-3e38, 3e38, 0.25)), 0.875, rtol=1e-6)
  for ip, sq in [(-np.inf, np.inf), (np.nan, 1.0), (1.0, np.inf), (np.inf, np.inf)]:
    assert float(optax_lr.newton_factor(ip, sq, 0.25)) == 1.0


def test_tlr_rate_from_1e30_gradients_equals_the_unit_scale_rate():
  # The Newton step depends on ratios only: gradients scaled by 1e30 (whose squares overflow
  # float32) must give the rates of the unscaled gradients, to rounding.
  def rates(scale):
    opt = optax_lr.tlr_sgd(0.1, per_tensor=True)
    state = opt.init(PARAMS)
    for step in range(6):
      grads = jax.tree.map(lambda g: scale * g * (-1.0) ** step, _finite_grads(step))  # noqa: B023
      _, state = opt.update(grads, state, PARAMS)
    return _rates(state)

  unit, huge = rates(1.0), rates(1e30)
  assert any(float(v) != 0.1 for v in unit.values())
  for path in unit:
    np.testing.assert_allclose(huge[path], unit[path], rtol=1e-5)


def test_naive_tlr_non_finite_look_ahead_element_is_missing():
  # <grad_fn(look-ahead), d> over the finite elements only: with d = 1 everywhere and a look-ahead
  # gradient of 2 except one inf element, h = 2 * (N - 1); lr = 0.1 + 0.01 * h.
  n = sum(SIZES.values())

  def grad_fn(params):
    del params
    g = {k: 2.0 * jnp.ones(s) for k, s in SHAPES.items()}
    g["w"] = g["w"].at[1, 2].set(jnp.inf)
    return g

  opt = optax_lr.naive_tlr(0.1, 0.01)
  state = opt.init(PARAMS)
  ones = {k: jnp.ones(s) for k, s in SHAPES.items()}
  _, state = opt.update(ones, state, PARAMS, grad_fn=grad_fn)
  np.testing.assert_allclose(float(state.learning_rate), 0.1 + 0.01 * 2.0 * (n - 1), rtol=1e-6)


def test_adasecant_non_finite_next_grads_element_is_missing():
  # A NaN next_grads element leaves that element's two variance-reduction statistics as they
  # were; the other elements' statistics move; the rates stay finite.
  opt = optax_lr.adasecant()
  state = opt.init(PARAMS)
  for step in range(3):
    nxt = _finite_grads(50 + step)
    if step == 2:
      nxt["w"] = nxt["w"].at[0, 1].set(jnp.nan)
    before = state
    _, state = opt.update(_finite_grads(step), state, PARAMS, next_grads=nxt)
  for field in ("gamma_numerator_mean", "gamma_denominator_mean"):
    old, new = np.asarray(getattr(before, field)["w"]), np.asarray(getattr(state, field)["w"])
    assert new[0, 1] == old[0, 1]
    assert np.all(new.reshape(-1)[np.arange(12) != 1] != old.reshape(-1)[np.arange(12) != 1])
  assert all(np.all(np.isfinite(np.asarray(r))) for r in jax.tree.leaves(state.learning_rate))


def test_where_finite_keeps_old_values_and_dtypes():
  old = {"a": jnp.array([1.0, 2.0, 3.0]), "s": jnp.float32(0.5)}
  new = {"a": jnp.array([9.0, jnp.nan, -jnp.inf], jnp.float64), "s": jnp.float32(jnp.inf)}
  kept = _tree.where_finite(new, old)
  np.testing.assert_array_equal(kept["a"], [9.0, 2.0, 3.0])
  assert kept["a"].dtype == jnp.float32 and float(kept["s"]) == 0.5
  jointly = _tree.where_finite(new, old, jointly=True)
  np.testing.assert_array_equal(jointly["a"], [1.0, 2.0, 3.0])
  masked = _tree.where_finite(new, old, finite=jnp.array([False, True, True]))
  np.testing.assert_array_equal(masked["a"], [1.0, 2.0, 3.0])


grad_streams = st.lists(
    st.lists(st.sampled_from((0.5, -1.5, 3.0, 1e30, -1e30, np.inf, -np.inf, np.nan)),
             min_size=4, max_size=4),
    min_size=1, max_size=5)


@pytest.mark.parametrize("x64", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)])
@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(stream=grad_streams)
def test_sgd_hd_without_hypergradient_is_optax_sgd_bit_for_bit(momentum, nesterov, x64, stream):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    params = {"w": jnp.zeros(4, dtype)}
    ours = optax_lr.sgd_hd(0.1, hypergrad_lr=0.0, momentum=momentum, nesterov=nesterov)
    reference = optax.sgd(0.1, momentum=momentum, nesterov=nesterov)
    s1, s2 = ours.init(params), reference.init(params)
    for values in stream:
      grads = {"w": jnp.asarray(values, dtype)}
      u1, s1 = ours.update(grads, s1, params)
      u2, s2 = reference.update(grads, s2, params)
      assert u1["w"].dtype == u2["w"].dtype == dtype
      np.testing.assert_array_equal(np.asarray(u1["w"]), np.asarray(u2["w"]))
    assert float(optax_lr.learning_rates(s1)["learning_rate"]) == np.asarray(0.1, dtype)


@pytest.mark.parametrize("x64", [False, True], ids=["f32", "f64"])
@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(stream=grad_streams)
def test_adam_hd_without_hypergradient_is_optax_adam_bit_for_bit(x64, stream):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    params = {"w": jnp.zeros(4, dtype)}
    ours, reference = optax_lr.adam_hd(1e-3, hypergrad_lr=0.0), optax.adam(1e-3)
    s1, s2 = ours.init(params), reference.init(params)
    for values in stream:
      grads = {"w": jnp.asarray(values, dtype)}
      u1, s1 = ours.update(grads, s1, params)
      u2, s2 = reference.update(grads, s2, params)
      np.testing.assert_array_equal(np.asarray(u1["w"]), np.asarray(u2["w"]))
