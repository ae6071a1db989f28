"""Trainable Learning Rate: the rule against hand-computed numbers and identities."""

import warnings
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import optax_lr


def _run(opt, directions, params=None):
  """Feeds scripted directions; returns the updates and the rate after every step."""
  params = params if params is not None else jax.tree.map(jnp.zeros_like, directions[0])
  state = opt.init(params)
  update = jax.jit(opt.update)
  updates, rates = [], []
  for d in directions:
    u, state = update(d, state, params)
    updates.append(u)
    rates.append(optax_lr.learning_rates(state))
  return updates, rates, state


def test_three_windows_by_hand():
  # Windows of two steps; u is the sum of a window's directions.
  steps = [[1, 0], [1, 0],      # u1 = (2, 0): the first window only fills the buffer
           [1, 1], [0, 1],      # u2 = (1, 2): ip = 2, |u2|^2 = 5, max(4*3, 2/c=8) = 12
           [-1, 0], [-1, -1],   # u3 = (-2, -1): ip = -4, |u3|^2 = 5, max(4*9, -16) = 36
           [-1, -1], [-1, 0]]   # u4 = (-2, -1): ip = 5, |u4|^2 = 5, max(0, 5/c = 20) = 20
  directions = [jnp.array(d, jnp.float32) for d in steps]
  updates, rates, _ = _run(optax_lr.scale_by_tlr(0.5, update_every=2, bound=0.25), directions)
  rate = [float(r["learning_rate"]) for r in rates]
  lr2 = 0.5 * (1 + 2 / 12)          # 7/12
  lr3 = lr2 * (1 - 4 / 36)          # 14/27
  lr4 = lr3 * (1 + 5 / 20)          # the bound: 1 + c
  expected = [0.5, 0.5, 0.5, lr2, lr2, lr3, lr3, lr4]
  np.testing.assert_allclose(rate, expected, rtol=1e-6)
  # The rate updated at a window's last step already scales that step's update.
  for d, u, r in zip(directions, updates, expected, strict=True):
    np.testing.assert_allclose(u, -r * np.asarray(d), rtol=1e-6)


def test_update_every_one_is_algorithm_2():
  # K = 1: alpha_{t+1} = alpha_t (1 + ip / max(4 <g_t, g_t - g_{t-1}>, ip / c)),
  # ip = <g_t, g_{t-1}>, and w_{t+1} = w_t - alpha_{t+1} g_t.
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(6)]
  updates, rates, _ = _run(optax_lr.scale_by_tlr(0.3), grads)
  alpha, previous = 0.3, np.zeros(5)
  for g, u, r in zip(grads, updates, rates, strict=True):
    g = np.asarray(g, np.float64)
    if previous.any():
      ip = g @ previous
      alpha *= 1 + ip / max(4 * (g @ g - ip), ip / 0.25)
    np.testing.assert_allclose(float(r["learning_rate"]), alpha, rtol=1e-5)
    np.testing.assert_allclose(u, -alpha * g, rtol=1e-5)
    previous = g


@settings(max_examples=300, deadline=None, derandomize=True)
# Cases where float32 rounds the factor onto its bounds (found by earlier random runs).
@example([1e-20, 0.0, 0.0], [-1.0, 0.0, 0.0], 1.0)
@example([1.192092896e-07, 0.0, 0.0], [-1.0, 0.0, 0.0], 1.0)
@example([0.0, 1.0, 0.0], [0.0, -1.941753833415784e-20, 0.0], 1.0)
@given(st.lists(st.floats(-10, 10), min_size=3, max_size=3),
       st.lists(st.floats(-10, 10), min_size=3, max_size=3),
       st.floats(0.01, 4.0))
def test_factor_bounds(u, u_previous, bound):
  u, u_previous = np.asarray(u, np.float32), np.asarray(u_previous, np.float32)
  ip, squared_norm = float(u @ u_previous), float(u @ u)
  factor = float(optax_lr.newton_factor(jnp.float32(ip), jnp.float32(squared_norm), bound))
  assert np.isfinite(factor)
  assert factor <= 1 + bound + 1e-6
  if ip < 0:
    # The bound is strict in exact arithmetic (rationals from the float32 inputs); float32 and
    # even float64 may round to it when |u| is tiny next to |u_previous|.
    exact_u = [Fraction(float(x)) for x in u]
    exact_ip = sum(a * b for a, b in zip(exact_u, map(Fraction, map(float, u_previous)),
                                         strict=True))
    exact_squared_norm = sum(a * a for a in exact_u)
    if exact_ip < 0:
      exact = 1 + exact_ip / max(4 * (exact_squared_norm - exact_ip), exact_ip / Fraction(bound))
      assert Fraction(3, 4) < exact < 1
    assert 0.75 <= factor <= 1
    np.testing.assert_allclose(factor, 1 + ip / max(4 * (squared_norm - ip), ip / bound),
                               rtol=1e-5)
  if ip == 0:
    assert factor == 1


def test_zero_directions_give_factor_one():
  assert float(optax_lr.newton_factor(jnp.float32(0), jnp.float32(0), 0.25)) == 1.0


@pytest.mark.parametrize("options", [
    dict(), dict(update_every=3), dict(per_tensor=True), dict(momentum=0.9, nesterov=True)])
def test_zero_gradients_never_nan(options):
  opt = optax_lr.tlr_sgd(0.1, **options)
  params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  _, rates, _ = _run(opt, [zeros] * 7, params)
  for value in rates[-1].values():
    assert float(value) == pytest.approx(0.1)


def test_per_tensor_rates_differ_between_leaves():
  # Leaf a keeps its direction (rate grows by 1 + c), leaf b alternates (rate shrinks).
  directions = [{"a": jnp.ones(2), "b": jnp.array([1.0, -1.0]) * (-1) ** t} for t in range(4)]
  _, rates, _ = _run(optax_lr.scale_by_tlr(0.1, per_tensor=True), directions)
  final = rates[-1]
  assert float(final["learning_rate/a"]) == pytest.approx(0.1 * 1.25 ** 3, rel=1e-6)
  # ip = -2, |u|^2 = 2: factor 1 - 2 / 16 = 7/8 per step.
  assert float(final["learning_rate/b"]) == pytest.approx(0.1 * (7 / 8) ** 3, rel=1e-6)


def test_window_that_never_closes_equals_sgd():
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.5])}
  loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum(p["b"] ** 4)
  ours = optax_lr.tlr_sgd(0.05, update_every=1000, momentum=0.9, nesterov=True)
  reference = optax.sgd(0.05, momentum=0.9, nesterov=True)

  def trajectory(opt):
    p, state = params, opt.init(params)
    for _ in range(20):
      updates, state = opt.update(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    return p

  jax.tree.map(np.testing.assert_array_equal, trajectory(ours), trajectory(reference))


def test_window_sums_with_momentum_and_weight_decay():
  # Constant rate inside the window (the first window never changes it): the displacement
  # reading sums the directions, u = (w_start - w_end) / alpha; the gradient reading sums the
  # gradients entering the trace, weight decay included: sum_k (2 w_k + 0.5 w_k).
  params = jnp.array([1.0, -2.0])
  for window_sum in ("displacement", "gradient"):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # K = 3 < 10 / (1 - 0.8): the displacement warning
      opt = optax_lr.tlr_sgd(0.1, update_every=3, momentum=0.8, weight_decay=0.5,
                             window_sum=window_sum)
    state = opt.init(params)
    w, gradient_sum = params, jnp.zeros(2)
    for _ in range(3):
      updates, state = opt.update(2.0 * w, state, w)
      gradient_sum = gradient_sum + 2.5 * w
      w = optax.apply_updates(w, updates)
    expected = (params - w) / 0.1 if window_sum == "displacement" else gradient_sum
    np.testing.assert_allclose(state[-1].previous_direction_sum, expected, rtol=1e-5)


def test_two_readings_differ_with_momentum_by_hand():
  # Momentum 0.5, windows of K = 2, alpha_0 = 0.5, c = 1/4, gradients g_1..g_6:
  grads = [(1, 0), (1, 0), (0, 2), (0, 2), (0, -1), (0, -1)]
  # The trace d_t = g_t + 0.5 d_{t-1}: (1, 0), (1.5, 0), (0.75, 2), (0.375, 3), (0.1875, 0.5),
  # (0.09375, -0.75).
  d = np.array([[1, 0], [1.5, 0], [0.75, 2], [0.375, 3], [0.1875, 0.5], [0.09375, -0.75]])
  # Gradient reading: U1 = (2, 0), U2 = (0, 4), U3 = (0, -2).
  #   window 2: ip = 0 -> factor exactly 1 (consecutive windows' gradients are orthogonal);
  #   window 3: ip = -8, |U3|^2 = 4, max(4 (4 + 8), -8 / c) = 48 -> factor 1 - 8/48 = 5/6.
  gradient_rates = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5 * 5 / 6]
  # Displacement reading: D1 = d1 + d2 = (2.5, 0), D2 = (1.125, 5), D3 = (0.28125, -0.25).
  #   window 2: ip = 2.8125 = 45/16, |D2|^2 = 26.265625, max(4 (26.265625 - 2.8125), 45/4)
  #             = 93.8125 = 1501/16 -> factor 1 + 45/1501 (the momentum carried (1.5, 0) over);
  #   window 3: ip = 0.31640625 - 1.25 = -0.93359375 = -956/1024, |D3|^2 = 0.1416015625,
  #             max(4 (0.1416015625 + 0.93359375), ...) = 4.30078125 = 4404/1024
  #             -> factor 1 - 956/4404 = 862/1101.
  r2 = 0.5 * 1546 / 1501
  displacement_rates = [0.5, 0.5, 0.5, r2, r2, r2 * 862 / 1101]
  directions = [jnp.array(g, jnp.float32) for g in grads]
  for window_sum, expected in (("gradient", gradient_rates),
                               ("displacement", displacement_rates)):
    opt = optax_lr.scale_by_tlr(0.5, update_every=2, window_sum=window_sum,
                                inner=optax.trace(0.5))
    updates, rates, _ = _run(opt, directions)
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rates], expected, rtol=1e-6)
    # The update is -alpha_t d_t, with the rate updated at a window's last step.
    for u, r, direction in zip(updates, expected, d, strict=True):
      np.testing.assert_allclose(u, -r * direction, rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_update_every_one_gradient_reading_is_algorithm_2_with_momentum(nesterov):
  # K = 1, gradient reading: alpha_{t+1} = alpha_t (1 + ip / max(4 (|g_t|^2 - ip), ip / c)),
  # ip = <g_t, g_{t-1}>, g the gradient with weight decay; the step is -alpha_{t+1} d_t with the
  # (Nesterov) momentum direction d_t. NumPy, float64.
  rng = np.random.default_rng(3)
  curvature = rng.uniform(0.5, 2.0, 4)
  noise = rng.normal(size=(12, 4))
  momentum, weight_decay, alpha, bound = 0.8, 1e-2, 0.05, 0.25
  opt = optax_lr.tlr_sgd(alpha, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, bound=bound)
  params = jnp.asarray(rng.normal(size=4), jnp.float32)
  state = opt.init(params)
  update = jax.jit(opt.update)
  w, trace, previous = np.asarray(params, np.float64), np.zeros(4), None
  for t in range(12):
    updates, state = update(jnp.asarray(curvature, jnp.float32) * params
                            + jnp.asarray(noise[t], jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
    g = curvature * w + noise[t] + weight_decay * w
    trace = g + momentum * trace
    direction = g + momentum * trace if nesterov else trace
    if previous is not None:
      ip = g @ previous
      denominator = max(4 * (g @ g - ip), ip / bound)
      alpha *= 1 + ip / denominator if denominator > 0 else 1.0
    w = w - alpha * direction
    previous = g
    np.testing.assert_allclose(float(state[-1].learning_rate), alpha,
                               rtol=1e-5)
    np.testing.assert_allclose(params, w, rtol=1e-5, atol=1e-6)


def test_displacement_reading_warns_on_short_windows():
  with pytest.warns(UserWarning, match=r"10 / \(1 - momentum\) = 50"):
    optax_lr.tlr_sgd(0.1, update_every=49, momentum=0.8, window_sum="displacement")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    optax_lr.tlr_sgd(0.1, update_every=50, momentum=0.8, window_sum="displacement")
    optax_lr.tlr_sgd(0.1, update_every=1, momentum=None, window_sum="displacement")  # plain SGD
    optax_lr.tlr_sgd(0.1, update_every=1, momentum=0.8)  # the gradient reading never warns
  # At update_every=1 the displacement reading reads d_{t-1} off the trace, (d_t - g_t) / momentum:
  # a trace of decay exactly 0 cannot give it back (plain SGD is momentum=None).
  with pytest.raises(ValueError, match="`momentum` must be None or in \\(0, 1\\); got 0"):
    optax_lr.tlr_sgd(0.1, update_every=1, momentum=0.0, window_sum="displacement")


@pytest.mark.parametrize("factory", [
    optax_lr.scale_by_tlr, optax_lr.tlr_sgd,
    lambda learning_rate, **kw: optax_lr.scale_by_tlr_fixed_meta_rate(learning_rate, 1e-3, **kw)])
@pytest.mark.parametrize("value", ["grad", "Gradient", None, 1])
def test_bad_window_sum(factory, value):
  # A wrong string is a ValueError; a value of the wrong kind may be a TypeError (the shared type
  # checks); either names the argument and the valid choices.
  error = ValueError if isinstance(value, str) else (TypeError, ValueError)
  with pytest.raises(error, match="`window_sum`.*'gradient', 'displacement'"):
    factory(0.1, window_sum=value)


def test_fixed_meta_rate_gradient_reading_sees_the_gradients():
  # Behind a trace, the fixed-eta rule reads <g_t, g_{t-1}> = <(1, 0), (0, 1)> = 0 (rate kept)
  # under the gradient reading, <d_t, d_{t-1}> = <(0.5, 1), (1, 0)> = 0.5 under the displacement.
  directions = [jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])]
  for window_sum, expected in (("gradient", 0.1), ("displacement", 0.1 + 0.01 * 0.5)):
    opt = optax_lr.scale_by_tlr_fixed_meta_rate(0.1, 0.01, window_sum=window_sum,
                                                inner=optax.trace(0.5))
    _, rates, _ = _run(opt, directions)
    assert float(rates[-1]["learning_rate"]) == pytest.approx(expected, rel=1e-6)


def test_fixed_meta_rate_rule():
  directions = [jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0]), jnp.array([-5.0, 0.0])]
  _, rates, _ = _run(optax_lr.scale_by_tlr_fixed_meta_rate(0.1, meta_learning_rate=0.01),
                     directions)
  r = [float(x["learning_rate"]) for x in rates]
  # ip = 1, then -15 (the max with 0 floors the rate).
  np.testing.assert_allclose(r, [0.1, 0.1 + 0.01 * 1, 0.0], atol=1e-7)


def test_naive_tlr_quadratic_by_hand():
  # f(x) = h x^2 / 2: g = h x, look-ahead gradient g' = h x (1 - alpha h);
  # alpha <- alpha + eta g' g, then x <- x - alpha g.
  h, x, alpha, eta = 2.0, 1.5, 0.1, 0.05
  loss = lambda p: 0.5 * h * p**2
  opt = optax_lr.naive_tlr(alpha, meta_learning_rate=eta)
  params, state = jnp.float32(x), opt.init(jnp.float32(x))
  for _ in range(3):
    g = h * x
    alpha = alpha + eta * (h * x * (1 - alpha * h)) * g
    x = x - alpha * g
    updates, state = opt.update(jax.grad(loss)(params), state, params, grad_fn=jax.grad(loss))
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(float(state.learning_rate), alpha, rtol=1e-5)
    np.testing.assert_allclose(float(params), x, rtol=1e-5)


def test_naive_tlr_needs_params_and_grad_fn():
  opt = optax_lr.naive_tlr(0.1, 0.01)
  state = opt.init(jnp.ones(2))
  with pytest.raises(ValueError, match="params"):
    opt.update(jnp.ones(2), state, grad_fn=lambda p: p)
  with pytest.raises(ValueError, match="grad_fn"):
    opt.update(jnp.ones(2), state, jnp.ones(2))


def test_update_every_from_fraction():
  assert optax_lr.update_every_from_fraction(390) == 130
  assert optax_lr.update_every_from_fraction(391, 0.25) == 98
  assert optax_lr.update_every_from_fraction(2) == 1
  assert optax_lr.update_every_from_fraction(1) == 1


@pytest.mark.parametrize("factory, kwargs, name", [
    (optax_lr.scale_by_tlr, dict(learning_rate=0.0), "learning_rate"),
    (optax_lr.scale_by_tlr, dict(learning_rate=-1.0), "learning_rate"),
    (optax_lr.scale_by_tlr, dict(learning_rate=0.1, bound=0.0), "bound"),
    (optax_lr.scale_by_tlr, dict(learning_rate=0.1, update_every=0), "update_every"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, momentum=1.0), "momentum"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, momentum=-0.1), "momentum"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
    (optax_lr.tlr_sgd, dict(learning_rate=float("nan")), "learning_rate"),
    (optax_lr.scale_by_tlr_fixed_meta_rate, dict(learning_rate=0.1, meta_learning_rate=0.0),
     "meta_learning_rate"),
    (optax_lr.naive_tlr, dict(learning_rate=0.1, meta_learning_rate=-1.0), "meta_learning_rate"),
    (optax_lr.update_every_from_fraction, dict(steps_per_epoch=0), "steps_per_epoch"),
    (optax_lr.update_every_from_fraction, dict(steps_per_epoch=10, fraction=0.0), "fraction"),
])
def test_bad_input(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    factory(**kwargs)


def test_non_integer_window_is_rejected():
  with pytest.raises((TypeError, ValueError), match="`update_every`"):
    optax_lr.scale_by_tlr(0.1, update_every=2.5)


@pytest.mark.filterwarnings("ignore:tlr_sgd.window_sum='displacement'.")
@pytest.mark.parametrize("options", [dict(), dict(per_tensor=True), dict(weight_decay=1e-2)])
def test_reused_trace_equals_the_generic_chain(options):
  # Under the displacement reading tlr_sgd reads the previous direction out of its heavy-ball
  # trace instead of keeping a copy; the trajectory is the one of the chain that keeps it.
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.5])}
  loss = lambda p: jnp.sum(jnp.sin(3 * p["w"]) ** 2) + jnp.sum(p["b"] ** 4)
  weight_decay = options.pop("weight_decay", 0.0)
  ours = optax_lr.tlr_sgd(0.05, momentum=0.9, weight_decay=weight_decay,
                         window_sum="displacement", **options)
  stages = [optax.trace(0.9), optax_lr.scale_by_tlr(0.05, window_sum="displacement", **options)]
  if weight_decay:
    stages.insert(0, optax.add_decayed_weights(weight_decay))
  reference = optax.chain(*stages)

  def trajectory(opt):
    p, state = params, opt.init(params)
    for _ in range(12):
      updates, state = opt.update(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    return p, optax_lr.learning_rates(state)

  (p1, r1), (p2, r2) = trajectory(ours), trajectory(reference)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p1, p2)
  np.testing.assert_allclose(sorted(map(float, r1.values())), sorted(map(float, r2.values())),
                             rtol=1e-6)
  assert len({float(v) for v in r1.values()}) >= 1 and float(list(r1.values())[0]) != 0.05


# --- the loss backtrack (backtrack=WindowBacktrack()) ---

def test_backtrack_by_hand():
  # K = 1, a constant gradient: every window agrees, so the Newton factor is 1 + c = 1.25.
  opt = optax_lr.scale_by_tlr(1.0, bound=0.25, backtrack=optax_lr.WindowBacktrack())
  params = jnp.zeros(2)
  state = opt.init(params)
  g = jnp.array([1.0, 0.0])
  rates = []
  for value in (1.0, 1.5, 3.5, 3.0, float("nan"), 1.0):
    updates, state = opt.update(g, state, params, value=jnp.asarray(value))
    rates.append(float(state.learning_rate))
    np.testing.assert_allclose(updates, -rates[-1] * g)
  # 1: first window (no predecessor); 2: x1.25 (1.5 <= 2 * 1.0); 3: 3.5 > 2 * 1.5: back to
  # 0.5 * 1.25, the new ceiling; 4: 0.625 * 1.25 capped at 0.625; 5: a NaN loss backtracks;
  # 6: 1.0 <= 2 * 3.0 (the NaN never becomes the reference), capped at the new ceiling.
  assert rates == [1.0, 1.25, 0.625, 0.625, 0.3125, 0.3125]
  assert float(state.backtrack.max_learning_rate) == 0.3125


def test_backtrack_windows_compare_mean_losses():
  # K = 2: the comparison is between window means; the rate changes only at window ends.
  opt = optax_lr.scale_by_tlr(1.0, update_every=2, bound=0.25, backtrack=optax_lr.WindowBacktrack())
  params = jnp.zeros(2)
  state = opt.init(params)
  g = jnp.array([1.0, 0.0])
  rates = []
  for value in (1.0, 1.0, 1.0, 2.0, 5.0, 2.0):
    _, state = opt.update(g, state, params, value=jnp.asarray(value))
    rates.append(float(state.learning_rate))
  # Means 1.0, 1.5 (x1.25 at step 4), 3.5 > 2 * 1.5 (step 6: 0.5 * 1.25).
  assert rates == [1.0, 1.0, 1.0, 1.25, 1.25, 0.625]


def test_backtrack_needs_value_and_validates():
  opt = optax_lr.tlr_sgd(0.1, backtrack=optax_lr.WindowBacktrack())
  with pytest.raises(ValueError, match="value"):
    opt.update(jnp.ones(2), opt.init(jnp.zeros(2)), jnp.zeros(2))
  with pytest.raises(TypeError, match="WindowBacktrack"):
    optax_lr.tlr_sgd(0.1, backtrack="backtrack")
  with pytest.raises(TypeError, match="WindowBacktrack"):  # the hypergradient family's rule
    optax_lr.scale_by_tlr(0.1, backtrack=optax_lr.LossBacktrack())
  with pytest.raises(ValueError, match=r"WindowBacktrack\.factor"):
    optax_lr.WindowBacktrack(factor=1.0)
  with pytest.raises(ValueError, match=r"WindowBacktrack\.tolerance"):
    optax_lr.WindowBacktrack(tolerance=-0.5)


@pytest.mark.parametrize("momentum, update_every", [(0.0, 1), (0.0, 5), (0.8, 5), (0.8, 20)])
def test_backtrack_keeps_a_smooth_quadratic_from_diverging(momentum, update_every):
  # Curvatures 1e-3 .. 10 (stable rates < 0.2): windows keep agreeing, the paper's rule grows the
  # rate x1.25 per window past 2 / 10 and the loss blows up (measured: past 1e29, or NaN); the
  # backtrack halves the rate at the first blow-up, caps it there, and ends below 2e-3.
  a = jnp.logspace(-3, 1, 50)

  def loss(w):
    return 0.5 * jnp.sum(a * w ** 2)

  def final_loss(backtrack):
    opt = optax_lr.tlr_sgd(1e-3, update_every, momentum=momentum, backtrack=backtrack)
    w = jnp.ones(50)

    def body(carry, _):
      w, s = carry
      u, s = opt.update(jax.grad(loss)(w), s, w, value=loss(w))
      w = optax.apply_updates(w, u)
      return (w, s), loss(w)

    (w, _), losses = jax.lax.scan(body, (w, opt.init(w)), None, length=3000)
    return float(loss(w)), float(jnp.max(losses))

  paper_final, paper_worst = final_loss(None)
  safe_final, _ = final_loss(optax_lr.WindowBacktrack())
  del paper_final
  assert not paper_worst < 1e6  # the paper's rule blew up (initial loss 2.3; NaN counts)
  assert safe_final < 2e-3
