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


def test_recovered_trace_equals_a_kept_copy():
  # sgd_hd with heavy-ball momentum recovers d_{t-1} = (d_t - g_t) / mu instead of keeping a
  # copy: the same trajectory up to float32 rounding of the recovered direction.
  ours = optax_lr.sgd_hd(0.05, hypergrad_lr=1e-2, momentum=0.9)
  reference = optax_lr.hypergradient(optax.trace(0.9), 0.05, 1e-2)
  assert isinstance(ours.init(PARAMS).previous_direction, optax.EmptyState)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _trajectory(ours), _trajectory(reference))


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
def test_adam_previous_direction_within_its_bound(kind):
  # The stored path runs; at every step the direction recovered from the new moments is compared
  # with the stored one, per element against E of the docstring, and the hypergradient sum
  # <g_t, d_{t-1}> against sum |g| E (plus the float32 rounding of two sums of 2048 terms).
  b1, b2, eps = 0.9, 0.999, 1e-8
  u = 2.0 ** -24
  inner = optax.scale_by_adam(b1, b2, eps)
  recover = optax_lr._base.adam_previous_direction(b1, b2, eps)
  params = {"w": jnp.zeros((64, 32))}
  state = inner.init(params)
  stored = jax.tree.map(jnp.zeros_like, params)
  for t, g in enumerate(_adam_gradients(kind, 30), start=1):
    direction, state = inner.update(g, state)
    recovered = recover(direction, g, state)
    if t > 1:
      gg, m, v = (np.asarray(x, np.float64) for x in (g["w"], state.mu["w"], state.nu["w"]))
      d_true = np.asarray(stored["w"], np.float64)
      c1, c2 = 1 - b1 ** (t - 1), 1 - b2 ** (t - 1)
      dm = 4 * u * (np.abs(m) + (1 - b1) * np.abs(gg)) / b1
      dv = 4 * u * (v + (1 - b2) * gg * gg) / b2
      m_hat = ((m - (1 - b1) * gg) / b1) / c1
      v_hat = np.maximum((v - (1 - b2) * gg * gg) / b2, 0) / c2
      bound_d = (1 - b1) / np.sqrt((1 - b2) * (1 - b1 * b1 / b2)) * np.sqrt(c2) / c1
      s_rec, ds = np.sqrt(v_hat), np.sqrt(dv / c2)
      s_low = np.maximum(s_rec - ds, 0)  # the true sqrt(v_hat) is at least this
      e = np.minimum(2 * bound_d,
                     dm / c1 / (s_low + eps)
                     + (np.abs(m_hat) + dm / c1) * ds / ((s_rec + eps) * (s_low + eps))
                     + 4 * u * np.abs(d_true))
      error = np.abs(np.asarray(recovered["w"], np.float64) - d_true)
      assert np.all(error <= e), (t, np.max(error - e))
      h_stored = float(optax_lr._tree.vdot(g, stored))
      h_recovered = float(optax_lr._tree.vdot(g, recovered))
      slack = 2 * 2048 * u * float(np.sum(np.abs(gg) * (np.abs(d_true) + e)))
      assert abs(h_recovered - h_stored) <= float(np.sum(np.abs(gg) * e)) + slack
      if kind == "random" and t > 5:
        # Once v holds a few gradients, E is a few u |d| per element: tiny against h. (In the
        # first steps an element with a tiny g_1 has v_1 << (1 - b2) g_2^2 even here.)
        assert abs(h_recovered - h_stored) <= 1e-5 * float(np.sum(np.abs(gg * d_true)))
    else:
      assert all(jnp.all(x == 0) for x in jax.tree.leaves(recovered))
    stored = direction


def test_adam_hd_state_is_adams():
  # The previous direction is recovered: the state is Adam's moments plus one scalar rate, and
  # with a bfloat16 first moment (mu_dtype) it keeps that dtype.
  ours = optax_lr.adam_hd(1e-3, mu_dtype=jnp.bfloat16).init(PARAMS)
  adam = optax.adam(1e-3, mu_dtype=jnp.bfloat16).init(PARAMS)
  sizes = lambda s: sorted((x.size, str(x.dtype)) for x in jax.tree.leaves(s) if x.ndim)  # noqa: E731
  assert sizes(ours) == sizes(adam)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ours.inner_state.mu))
  kept = optax_lr.adam_hd(1e-3, store_previous_direction=True).init(PARAMS)
  assert len(jax.tree.leaves(kept)) == len(jax.tree.leaves(ours)) + len(jax.tree.leaves(PARAMS))
  # b1 = 0 leaves no m_{t-1} to recover: the stored path.
  assert len(jax.tree.leaves(optax_lr.adam_hd(1e-3, b1=0.0).init(PARAMS))) == len(
      jax.tree.leaves(kept))


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


def test_adam_hd_recovered_close_to_stored_on_a_smooth_problem():
  # On a smooth problem the recovered and the stored paths follow one trajectory to float32
  # rounding, with the rate learning (beta large enough to move it by 10x its initial value).
  ours = _trajectory(optax_lr.adam_hd(0.01, hypergrad_lr=1e-3), steps=30)
  kept = _trajectory(optax_lr.adam_hd(0.01, hypergrad_lr=1e-3, store_previous_direction=True),
                     steps=30)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(kept), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
