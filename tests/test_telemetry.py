"""learning_rates() finds every rate in any state; rate_summary() on device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

PARAMS = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}


def test_chain_and_wrappers():
  opt = optax.chain(optax.add_decayed_weights(1e-4),
                    optax_lr.hypergradient(optax_lr.tlr_sgd(0.2), 0.5, 1e-3))
  rates = optax_lr.learning_rates(opt.init(PARAMS))
  assert rates == {"1/learning_rate": pytest.approx(0.5),
                   "1/inner_state/learning_rate": pytest.approx(0.2)}


def test_inject_hyperparams():
  opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3)
  rates = optax_lr.learning_rates(opt.init(PARAMS))
  assert list(rates) == ["hyperparams/learning_rate"]
  assert float(rates["hyperparams/learning_rate"]) == pytest.approx(0.3)


def test_schedule_counter_is_not_a_rate():
  opt = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.1, 0.0, 10))
  rates = optax_lr.learning_rates(opt.init(PARAMS))
  assert list(rates) == ["hyperparams/learning_rate"]


def test_per_tensor_rates_keyed_by_leaf_path():
  opt = optax_lr.tlr_sgd(0.1, momentum=0.9, weight_decay=1e-4, per_tensor=True)
  rates = optax_lr.learning_rates(opt.init(PARAMS))
  assert sorted(rates) == ["1/learning_rate/dense/bias", "1/learning_rate/dense/kernel"]
  assert all("learning_rate" in key for key in rates)


def test_masked_and_no_rate():
  opt = optax.masked(optax_lr.sgd_hd(0.1), {"dense": {"kernel": True, "bias": False}})
  assert "inner_state/learning_rate" in optax_lr.learning_rates(opt.init(PARAMS))
  assert optax_lr.learning_rates(optax.sgd(0.1).init(PARAMS)) == {}


def test_rate_summary():
  rates = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(6.0)}
  summary = jax.jit(optax_lr.rate_summary)(rates)
  np.testing.assert_allclose(summary["mean"], 3.0)
  np.testing.assert_allclose(summary["min"], 1.0)
  np.testing.assert_allclose(summary["max"], 6.0)
  np.testing.assert_allclose(summary["norm"], np.sqrt(1 + 4 + 9 + 36), rtol=1e-6)
  with pytest.raises(ValueError, match="`rates`"):
    optax_lr.rate_summary({})
