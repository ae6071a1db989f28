"""AdaBound / AMSBound (Luo, Xiong, Liu and Sun, ICLR 2019): bounds and steps by hand."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr


def test_bound_functions():
  # eta_l(t) = 0.1 (1 - 1/(1e-3 t + 1)), eta_u(t) = 0.1 (1 + 1/(1e-3 t)).
  lower, upper = optax_lr.adabound_bounds(0.1, 1e-3, 1)
  assert float(lower) == pytest.approx(0.1 * (1 - 1 / 1.001), rel=1e-4)  # float32 cancellation
  assert float(upper) == pytest.approx(0.1 * 1001, rel=1e-6)
  lower, upper = optax_lr.adabound_bounds(0.1, 1e-3, 1000)
  assert (float(lower), float(upper)) == (pytest.approx(0.05), pytest.approx(0.2))
  lower, upper = optax_lr.adabound_bounds(0.1, 1e-3, 10**7)
  assert 0.0999 < float(lower) < 0.1 < float(upper) < 0.1001  # both close on the SGD rate


def test_unclipped_steps_are_adams():
  # With eps = 0, lr sqrt(1 - b2^t) / (1 - b1^t) / sqrt(v) * m = lr m_hat / sqrt(v_hat): Adam.
  # Gradients of size ~0.5 give rates ~2e-3, inside [1e-4 t, 100] for these steps.
  grads = [{"w": jnp.array([0.5, -0.4, 0.3])}, {"w": jnp.array([0.4, 0.5, -0.6])},
           {"w": jnp.array([-0.3, 0.6, 0.5])}]
  ours, adam = optax_lr.adabound(1e-3, eps=0.0), optax.adam(1e-3, eps=0.0)
  s1, s2 = ours.init(grads[0]), adam.init(grads[0])
  for g in grads:
    u1, s1 = ours.update(g, s1)
    u2, s2 = adam.update(g, s2)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-5)
  assert np.all(np.asarray(s1.learning_rate["w"]) > 3e-4)


def test_rates_are_clipped_into_the_bounds():
  # gamma = 0.5 closes the bounds fast: at t = 1, [0.1 (1 - 1/1.5), 0.1 (1 + 2)] = [1/30, 0.3].
  # Adam's rate at t = 1 is lr sqrt(1 - b2) / (1 - b1) / (sqrt(1 - b2) |g| + eps) ~ 0.01 / |g|:
  # 1e4 for |g| = 1e-6 (clipped to 0.3), 1e-5 for |g| = 1e3 (clipped to 1/30), 0.2 for 0.05
  # (inside the bounds, unclipped).
  opt = optax_lr.scale_by_adabound(1e-3, final_learning_rate=0.1, gamma=0.5)
  g = jnp.array([1e-6, 1e3, 0.05])
  updates, state = opt.update({"w": g}, opt.init({"w": g}))
  adam_rate = 1e-3 * np.sqrt(1e-3) / 0.1 / (np.sqrt(1e-3) * 0.05 + 1e-8)
  expected_rate = np.array([0.3, 1 / 30, adam_rate])
  np.testing.assert_allclose(state.learning_rate["w"], expected_rate, rtol=1e-5)
  np.testing.assert_allclose(updates["w"], -expected_rate * 0.1 * np.asarray(g), rtol=1e-5)


def test_amsbound_normalises_by_the_running_maximum():
  # A large gradient then a small one, b2 = 0.9: v falls (0.4 -> 0.361), v_max keeps 0.4.
  grads = [{"w": jnp.array([2.0])}, {"w": jnp.array([0.1])}]
  ams = optax_lr.adabound(amsbound=True, b2=0.9, eps=0.0)
  plain = optax_lr.adabound(b2=0.9, eps=0.0)
  sa, sp = ams.init(grads[0]), plain.init(grads[0])
  for g in grads:
    ua, sa = ams.update(g, sa)
    up, sp = plain.update(g, sp)
  v_first = 0.1 * 4.0
  v_second = 0.9 * v_first + 0.1 * 0.01
  m = 0.9 * 0.1 * 2.0 + 0.1 * 0.1
  step = 1e-3 * np.sqrt(1 - 0.9 ** 2) / (1 - 0.9 ** 2)
  assert v_second < v_first
  assert float(ua["w"][0]) == pytest.approx(-step / np.sqrt(v_first) * m, rel=1e-5)
  assert float(up["w"][0]) == pytest.approx(-step / np.sqrt(v_second) * m, rel=1e-5)


def test_final_rate_follows_the_schedule():
  # The release's rule: final_lr * lr_t / lr_0. lr halves from step 1: at t = 2 (count 1) the
  # final rate is 0.05 and, with gamma = 0.5, the upper bound 0.05 (1 + 1 / (0.5 * 2)) = 0.1; a
  # tiny gradient's rate sits on it.
  schedule = optax.piecewise_constant_schedule(1e-3, {1: 0.5})
  opt = optax_lr.scale_by_adabound(schedule, final_learning_rate=0.1, gamma=0.5)
  g = {"w": jnp.array([1e-6])}
  state = opt.init(g)
  _, state = opt.update(g, state)
  assert float(state.learning_rate["w"][0]) == pytest.approx(0.3, rel=1e-5)  # t = 1: 0.1 * 3
  _, state = opt.update(g, state)
  assert float(state.learning_rate["w"][0]) == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_get_float32_rates(dtype):
  # The moments stay in the parameters' dtype; the rate is float32 from them: at t = 1,
  # lr sqrt(1 - b2) / (1 - b1) / (sqrt(v) + eps) with v = (1 - b2) g^2 read from the buffer. A
  # rate rounded to float16/bfloat16 would be off by up to 5e-4/4e-3 relative.
  g = {"w": jnp.array([0.05, -0.3, 1.7], dtype)}
  opt = optax_lr.scale_by_adabound(1e-3, final_learning_rate=0.1)
  updates, state = opt.update(g, opt.init(g))
  assert state.mu["w"].dtype == dtype and state.nu["w"].dtype == dtype
  assert state.learning_rate["w"].dtype == jnp.float32 and updates["w"].dtype == dtype
  v = np.asarray(state.nu["w"], np.float32)
  expected = 1e-3 * np.sqrt(np.float32(1e-3)) / np.float32(0.1) / (np.sqrt(v) + np.float32(1e-8))
  # rtol 2e-5: float32 rounding of 1 - b2^t (the expected value takes 1 - b2 exactly).
  np.testing.assert_allclose(state.learning_rate["w"], expected, rtol=2e-5)
  m = np.asarray(state.mu["w"], np.float32)
  np.testing.assert_array_equal(np.asarray(updates["w"]),
                                np.asarray(jnp.asarray(-expected * m).astype(dtype)))


def test_extra_update_keywords_are_ignored():
  # reduce_on_plateau's `value` (and any other keyword) changes nothing, directly or chained.
  g = {"w": jnp.array([0.5, -0.4])}
  for opt in (optax_lr.adabound(), optax_lr.adabound(amsbound=True, weight_decay=0.1)):
    state = opt.init(g)
    plain, _ = opt.update(g, state, g)
    extra, _ = opt.update(g, state, g, value=jnp.float32(3.0), next_grads=g)
    np.testing.assert_array_equal(plain["w"], extra["w"])


def test_weight_decay_is_coupled():
  # adabound(weight_decay=wd) = chain(add_decayed_weights(wd), scale_by_adabound).
  params = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.3, 0.1])}
  ours = optax_lr.adabound(weight_decay=0.1)
  reference = optax.chain(optax.add_decayed_weights(0.1), optax_lr.scale_by_adabound())
  u1, _ = ours.update(g, ours.init(params), params)
  u2, _ = reference.update(g, reference.init(params), params)
  np.testing.assert_array_equal(u1["w"], u2["w"])


@pytest.mark.parametrize("kwargs, name", [
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"final_learning_rate": -0.1}, "final_learning_rate"),
    ({"gamma": 1.0}, "gamma"), ({"b1": 1.0}, "b1"), ({"eps": -1.0}, "eps")])
def test_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optax_lr.scale_by_adabound(**kwargs)
  with pytest.raises(TypeError, match="amsbound"):
    optax_lr.adabound(amsbound=1)
