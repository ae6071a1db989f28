"""The noisy quadratic model testbed (train/nqm.py): the AutoDrop paper's Definition 2, Theorem 1
and Figure 3."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest

from train import nqm


def test_model_is_definition_2():
  a = nqm.curvatures()
  assert a.shape == (200,)
  np.testing.assert_allclose(a[[0, 1, -1]], [0.1, 0.2, 20.0])
  np.testing.assert_array_equal(nqm.noise_variances(), a)  # Sigma = A


def test_theorem1_formula_by_hand():
  # C* is I* / N* with N* = 2 lr^2 sum a^2 s / (2 - lr a) (Eq. 20-23); with s = a:
  rate = 0.03
  a = np.arange(1, 201) / 10.0
  numerator = np.sum(a**4 / (2 - rate * a))
  denominator = np.sum(a**3 / (2 - rate * a))
  np.testing.assert_allclose(nqm.theorem1_cosine(rate), -rate / 2 * numerator / denominator,
                             rtol=1e-12)
  np.testing.assert_allclose(nqm.theorem1_inner_product(rate), -rate**3 * numerator, rtol=1e-12)
  for rate in nqm.LEARNING_RATES:
    cosine = nqm.theorem1_cosine(rate)
    assert nqm.cosine_lower_bound(rate) <= cosine < 0
    assert 90 < math.degrees(math.acos(cosine)) <= 120  # the saturation band of Theorem 1


def test_simulated_mean_cosine_agrees_with_theorem1():
  rows = nqm.theorem1_table(learning_rates=(0.06, 0.03, 0.01), steps=1000, chains=32, seed=3)
  for row in rows:
    assert abs(row["relative_difference"]) < 0.05, row
    assert abs(row["simulated_angle_degrees"] - row["theorem1_angle_degrees"]) < 1.0, row
  table = nqm.theorem1_markdown(rows)
  assert table.count("\n") == 2 + len(rows)


def test_constant_rate_run_reaches_the_stationary_loss():
  # Eq. 13's stationary variance: E[1/2 x^T A x] = 1/2 sum a lr a s / (2 - lr a) = 12056 at 0.06.
  trace = nqm.run(optax.sgd(0.06), 3000, jax.random.key(1))
  simulated = float(np.mean(np.asarray(trace["loss"])[-2000:]))
  np.testing.assert_allclose(simulated, nqm.stationary_excess_loss(0.06), rtol=0.05)
  assert np.isnan(np.asarray(trace["learning_rate"])).all()  # optax.sgd holds no rate state


def test_autodrop_ends_far_below_the_constant_rate():
  key = jax.random.key(0)
  autodrop = nqm.run(nqm.figure3_optimizer(), 1500, key)
  constant = nqm.run(optax.sgd(0.06), 1500, key)
  rates = np.asarray(autodrop["learning_rate"])
  assert rates[0] == pytest.approx(0.06)
  # 0.06 halves six times to reach the floor 0.001 (0.06 / 2^6 < 0.001).
  assert np.count_nonzero(np.diff(rates) < 0) == 6
  assert rates[-1] == pytest.approx(0.001)
  final = float(np.mean(np.asarray(autodrop["loss"])[-300:]))
  assert final < 0.05 * float(np.mean(np.asarray(constant["loss"])[-300:]))
  assert final < 2 * nqm.stationary_excess_loss(0.001)


def test_moving_average():
  values = np.array([np.nan, 1.0, 2.0, 3.0, 4.0])
  np.testing.assert_allclose(nqm.moving_average(values, window=2),
                             [np.nan, np.nan, 1.5, 2.5, 3.5])
