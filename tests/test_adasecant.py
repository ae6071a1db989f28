"""AdaSecant and Simple AdaSecant against the secant property and the thesis's findings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from optax_lr.adasecant import BLOW_UP_RATIO

CURVATURES = {"a": jnp.array([0.5, 1.0, 2.0, 4.0]), "b": jnp.array([[0.25, 8.0]])}
START = {"a": jnp.array([1.0, -2.0, 3.0, 0.5]), "b": jnp.array([[-1.5, 0.75]])}


def _quadratic(params):
  return sum(0.5 * jnp.sum(h * x * x) for h, x in
             zip(jax.tree.leaves(CURVATURES), jax.tree.leaves(params), strict=True))


def _run(opt, loss, params, steps, extra=None):
  """``steps`` jitted updates; returns per-step (loss, rates) and the final params and state."""
  grad_fn = jax.grad(loss)

  @jax.jit
  def run(params):
    state = opt.init(params)

    def body(carry, _):
      params, state = carry
      kwargs = extra(grad_fn, params) if extra else {}
      updates, state = opt.update(grad_fn(params), state, params, **kwargs)
      params = optax.apply_updates(params, updates)
      return (params, state), (loss(params), state.learning_rate)

    (params, state), history = jax.lax.scan(body, (params, state), None, length=steps)
    return params, state, history

  return run(params)


def _rate_times_curvature(rates):
  return jax.tree.map(lambda r, h: r * h, rates, CURVATURES)


# --- Simple AdaSecant -------------------------------------------------------------------------


def test_simple_adasecant_solves_diagonal_quadratic_at_second_step():
  params, _, (losses, rates) = _run(optax_lr.simple_adasecant(), _quadratic, START, 2)
  first, second = jax.tree.map(lambda r: r[0], rates), jax.tree.map(lambda r: r[1], rates)
  # First step: Delta_0 = -g and a = g give rate 1 (Eq. 3.2-3.3).
  jax.tree.map(lambda r: np.testing.assert_array_equal(r, 1.0), first)
  # Second step: the secant of a diagonal quadratic is exactly 1 / h_i, which lands on 0.
  jax.tree.map(lambda rh: np.testing.assert_allclose(rh, 1.0, rtol=1e-6),
               _rate_times_curvature(second))
  jax.tree.map(lambda x: np.testing.assert_allclose(x, 0.0, atol=1e-6), params)
  assert float(losses[1]) < 1e-12


def test_simple_adasecant_one_step_by_hand():
  opt = optax_lr.simple_adasecant(threshold=3.0)
  params = {"w": jnp.zeros(4)}
  state = opt.init(params)
  g0 = {"w": jnp.array([1.0, -2.0, 0.0, 4.0])}
  updates, state = opt.update(g0, state)
  np.testing.assert_array_equal(updates["w"], -g0["w"])  # rate 1 everywhere
  g1 = {"w": jnp.array([0.5, -2.5, 1.0, 4.5])}
  updates, state = opt.update(g1, state)
  # alpha = |Delta_0 / (g1 - g0)| = |-g0 / (g1 - g0)| = [2, 4 -> zeroed, restart 1, 8 -> zeroed]
  # (the third element did not move at step 0, so it restarts with rate 1).
  np.testing.assert_allclose(state.learning_rate["w"], [2.0, 0.0, 1.0, 0.0])
  np.testing.assert_allclose(updates["w"], [-1.0, 0.0, -1.0, 0.0])
  clip = optax_lr.simple_adasecant(threshold=3.0, mode="clip")
  state = clip.init(params)
  _, state = clip.update(g0, state)
  _, state = clip.update(g1, state)
  np.testing.assert_allclose(state.learning_rate["w"], [2.0, 3.0, 1.0, 3.0])


def _log_cosh(params):
  return jnp.sum(jnp.log(jnp.cosh(params["x"])))


@pytest.mark.parametrize("threshold, mode, trains", [
    (math.inf, "zero", False), (10.0, "zero", True), (3.0, "zero", True),
    (10.0, "clip", False), (3.0, "clip", True)])
def test_simple_adasecant_thresholds_as_in_the_thesis(threshold, mode, trains):
  # log cosh flattens away from 0: the secant a -> 0 there and the rate explodes. Like Table 4.3,
  # no threshold diverges and 3 or 10 train; clipping at 10 keeps the bad direction and fails.
  params = {"x": jnp.linspace(-3.0, 3.0, 16)}
  initial = float(_log_cosh(params))
  opt = optax_lr.simple_adasecant(threshold, mode)
  final_params, _, (losses, _) = _run(opt, _log_cosh, params, 60)
  final = float(losses[-1])
  if trains:
    assert final < 1e-6 * initial
  else:
    assert not math.isfinite(final) or final > initial


# --- AdaSecant --------------------------------------------------------------------------------


def test_adasecant_rates_approach_inverse_curvature():
  # The papers' rule (no growth bound): the secant property, exact from the second step.
  params, state, (losses, rates) = _run(optax_lr.adasecant(step_growth=math.inf), _quadratic,
                                        START, 12)
  # First step: rate 1 on the block-normalised gradient, i.e. 1 / ||g_leaf|| on the raw one.
  first_grad = jax.tree.map(lambda h, x: h * x, CURVATURES, START)
  jax.tree.map(lambda r, g: np.testing.assert_allclose(r[0], 1 / np.linalg.norm(g), rtol=1e-6),
               rates, first_grad)
  for step in range(1, 12):
    jax.tree.map(lambda rh, s=step: np.testing.assert_allclose(rh[s], 1.0, rtol=1e-5),
                 _rate_times_curvature(rates))
  assert float(losses[1]) < 1e-10 and float(losses[-1]) < 1e-10
  # The fictitious first pair is dropped: the memory is still 1 at the second step.
  assert int(state.count) == 12


@pytest.mark.parametrize("normalize", ["block", "global", "none"])
def test_adasecant_first_step_is_minus_normalised_gradient(normalize):
  # Rate 1 on the gradient divided by ||E[g]|| = ||g|| (tau = 1 at the first step): per leaf
  # ("block", the paper's block-wise normalisation), over the tree ("global", Algorithm 2.3 as
  # the thesis reads it) or not at all ("none").
  opt = optax_lr.adasecant(normalize=normalize)
  params = {"u": jnp.zeros(2), "w": jnp.array([1.0, -1.0, 2.0])}
  grads = {"u": jnp.array([3.0, 4.0]), "w": jnp.array([0.3, -0.7, 0.0])}
  state = opt.init(params)
  updates, state = opt.update(grads, state, params)
  norms = {"block": {"u": 5.0, "w": math.sqrt(0.58)},
           "global": dict.fromkeys("uw", math.sqrt(25.58)), "none": dict.fromkeys("uw", 1.0)}
  for k in grads:
    np.testing.assert_allclose(updates[k], -grads[k] / norms[normalize][k], rtol=1e-6)
  np.testing.assert_array_equal(state.tau["w"], 1.0)


def test_adasecant_rate_cap_by_hand():
  # Step 0: g0 = (3, 4), ||g0|| = 5, Delta_0 = -g0 / 5 = (-0.6, -0.8), gamma = 0 (0/0).
  # Step 1 (tau still 1, so every average is the latest value): g1 = (3, 0), a = (0, -4).
  # Element 1: E[Delta^2] / |E[a Delta]| = 0.64 / 3.2 = 0.2. Element 0 has no secant
  # (a = 0): its rate 0.36 / eps is capped at max_rate / ||E[g]|| = max_rate / ||g1|| = max_rate/3.
  params = {"w": jnp.zeros(2)}
  g0, g1 = {"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([3.0, 0.0])}
  for max_rate, expected in [(25.0, 25.0 / 3), (2.0, 2.0 / 3), (math.inf, 0.36 / 1e-20)]:
    opt = optax_lr.adasecant(max_rate=max_rate, step_growth=math.inf)
    state = opt.init(params)
    _, state = opt.update(g0, state, params)
    updates, state = opt.update(g1, state, params)
    np.testing.assert_allclose(state.learning_rate["w"], [expected, 0.2], rtol=1e-5)
    np.testing.assert_allclose(updates["w"], [-3.0 * expected, 0.0], rtol=1e-5)


def _teacher_mlp_run(opt, steps=150, hidden=32, batch=64):
  """A one-hidden-layer ReLU network on labels of a random linear teacher, as the digits job
  (cross-entropy, mini-batches of 64, next_grads = next batch); full-data losses per step."""
  kx, kw, kp = jax.random.split(jax.random.PRNGKey(42), 3)
  x = jax.random.normal(kx, (1792, 64))
  y = jnp.argmax(x @ jax.random.normal(kw, (64, 10)), -1)
  k1, k2 = jax.random.split(kp)
  params = {"w1": jax.random.normal(k1, (64, hidden)) / 8.0, "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 10)) / math.sqrt(hidden), "b2": jnp.zeros(10)}

  def loss(p, xb, yb):
    logits = jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  batches = jax.random.permutation(kp, x.shape[0]).reshape(-1, batch)

  @jax.jit
  def run(params):
    def body(carry, i):
      params, state = carry
      now, nxt = batches[i % batches.shape[0]], batches[(i + 1) % batches.shape[0]]
      grads = jax.grad(loss)(params, x[now], y[now])
      updates, state = opt.update(grads, state, params,
                                  next_grads=jax.grad(loss)(params, x[nxt], y[nxt]))
      params = optax.apply_updates(params, updates)
      return (params, state), loss(params, x, y)

    _, losses = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))
    return losses

  return float(loss(params, x, y)), run(params)


def test_adasecant_trains_relu_network_only_with_the_rate_cap():
  # The failure on the digits MLP, in small: a few elements see a secant a ~ 0 while they move
  # and their uncapped rates reach 1e4-1e6; the run explodes (the thesis's threshold-infinity
  # divergence, Table 4.3). The cap of the authors' code (25 on the normalised gradient) trains.
  # The trained run has loss spikes (a few steps at 10x the loss), so the criterion is the median
  # of the last 25 steps: a single step's loss depends on float32 rounding (which fusion contracts
  # which product into a multiply-add), the median does not.
  initial, losses = _teacher_mlp_run(optax_lr.adasecant())
  assert bool(jnp.all(jnp.isfinite(losses))) and float(jnp.median(losses[-25:])) < initial / 2
  _, uncapped = _teacher_mlp_run(optax_lr.adasecant(max_rate=math.inf, step_growth=math.inf))
  assert not math.isfinite(float(uncapped[-1])) or float(uncapped[-1]) > 1e6 * initial
  # The growth bound alone (no cap) also trains: a step at most twice the RMS of the steps the
  # secant was measured on cannot follow a secant a ~ 0 to a rate of 1e4.
  _, bounded = _teacher_mlp_run(optax_lr.adasecant(max_rate=math.inf))
  assert bool(jnp.all(jnp.isfinite(bounded))) and float(jnp.median(bounded[-25:])) < initial / 2


def test_adasecant_growth_bound_ramps_to_inverse_curvature_on_a_quadratic():
  # With step_growth=2 every step is at most twice the RMS of the steps in the secant
  # statistics. On the quadratic the block-normalised first step is small (rate 1/||g||), so
  # the rates climb to 1/h over a few steps instead of landing at once: each step's rate is
  # min(1/h, 2 sqrt(E[Delta^2]) / |g~|): never above the secant, non-decreasing, and equal to it
  # from step 6 on (the smallest first rate, 0.04/h, needs five steps to climb).
  _, _, (losses, rates) = _run(optax_lr.adasecant(), _quadratic, START, 12)
  for rh in jax.tree.leaves(_rate_times_curvature(rates)):
    rh = np.asarray(rh)
    assert np.all(rh[1:] <= 1.0 + 1e-5) and np.all(np.diff(rh[1:], axis=0) >= -1e-6)
    np.testing.assert_allclose(rh[6:], 1.0, rtol=1e-5)
  assert float(losses[-1]) < 1e-10


def test_adasecant_paper_rule_does_not_find_inverse_curvature():
  # Eq. 2.43 with the authors' pairing of a_t with Delta_t: while an element oscillates the
  # correction -E[a Delta]/E[a^2] is positive and pushes the rate up, so rates settle near the
  # edge of stability 2/h and the deterministic quadratic is not solved; the default
  # least-squares rule solves it in two steps (test above).
  _, _, (losses, rates) = _run(optax_lr.adasecant("paper"), _quadratic, START, 30)
  scaled = jnp.concatenate([x[-1].ravel() for x in
                            jax.tree.leaves(_rate_times_curvature(rates))])
  assert float(jnp.max(scaled)) > 1.7
  assert float(losses[-1]) > 1e-4


def test_adasecant_eq_2_43_read_literally_cancels_on_a_quadratic():
  # With matched secant pairs a = h * Delta, both terms of Eq. 2.43 equal 1/h: the rate is 0.
  rng = np.random.default_rng(0)
  steps, h = rng.normal(size=50), 3.0
  curv = h * steps
  weights = rng.uniform(size=50)
  mean = lambda v: np.sum(weights * v) / np.sum(weights)  # noqa: E731
  literal = np.sqrt(mean(steps**2)) / np.sqrt(mean(curv**2)) - mean(curv * steps) / mean(curv**2)
  least_squares = mean(steps**2) / mean(curv * steps)
  assert abs(literal) < 1e-12
  np.testing.assert_allclose(least_squares, 1 / h, rtol=1e-12)


def _noisy_quadratic_run(use_next_grads, seed):
  h = jnp.linspace(0.1, 20.0, 50)

  def grad(params, key):
    return {"x": h * (params["x"] - 0.3 * jax.random.normal(key, h.shape))}

  opt = optax_lr.adasecant()

  @jax.jit
  def run(key):
    params = {"x": jnp.ones_like(h)}
    state = opt.init(params)

    def body(carry, key):
      params, state = carry
      k1, k2 = jax.random.split(key)
      extra = {"next_grads": grad(params, k2)} if use_next_grads else {}
      updates, state = opt.update(grad(params, k1), state, params, **extra)
      params = optax.apply_updates(params, updates)
      return (params, state), 0.5 * jnp.sum(h * params["x"] ** 2)

    (params, state), losses = jax.lax.scan(body, (params, state), jax.random.split(key, 400))
    return losses, state.learning_rate["x"] * h

  return 0.5 * float(jnp.sum(h)), *run(jax.random.PRNGKey(seed))


@pytest.mark.parametrize("use_next_grads", [False, True], ids=["previous", "next_grads"])
def test_adasecant_trains_noisy_quadratic_without_collapse(use_next_grads):
  initial, losses, scaled_rates = _noisy_quadratic_run(use_next_grads, seed=0)
  assert float(jnp.mean(losses[-20:])) < initial / 10
  # No collapse: rates stay finite and positive, the median within 1000x of 1/h after 400 steps
  # (the thesis's rates fell below 1e-4 within an epoch; a geometric collapse falls by orders of
  # magnitude more). The rates do fall below 1/h: gradient noise enters E[a Delta] and the
  # least-squares secant decays roughly like 1/t, which is what a noisy quadratic needs. (This
  # bound was 30x while the first step was the raw -g; the block-normalised first step starts
  # the secant statistics from a smaller step, and the rates, and the final loss, come out lower:
  # median 0.008/h to 0.06/h and final loss 0.65 to 1.8, against 5.9 to 10.7 before; seed 0.)
  assert bool(jnp.all(jnp.isfinite(scaled_rates))) and bool(jnp.all(scaled_rates > 0))
  # With the default growth bound (step_growth=2) the steps stay near the RMS of the small steps
  # the noise allows, and the rates come out lower again while the final loss is lower: median
  # 1.8e-4/h with next_grads (3.5e-3/h without), final loss 0.14 (0.24), against 0.008/h and 0.65
  # (0.056/h and 1.8) without the bound; seed 0. A geometric collapse reaches 1e-11.
  assert float(jnp.median(scaled_rates)) > 3e-5


# Per-element fields: the statistics, the rate and the memory (not the counter or a_{t-1}).
_ADASECANT_FIELDS = tuple(f for f in optax_lr.AdaSecantState._fields
                          if f not in ("count", "previous_curvature", "first_step_norm",
                                       "largest_step_ratio"))


@pytest.mark.parametrize("second", [1.5e19, 2e19], ids=["secant_overflows", "gradient_overflows"])
def test_adasecant_overflowing_secant_keeps_the_element(second):
  # float32: 1.5e19^2 = 2.25e38 is finite, 2e19^2 = 4e38 is not. Element 0 sees -1.5e19 and then
  # +1.5e19: g^2 is finite but a = 3e19 and a^2 = 9e38 overflow; with +2e19, g^2 overflows.
  # Either way every statistic, the rate and the memory of element 0 keep their values, while
  # element 1 moves; element 0 steps with its kept rate and g~ from its kept statistics.
  opt = optax_lr.adasecant()
  params = {"w": jnp.zeros(2)}
  state = opt.init(params)
  for g in ([-1.5e19, 1.0], [-1.5e19, 2.0]):
    _, state = opt.update({"w": jnp.array(g)}, state, params)
  before = state
  updates, state = opt.update({"w": jnp.array([second, -1.0])}, state, params)
  for field in _ADASECANT_FIELDS:
    old, new = np.asarray(getattr(before, field)["w"]), np.asarray(getattr(state, field)["w"])
    assert new[0] == old[0], field
    assert np.isfinite(new[1]), field
  assert np.asarray(state.learning_rate["w"])[1] != np.asarray(before.learning_rate["w"])[1]
  num, den = before.gamma_numerator_mean["w"][0], before.gamma_denominator_mean["w"][0]
  gamma = np.clip(num / den if den != 0 else 0.0, 0.0, 1.8)
  corrected = (second + gamma * float(before.grad_mean["w"][0])) / (1 + gamma)
  np.testing.assert_allclose(updates["w"][0], -float(before.learning_rate["w"][0]) * corrected,
                             rtol=1e-6)


def test_adasecant_gamma_zero_paths_agree():
  # next_grads equal to the gradient makes Eq. 2.45's numerator 0, so gamma = 0; so does
  # gamma_clip = 0 with the previous corrected gradient standing in: both runs are identical.
  same = lambda grad_fn, params: {"next_grads": grad_fn(params)}  # noqa: E731
  a = _run(optax_lr.adasecant(), _quadratic, START, 6, extra=same)
  b = _run(optax_lr.adasecant(gamma_clip=0.0), _quadratic, START, 6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-12), a[0], b[0])


def test_per_element_rate_telemetry():
  params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
  for opt in (optax_lr.adasecant(), optax_lr.simple_adasecant()):
    state = opt.init(params)
    grads = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.full((2, 2), 0.5)}
    _, state = opt.update(grads, state, params)
    _, state = opt.update(jax.tree.map(lambda g: 0.5 * g, grads), state, params)
    rates = optax_lr.learning_rates(state)
    assert set(rates) == {"learning_rate/a", "learning_rate/b"}
    assert rates["learning_rate/b"].shape == (2, 2)
    summary = optax_lr.rate_summary(state.learning_rate)
    flat = np.concatenate([np.ravel(r) for r in rates.values()])
    np.testing.assert_allclose(summary["norm"], np.linalg.norm(flat), rtol=1e-6)
    np.testing.assert_allclose(summary["mean"], flat.mean(), rtol=1e-6)


@pytest.mark.parametrize("make, name", [
    (lambda: optax_lr.simple_adasecant(threshold=0.0), "threshold"),
    (lambda: optax_lr.simple_adasecant(threshold=-1.0), "threshold"),
    (lambda: optax_lr.simple_adasecant(mode="half"), "mode"),
    (lambda: optax_lr.adasecant(rate_rule="rms"), "rate_rule"),
    (lambda: optax_lr.adasecant(gamma_clip=-0.1), "gamma_clip"),
    (lambda: optax_lr.adasecant(tau_bounds=(10.0, 2.0)), "tau_bounds"),
    (lambda: optax_lr.adasecant(tau_bounds=(0.5, 2.0)), "tau_bounds"),
    (lambda: optax_lr.adasecant(tau_bounds=(1.5,)), "tau_bounds"),
    (lambda: optax_lr.adasecant(outlier_reset=0.5), "outlier_reset"),
    (lambda: optax_lr.adasecant(eps=-1.0), "eps"),
    (lambda: optax_lr.adasecant(normalize="layer"), "normalize"),
    (lambda: optax_lr.adasecant(max_rate=0.0), "max_rate"),
    (lambda: optax_lr.adasecant(max_rate=-1.0), "max_rate"),
])
def test_bad_arguments_raise(make, name):
  with pytest.raises(ValueError, match=name):
    make()


# --- Against a NumPy transcription of the rules ---------------------------------------------


def _numpy_simple_adasecant(grad_stream, threshold, mode):
  """Thesis Eq. 3.1-3.3 element by element (float64), with the library's guards: 0/0 and x/0
  give 0, an element whose previous step was 0 restarts at rate 1, a non-finite gradient keeps
  that element's rate and previous gradient (and steps with the kept rate), a non-finite rate
  of a finite gradient keeps the rate."""
  rate = {k: np.ones_like(v) for k, v in grad_stream[0].items()}
  g_prev = {k: np.zeros_like(v) for k, v in grad_stream[0].items()}
  updates, rates = [], []
  with np.errstate(all="ignore"):
    for t, grads in enumerate(grad_stream):
      step_out, rate_out = {}, {}
      for k, g in grads.items():
        a = g - g_prev[k]
        previous = -g if t == 0 else -rate[k] * g_prev[k]
        secant = np.abs(np.where(a != 0, previous / np.where(a != 0, a, 1.0), 0.0))
        new = np.where(previous == 0, 1.0, secant)
        if mode == "zero":
          new = np.where(new >= threshold, 0.0, new)
        else:
          new = np.where(new >= threshold, threshold, new)
        rate[k] = np.where(np.isfinite(g) & np.isfinite(new), new, rate[k])
        g_prev[k] = np.where(np.isfinite(g), g, g_prev[k])
        step_out[k] = -rate[k] * g  # the kept rate where the element was not observed
        rate_out[k] = rate[k].copy()
      updates.append(step_out)
      rates.append(rate_out)
  return updates, rates


def _numpy_adasecant(grad_stream, next_stream, rate_rule="least_squares", normalize="block",
                     gamma_clip=1.8, tau_bounds=(1.5, 1e7), outlier_reset=2.2, max_rate=25.0,
                     eps=1e-20, step_growth=2.0):
  """The rule of :func:`optax_lr.adasecant`'s docstring element by element (float64), keeping
  the previous corrected gradient g~_{t-1} as a state of its own (the library derives it)."""
  zeros = lambda: {k: np.zeros_like(v) for k, v in grad_stream[0].items()}  # noqa: E731
  s = {name: zeros() for name in ("m_g", "m_g2", "m_a", "m_a2", "m_ad", "m_d", "m_d2", "num",
                                  "den", "g_prev", "gc_prev", "a_prev")}
  s["lr"] = {k: np.ones_like(v) for k, v in grad_stream[0].items()}
  s["tau"] = {k: np.ones_like(v) for k, v in grad_stream[0].items()}
  low, high = tau_bounds
  updates, rates, taus = [], [], []
  with np.errstate(all="ignore"):
    for t, grads in enumerate(grad_stream):
      # The norm of E[g]_t per leaf, over the tree, or 1; 1 where it is 0 or not finite.
      sq = {k: np.sum(((1 - 1 / s["tau"][k]) * s["m_g"][k] + g / s["tau"][k]) ** 2)
            for k, g in grads.items()}
      if normalize == "global":
        sq = dict.fromkeys(sq, sum(sq.values()))
      inv_norm = {k: 1.0 if normalize == "none" or not (np.isfinite(q) and q > 0)
                  else 1 / np.sqrt(q) for k, q in sq.items()}
      step_out = {}
      for k, g in grads.items():
        c, old = inv_norm[k], {name: s[name][k] for name in s}
        inv = 1 / old["tau"]
        ema = lambda mean, value: (1 - inv) * mean + inv * value  # noqa: E731, B023
        m_g = ema(old["m_g"], g)
        m_g2 = ema(old["m_g2"], g * g)
        outlier = np.abs(g - m_g) > 2 * np.sqrt(np.maximum(m_g2 - m_g * m_g, 0))
        other = next_stream[t][k] if next_stream is not None else old["gc_prev"]
        num = ema(old["num"], (g - other) * (g - m_g))
        den = ema(old["den"], (g - m_g) * (other - m_g))
        num = np.where(np.isfinite(num), num, old["num"])
        den = np.where(np.isfinite(den), den, old["den"])
        gamma = np.where(den != 0, num / np.where(den != 0, den, 1), 0)
        gamma = np.clip(np.where(np.isfinite(gamma), gamma, 0), 0, gamma_clip)
        corrected = (g + gamma * m_g) / (1 + gamma)
        a = g - old["g_prev"]
        previous = -c * corrected if t == 0 else -old["lr"] * old["gc_prev"]
        m_a, m_a2 = ema(old["m_a"], a), ema(old["m_a2"], a * a)
        m_d, m_d2 = ema(old["m_d"], previous), ema(old["m_d2"], previous * previous)
        outlier |= np.abs(a - m_a) > 2 * np.sqrt(np.maximum(m_a2 - m_a * m_a, 0))
        if rate_rule == "paper":
          m_ad = np.zeros_like(g) if t == 0 else ema(old["m_ad"], old["a_prev"] * previous)
          rate = np.sqrt(m_d2) / np.sqrt(m_a2 + eps) - m_ad / (m_a2 + eps)
          if t == 0:
            rate = np.full_like(g, c)
        else:
          m_ad = ema(old["m_ad"], a * previous)
          rate = m_d2 / (np.abs(m_ad) + eps)
        rate = np.where(m_d2 > 0, rate, c)
        rate = np.clip(np.where(np.isfinite(rate), rate, 0), 0, max_rate * c)
        reach = step_growth * np.sqrt(m_d2)
        beyond = (m_d2 > 0) & (np.abs(corrected) * rate > reach)
        rate = np.where(beyond, reach / np.where(corrected != 0, np.abs(corrected), 1), rate)
        ratio = np.where(m_d2 != 0, m_d * m_d / np.where(m_d2 != 0, m_d2, 1), 0)
        tau = np.clip((1 - ratio) * old["tau"] + 1, low, high)
        tau = np.where(outlier, outlier_reset, tau)
        if t == 0:
          tau = np.ones_like(g)
        new = dict(lr=rate, tau=tau, m_g=m_g, m_g2=m_g2, m_a=m_a, m_a2=m_a2, m_ad=m_ad, m_d=m_d,
                   m_d2=m_d2, num=num, den=den, g_prev=g, gc_prev=corrected, a_prev=a)
        observed = np.all([np.isfinite(v) for v in new.values()], axis=0)
        for name, value in new.items():
          s[name][k] = np.where(observed, value, old[name])
        # Delta_t = -alpha g~ from the kept rate and statistics (the new ones where observed).
        num, den, m_g = s["num"][k], s["den"][k], s["m_g"][k]
        gamma = np.where(den != 0, num / np.where(den != 0, den, 1), 0)
        gamma = np.clip(np.where(np.isfinite(gamma), gamma, 0), 0, gamma_clip)
        step_out[k] = -s["lr"][k] * ((g + gamma * m_g) / (1 + gamma))
      updates.append(step_out)
      rates.append({k: v.copy() for k, v in s["lr"].items()})
      taus.append({k: v.copy() for k, v in s["tau"].items()})
  return updates, rates, taus


def _gradient_stream(steps, seed, spikes=True, bad_step=None):
  rng = np.random.default_rng(seed)
  stream = []
  for t in range(steps):
    grads = {"a": rng.normal(size=(4, 5)), "b": rng.normal(size=(6,))}
    if spikes:  # 1000x spikes and exact zeros on a few elements
      for v in grads.values():
        v[rng.uniform(size=v.shape) < 0.1] *= 1000.0
        v[rng.uniform(size=v.shape) < 0.1] = 0.0
    if t == bad_step:
      grads["a"][1, 2], grads["b"][4] = np.nan, np.inf
    stream.append(grads)
  return stream


def _jax_run(opt, grad_stream, next_stream):
  state = opt.init(jax.tree.map(jnp.zeros_like, grad_stream[0]))
  update = jax.jit(opt.update)
  out = []
  for t, grads in enumerate(grad_stream):
    extra = {} if next_stream is None else {"next_grads": next_stream[t]}
    updates, state = update(grads, state, **extra)
    out.append((updates, state))
  return out


@pytest.mark.parametrize("threshold, mode", [(10.0, "zero"), (3.0, "clip"), (math.inf, "zero")])
def test_simple_adasecant_matches_numpy_transcription(threshold, mode):
  stream = _gradient_stream(12, seed=1, bad_step=5)
  with jax.enable_x64(True):
    got = _jax_run(optax_lr.simple_adasecant(threshold, mode),
                   [jax.tree.map(jnp.asarray, g) for g in stream], None)
  updates, rates = _numpy_simple_adasecant(stream, threshold, mode)
  for t, (u, state) in enumerate(got):
    for k in updates[t]:
      np.testing.assert_allclose(u[k], updates[t][k], rtol=1e-12, err_msg=f"step {t} {k}")
      np.testing.assert_allclose(state.learning_rate[k], rates[t][k], rtol=1e-12)


def _thesis_simple_adasecant(grad_stream, threshold, mode):
  """Algorithm 3.2 of the thesis in NumPy float32, keeping the previous step ``Delta_{t-1}``
  itself (the library keeps the rate and rebuilds the step): ``a = g - g_prev``,
  ``alpha = |Delta_{t-1} / a|`` (0 where ``a = 0``; 1 where ``Delta_{t-1} = 0``), the threshold,
  ``Delta = -alpha g``; ``Delta_0 = -g`` and ``g_0 = 0``. Finite input only."""
  step = {k: np.zeros_like(v) for k, v in grad_stream[0].items()}
  g_prev = {k: np.zeros_like(v) for k, v in grad_stream[0].items()}
  out = []
  for t, grads in enumerate(grad_stream):
    updates, rates = {}, {}
    for k, g in grads.items():
      a = g - g_prev[k]
      previous = -g if t == 0 else step[k]
      secant = np.abs(np.where(a != 0, previous / np.where(a != 0, a, np.float32(1)),
                               np.float32(0)))
      rate = np.where(previous == 0, np.float32(1), secant)
      rate = np.where(rate >= threshold, np.float32(0 if mode == "zero" else threshold), rate)
      step[k], g_prev[k] = -rate * g, g
      updates[k], rates[k] = step[k], rate
    out.append((updates, rates))
  return out


@pytest.mark.parametrize("threshold, mode", [(10.0, "zero"), (3.0, "zero"), (math.inf, "zero"),
                                             (3.0, "clip"), (10.0, "clip")])
def test_simple_adasecant_is_the_thesis_rule_bit_for_bit(threshold, mode):
  # float32 on both sides: the step rebuilt from the stored rate and gradient is the product the
  # previous update computed, so the library's updates and rates equal those of the rule that
  # keeps the step itself, bit for bit (spikes, exact zeros and thresholded rates included).
  stream = [{k: v.astype(np.float32) for k, v in g.items()}
            for g in _gradient_stream(40, seed=4)]
  got = _jax_run(optax_lr.simple_adasecant(threshold, mode),
                 [jax.tree.map(jnp.asarray, g) for g in stream], None)
  want = _thesis_simple_adasecant(stream, threshold, mode)
  zeroed = 0
  for t, ((u, state), (updates, rates)) in enumerate(zip(got, want, strict=True)):
    for k in updates:
      np.testing.assert_array_equal(u[k], updates[k], err_msg=f"step {t} {k}")
      np.testing.assert_array_equal(state.learning_rate[k], rates[k], err_msg=f"step {t} {k}")
      np.testing.assert_array_equal(state.previous_grad[k], stream[t][k])
      zeroed += int(np.sum(rates[k] == 0))
  # The stream exercises the threshold (and the restart of an element that did not move).
  assert threshold == math.inf or mode == "clip" or zeroed > 0


@pytest.mark.parametrize("rate_rule, normalize, use_next", [
    ("least_squares", "block", True), ("least_squares", "block", False),
    ("least_squares", "global", True), ("least_squares", "none", False),
    ("paper", "block", True), ("paper", "block", False)])
@pytest.mark.parametrize("spikes", [False, True], ids=["random", "spiky"])
def test_adasecant_matches_numpy_transcription(rate_rule, normalize, use_next, spikes):
  # float64 on both sides; the differences are rounding only (XLA contracts a * b + c into a
  # fused multiply-add, NumPy does not), amplified where the rate rule cancels. A NaN and an
  # inf gradient element at step 6 are missing observations on both sides.
  stream = _gradient_stream(14, seed=2, spikes=spikes, bad_step=6)
  nxt = _gradient_stream(14, seed=3, spikes=spikes) if use_next else None
  max_rate = 25.0 if normalize != "none" else math.inf
  opt = optax_lr.adasecant(rate_rule, normalize=normalize, max_rate=max_rate)
  with jax.enable_x64(True):
    as_jax = lambda s: [jax.tree.map(jnp.asarray, g) for g in s]  # noqa: E731
    got = _jax_run(opt, as_jax(stream), None if nxt is None else as_jax(nxt))
  updates, rates, taus = _numpy_adasecant(stream, nxt, rate_rule, normalize, max_rate=max_rate)
  for t, (u, state) in enumerate(got):
    for k in updates[t]:
      np.testing.assert_allclose(u[k], updates[t][k], rtol=1e-9, atol=1e-300,
                                 err_msg=f"update, step {t}, leaf {k}")
      np.testing.assert_allclose(state.learning_rate[k], rates[t][k], rtol=1e-9,
                                 err_msg=f"rate, step {t}, leaf {k}")
      np.testing.assert_allclose(state.tau[k], taus[t][k], rtol=1e-12,
                                 err_msg=f"tau, step {t}, leaf {k}")


# --- The transformer language model of issue 23 -------------------------------------------------


def _tiny_lm_run(opt, seed, steps=12):
  """Training losses of a 1-block, width-32 byte transformer (batch 8, 16-byte windows of
  standard-library source), next_grads = the next batch at the same parameters, and the final
  optimizer state."""
  import models
  from train import text_data

  corpus = text_data.load_corpus(max_bytes=100_000)
  model = models.TransformerLM(num_layers=1, width=32, num_heads=2, max_len=16)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 16), jnp.int32))["params"]

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

  rng = np.random.default_rng(seed)
  batches = [text_data.sample_batch(corpus.train, rng, 8, 16) for _ in range(steps + 1)]
  xs, ys = jnp.asarray(np.stack([b[0] for b in batches])), jnp.asarray(np.stack([b[1] for b in
                                                                                 batches]))

  @jax.jit
  def run(params):
    def body(carry, t):
      params, state = carry
      value, grads = jax.value_and_grad(loss)(params, xs[t], ys[t])
      updates, state = opt.update(grads, state, params,
                                  next_grads=jax.grad(loss)(params, xs[t + 1], ys[t + 1]))
      return (optax.apply_updates(params, updates), state), value

    (_, state), losses = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))
    return losses, state

  losses, state = run(params)
  return np.asarray(losses), state


def _tiny_lm_losses(opt, seed, steps=12):
  return _tiny_lm_run(opt, seed, steps)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_adasecant_does_not_blow_up_on_a_tiny_transformer(seed):
  # Issue 23 in small. The byte model starts at about ln 256 = 5.55 nats (uniform logits). The
  # papers' rule (step_growth=inf) follows bare secants of the first steps, measured across the
  # block-normalised first step, to rates of 1e2-1e3 on LayerNorm, attention and MLP elements and
  # the loss climbs to 40-170 nats within 12 steps. With the growth bound no step exceeds twice
  # the RMS of the steps its secant was measured on, and the loss stays within 2.5 nats of ln 256
  # (a spike to about 8 at the third step) and ends below it.
  uniform = math.log(256)
  unbounded = _tiny_lm_losses(optax_lr.adasecant(step_growth=math.inf), seed)
  assert unbounded.max() > 5 * uniform
  bounded = _tiny_lm_losses(optax_lr.adasecant(), seed)
  assert np.all(np.isfinite(bounded)) and bounded.max() < uniform + 2.5
  assert bounded[-3:].mean() < uniform - 1.0


@pytest.mark.parametrize("seed", [0, 2])
def test_blow_up_test_flags_the_exploding_runs_only(seed):
  # The same tiny transformer. Exploding: AdaSecant with the papers' rule (step_growth=inf) and
  # Simple AdaSecant without a threshold: within 12 steps the loss passes 5 x ln 256 and a step
  # is more than 10 times the first (measured: 15 and 36 for AdaSecant, 3e3 and 3e6 for Simple
  # AdaSecant). Healthy: the defaults, whose first step stays the largest (ratio exactly 1).
  # (Seed 1's papers'-rule run reaches only 9.9 in 12 steps with its loss already at 120 nats,
  # and 18 by step 40: the test is on the steps, not the loss.)
  uniform = math.log(256)
  for opt, explodes in [(optax_lr.adasecant(step_growth=math.inf), True),
                        (optax_lr.simple_adasecant(threshold=math.inf), True),
                        (optax_lr.adasecant(), False), (optax_lr.simple_adasecant(), False)]:
    losses, state = _tiny_lm_run(opt, seed)
    assert (losses.max() > 5 * uniform) == explodes
    assert bool(optax_lr.blown_up(state)) == explodes
    assert (float(state.largest_step_ratio) > BLOW_UP_RATIO) == explodes
    if not explodes:
      assert float(state.largest_step_ratio) == pytest.approx(1.0)


def test_blow_up_test_by_hand_and_on_a_quadratic():
  # Steps of norm 2 (the first), 1 and 30 along one element: the record is 30 / 2 = 15 > 10.
  opt = optax_lr.simple_adasecant(threshold=math.inf)
  state = opt.init({"x": jnp.zeros(1)})
  # Rate 1: step -2. Then the secant |(-2) / (1 - 2)| = 2: step -2. Then |(-2) / (16 - 1)|
  # = 2/15: step -32/15, ratio 16/15.
  for g in (2.0, 1.0, 16.0):
    updates, state = opt.update({"x": jnp.array([g])}, state)
  assert float(state.first_step_norm) == 2.0
  assert float(state.largest_step_ratio) == pytest.approx(16 / 15, rel=1e-6)
  assert not bool(optax_lr.blown_up(state))
  # The gradient barely changes (a = 16.5 - 16 = 0.5): rate (32/15) / 0.5, step 70.4 = 35.2 x 2.
  updates, state = opt.update({"x": jnp.array([16.5])}, state)
  assert float(updates["x"][0]) == pytest.approx(-32 / 15 / 0.5 * 16.5, rel=1e-6)
  assert float(state.largest_step_ratio) == pytest.approx(32 / 15 / 0.5 * 16.5 / 2, rel=1e-6)
  assert bool(optax_lr.blown_up(state))
  # Inside a chain, and a state without the field never reports one.
  chained = optax.chain(optax.identity(), opt)
  assert not bool(optax_lr.blown_up(chained.init({"x": jnp.zeros(1)})))
  assert not bool(optax_lr.blown_up(optax.adam(1e-3).init({"x": jnp.zeros(1)})))
  assert optax_lr.largest_step_ratio(optax.adam(1e-3).init({"x": jnp.zeros(1)})) is None
  # A small diagonal quadratic: both methods land with their first step the largest.
  h = jnp.array([1.0, 4.0])
  for opt in (optax_lr.simple_adasecant(), optax_lr.adasecant()):
    params, state = {"x": jnp.array([1.0, 1.0])}, opt.init({"x": jnp.zeros(2)})
    for _ in range(20):
      updates, state = opt.update({"x": h * params["x"]}, state)
      params = optax.apply_updates(params, updates)
    assert float(state.largest_step_ratio) == pytest.approx(1.0)
    assert not bool(optax_lr.blown_up(state))


def test_simple_adasecant_growth_bound_by_hand():
  # f = 0.05 x^2 / 2 from x = 1: the first step -g = -0.05, then g = 0.0475, a = -0.0025 and the
  # secant rate 0.05 / 0.0025 = 20 (below the threshold 100) lands: step -0.95. With
  # step_growth=2 the rate is 2 * 0.05 / 0.0475, and the step -0.1 is twice the first.
  for step_growth, expected in [(math.inf, -0.95), (2.0, -0.1)]:
    opt = optax_lr.simple_adasecant(threshold=100.0, step_growth=step_growth)
    x, state = jnp.array([1.0]), opt.init({"x": jnp.zeros(1)})
    for _ in range(2):
      updates, state = opt.update({"x": 0.05 * x}, state)
      x = x + updates["x"]
    assert float(updates["x"][0]) == pytest.approx(expected, rel=1e-5)
