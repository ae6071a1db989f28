"""The scale-free multiplicative rate rule (``rate_rule="multiplicative"``): hand-derived steps.

``lr_t = lr_{t-1} (1 + beta cos(g_t, d_{t-1}))`` over the group the rate belongs to (Baydin et
al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

G1 = jnp.array([3.0, 4.0])
G2 = jnp.array([4.0, 3.0])
G3 = jnp.array([-1.0, 0.0])


def _run(opt, grads, params=None):
  params = jnp.zeros_like(grads[0]) if params is None else params
  state = opt.init(params)
  update = jax.jit(opt.update)
  rates, updates = [], []
  for g in grads:
    u, state = update(g, state, params)
    rates.append(float(optax_lr.learning_rates(state)["learning_rate"]))
    updates.append(np.asarray(u))
  return rates, updates, state


def test_sgd_hd_two_steps_by_hand():
  # Step 1: d_{-1} = 0, so cos = 0 and the rate stays 0.1. Step 2: cos(g2, g1) = 24/25.
  # Step 3: cos(g3, g2) = -4/5.
  rates, updates, _ = _run(optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative"), [G1, G2, G3])
  r2 = 0.1 * (1 + 0.05 * 24 / 25)
  r3 = r2 * (1 - 0.05 * 4 / 5)
  np.testing.assert_allclose(rates, [0.1, r2, r3], rtol=1e-6)
  np.testing.assert_allclose(updates[1], -r2 * np.asarray(G2), rtol=1e-6)
  np.testing.assert_allclose(updates[2], -r3 * np.asarray(G3), rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_directions_by_hand(nesterov):
  mu, beta = 0.5, 0.1
  rates, updates, _ = _run(optax_lr.sgd_hd(0.2, beta, momentum=mu, nesterov=nesterov,
                                           rate_rule="multiplicative"), [G1, G2, G3])
  g = [np.asarray(x, np.float64) for x in (G1, G2, G3)]
  trace, previous, rate, expect_rates = np.zeros(2), np.zeros(2), 0.2, []
  for i, gi in enumerate(g):
    trace = mu * trace + gi
    direction = gi + mu * trace if nesterov else trace
    if i:
      rate *= 1 + beta * gi @ previous / (np.linalg.norm(gi) * np.linalg.norm(previous))
    expect_rates.append(rate)
    np.testing.assert_allclose(updates[i], -rate * direction, rtol=2e-6)
    previous = direction
  np.testing.assert_allclose(rates, expect_rates, rtol=2e-6)


def test_adam_hd_matches_transcription():
  b1, b2, eps, beta = 0.9, 0.999, 1e-8, 0.02
  grads = [G1, G2, G3, G1 * 0.5]
  rates, updates, _ = _run(optax_lr.adam_hd(1e-2, beta, b1=b1, b2=b2, eps=eps,
                                            rate_rule="multiplicative"), grads)
  m, v, previous, rate = np.zeros(2), np.zeros(2), np.zeros(2), 1e-2
  for t, gi in enumerate(np.asarray(g, np.float64) for g in grads):
    if t:
      rate *= 1 + beta * gi @ previous / (np.linalg.norm(gi) * np.linalg.norm(previous))
    m = b1 * m + (1 - b1) * gi
    v = b2 * v + (1 - b2) * gi ** 2
    direction = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
    np.testing.assert_allclose(rates[t], rate, rtol=1e-5)
    # float32 Adam moments: (1 - b2) g^2 and the bias corrections round at ~1e-5 relative.
    np.testing.assert_allclose(updates[t], -rate * direction, rtol=1e-4)
    previous = direction


def test_scale_free():
  # Gradients x 2^10 and an initial rate x 2^-7: powers of two, so cos is bit-identical and the
  # rate trajectory is exactly the base one times 2^-7 (the inner direction does not depend on
  # the rate for fixed gradients).
  grads = [G1, G2, G3, G2]
  base, _, _ = _run(optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative"), grads)
  scaled, _, _ = _run(optax_lr.sgd_hd(0.1 / 128, 0.05, rate_rule="multiplicative"),
                      [g * 1024.0 for g in grads])
  np.testing.assert_array_equal(np.asarray(scaled, np.float32),
                                np.asarray(base, np.float32) / np.float32(128))


def test_factor_bounded_and_additive_default():
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(rng.normal(size=5) * 10.0 ** rng.uniform(-6, 6), jnp.float32)
           for _ in range(30)]
  rates, _, _ = _run(optax_lr.sgd_hd(0.1, 0.3, rate_rule="multiplicative"), grads)
  ratios = np.asarray(rates[1:]) / np.asarray(rates[:-1])
  assert np.all(ratios >= 0.7 - 1e-6) and np.all(ratios <= 1.3 + 1e-6)
  # The default is the paper's additive rule.
  default, _, _ = _run(optax_lr.sgd_hd(0.1, 1e-3), grads[:4])
  additive, _, _ = _run(optax_lr.sgd_hd(0.1, 1e-3, rate_rule="additive"), grads[:4])
  assert default == additive
  expected = 0.1 + 1e-3 * float(jnp.vdot(grads[1], grads[0]))
  np.testing.assert_allclose(default[1], expected, rtol=1e-5)


def test_non_finite_keeps_rate_and_huge_gradients_stay_finite():
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative")
  bad = jnp.array([jnp.inf, 1.0])
  rates, _, _ = _run(opt, [G1, bad, G2])
  # Step 2 is not finite: the rate stays; step 3 then reads d_1 = inf as the previous direction.
  assert rates[1] == pytest.approx(0.1) and math.isfinite(rates[2])
  rates, _, _ = _run(opt, [G1 * 1e30, G2 * 1e30, G1 * 1e30])
  assert all(math.isfinite(r) and r > 0 for r in rates)


def test_validation():
  with pytest.raises(ValueError, match="rate_rule"):
    optax_lr.sgd_hd(0.1, 1e-3, rate_rule="scale_free")
  with pytest.raises(ValueError, match="hypergrad_lr"):
    optax_lr.adam_hd(1e-3, 1.0, rate_rule="multiplicative")
  with pytest.raises(TypeError, match=r"RateRule\.kind"):
    optax_lr.RateRule(kind=None)
  with pytest.raises(ValueError, match="hypergrad_lr"):
    optax_lr.adam_cam_hd(1e-3, 1.0, rule=optax_lr.RateRule("multiplicative"))


PARAMS = {"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}, "scale": jnp.zeros(())}


def _tree_grads(seed):
  key = jax.random.PRNGKey(seed)
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, jnp.shape(x))
                            for k, x in zip(keys, leaves, strict=True)])


def _cos(x, y):
  return float(np.sum(x * y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_cam_hd_global_level_is_hypergradient_bit_for_bit():
  grads = [_tree_grads(i) for i in range(4)]
  for inner in (optax.identity(), optax.scale_by_adam()):
    a = optax_lr.hypergradient(inner, 0.1, 0.05, rate_rule="multiplicative")
    b = optax_lr.cam_hd(inner, 0.1, 0.05, levels=("global",),
                        rule=optax_lr.RateRule("multiplicative"))
    sa, sb = a.init(PARAMS), b.init(PARAMS)
    for g in grads:
      ua, sa = a.update(g, sa, PARAMS)
      ub, sb = b.update(g, sb, PARAMS)
      jax.tree.map(np.testing.assert_array_equal, ua, ub)
      np.testing.assert_array_equal(sa.learning_rate, sb.learning_rate["global"])


def test_cam_hd_levels_two_steps_by_hand():
  # Levels parameter, filter (bias joins its kernel's filters), layer, global; fixed weights.
  beta, lr = 0.1, 0.05
  weights = (0.1, 0.2, 0.3, 0.4)
  opt = optax_lr.sgd_cam_hd(lr, beta, levels=("parameter", "filter", "layer", "global"),
                            combination=optax_lr.CombinationWeights(weights),
                            rule=optax_lr.RateRule("multiplicative"))
  g1, g2 = _tree_grads(0), _tree_grads(1)
  state = opt.init(PARAMS)
  _, state = opt.update(g1, state, PARAMS)
  rates = state.learning_rate
  for level in ("parameter", "filter", "layer"):
    for leaf in jax.tree.leaves(rates[level]):
      np.testing.assert_allclose(leaf, lr, rtol=1e-7)  # d_{-1} = 0: no step moves
  updates, state = opt.update(g2, state, PARAMS)
  rates = state.learning_rate
  k1, k2 = np.asarray(g1["dense"]["kernel"]), np.asarray(g2["dense"]["kernel"])
  b1, b2 = np.asarray(g1["dense"]["bias"]), np.asarray(g2["dense"]["bias"])
  s1, s2 = float(g1["scale"]), float(g2["scale"])
  flat1 = np.concatenate([b1, k1.ravel(), [s1]])
  flat2 = np.concatenate([b2, k2.ravel(), [s2]])
  w_param, w_filter, w_layer, w_global = weights
  expect_global = lr * (1 + beta * w_global * _cos(flat2, flat1))
  np.testing.assert_allclose(rates["global"], expect_global, rtol=1e-6)
  expect_layer_kernel = lr * (1 + beta * w_layer * _cos(k2, k1))
  np.testing.assert_allclose(rates["layer"]["dense"]["kernel"], expect_layer_kernel, rtol=1e-6)
  np.testing.assert_allclose(rates["layer"]["dense"]["bias"],
                             lr * (1 + beta * w_layer * _cos(b2, b1)), rtol=1e-6)
  expect_filter = np.array([
      lr * (1 + beta * w_filter * _cos(np.append(k2[:, j], b2[j]), np.append(k1[:, j], b1[j])))
      for j in range(3)])
  np.testing.assert_allclose(rates["filter"]["dense"]["kernel"], expect_filter, rtol=1e-6)
  np.testing.assert_allclose(rates["filter"]["dense"]["bias"], expect_filter, rtol=1e-6)
  # A 0-d leaf: its own group everywhere, cos = sign(g2 g1).
  sign = np.sign(s1 * s2)
  for level, w in (("parameter", w_param), ("filter", w_filter), ("layer", w_layer)):
    np.testing.assert_allclose(rates[level]["scale"], lr * (1 + beta * w * sign), rtol=1e-6)
  # The parameter level: per element, cos = sign(g2 g1).
  expect_param = lr * (1 + beta * w_param * np.sign(k1 * k2))
  np.testing.assert_allclose(rates["parameter"]["dense"]["kernel"], expect_param, rtol=1e-6)
  # The update combines the new rates with the weights.
  kappa = (w_param * expect_param + w_filter * expect_filter[None, :]
           + w_layer * expect_layer_kernel + w_global * expect_global)
  np.testing.assert_allclose(updates["dense"]["kernel"], -kappa * k2, rtol=1e-5)


# The auto entries' defaults: the multiplicative rule with the rate search and the loss backtrack.
@pytest.mark.parametrize("name", ["sgdn_hd_auto", "adam_hd_auto", "adam_cam_hd_auto"])
def test_auto_entries_on_digits_do_not_depend_on_the_initial_rate(name):
  # The MLP on digits (10 epochs, batch 64, 2 seeds) from initial rates two orders of magnitude
  # apart ends within a few points.
  from train.bench import grid
  runner = grid.GridRunner("digits")
  result = runner.run(grid.make_config(name, num_epochs=10), [1e-3, 1e-2, 1e-1], [0, 1])
  final = np.asarray(result.metrics["test_accuracy"])[..., -1].mean(axis=1) * 100
  assert final.min() >= 94.0, final
  assert final.max() - final.min() <= 4.0, final
  assert np.all(np.isfinite(np.asarray(result.metrics["rate"])))


# --- The safeguards of the auto entries: the loss backtrack and the rate search ------------------

def _run_values(opt, grads, values, params=None):
  params = jnp.zeros_like(grads[0]) if params is None else params
  state = opt.init(params)
  update = jax.jit(opt.update)
  rates, updates = [], []
  for g, v in zip(grads, values, strict=True):
    u, state = update(g, state, params, value=jnp.asarray(v, jnp.float32))
    rates.append(float(optax_lr.learning_rates(state)["learning_rate"]))
    updates.append(np.asarray(u))
  return rates, updates, state


def test_backtrack_by_hand():
  # decay 0.5, tolerance 1: a loss above twice its running average (or not finite) halves the
  # rate of that step instead of the cosine step.
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                        backtrack=optax_lr.LossBacktrack(factor=0.5, tolerance=1.0, decay=0.5))
  grads = [G1, G2, G3, G1, G2]
  values = [1.0, 1.5, 3.0, np.nan, 2.0]
  rates, updates, state = _run_values(opt, grads, values)
  r1 = 0.1                        # no average yet; cos = 0 (d_{-1} = 0); average 1
  r2 = r1 * (1 + 0.05 * 24 / 25)  # 1.5 <= 1 + 1 * 1: the rule; average 1.25
  r3 = 0.5 * r2                   # 3.0 > 1.25 + 1.25: cut; average 2.125
  r4 = 0.5 * r3                   # NaN: cut; the average keeps 2.125
  r5 = r4 * (1 + 0.05 * 24 / 25)  # 2.0 <= 4.25: the rule, cos(G2, G1) = 24/25
  np.testing.assert_allclose(rates, [r1, r2, r3, r4, r5], rtol=1e-6)
  for rate, g, u in zip(rates, grads, updates, strict=True):
    np.testing.assert_allclose(u, -rate * np.asarray(g), rtol=1e-6)
  np.testing.assert_allclose(state.backtrack.loss_average, 0.5 * 2.125 + 0.5 * 2.0, rtol=1e-6)


def test_backtrack_cut_follows_the_square_root_of_a_large_rise():
  # A loss 50x its threshold: the error along a stiff direction grew about sqrt(50)x in one step,
  # so the rate is cut by sqrt(threshold / loss) instead of the default half.
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative", backtrack=optax_lr.LossBacktrack())
  rates, _, state = _run_values(opt, [G1, G1, G1], [1.0, 100.0, 1.0])
  # Average 1, threshold 2: 0.1 * sqrt(2 / 100); the average becomes 0.9 + 10 = 10.9, so the
  # third loss is far below its threshold and the rule's step follows (cos = 1).
  r2 = 0.1 * math.sqrt(0.02)
  np.testing.assert_allclose(rates, [0.1, r2, r2 * 1.05], rtol=1e-6)
  np.testing.assert_allclose(state.backtrack.loss_average, 0.9 * 10.9 + 0.1, rtol=1e-6)


def test_backtrack_negative_losses_use_the_magnitude():
  # A rise is value > average + tolerance * |average|: -1 then -0.2 (above -1 + 0.5) cuts.
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                        backtrack=optax_lr.LossBacktrack(tolerance=0.5))
  rates, _, _ = _run_values(opt, [G1, G1, G1], [-1.0, -0.6, -0.2])
  # -0.6 <= -0.5: the rule (cos(G1, G1) = 1); average 0.9 * -1 + 0.1 * -0.6 = -0.96;
  # -0.2 > -0.96 + 0.48: cut.
  r2 = 0.1 * 1.05
  np.testing.assert_allclose(rates, [0.1, r2, 0.5 * r2], rtol=1e-6)


def test_rate_search_by_hand():
  # x2 per step while <g_t, d_{t-1}> > 0; the first non-positive one ends the search for good.
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative", search=optax_lr.RateSearch())
  rates, updates, state = _run(opt, [G1, G2, G2, G3, G3, G2])
  r4 = 0.4 * (1 - 0.05 * 4 / 5)  # cos(G3, G2) = -4/5: the rule's step, the search ends
  r5 = r4 * 1.05                 # cos = 1, no longer doubling
  r6 = r5 * (1 - 0.05 * 4 / 5)
  np.testing.assert_allclose(rates, [0.1, 0.2, 0.4, r4, r5, r6], rtol=1e-6)
  np.testing.assert_allclose(updates[2], -0.4 * np.asarray(G2), rtol=1e-6)
  assert not bool(state.searching)


def test_rate_search_ends_at_a_backtrack():
  opt = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                        search=optax_lr.RateSearch(factor=4.0), backtrack=optax_lr.LossBacktrack())
  rates, _, state = _run_values(opt, [G1, G1, G1, G1], [1.0, 1.0, 5.0, 1.0])
  # 0.1, x4, then the loss rises past 2x its average: halved, and the search is over.
  np.testing.assert_allclose(rates, [0.1, 0.4, 0.2, 0.2 * 1.05], rtol=1e-6)
  assert not bool(state.searching)


def test_rate_search_is_scale_free():
  grads = [G1, G2, G2, G3, G1]
  base, _, _ = _run(optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                                    search=optax_lr.RateSearch()), grads)
  scaled, _, _ = _run(optax_lr.sgd_hd(0.1 / 128, 0.05, rate_rule="multiplicative",
                                      search=optax_lr.RateSearch()), [g * 1024.0 for g in grads])
  np.testing.assert_array_equal(np.asarray(scaled, np.float32),
                                np.asarray(base, np.float32) / np.float32(128))


def test_safeguards_off_by_default_and_state_is_scalars():
  opt = optax_lr.adam_hd(1e-3, 1e-2, rate_rule="multiplicative")
  state = opt.init(PARAMS)
  hd = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(
      x, optax_lr.HypergradientState)) if isinstance(s, optax_lr.HypergradientState)][0]
  assert hd.backtrack == optax.EmptyState() and hd.searching == optax.EmptyState()
  guarded = optax_lr.adam_hd(1e-3, 1e-2, rate_rule="multiplicative",
                             backtrack=optax_lr.LossBacktrack(),
                             search=optax_lr.RateSearch()).init(PARAMS)
  hd = [s for s in jax.tree.leaves(guarded, is_leaf=lambda x: isinstance(
      x, optax_lr.HypergradientState)) if isinstance(s, optax_lr.HypergradientState)][0]
  assert hd.backtrack.loss_average.shape == () and math.isnan(hd.backtrack.loss_average)
  assert hd.searching.shape == () and hd.searching.dtype == jnp.bool_


def test_cam_hd_global_level_with_safeguards_is_hypergradient_bit_for_bit():
  grads = [_tree_grads(i) for i in range(5)]
  values = [1.0, 0.9, 4.0, 1.0, 0.8]
  options = dict(rate_rule="multiplicative", backtrack=optax_lr.LossBacktrack(),
                 search=optax_lr.RateSearch())
  for inner in (optax.identity(), optax.scale_by_adam()):
    a = optax_lr.hypergradient(inner, 0.1, 0.05, **options)
    b = optax_lr.cam_hd(inner, 0.1, 0.05, levels=("global",),
                        rule=optax_lr.RateRule("multiplicative", search=options["search"],
                                               backtrack=options["backtrack"]))
    sa, sb = a.init(PARAMS), b.init(PARAMS)
    for g, v in zip(grads, values, strict=True):
      ua, sa = a.update(g, sa, PARAMS, value=v)
      ub, sb = b.update(g, sb, PARAMS, value=v)
      jax.tree.map(np.testing.assert_array_equal, ua, ub)
      np.testing.assert_array_equal(sa.learning_rate, sb.learning_rate["global"])
      np.testing.assert_array_equal(sa.searching, sb.searching)


def test_cam_hd_search_and_backtrack_scale_every_level():
  # The search and the backtrack read the global sums and scale every level's rates at once.
  g1 = _tree_grads(0)
  g2 = jax.tree.map(lambda x: 2.0 * x, g1)  # <g2, g1> > 0 in every group
  opt = optax_lr.sgd_cam_hd(0.05, 0.1, levels=("parameter", "filter", "layer", "global"),
                            combination=optax_lr.CombinationWeights((0.1, 0.2, 0.3, 0.4)),
                            rule=optax_lr.RateRule("multiplicative",
                                                   backtrack=optax_lr.LossBacktrack(),
                                                   search=optax_lr.RateSearch()))
  state = opt.init(PARAMS)
  _, state = opt.update(g1, state, PARAMS, value=1.0)
  _, state = opt.update(g2, state, PARAMS, value=1.0)
  for level in ("parameter", "filter", "layer", "global"):
    for leaf in jax.tree.leaves(state.learning_rate[level]):
      np.testing.assert_allclose(leaf, 0.1, rtol=1e-7)  # 0.05 x 2
  # A rise to 10 over the threshold 2 (average 1, tolerance 1): every rate x sqrt(2 / 10).
  updates, state = opt.update(g2, state, PARAMS, value=10.0)
  cut = 0.1 * math.sqrt(0.2)
  for level in ("parameter", "filter", "layer", "global"):
    for leaf in jax.tree.leaves(state.learning_rate[level]):
      np.testing.assert_allclose(leaf, cut, rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["kernel"], -cut * g2["dense"]["kernel"],
                             rtol=1e-6)
  assert not bool(state.searching)


def test_safeguard_validation():
  with pytest.raises(TypeError, match="backtrack"):
    optax_lr.sgd_hd(0.1, 1e-2, rate_rule="multiplicative", backtrack="backtrack")
  with pytest.raises(TypeError, match="LossBacktrack"):  # TLR's rule is not this one
    optax_lr.sgd_hd(0.1, 1e-2, backtrack=optax_lr.WindowBacktrack())
  with pytest.raises(ValueError, match=r"LossBacktrack\.factor"):
    optax_lr.LossBacktrack(factor=1.0)
  with pytest.raises(ValueError, match=r"LossBacktrack\.tolerance"):
    optax_lr.LossBacktrack(tolerance=-1.0)
  with pytest.raises(ValueError, match=r"LossBacktrack\.decay"):
    optax_lr.LossBacktrack(decay=1.0)
  with pytest.raises(ValueError, match="search"):
    optax_lr.sgd_hd(0.1, 1e-3, search=optax_lr.RateSearch())  # the additive rule has no search
  with pytest.raises(TypeError, match="search"):
    optax_lr.sgd_hd(0.1, 1e-2, rate_rule="multiplicative", search=True)
  with pytest.raises(ValueError, match=r"RateSearch\.factor"):
    optax_lr.RateSearch(factor=1.0)
  with pytest.raises(TypeError, match=r"RateSearch\.factor"):
    optax_lr.RateSearch(factor="2")
  with pytest.raises(dataclasses.FrozenInstanceError):
    optax_lr.RateSearch().factor = 3.0
  opt = optax_lr.sgd_hd(0.1, 1e-2, rate_rule="multiplicative", backtrack=optax_lr.LossBacktrack())
  with pytest.raises(ValueError, match="value="):
    opt.update(G1, opt.init(G1), G1)


def test_safeguards_pass_through_inject_hyperparams():
  # The options are not numbers: inject_hyperparams passes them through, and the state keeps the
  # structure of the un-injected optimizer.
  options = dict(rate_rule="multiplicative", search=optax_lr.RateSearch(start=0.125),
                 backtrack=optax_lr.LossBacktrack(tolerance=0.5))
  opt = optax.inject_hyperparams(optax_lr.sgd_hd)(0.8, 0.05, **options)
  state = opt.init(G1)
  assert "search" not in state.hyperparams and "backtrack" not in state.hyperparams
  _, state = opt.update(G1, state, G1, value=1.0)
  hd = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(
      x, optax_lr.HypergradientState)) if isinstance(s, optax_lr.HypergradientState)][0]
  np.testing.assert_allclose(hd.learning_rate, 0.1, rtol=1e-7)  # 0.8 / 8, not yet doubled
  assert hd.searching.shape == () and hd.backtrack.loss_average.shape == ()


def test_search_start_brackets_from_below():
  # start = 1/8: the state starts at lr / 8 and the search doubles from there.
  opt = optax_lr.sgd_hd(0.8, 0.05, rate_rule="multiplicative",
                        search=optax_lr.RateSearch(start=0.125))
  rates, updates, _ = _run(opt, [G1, G2, G3])
  np.testing.assert_allclose(rates, [0.1, 0.2, 0.2 * (1 - 0.05 * 4 / 5)], rtol=1e-6)
  np.testing.assert_allclose(updates[0], -0.1 * np.asarray(G1), rtol=1e-6)
  cam = optax_lr.sgd_cam_hd(0.8, 0.05, levels=("layer", "global"), rule=optax_lr.RateRule(
      "multiplicative", search=optax_lr.RateSearch(start=0.125))).init(PARAMS)
  for leaf in jax.tree.leaves(cam.learning_rate["layer"]) + [cam.learning_rate["global"]]:
    np.testing.assert_allclose(leaf, 0.1, rtol=1e-7)
  with pytest.raises(ValueError, match=r"RateSearch\.start"):
    optax_lr.RateSearch(start=0.0)
  with pytest.raises(ValueError, match=r"RateSearch\.start"):
    optax_lr.RateSearch(start=1.5)


def test_rate_search_stops_at_a_fraction_of_its_peak_cosine():
  # Unit gradients at angles whose consecutive cosines are 0.8, 0.6, 0.35 (then 1): with
  # stop_ratio 1/2 the peak is 0.8, 0.6 > 0.4 still doubles, 0.35 <= 0.4 ends the search with the
  # rule's step 1 + 0.05 * 0.35; the sign test (stop_ratio 0) doubles a third time.
  angles = np.cumsum([0.0, np.arccos(0.8), np.arccos(0.6), np.arccos(0.35), 0.0])
  grads = [jnp.array([np.cos(a), np.sin(a)], jnp.float32) for a in angles]
  half = optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                         search=optax_lr.RateSearch(stop_ratio=0.5))
  rates, _, state = _run(half, grads)
  r3 = 0.4 * (1 + 0.05 * 0.35)
  np.testing.assert_allclose(rates, [0.1, 0.2, 0.4, r3, r3 * 1.05], rtol=1e-5)
  assert not bool(state.searching)
  np.testing.assert_allclose(state.search_peak, 0.8, rtol=1e-5)
  sign, _, state = _run(optax_lr.sgd_hd(0.1, 0.05, rate_rule="multiplicative",
                                        search=optax_lr.RateSearch()), grads)
  np.testing.assert_allclose(sign[:4], [0.1, 0.2, 0.4, 0.8], rtol=1e-6)
  assert bool(state.searching)  # every cosine positive: the sign test never ends it
  with pytest.raises(ValueError, match="RateSearch.stop_ratio"):
    optax_lr.RateSearch(stop_ratio=1.0)
