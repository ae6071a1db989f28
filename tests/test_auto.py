"""The recommended optimizers: auto_adam and auto_sgd are their documented settings, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_auto_adam_is_adam_hd_with_the_recommended_settings():
  # The defaults are the recommendation: beta 0.1, the multiplicative rule, a search from 1e-3 x
  # the rate doubling per step, a backtrack at 1.5x the loss average (decay 0.9, cut 0.5).
  reference = optax_lr.adam_hd(
      1e-3, 0.1, rate_rule="multiplicative",
      search=optax_lr.RateSearch(factor=2.0, start=1e-3),
      backtrack=optax_lr.LossBacktrack(factor=0.5, tolerance=0.5, decay=0.9))
  _assert_same(_run(optax_lr.auto_adam()), _run(reference))


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
  opt = optax_lr.auto_adam()
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


@pytest.mark.parametrize("factory", [optax_lr.auto_adam, optax_lr.auto_sgd])
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
  for name, factory in (("adam_hd_auto", optax_lr.auto_adam), ("sgdn_hd_auto", optax_lr.auto_sgd)):
    entry = optimizers.create_optimizer(name, 1e-2, 10, 100)
    _assert_same(_run(entry), _run(factory(1e-2)))
