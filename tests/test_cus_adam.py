"""CUS-Adam: Adam without the first-moment bias correction (thesis Section 3.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr


def test_update_is_adam_times_one_minus_b1_power():
  b1, b2, lr = 0.8, 0.99, 0.05
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  cus, adam = optax_lr.cus_adam(lr, b1=b1, b2=b2), optax.adam(lr, b1=b1, b2=b2)
  cus_state, adam_state = cus.init(params), adam.init(params)
  key = jax.random.PRNGKey(0)
  for t in range(1, 7):
    key, sub = jax.random.split(key)
    grads = jax.tree.map(lambda x, k=sub: jax.random.normal(k, x.shape), params)
    cus_updates, cus_state = cus.update(grads, cus_state)
    adam_updates, adam_state = adam.update(grads, adam_state)
    jax.tree.map(lambda c, a, t=t: np.testing.assert_allclose(c, (1 - b1**t) * a, rtol=1e-5,
                                                              atol=1e-7),
                 cus_updates, adam_updates)


def test_first_step_by_hand():
  # m_1 = (1 - b1) g, v_hat_1 = g^2: the first update is -lr (1 - b1) sign(g) (eps = 0).
  opt = optax_lr.cus_adam(0.1, b1=0.9, b2=0.999, eps=0.0)
  grads = {"w": jnp.array([2.0, -0.5])}
  updates, state = opt.update(grads, opt.init(grads))
  np.testing.assert_allclose(updates["w"], [-0.01, 0.01], rtol=1e-5)  # f32 1 - b2
  assert isinstance(state[0], optax.ScaleByAdamState)


def test_takes_a_schedule():
  opt = optax_lr.cus_adam(optax_lr.cyclical_schedule(0.01, 0.1, 4))
  params = {"w": jnp.ones(2)}
  updates, _ = opt.update({"w": jnp.ones(2)}, opt.init(params))
  np.testing.assert_allclose(updates["w"], -0.01 * 0.1, rtol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    ({"learning_rate": 0.0}, "learning_rate"), ({"learning_rate": 0.1, "b1": 1.0}, "b1"),
    ({"learning_rate": 0.1, "b2": -0.1}, "b2"), ({"learning_rate": 0.1, "eps": -1.0}, "eps")])
def test_bad_arguments_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optax_lr.cus_adam(**kwargs)
