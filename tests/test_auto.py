"""The recommended optimizer auto_adam (hand-derived estimate, decay and tail; Prodigy at a
constant rate when both decays are off), and the hypergradient presets auto_adam_hd and auto_sgd
(their documented settings, exactly)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from train import optimizers

PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}
GRADS = {"w": jnp.ones(3), "b": jnp.ones(())}


def _run(opt, steps=6, seed=0):
  """``steps`` updates on random gradients and losses; the updates and the final state."""
  key = jax.random.key(seed)
  state = opt.init(PARAMS)
  updates = []
  for _ in range(steps):
    key, k1, k2 = jax.random.split(key, 3)
    grads = {name: jax.random.normal(jax.random.fold_in(k1, i), x.shape)
             for i, (name, x) in enumerate(sorted(PARAMS.items()))}
    loss = 1.0 + jax.random.uniform(k2)
    update, state = opt.update(grads, state, PARAMS, value=loss)
    updates.append(update)
  return updates, state


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_auto_adam_hd_is_adam_hd_with_the_recommended_settings():
  # The defaults are the recommendation: beta 0.1, the multiplicative rule, a search from 1e-3 x
  # the rate doubling per step, a backtrack at 1.5x the loss average (decay 0.9, cut 0.5).
  reference = optax_lr.adam_hd(
      1e-3, 0.1, rate_rule="multiplicative",
      search=optax_lr.RateSearch(factor=2.0, start=1e-3),
      backtrack=optax_lr.LossBacktrack(factor=0.5, tolerance=0.5, decay=0.9))
  _assert_same(_run(optax_lr.auto_adam_hd()), _run(reference))


def test_auto_sgd_is_nesterov_sgd_hd_with_the_recommended_settings():
  reference = optax_lr.sgd_hd(
      0.1, 0.03, momentum=0.9, nesterov=True, rate_rule="multiplicative",
      search=optax_lr.RateSearch(factor=2.0, start=1e-3),
      backtrack=optax_lr.LossBacktrack(factor=0.5, tolerance=0.5, decay=0.9))
  _assert_same(_run(optax_lr.auto_sgd()), _run(reference))


def test_the_search_starts_a_thousand_times_below_and_doubles():
  # A constant gradient: every cosine is 1, so the search doubles the rate at each step with a
  # previous direction, from 1e-3 x 1e-3; Adam's first direction is m_hat / (sqrt(v_hat) + eps)
  # = 1 / (1 + 1e-8), and SGD's Nesterov direction g + 0.9 (g) = 1.9 at the first step.
  opt = optax_lr.auto_adam_hd()
  state = opt.init(PARAMS)
  for k in range(5):
    updates, state = opt.update(GRADS, state, PARAMS, value=1.0)
    rate = float(optax_lr.learning_rates(state)["learning_rate"])
    np.testing.assert_allclose(rate, 1e-6 * 2**k, rtol=1e-6)
    if k == 0:
      # (float32: 1 - 0.999 rounds to 0.99998713e-3, so v_hat = 1.0000129: 6.4e-6 off)
      np.testing.assert_allclose(float(updates["w"][0]), -1e-6 / (1 + 1e-8), rtol=1e-5)
  opt = optax_lr.auto_sgd()
  state = opt.init(PARAMS)
  updates, state = opt.update(GRADS, state, PARAMS, value=1.0)
  np.testing.assert_allclose(float(updates["w"][0]), -1e-4 * 1.9, rtol=1e-6)
  updates, state = opt.update(GRADS, state, PARAMS, value=1.0)
  # trace 1 + 0.9 = 1.9, Nesterov direction 1 + 0.9 * 1.9 = 2.71, rate 2e-4
  np.testing.assert_allclose(float(updates["w"][0]), -2e-4 * 2.71, rtol=1e-6)


@pytest.mark.parametrize("factory", [optax_lr.auto_adam_hd, optax_lr.auto_sgd])
def test_a_missing_loss_says_how_to_pass_it(factory):
  opt = factory()
  state = opt.init(PARAMS)
  name = factory.__name__
  for update in (opt.update, jax.jit(opt.update)):
    with pytest.raises(ValueError, match=rf"optax_lr\.{name} needs the training loss, as the "
                                         r"keyword `value` of update") as error:
      update(GRADS, state, PARAMS)
    message = str(error.value)
    assert "value=loss" in message and "nnx.Optimizer" in message and "TrainState" in message
  # Without the backtrack nothing reads the loss.
  opt = factory(backtrack=None)
  opt.update(GRADS, opt.init(PARAMS), PARAMS)


def test_registry_auto_entries_are_the_library_factories():
  # The training side's auto entries build the library's recommendation, bit for bit.
  for name, factory in (("adam_hd_auto", optax_lr.auto_adam_hd),
                        ("sgdn_hd_auto", optax_lr.auto_sgd)):
    entry = optimizers.create_optimizer(name, 1e-2, 10, 100)
    _assert_same(_run(entry), _run(factory(1e-2)))
  # `auto_adam` is told the run's length (its tail), `auto_adam_no_tail` is the bare call.
  _assert_same(_run(optimizers.create_optimizer("auto_adam", None, 10, 100)),
               _run(optax_lr.auto_adam(total_steps=100)))
  _assert_same(_run(optimizers.create_optimizer("auto_adam_no_tail", None, 10, 100)),
               _run(optax_lr.auto_adam()))


# --- auto_adam: the distance estimate, the hypergradient decay, the tail ---------------------

B1, B2, D0 = 0.9, 0.999, 1e-6


def _step_size(k):
  """Prodigy's bias-corrected step per unit estimate at step k (0-based): sqrt(1 - b2^t) /
  (1 - b1^t), t = k + 1."""
  t = k + 1
  return np.sqrt(1 - B2**t) / (1 - B1**t)


def _loss_params():
  key = jax.random.key(3)
  return {"w": jax.random.normal(key, (5, 3)), "b": jnp.zeros(3)}


def _loss(p, x):
  return jnp.sum((jnp.tanh(x @ p["w"]) + p["b"] - 1.0) ** 2)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_auto_adam_without_its_decays_is_prodigy(weight_decay):
  # hypergrad_lr = 0 and no tail: optax.contrib.prodigy at a constant rate, to float32 rounding
  # (the two write the same arithmetic in a different order), over the estimate's growth from
  # 1e-6 to its plateau.
  ours = optax_lr.auto_adam(hypergrad_lr=0.0, weight_decay=weight_decay)
  theirs = optax.contrib.prodigy(1.0, weight_decay=weight_decay)
  pa = pb = _loss_params()
  sa, sb = ours.init(pa), theirs.init(pb)
  for k in range(40):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(0), k), (8, 5))
    ua, sa = jax.jit(ours.update)(jax.grad(_loss)(pa, x), sa, pa)
    ub, sb = jax.jit(theirs.update)(jax.grad(_loss)(pb, x), sb, pb)
    pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    np.testing.assert_allclose(float(sa.rate_estimate), float(sb.estim_lr), rtol=1e-5)
    for name in pa:
      np.testing.assert_allclose(np.asarray(pa[name]), np.asarray(pb[name]), rtol=1e-5,
                                 atol=1e-6)
  assert float(sa.rate_estimate) > 1e3 * D0  # the estimate did grow


def test_the_estimate_from_a_constant_gradient():
  # g = 1 everywhere from x_0 = 0: each step moves every element by -d_0 (Adam's unit step),
  # so x_j = -j d_0 and <g, x_0 - x_j> = n j d_0 while the estimate is d_0. With
  # w_j = b3^(k-j) lambda_j, the estimate's candidate at step k is
  #   r_k / ||S_k||_1 = d_0 sum_j w_j j / sum_j w_j,
  # a weighted mean of the step index: below d_0 until that mean passes 1, then the estimate.
  params = {"w": jnp.zeros(4)}
  grads = {"w": jnp.ones(4)}
  opt = optax_lr.auto_adam(hypergrad_lr=0.0)
  state = opt.init(params)
  b3 = np.sqrt(B2)
  for k in range(8):
    update, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, update)
    w = np.array([b3 ** (k - j) * _step_size(j) for j in range(k + 1)])
    candidate = D0 * np.sum(w * np.arange(k + 1)) / np.sum(w)
    estimate = float(state.rate_estimate)
    if candidate <= D0:
      assert estimate == np.float32(D0), k
      np.testing.assert_allclose(np.asarray(params["w"]), -(k + 1) * D0, rtol=1e-5)
    else:  # the first growth: steps 0..k all ran at d_0
      np.testing.assert_allclose(estimate, candidate, rtol=1e-5)
      assert k == 3  # the mean index first passes 1 at the fourth step
      break
  else:
    raise AssertionError("the estimate never grew")


def test_the_hypergradient_decay_by_hand():
  # Alternating gradients g, -g, g, ...: Adam's previous direction (m_(k-1) / sqrt(v_(k-1)))
  # points against each new gradient (m: 0.1 g, then 0.09 g - 0.1 g = -0.01 g, then 0.091 g...),
  # so every cosine after the first step is -1 and the factor is (1 - beta)^(k-1), down to its
  # floor; the estimate stays d_0 (the iterate goes nowhere). learning_rate = d_0 * factor.
  params = {"w": jnp.zeros(3)}
  for beta, floor in ((0.1, 1e-3), (0.5, 0.1)):
    opt = optax_lr.auto_adam(hypergrad_lr=beta, min_scale=floor)
    state = opt.init(params)
    for k in range(8):
      sign = 1.0 if k % 2 == 0 else -1.0
      _, state = opt.update({"w": sign * jnp.ones(3)}, state, params)
      expected = max((1 - beta) ** k, floor)
      np.testing.assert_allclose(float(state.decay), expected, rtol=1e-6)
      np.testing.assert_allclose(float(state.learning_rate), D0 * expected, rtol=1e-6)
  # A constant gradient: every cosine is +1 and the factor stays at its cap, 1.
  opt = optax_lr.auto_adam()
  state = opt.init(params)
  for _ in range(5):
    _, state = opt.update({"w": jnp.ones(3)}, state, params)
  assert float(state.decay) == 1.0


def test_the_tail_and_the_default_decay():
  # total_steps = 10, tail_fraction = 0.2: the step k (0-based) is scaled by
  # clip((10 - k) / 2, 0, 1): 1 up to k = 8, 0.5 at k = 9, 0 from k = 10. With the length known
  # the hypergradient decay is off by default (alternating gradients leave the factor at 1).
  params = {"w": jnp.zeros(3)}
  opt = optax_lr.auto_adam(total_steps=10)
  state = opt.init(params)
  for k in range(12):
    before = float(state.rate_estimate)
    sign = 1.0 if k % 2 == 0 else -1.0
    update, state = opt.update({"w": sign * jnp.ones(3)}, state, params)
    tail = min(max((10 - k) / 2, 0.0), 1.0)
    assert float(state.decay) == 1.0
    np.testing.assert_allclose(float(state.learning_rate), before * tail, rtol=1e-6)
    if tail == 0.0:
      assert not np.any(np.asarray(update["w"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=0.0), "`learning_rate` must be a finite number > 0"),
    (dict(hypergrad_lr=1.0), r"`hypergrad_lr` must be in \[0.0, 1.0\)"),
    (dict(min_scale=0.0), r"`min_scale` must be in \(0.0, 1.0\]"),
    (dict(initial_rate=-1e-6), "`initial_rate` must be a finite number > 0"),
    (dict(total_steps=0), "`total_steps`"),
    (dict(tail_fraction=1.5), r"`tail_fraction` must be in \(0.0, 1.0\]"),
])
def test_auto_adam_refuses_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optax_lr.auto_adam(**kwargs)


def test_auto_adam_takes_no_positional_rate():
  # `learning_rate` multiplies the estimate: an Adam-style `auto_adam(1e-3)` is refused.
  with pytest.raises(TypeError, match="positional"):
    optax_lr.auto_adam(1e-3)
