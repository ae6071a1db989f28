"""CAM-HD: exact identities with HD, hand-derived steps per level, labels, blending, floor."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

# A tiny tree with a matrix (filters = its 3 columns), a vector and a 0-d leaf: N = 10.
SHAPES = {"a": (2, 3), "b": (3,), "c": ()}
N = 10


def _grads(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _zeros():
  return {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.3, -0.7, 0.1, 2.0]),
          "s": jnp.array(0.4)}


def _loss(p):
  return (jnp.sum(jnp.cos(p["w"]) * p["w"]) + jnp.sum(p["b"] ** 4) + jnp.sum(p["w"] @ p["b"])
          + p["s"] ** 2)


def _trajectory(opt, steps, jit):
  params, state = PARAMS, opt.init(PARAMS)
  update = jax.jit(opt.update) if jit else opt.update
  for _ in range(steps):
    updates, state = update(jax.grad(_loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


# ------------------------------------------------------------------------------------------------
# The identity that pins the semantics: levels=("global",), delta = 0, r = 0 is HD exactly.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ["hypergradient", "sgd_hd", "sgdn_hd", "adam_hd"])
def test_global_level_is_hd_bit_for_bit(name, jit):
  if name == "hypergradient":
    ours = optax_lr.cam_hd(optax.trace(0.5), 0.05, 1e-3, levels=("global",))
    reference = optax_lr.hypergradient(optax.trace(0.5), 0.05, 1e-3)
  elif name == "sgd_hd":
    ours = optax_lr.sgd_cam_hd(0.05, 1e-2, levels=("global",), weight_decay=1e-2)
    reference = optax_lr.sgd_hd(0.05, 1e-2, weight_decay=1e-2)
  elif name == "sgdn_hd":
    ours = optax_lr.sgd_cam_hd(0.02, 1e-3, momentum=0.9, nesterov=True, levels="global")
    reference = optax_lr.sgd_hd(0.02, 1e-3, momentum=0.9, nesterov=True)
  else:
    ours = optax_lr.adam_cam_hd(0.05, 1e-3, b1=0.8, b2=0.99, levels=("global",))
    reference = optax_lr.adam_hd(0.05, 1e-3, b1=0.8, b2=0.99)
  params, state = _trajectory(ours, 6, jit)
  ref_params, ref_state = _trajectory(reference, 6, jit)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  ours_rates = optax_lr.learning_rates(state)
  (ref_rate,) = optax_lr.learning_rates(ref_state).values()
  (rate,) = [v for k, v in ours_rates.items() if k.endswith("learning_rate/global")]
  assert float(ref_rate) != 0.05  # the rate did move
  np.testing.assert_array_equal(rate, ref_rate)


def test_fixed_combination_weights_never_change():
  opt = optax_lr.adam_cam_hd(0.05, 1e-3, levels=("parameter", "filter", "layer", "global"),
                             combination=optax_lr.CombinationWeights((3, 3, 1, 3), 0.0),
                             blending=optax_lr.Blending(0.01))
  _, state = _trajectory(opt, 8, jit=True)
  gammas = state.learning_rate["combination_weights"]
  for level, weight in zip(("parameter", "filter", "layer", "global"), (0.3, 0.3, 0.1, 0.3),
                           strict=True):
    assert gammas[level].dtype == jnp.float32
    assert float(gammas[level]) == float(np.float32(weight)), level
  # The rates themselves did move.
  assert float(state.learning_rate["global"]) != 0.05


# ------------------------------------------------------------------------------------------------
# Hand-derived two-step examples, one level at a time (SGD base: d_t = g_t).
# ------------------------------------------------------------------------------------------------


def _expected_level_rates(level, e, alpha0, beta):
  """alpha^l(p) after step 2 from Eq. 8 with h_j = (N / n_j) sum_{p in j} e_p, per element."""
  if level == "global":
    total = sum(x.sum() for x in e.values())
    return {k: np.full(s, alpha0 + beta * total) for k, s in SHAPES.items()}
  if level == "layer":
    return {k: np.full(SHAPES[k], alpha0 + beta * (N / x.size) * x.sum()) for k, x in e.items()}
  if level == "filter":
    # The default filter_labels put "a" (2, 3) and "b" (3,) (same parent, same last axis) into
    # 3 shared groups a[:, j] + b[j] of 3 elements; the 0-d "c" is one group of 1.
    shared = alpha0 + beta * (N / 3) * (e["a"].sum(axis=0) + e["b"])
    return {"a": np.broadcast_to(shared, (2, 3)), "b": shared, "c": alpha0 + beta * N * e["c"]}
  return {k: alpha0 + beta * N * x for k, x in e.items()}  # parameter


@pytest.mark.parametrize("level", ["parameter", "filter", "layer", "global"])
def test_two_steps_by_hand(level):
  alpha0, beta = 0.1, 0.01
  g1, g2 = _grads(1), _grads(2)
  opt = optax_lr.sgd_cam_hd(alpha0, hypergrad_lr=beta, levels=(level,))
  state = opt.init(_zeros())
  # Step 1: d_0 = 0, so e = 0 and every rate stays alpha0.
  updates, state = opt.update(g1, state)
  for k in SHAPES:
    np.testing.assert_allclose(updates[k], -alpha0 * g1[k], rtol=1e-6)
  # Step 2: e = g_2 * g_1.
  e = {k: g2[k].astype(np.float64) * g1[k] for k in SHAPES}
  expected = _expected_level_rates(level, e, alpha0, beta)
  updates, state = opt.update(g2, state)
  for k in SHAPES:
    np.testing.assert_allclose(updates[k], -expected[k] * g2[k], rtol=2e-6, atol=1e-9)
  stored = state.learning_rate[level]
  stored = {k: stored for k in SHAPES} if level == "global" else stored
  for k in SHAPES:
    np.testing.assert_allclose(np.broadcast_to(stored[k], SHAPES[k]), expected[k], rtol=2e-6)
  # The effective rate the state reports is the one just applied (delta = 0, r = 0).
  effective = optax_lr.cam_hd_effective_learning_rate(state)
  for k in SHAPES:
    np.testing.assert_allclose(effective[k], expected[k], rtol=2e-6)


def test_mean_level_scaling_divides_by_n():
  # level_scaling="mean": h_j = (1 / n_j) sum_{p in j} e_p, i.e. the same-scale step over N.
  alpha0, beta = 0.1, 0.5
  g1, g2 = _grads(3), _grads(4)
  opt = optax_lr.cam_hd(optax.identity(), alpha0, beta, levels=("layer",),
                        groups=optax_lr.LevelGroups(scaling="mean"))
  state = opt.init(_zeros())
  _, state = opt.update(g1, state)
  _, state = opt.update(g2, state)
  for k in SHAPES:
    e = g2[k].astype(np.float64) * g1[k]
    np.testing.assert_allclose(state.learning_rate["layer"][k], alpha0 + beta * e.mean(),
                               rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# All levels together, learned weights and blending, against a numpy transcription of Algorithm 1.
# ------------------------------------------------------------------------------------------------


def _group_ids(level):
  """Per element of the flattened tree ("a", "b", "c" in order), the group it belongs to."""
  if level == "global":
    return np.zeros(N, int)
  if level == "layer":
    return np.array([0] * 6 + [1] * 3 + [2])
  if level == "filter":
    # a[:, j] and b[j] share group j (the default filter_labels); c is group 3.
    return np.concatenate([np.tile(np.arange(3), 2), np.arange(3), [3]])
  return np.arange(N)


def _reference(levels, weights, grads, alpha0, beta, delta, r, alpha_inf, softmax):
  """Algorithm 1 in float64 on flat vectors (same-scale steps, N / n_j); returns the updates."""
  gamma = np.asarray(weights, float) / np.sum(weights)
  rates = {level: np.full(N, alpha0) for level in levels}
  d_prev = np.zeros(N)
  all_updates = []
  for t, g in enumerate(grads):
    g = np.concatenate([np.ravel(g[k]) for k in SHAPES]).astype(np.float64)
    tau = np.exp(-r * t)
    e = g * d_prev
    old = {level: rate.copy() for level, rate in rates.items()}
    for i, level in enumerate(levels):
      ids = _group_ids(level)
      sums, sizes = np.bincount(ids, e), np.bincount(ids)
      rates[level] = rates[level] + beta * gamma[i] * tau * (N / sizes * sums)[ids]
    descent = np.array([tau * np.sum(e * old[level]) for level in levels])
    if softmax:
      logits = np.log(gamma) + delta * gamma * (descent - np.sum(gamma * descent))
      new_gamma = np.exp(logits) / np.sum(np.exp(logits))
    else:
      clipped = np.maximum(gamma + delta * descent, 0.0)
      new_gamma = clipped / clipped.sum()
    combined = sum(gamma[i] * rates[level] for i, level in enumerate(levels))
    kappa = tau * combined + (1 - tau) * alpha_inf
    all_updates.append(-kappa * g)
    gamma, d_prev = new_gamma, g
  return all_updates, gamma, rates


@pytest.mark.parametrize("softmax", [False, True], ids=["clip", "softmax"])
def test_all_levels_learned_weights_and_blending_match_algorithm_1(softmax):
  levels = ("filter", "parameter", "global", "layer")  # any order; weights follow it
  weights = (0.2, 0.3, 0.4, 0.1)
  # The softmax step on the logits is gamma (1 - gamma) times smaller: a larger delta moves it.
  alpha0, beta, delta, r, alpha_inf = 0.1, 2e-3, 5.0 if softmax else 0.5, 0.2, 0.03
  grads = [_grads(10 + t) for t in range(4)]
  opt = optax_lr.cam_hd(
      optax.identity(), alpha0, beta, levels=levels,
      combination=optax_lr.CombinationWeights(weights, delta, "softmax" if softmax else "clip"),
      blending=optax_lr.Blending(r, alpha_inf))
  expected_updates, expected_gamma, expected_rates = _reference(
      levels, weights, grads, alpha0, beta, delta, r, alpha_inf, softmax)
  state = opt.init(_zeros())
  update = jax.jit(opt.update)
  for g, expected in zip(grads, expected_updates, strict=True):
    updates, state = update(g, state)
    flat = np.concatenate([np.ravel(updates[k]) for k in SHAPES])
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-8)
  gammas = state.learning_rate["combination_weights"]
  got_gamma = np.array([float(gammas[level]) for level in levels])
  np.testing.assert_allclose(got_gamma, expected_gamma, rtol=1e-5)
  assert abs(got_gamma.sum() - 1.0) < 1e-6
  assert np.max(np.abs(got_gamma - np.array(weights))) > 1e-3  # the weights did learn
  for level in levels:
    stored = state.learning_rate[level]
    flat = np.concatenate([np.ravel(np.broadcast_to(
        stored if level == "global" else stored[k], SHAPES[k])) for k in SHAPES])
    np.testing.assert_allclose(flat, expected_rates[level], rtol=1e-5)


def test_clipped_weight_stays_on_the_simplex():
  # N = 2, alpha0 = beta = 0.1, gamma = 1/2. Step 2: e = (1, -1), so a_param = 0.1 + 0.1 e =
  # (0.2, 0), a_global = 0.1 (sum e = 0). Step 3: e = (1, -1.5): -dL/dgamma_global =
  # 0.1 * (-0.5) < 0 < -dL/dgamma_param = 0.2 * 1 + 0 * (-1.5); with a huge delta the global
  # weight goes below 0, is clipped, and the parameter weight becomes 1. a_param moves on to
  # (0.2 + 0.1 * 1, 0 + 0.1 * (-1.5)).
  opt = optax_lr.cam_hd(optax.identity(), 0.1, 0.1, levels=("parameter", "global"),
                        combination=optax_lr.CombinationWeights((0.5, 0.5), 1e3))
  state = opt.init(jnp.zeros(2))
  for g in ([1.0, 1.0], [1.0, -1.0], [1.0, 1.5]):
    _, state = opt.update(jnp.array(g), state)
  np.testing.assert_allclose(state.learning_rate["parameter"], [0.3, -0.15], rtol=1e-6)
  gammas = state.learning_rate["combination_weights"]
  assert (float(gammas["global"]), float(gammas["parameter"])) == (0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Layer labels.
# ------------------------------------------------------------------------------------------------


def test_layer_labels_share_one_rate_per_group():
  alpha0, beta = 0.1, 0.01
  g1, g2 = _grads(6), _grads(7)
  opt = optax_lr.sgd_cam_hd(alpha0, beta, levels=("layer",),
                            groups=optax_lr.LevelGroups({"a": "dense", "b": "dense",
                                                         "c": "scale"}))
  state = opt.init(_zeros())
  _, state = opt.update(g1, state)
  _, state = opt.update(g2, state)
  e = {k: g2[k].astype(np.float64) * g1[k] for k in SHAPES}
  dense = alpha0 + beta * (N / 9) * (e["a"].sum() + e["b"].sum())
  scale = alpha0 + beta * (N / 1) * e["c"]
  rates = state.learning_rate["layer"]
  np.testing.assert_allclose(rates["a"], dense, rtol=1e-6)
  np.testing.assert_array_equal(rates["a"], rates["b"])  # one rate, held by each member
  np.testing.assert_allclose(rates["c"], scale, rtol=1e-6)


def test_layer_labels_from_the_leaf_path():
  params = {"conv": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)},
            "head": {"kernel": jnp.zeros((2, 1))}}
  rng = np.random.default_rng(8)
  g1, g2 = (jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32),
                         params) for _ in range(2))
  opt = optax_lr.sgd_cam_hd(0.1, 0.01, levels=("layer",),
                            groups=optax_lr.LevelGroups(optax_lr.parent_module_label))
  state = opt.init(params)
  _, state = opt.update(g1, state)
  _, state = opt.update(g2, state)
  e = jax.tree.map(lambda x, y: np.asarray(x, np.float64) * np.asarray(y), g2, g1)
  conv = 0.1 + 0.01 * (8 / 6) * (e["conv"]["kernel"].sum() + e["conv"]["bias"].sum())
  head = 0.1 + 0.01 * (8 / 2) * e["head"]["kernel"].sum()
  rates = state.learning_rate["layer"]
  np.testing.assert_allclose(rates["conv"]["kernel"], conv, rtol=1e-6)
  np.testing.assert_array_equal(rates["conv"]["kernel"], rates["conv"]["bias"])
  np.testing.assert_allclose(rates["head"]["kernel"], head, rtol=1e-6)
  assert optax_lr.parent_module_label(jax.tree_util.tree_flatten_with_path(params)[0][0][0]) \
      == "conv"


def test_grouped_rates_are_fresh_buffers_that_donate():
  # The leaves of a group hold one value, but never one array twice: after an eager step the
  # state still donates.
  opt = optax_lr.sgd_cam_hd(0.1, 0.01, groups=optax_lr.LevelGroups(optax_lr.parent_module_label))
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  state = opt.init(params)
  _, state = opt.update(jax.tree.map(lambda x: 0.5 * x, params), state, params)
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state.learning_rate)]
  assert len(pointers) == len(set(pointers))
  step = jax.jit(lambda p, s: opt.update(jax.tree.map(lambda x: 0.5 * x, p), s, p),
                 donate_argnums=1)
  _, state = step(params, state)
  _, state = step(params, state)
  rates = state.learning_rate["layer"]["dense"]
  np.testing.assert_array_equal(rates["kernel"], rates["bias"])


def test_labels_that_do_not_match_the_params_raise_at_init():
  opt = optax_lr.sgd_cam_hd(0.1, levels=("layer", "global"),
                            groups=optax_lr.LevelGroups({"a": "x", "b": "y"}))
  with pytest.raises(ValueError, match="layer_labels"):
    opt.init(_zeros())
  opt = optax_lr.sgd_cam_hd(0.1, groups=optax_lr.LevelGroups({"a": "x", "b": "y", "c": ["z"]}))
  with pytest.raises(ValueError, match="layer_labels"):
    opt.init(_zeros())
  opt = optax_lr.sgd_cam_hd(0.1, groups=optax_lr.LevelGroups(lambda path: ["unhashable"]))
  with pytest.raises(ValueError, match="layer_labels"):
    opt.init(_zeros())


# ------------------------------------------------------------------------------------------------
# Convergence blending (Section 2.4).
# ------------------------------------------------------------------------------------------------


def test_blending_follows_tau_and_reaches_final_rate():
  alpha0, alpha_inf, r = 0.1, 0.02, 1.0
  opt = optax_lr.sgd_cam_hd(alpha0, hypergrad_lr=0.0, levels=("layer", "global"),
                            blending=optax_lr.Blending(r, alpha_inf))
  g = _grads(9)
  state = opt.init(_zeros())
  update = jax.jit(opt.update)
  for t in range(30):
    updates, state = update(g, state)
    kappa = np.exp(-r * t) * alpha0 + (1 - np.exp(-r * t)) * alpha_inf
    np.testing.assert_allclose(updates["a"], -kappa * g["a"], rtol=1e-6)
  summary = optax_lr.cam_hd_rate_summary(state)
  np.testing.assert_allclose(summary["mean"], alpha_inf, rtol=1e-7)
  # With hypergradients on, the rates move but the applied rate still lands on a_inf.
  opt = optax_lr.adam_cam_hd(alpha0, 1e-3, levels=("parameter", "global"),
                             combination=optax_lr.CombinationWeights(learning_rate=0.01),
                             blending=optax_lr.Blending(r, alpha_inf))
  _, state = _trajectory(opt, 30, jit=True)
  assert abs(float(state.learning_rate["global"]) - alpha0) > 1e-4
  updates, _ = opt.update(jax.grad(_loss)(PARAMS), state, PARAMS)
  direction = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
  # kappa = tau a* + (1 - tau) a_inf with tau = exp(-30) ~ 1e-13: the update is -a_inf d.
  d, _ = direction.update(jax.grad(_loss)(PARAMS), state.inner_state, PARAMS)
  jax.tree.map(lambda u, x: np.testing.assert_allclose(u, -alpha_inf * x, rtol=1e-5), updates, d)


# ------------------------------------------------------------------------------------------------
# State, telemetry, memory, extra arguments.
# ------------------------------------------------------------------------------------------------


def test_learning_rates_reports_every_level_and_the_weights():
  opt = optax_lr.adam_cam_hd(levels=("parameter", "filter", "layer", "global"),
                             weight_decay=1e-4)
  rates = optax_lr.learning_rates(opt.init(_zeros()))
  prefix = "1/learning_rate/"
  expected = {prefix + "global"} | {prefix + "combination_weights/" + level for level in
                                    ("parameter", "filter", "layer", "global")}
  expected |= {prefix + f"{level}/{k}" for level in ("parameter", "filter", "layer")
               for k in SHAPES}
  assert set(rates) == expected
  assert rates[prefix + "filter/a"].shape == (3,)
  assert rates[prefix + "filter/c"].shape == ()
  assert rates[prefix + "parameter/a"].shape == (2, 3)


def test_rate_summary_of_the_effective_rate():
  opt = optax_lr.sgd_cam_hd(0.1, 0.01, levels=("parameter", "global"),
                            combination=optax_lr.CombinationWeights((0.25, 0.75)))
  state = opt.init(_zeros())
  for seed in (20, 21):
    _, state = opt.update(_grads(seed), state)
  summary = jax.jit(optax_lr.cam_hd_rate_summary)(state)
  rates = state.learning_rate
  kappa = np.concatenate([np.ravel(0.25 * np.asarray(rates["parameter"][k], np.float64)
                                   + 0.75 * float(rates["global"])) for k in SHAPES])
  np.testing.assert_allclose(summary["mean"], kappa.mean(), rtol=1e-6)
  np.testing.assert_allclose(summary["min"], kappa.min(), rtol=1e-6)
  np.testing.assert_allclose(summary["max"], kappa.max(), rtol=1e-6)
  np.testing.assert_allclose(summary["norm"], np.linalg.norm(kappa), rtol=1e-6)
  assert kappa.max() - kappa.min() > 1e-4


def test_effective_rate_of_a_blended_run_from_the_state_alone():
  # Learned weights, blending towards a_inf, a floor: after four steps the rate read from the
  # state is max(tau (sum gamma a) + (1 - tau) a_inf, floor) with tau = exp(-4 r), by hand.
  r, alpha_inf, floor = 0.1, 0.02, 0.03
  opt = optax_lr.sgd_cam_hd(
      0.1, 0.01, levels=("parameter", "global"),
      rule=optax_lr.RateRule(min_learning_rate=floor),
      combination=optax_lr.CombinationWeights((0.25, 0.75), learning_rate=0.5),
      blending=optax_lr.Blending(r, alpha_inf))
  state = opt.init(_zeros())
  for seed in range(4):
    _, state = opt.update(_grads(40 + seed), state)
  tau = np.exp(-r * 4)
  np.testing.assert_allclose(state.tau, tau, rtol=1e-6)
  rates, gamma = state.learning_rate, state.learning_rate["combination_weights"]
  assert abs(float(gamma["global"]) - 0.75) > 1e-4  # the weights moved
  effective = jax.jit(optax_lr.cam_hd_effective_learning_rate)(state)
  for k in SHAPES:
    combined = (float(gamma["parameter"]) * np.asarray(rates["parameter"][k], np.float64)
                + float(gamma["global"]) * float(rates["global"]))
    kappa = np.maximum(tau * combined + (1 - tau) * alpha_inf, floor)
    np.testing.assert_allclose(effective[k], kappa, rtol=1e-6)
  # Without the options the settings are neutral: tau 1, a_inf 0, no floor.
  plain = optax_lr.sgd_cam_hd(0.1, 0.01).init(_zeros())
  assert (float(plain.tau), float(plain.final_learning_rate), float(plain.min_learning_rate)) \
      == (1.0, 0.0, -np.inf)


@pytest.mark.parametrize("levels, rates, scalars", [
    # count + one layer rate per leaf + global + one weight per level (+ tau, a_inf, the floor).
    (("layer", "global"), 0, 1 + 3 + 1 + 2 + 3),
    (("parameter", "layer", "global"), N, 1 + 3 + 1 + 3 + 3),
    (("filter",), 3 + 3 + 1, 1 + 1 + 3)])
def test_state_holds_one_parameter_sized_buffer_plus_element_rates(levels, rates, scalars):
  # Beyond the inner state: d_prev (N elements), the element-level rates, and scalars only.
  opt = optax_lr.cam_hd(optax.scale_by_adam(), 1e-3, 1e-8, levels=levels)
  state = opt.init(_zeros())
  own = jax.tree.leaves(state._replace(inner_state=()))
  assert sum(x.size for x in own) == N + rates + scalars
  assert sum(x.size for x in jax.tree.leaves(state.learning_rate)) == rates + scalars - 4


def test_extra_args_are_forwarded_to_the_inner_transform():
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, scale):
    del params
    return jax.tree.map(lambda g: scale * g, updates), state

  inner = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  opt = optax_lr.cam_hd(inner, 0.1, 0.0, levels=("global",))
  g = _grads(30)
  updates, _ = opt.update(g, opt.init(_zeros()), None, scale=3.0)
  np.testing.assert_allclose(updates["a"], -0.3 * g["a"], rtol=1e-6)


def test_inject_hyperparams():
  options = dict(combination=optax_lr.CombinationWeights(learning_rate=0.1),
                 blending=optax_lr.Blending(0.01), levels=("parameter", "global"))
  # The option objects are passed through unchanged; the numbers are injected.
  injected = optax.inject_hyperparams(optax_lr.adam_cam_hd, static_args=("weight_decay",))(
      learning_rate=0.05, hypergrad_lr=1e-3, **options)
  plain = optax_lr.adam_cam_hd(0.05, 1e-3, **options)
  params, state = _trajectory(injected, 4, jit=True)
  ref_params, ref_state = _trajectory(plain, 4, jit=True)
  # Injected hyperparameters are float32 arrays, not Python floats: equal up to their rounding.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4), params, ref_params)
  rate = state.inner_state.learning_rate["global"]
  np.testing.assert_allclose(rate, ref_state.learning_rate["global"], rtol=1e-4)
  assert abs(float(rate) - 0.05) > 1e-4


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    ({"levels": ("layer", "nonsense")}, "levels"),
    ({"levels": ("layer", "layer")}, "levels"),
    ({"levels": ()}, "levels"),
    ({"levels": ("layer", "global"), "combination": optax_lr.CombinationWeights((1.0,))},
     "CombinationWeights.initial"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"hypergrad_lr": -1e-3}, "hypergrad_lr"),
])
def test_bad_input_raises(kwargs, name):
  args = {"learning_rate": 0.1, "hypergrad_lr": 1e-3} | kwargs
  with pytest.raises(ValueError, match=f"`{name}`"):
    optax_lr.cam_hd(optax.identity(), **args)


@pytest.mark.parametrize("option, kwargs, name", [
    (optax_lr.CombinationWeights, {"initial": (1.0, -0.5)}, "CombinationWeights.initial"),
    (optax_lr.CombinationWeights, {"initial": (0.0, 0.0)}, "CombinationWeights.initial"),
    (optax_lr.CombinationWeights, {"initial": ("x", 1)}, "CombinationWeights.initial"),
    (optax_lr.CombinationWeights, {"learning_rate": -0.1}, "CombinationWeights.learning_rate"),
    (optax_lr.CombinationWeights, {"parametrization": "sigmoid"},
     "CombinationWeights.parametrization"),
    (optax_lr.Blending, {"decay_rate": -0.01}, "Blending.decay_rate"),
    (optax_lr.Blending, {"decay_rate": 0.0}, "Blending.decay_rate"),
    (optax_lr.Blending, {"decay_rate": 0.1, "final_learning_rate": -0.01},
     "Blending.final_learning_rate"),
    (optax_lr.LevelGroups, {"scaling": "sum"}, "LevelGroups.scaling"),
])
def test_bad_option_raises(option, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    option(**kwargs)


@pytest.mark.parametrize("option, kwargs, name", [
    (optax_lr.CombinationWeights, {"learning_rate": "0.1"}, "CombinationWeights.learning_rate"),
    (optax_lr.Blending, {"decay_rate": None}, "Blending.decay_rate"),
    (optax_lr.Blending, {"decay_rate": 0.1, "final_learning_rate": True},
     "Blending.final_learning_rate"),
])
def test_wrong_kind_of_option_field_raises_type_error(option, kwargs, name):
  with pytest.raises(TypeError, match=f"`{name}`"):
    option(**kwargs)


@pytest.mark.parametrize("name", ["combination", "blending", "groups"])
def test_an_option_must_be_its_object(name):
  with pytest.raises(TypeError, match=f"`{name}`"):
    optax_lr.cam_hd(optax.identity(), 0.1, 1e-3, **{name: 0.1})


@pytest.mark.parametrize("factory, kwargs, name", [
    (optax_lr.sgd_cam_hd, {"learning_rate": 0.1, "momentum": 1.0}, "momentum"),
    (optax_lr.sgd_cam_hd, {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
    (optax_lr.sgd_cam_hd, {"learning_rate": 0.1, "levels": ("global", "filtre")}, "levels"),
    (optax_lr.adam_cam_hd, {"b1": 1.0}, "b1"),
    (optax_lr.adam_cam_hd, {"b2": -0.1}, "b2"),
    (optax_lr.adam_cam_hd, {"eps": -1.0}, "eps"),
])
def test_alias_bad_input_raises(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    factory(**kwargs)


# ------------------------------------------------------------------------------------------------
# Filter groups: a bias joins its kernel's groups (group j = kernel[..., j] + bias[j]).
# ------------------------------------------------------------------------------------------------

MODULE_SHAPES = {"Dense_0": {"bias": (3,), "kernel": (2, 3)},
                 "Dense_1": {"bias": (2,), "kernel": (3, 2)}}
MODULE_N = 3 + 6 + 2 + 6


def _module_grads(seed):
  rng = np.random.default_rng(seed)
  return {m: {k: rng.standard_normal(s).astype(np.float32) for k, s in leaves.items()}
          for m, leaves in MODULE_SHAPES.items()}


def _filter_rates_after_two_steps(filter_labels):
  alpha0, beta = 0.1, 0.01
  g1, g2 = _module_grads(5), _module_grads(6)
  opt = optax_lr.sgd_cam_hd(alpha0, hypergrad_lr=beta, levels=("filter",),
                            **({} if filter_labels == "default" else
                               {"groups": optax_lr.LevelGroups(filter_labels=filter_labels)}))
  zeros = jax.tree.map(lambda x: jnp.zeros_like(x), g1)
  state = opt.init(zeros)
  _, state = opt.update(g1, state)
  updates, state = opt.update(g2, state)
  e = jax.tree.map(lambda a, b: a.astype(np.float64) * b, g2, g1)
  return alpha0, beta, g2, e, updates, state.learning_rate["filter"]


def test_bias_joins_its_kernels_filter_groups_by_default():
  alpha0, beta, g2, e, updates, rates = _filter_rates_after_two_steps("default")
  expected = {}
  for module, rows in (("Dense_0", 2), ("Dense_1", 3)):
    # Group j = kernel[:, j] (rows elements) + bias[j]: n_j = rows + 1, h_j = (N / n_j) sum e.
    sums = e[module]["kernel"].sum(axis=0) + e[module]["bias"]
    expected[module] = alpha0 + beta * (MODULE_N / (rows + 1)) * sums
  for module in MODULE_SHAPES:
    for leaf in ("kernel", "bias"):
      np.testing.assert_allclose(rates[module][leaf], expected[module], rtol=2e-6)
      np.testing.assert_allclose(updates[module][leaf], -expected[module] * g2[module][leaf],
                                 rtol=2e-6, atol=1e-9)
  # One value per group, but separate buffers (donation needs every state array once).
  assert rates["Dense_0"]["kernel"] is not rates["Dense_0"]["bias"]


def test_filter_labels_none_and_label_trees():
  alpha0, beta, _, e, _, rates = _filter_rates_after_two_steps(None)
  for module, rows in (("Dense_0", 2), ("Dense_1", 3)):
    # Every leaf its own groups: a bias element is a group of one (h = N e).
    np.testing.assert_allclose(rates[module]["bias"],
                               alpha0 + beta * MODULE_N * e[module]["bias"], rtol=2e-6)
    np.testing.assert_allclose(
        rates[module]["kernel"],
        alpha0 + beta * (MODULE_N / rows) * e[module]["kernel"].sum(axis=0), rtol=2e-6)
  # A label tree: Dense_0's kernel and bias share groups, Dense_1's do not.
  labels = {"Dense_0": {"bias": "k0", "kernel": "k0"}, "Dense_1": {"bias": "b1", "kernel": "k1"}}
  _, _, _, _, _, mixed = _filter_rates_after_two_steps(labels)
  np.testing.assert_allclose(
      mixed["Dense_0"]["bias"],
      alpha0 + beta * (MODULE_N / 3) * (e["Dense_0"]["kernel"].sum(axis=0) + e["Dense_0"]["bias"]),
      rtol=2e-6)
  np.testing.assert_allclose(mixed["Dense_1"]["bias"], rates["Dense_1"]["bias"], rtol=1e-7)
  with pytest.raises(ValueError, match="`filter_labels`"):
    _filter_rates_after_two_steps({"Dense_0": "a"})


# ------------------------------------------------------------------------------------------------
# min_learning_rate floors the effective rate (not the level rates).
# ------------------------------------------------------------------------------------------------


def test_min_learning_rate_floors_the_effective_rate():
  # Parameter level, alpha0 = 0.1, beta = 0.01, N = 10: after g1 = 1 everywhere, step 2 gives
  # a_p = 0.1 + 0.01 * 10 * g2_p: -0.2 where g2 = -3, 0.2 where g2 = 1.
  g1 = {k: np.ones(s, np.float32) for k, s in SHAPES.items()}
  g2 = {"a": np.array([[-3, 1, 1], [1, -3, 1]], np.float32), "b": np.array([1, -3, 1], np.float32),
        "c": np.float32(-3)}
  level_rate = {k: np.where(g == -3, -0.2, 0.2) for k, g in g2.items()}
  for floor in (None, 0.05):
    opt = optax_lr.sgd_cam_hd(0.1, hypergrad_lr=0.01, levels=("parameter",),
                              rule=optax_lr.RateRule(min_learning_rate=floor))
    state = opt.init(_zeros())
    _, state = opt.update(g1, state)
    updates, state = opt.update(g2, state)
    kappa = level_rate if floor is None else {k: np.maximum(r, floor)
                                              for k, r in level_rate.items()}
    effective = optax_lr.cam_hd_effective_learning_rate(state)  # the floor is in the state
    for k in SHAPES:
      # Unfloored, a -3 element with rate -0.2 steps uphill by 0.6; floored, downhill by 0.15.
      np.testing.assert_allclose(updates[k], -kappa[k] * g2[k], rtol=1e-6)
      np.testing.assert_allclose(state.learning_rate["parameter"][k], level_rate[k], rtol=1e-6)
      np.testing.assert_allclose(effective[k], kappa[k], rtol=1e-6)
  with pytest.raises(ValueError, match="`RateRule.min_learning_rate`"):
    optax_lr.RateRule(min_learning_rate=-1.0)


# ------------------------------------------------------------------------------------------------
# Adam-CAM-HD and heavy-ball SGD-CAM-HD keep no copy of the previous direction.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [("layer", "global"), ("filter", "layer", "global"),
                                    ("parameter", "layer", "global")])
def test_adam_cam_hd_read_direction_equals_stored(levels):
  # d_{t-1} read off Adam's moments gives every level, the per-element one included, the same
  # values as the kept buffer: parameters, rates and weights agree bit for bit, with the rates
  # learning (beta large enough to move them) and the weights too.
  kwargs = dict(learning_rate=0.01, hypergrad_lr=1e-3, levels=levels,
                combination=optax_lr.CombinationWeights(learning_rate=0.01),
                groups=optax_lr.LevelGroups(optax_lr.parent_module_label))
  ours_params, ours = _trajectory(optax_lr.adam_cam_hd(**kwargs), 30, jit=True)
  kept_params, kept = _trajectory(
      optax_lr.adam_cam_hd(**kwargs, rule=optax_lr.RateRule(store_previous_direction=True)), 30,
      jit=True)
  assert isinstance(ours.previous_direction, optax.EmptyState)
  jax.tree.map(np.testing.assert_array_equal, (ours_params, ours.learning_rate, ours.inner_state),
               (kept_params, kept.learning_rate, kept.inner_state))
  # The rates moved (the comparison is not between two fixed rates).
  assert float(jnp.abs(ours.learning_rate["global"] - 0.01)) > 1e-3
  # The effective-rate helper reads the shapes off Adam's moments.
  for a, b in zip(jax.tree.leaves(optax_lr.cam_hd_effective_learning_rate(ours)),
                  jax.tree.leaves(optax_lr.cam_hd_effective_learning_rate(kept)), strict=True):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def test_sgd_cam_hd_reads_the_trace():
  # Heavy-ball SGD-CAM-HD reads d_{t-1} off the trace: no kept copy, the same values bit for bit.
  kwargs = dict(learning_rate=0.05, hypergrad_lr=1e-2, levels=("parameter", "layer", "global"),
                combination=optax_lr.CombinationWeights(learning_rate=0.01))
  ours_params, ours = _trajectory(optax_lr.sgd_cam_hd(**kwargs, momentum=0.9), 20, jit=True)
  kept_params, kept = _trajectory(optax_lr.cam_hd(optax.trace(0.9), **kwargs), 20, jit=True)
  assert isinstance(ours.previous_direction, optax.EmptyState)
  jax.tree.map(np.testing.assert_array_equal, (ours_params, ours.learning_rate),
               (kept_params, kept.learning_rate))
  jax.tree.map(np.testing.assert_array_equal, optax_lr.cam_hd_effective_learning_rate(ours),
               optax_lr.cam_hd_effective_learning_rate(kept))
  # RateRule(store_previous_direction=True) keeps the buffer instead: the same values.
  stored_params, stored = _trajectory(optax_lr.sgd_cam_hd(
      **kwargs, momentum=0.9, rule=optax_lr.RateRule(store_previous_direction=True)), 20,
      jit=True)
  assert not isinstance(stored.previous_direction, optax.EmptyState)
  jax.tree.map(np.testing.assert_array_equal, (ours_params, ours.learning_rate),
               (stored_params, stored.learning_rate))
  with pytest.raises(ValueError, match="pass one"):
    optax_lr.cam_hd(optax.trace(0.9), 0.05, 1e-2,
                    previous_direction_fn=optax_lr.trace_previous_direction(),
                    rule=optax_lr.RateRule(store_previous_direction=True))


def test_adam_cam_hd_state_sizes():
  # Without the parameter level: Adam's moments plus the rates (and a bfloat16 first moment with
  # mu_dtype); with it, the per-element rates and the kept direction on top.
  params = {"w": PARAMS["w"], "b": PARAMS["b"]}  # no 0-d leaf: a rate is then one of size 1

  def buffers(opt):
    return sum(x.size for x in jax.tree.leaves(opt.init(params)) if x.size > 1) / 16
  assert buffers(optax_lr.adam_cam_hd(levels=("layer", "global"))) == 2
  stored = optax_lr.RateRule(store_previous_direction=True)
  assert buffers(optax_lr.adam_cam_hd(levels=("layer", "global"), rule=stored)) == 3
  assert buffers(optax_lr.adam_cam_hd(levels=("parameter", "global"))) == 3
  assert buffers(optax_lr.adam_cam_hd(levels=("parameter", "global"), rule=stored)) == 4
  state = optax_lr.adam_cam_hd(mu_dtype=jnp.bfloat16).init(PARAMS)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state.inner_state.mu))


_PARAMETER_LEVEL = {"levels": ("parameter", "layer", "global")}
_LEARNED = optax_lr.CombinationWeights(learning_rate=0.01)


@pytest.mark.parametrize("alias, kwargs", [
    ("adam_cam_hd", _PARAMETER_LEVEL),
    ("adam_cam_hd", {**_PARAMETER_LEVEL, "combination": _LEARNED}),
    ("adam_cam_hd", {**_PARAMETER_LEVEL, "mu_dtype": jnp.bfloat16}),
    ("adam_cam_hd", {**_PARAMETER_LEVEL, "rule": optax_lr.RateRule("multiplicative"),
                     "hypergrad_lr": 0.01}),
    ("adam_cam_hd", {"levels": ("layer", "global"), "rule": optax_lr.RateRule("multiplicative"),
                     "hypergrad_lr": 0.01}),
    ("sgd_cam_hd", {**_PARAMETER_LEVEL, "momentum": 0.9}),
    ("sgd_cam_hd", {**_PARAMETER_LEVEL, "momentum": 0.9, "combination": _LEARNED})],
    ids=["adam", "adam_learned_weights", "adam_bfloat16_mu", "adam_multiplicative",
         "adam_multiplicative_no_parameter_level", "sgd_momentum", "sgd_momentum_learned_weights"])
def test_cam_hd_updates_in_place(alias, kwargs):
  # The donated step (update and apply_updates) copies no parameter-sized buffer in each of
  # these configurations: the per-element rates, the moments (or the trace, d_{t-1} itself)
  # and the parameters are all updated in place, though the rates' pass and the reductions
  # read the old values. (optax.adam with a bfloat16 first moment copies its own moment: a
  # buffer of half the size, below the counter's threshold.)
  from tests.test_memory import compiled_update, parameter_sized_copies

  keys = iter(jax.random.split(jax.random.key(0), 4))
  params = {"conv": {"kernel": jax.random.normal(next(keys), (3, 3, 64, 64)),
                     "bias": jax.random.normal(next(keys), (64,))},
            "dense": {"kernel": jax.random.normal(next(keys), (512, 64)),
                      "bias": jax.random.normal(next(keys), (64,))}}
  opt = getattr(optax_lr, alias)(1e-3, **kwargs)
  hlo = compiled_update(opt, params).as_text()
  assert parameter_sized_copies(hlo, {3 * 3 * 64 * 64, 512 * 64}) == []
