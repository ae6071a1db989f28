"""Hypergradient descent (Baydin et al. 2018): hand-computed steps and exact identities."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.3, -0.7, 0.1, 2.0])}


def _loss(p):
  return jnp.sum(jnp.cos(p["w"]) * p["w"]) + jnp.sum(p["b"] ** 4) + jnp.sum(p["w"] @ p["b"])


def _trajectory(opt, steps=15):
  params, state = PARAMS, opt.init(PARAMS)
  update = jax.jit(opt.update)
  for _ in range(steps):
    updates, state = update(jax.grad(_loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2)])
def test_zero_hypergrad_lr_equals_sgd(momentum, nesterov, weight_decay):
  ours = optax_lr.sgd_hd(0.05, hypergrad_lr=0.0, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)
  reference = optax.sgd(0.05, momentum=momentum, nesterov=nesterov)
  if weight_decay:
    reference = optax.chain(optax.add_decayed_weights(weight_decay), reference)
  jax.tree.map(np.testing.assert_array_equal, _trajectory(ours), _trajectory(reference))


def test_zero_hypergrad_lr_equals_adam():
  ours = optax_lr.adam_hd(0.01, hypergrad_lr=0.0, b1=0.8, b2=0.99, eps=1e-6)
  reference = optax.adam(0.01, b1=0.8, b2=0.99, eps=1e-6)
  jax.tree.map(np.testing.assert_array_equal, _trajectory(ours), _trajectory(reference))


def test_sgd_hd_by_hand():
  # h_t = <g_t, g_{t-1}>, alpha_t = alpha_{t-1} + beta h_t, update -alpha_t g_t.
  grads = [jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0]), jnp.array([-2.0, 0.5])]
  opt = optax_lr.sgd_hd(0.1, hypergrad_lr=0.01)
  state = opt.init(jnp.zeros(2))
  expected_rates = [0.1, 0.1 + 0.01 * 1.0, 0.11 + 0.01 * (-6.5)]
  for g, rate in zip(grads, expected_rates, strict=True):
    updates, state = opt.update(g, state)
    np.testing.assert_allclose(float(state.learning_rate), rate, rtol=1e-6)
    np.testing.assert_allclose(updates, -rate * np.asarray(g), rtol=1e-6)


def test_sgdn_hd_uses_the_nesterov_direction():
  # Nesterov trace: m_t = g_t + mu m_{t-1}, d_t = g_t + mu m_t; h_2 = <g_2, d_1>.
  mu, beta = 0.5, 0.1
  g1, g2 = np.array([1.0, -1.0]), np.array([2.0, 1.0])
  d1 = g1 + mu * g1
  m2 = g2 + mu * g1
  d2 = g2 + mu * m2
  opt = optax_lr.sgd_hd(0.2, hypergrad_lr=beta, momentum=mu, nesterov=True)
  state = opt.init(jnp.zeros(2))
  _, state = opt.update(jnp.asarray(g1), state)
  updates, state = opt.update(jnp.asarray(g2), state)
  rate = 0.2 + beta * g2 @ d1
  np.testing.assert_allclose(float(state.learning_rate), rate, rtol=1e-6)
  np.testing.assert_allclose(updates, -rate * d2, rtol=1e-6)


def test_adam_hd_by_hand():
  # Step 1: m_hat = g1, v_hat = g1^2, d1 = g1 / (|g1| + eps). Step 2: h = <g2, d1>.
  b1, b2, eps, beta = 0.9, 0.999, 1e-8, 1e-3
  g1, g2 = np.array([0.5, -2.0, 1.0]), np.array([1.0, 1.0, -3.0])
  d1 = g1 / (np.abs(g1) + eps)
  m2, v2 = (1 - b1) * g1 * b1 + (1 - b1) * g2, (1 - b2) * g1**2 * b2 + (1 - b2) * g2**2
  d2 = (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
  opt = optax_lr.adam_hd(0.01, hypergrad_lr=beta, b1=b1, b2=b2, eps=eps)
  state = opt.init(jnp.zeros(3))
  _, state = opt.update(jnp.asarray(g1, jnp.float32), state)
  updates, state = opt.update(jnp.asarray(g2, jnp.float32), state)
  rate = 0.01 + beta * g2 @ d1
  # float32 state: 0.01 - 0.003 loses about one digit to cancellation.
  np.testing.assert_allclose(float(state.learning_rate), rate, rtol=1e-5)
  np.testing.assert_allclose(updates, -rate * d2, rtol=1e-5)


def test_wrapper_over_any_inner_forwards_extra_args():
  # The wrapper forwards keyword arguments to an inner transform that takes them.
  seen = {}

  def inner_update(updates, state, params=None, *, scale_by=1.0):
    seen["scale_by"] = scale_by
    return jax.tree.map(lambda g: scale_by * g, updates), state

  inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), inner_update)
  opt = optax_lr.hypergradient(inner, learning_rate=0.1, hypergrad_lr=0.0)
  updates, _ = opt.update(jnp.ones(2), opt.init(jnp.ones(2)), None, scale_by=3.0)
  assert seen["scale_by"] == 3.0
  np.testing.assert_allclose(updates, -0.3 * np.ones(2), rtol=1e-6)


def test_min_learning_rate_floor():
  opt = optax_lr.hypergradient(optax.identity(), 0.1, hypergrad_lr=1.0, min_learning_rate=0.05)
  state = opt.init(jnp.zeros(1))
  _, state = opt.update(jnp.array([1.0]), state)
  _, state = opt.update(jnp.array([-1.0]), state)  # h = -1: 0.1 - 1 = -0.9, floored
  assert float(state.learning_rate) == pytest.approx(0.05)


def test_zero_gradients_never_nan():
  for opt in (optax_lr.sgd_hd(0.1), optax_lr.adam_hd(0.1, hypergrad_lr=1e-3)):
    state = opt.init(PARAMS)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    for _ in range(3):
      updates, state = opt.update(zeros, state, PARAMS)
    assert float(optax_lr.learning_rates(state)["learning_rate"]) == pytest.approx(0.1)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("factory, kwargs, name", [
    (optax_lr.sgd_hd, dict(learning_rate=0.0), "learning_rate"),
    (optax_lr.sgd_hd, dict(learning_rate=0.1, hypergrad_lr=-1e-3), "hypergrad_lr"),
    (optax_lr.sgd_hd, dict(learning_rate=0.1, momentum=1.5), "momentum"),
    (optax_lr.sgd_hd, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
    (optax_lr.adam_hd, dict(learning_rate=-1e-3), "learning_rate"),
    (optax_lr.adam_hd, dict(b1=1.0), "b1"),
    (optax_lr.adam_hd, dict(b2=-0.1), "b2"),
    (optax_lr.adam_hd, dict(eps=-1e-8), "eps"),
    (optax_lr.adam_hd, dict(hypergrad_lr=-1.0), "hypergrad_lr"),
])
def test_bad_input(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    factory(**kwargs)


def test_bad_floor():
  with pytest.raises(ValueError, match="`min_learning_rate`"):
    optax_lr.hypergradient(optax.identity(), 0.1, 1e-3, min_learning_rate=-1.0)


def test_trace_read_equals_a_kept_copy():
  # sgd_hd with heavy-ball momentum reads d_{t-1} off the trace before this step's update instead
  # of keeping a copy: the same trajectory and rates, bit for bit.
  ours = optax_lr.sgd_hd(0.05, hypergrad_lr=1e-2, momentum=0.9)
  reference = optax_lr.hypergradient(optax.trace(0.9), 0.05, 1e-2)
  assert isinstance(ours.init(PARAMS).previous_direction, optax.EmptyState)
  jax.tree.map(np.testing.assert_array_equal, _trajectory(ours), _trajectory(reference))


def _adam_gradients(kind, steps, shape=(64, 32), seed=0):
  """Random gradients, or spiky ones (1% of the elements 1000x larger), and tiny early ones."""
  rng = np.random.default_rng(seed)
  out = []
  for t in range(steps):
    g = rng.standard_normal(shape).astype(np.float32)
    if kind == "spiky":
      g = g * np.where(rng.random(shape) < 0.01, 1000.0, 1.0).astype(np.float32)
      if t < 2:
        g = g * np.float32(1e-3)  # tiny first gradients: v_{t-1} << (1 - b2) g_t^2 next
    out.append({"w": jnp.asarray(g)})
  return out


@pytest.mark.parametrize("kind", ["random", "spiky"])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_adam_previous_direction_is_the_returned_one(kind, eps):
  # Read off the moments before step t, d_{t-1} is the direction optax.scale_by_adam returned at
  # step t - 1, bit for bit (zeros before the first step), on random gradients and on spiky ones
  # (1% of the elements 1000x larger, tiny first gradients) where a recovery from the new moments
  # would lose digits.
  # Both jitted, as in a training step: eagerly, each scalar op compiles on its own and a pow
  # may round differently from the fused one (1 - b2^t cancels: 1e-5 in v_hat).
  inner = optax.scale_by_adam(0.9, 0.999, eps)
  read = jax.jit(optax_lr._base.adam_previous_direction(0.9, 0.999, eps))
  update = jax.jit(inner.update)
  state = inner.init({"w": jnp.zeros((64, 32))})
  returned = {"w": jnp.zeros((64, 32))}
  for g in _adam_gradients(kind, 30):
    np.testing.assert_array_equal(read(state)["w"], returned["w"])
    returned, state = update(g, state)


@pytest.mark.parametrize("kind", ["random", "spiky"])
@pytest.mark.parametrize("rate_rule, beta", [("additive", 1e-4), ("multiplicative", 0.05)])
def test_adam_hd_equals_the_stored_path(kind, rate_rule, beta):
  # The jitted update reading d_{t-1} off Adam's moments and the one keeping it as a buffer follow
  # one trajectory bit for bit: parameters, rates and moments, with the rate moving.
  def run(store):
    opt = optax_lr.adam_hd(0.01, hypergrad_lr=beta, rate_rule=rate_rule,
                           store_previous_direction=store)
    params = {"w": jnp.zeros((64, 32))}
    state = opt.init(params)
    update = jax.jit(opt.update)
    for g in _adam_gradients(kind, 30):
      updates, state = update(g, state, params)
      params = optax.apply_updates(params, updates)
    return params, state.learning_rate, state.inner_state

  ours, kept = run(False), run(True)
  jax.tree.map(np.testing.assert_array_equal, ours, kept)
  assert abs(float(ours[1]) - 0.01) > 1e-5  # the rate moved (by 2e-5 at the least, cos ~ 0)


def test_adam_hd_mu_dtype_within_the_cast_rounding():
  # A bfloat16 first moment: d_{t-1} is read from the stored (rounded) moment, the kept buffer
  # holds the direction computed from the float32 value before the cast, so per element they
  # differ by the cast's relative rounding, 2^-8 (8 significant bits), plus float32 roundings, and
  # each hypergradient <g_t, d_{t-1}> by at most that times sum |g| |d|.
  opt = optax_lr.adam_hd(0.01, hypergrad_lr=1e-4, mu_dtype=jnp.bfloat16,
                         store_previous_direction=True)
  read = jax.jit(optax_lr._base.adam_previous_direction(0.9, 0.999, 1e-8))
  params = {"w": jnp.zeros((64, 32))}
  state = opt.init(params)
  update = jax.jit(opt.update)
  for g in _adam_gradients("spiky", 30):
    d_read = np.asarray(read(state.inner_state)["w"], np.float64)
    d_kept = np.asarray(state.previous_direction["w"], np.float64)
    bound = (2.0 ** -8 + 2.0 ** -21) * np.abs(d_kept)
    assert np.all(np.abs(d_read - d_kept) <= bound)
    gg = np.asarray(g["w"], np.float64)
    assert abs(np.sum(gg * d_read) - np.sum(gg * d_kept)) <= np.sum(np.abs(gg) * bound)
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  assert state.inner_state.mu["w"].dtype == jnp.bfloat16
  assert np.any(np.asarray(state.previous_direction["w"]) != 0)


def test_adam_hd_state_is_adams():
  # The previous direction is read off the moments: the state is Adam's plus one scalar rate, and
  # with a bfloat16 first moment (mu_dtype) it keeps that dtype.
  ours = optax_lr.adam_hd(1e-3, mu_dtype=jnp.bfloat16).init(PARAMS)
  adam = optax.adam(1e-3, mu_dtype=jnp.bfloat16).init(PARAMS)
  sizes = lambda s: sorted((x.size, str(x.dtype)) for x in jax.tree.leaves(s) if x.ndim)  # noqa: E731
  assert sizes(ours) == sizes(adam)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ours.inner_state.mu))
  kept = optax_lr.adam_hd(1e-3, store_previous_direction=True).init(PARAMS)
  assert len(jax.tree.leaves(kept)) == len(jax.tree.leaves(ours)) + len(jax.tree.leaves(PARAMS))
  # b1 = 0 too reads d_{t-1} off the moments (m_{t-1} is g_{t-1} then): Adam's state.
  assert sizes(optax_lr.adam_hd(1e-3, b1=0.0).init(PARAMS)) == sizes(optax.adam(1e-3).init(PARAMS))


def test_adam_hd_mu_dtype_zero_hypergrad_lr_equals_adam():
  ours = optax_lr.adam_hd(0.01, hypergrad_lr=0.0, mu_dtype=jnp.bfloat16)
  theirs = optax.adam(0.01, mu_dtype=jnp.bfloat16)
  for a, b in zip(jax.tree.leaves(_trajectory(ours)), jax.tree.leaves(_trajectory(theirs)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(TypeError, match="mu_dtype"):
    optax_lr.adam_hd(mu_dtype="not a dtype")
  with pytest.raises(ValueError, match="mu_dtype"):
    optax_lr.adam_hd(mu_dtype=jnp.int32)


def test_adam_hd_equals_stored_on_a_smooth_problem():
  # On a smooth problem the two paths follow one trajectory bit for bit, with the rate learning
  # (beta large enough to move it by 10x its initial value).
  ours = _trajectory(optax_lr.adam_hd(0.01, hypergrad_lr=1e-3), steps=30)
  kept = _trajectory(optax_lr.adam_hd(0.01, hypergrad_lr=1e-3, store_previous_direction=True),
                     steps=30)
  jax.tree.map(np.testing.assert_array_equal, ours, kept)
