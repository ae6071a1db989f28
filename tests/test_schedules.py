"""Cyclical, random and decay schedules against PyTorch CyclicLR's closed form and Eq. 4.1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_lr


def _torch_cyclic_lr(step, base_lr, max_lr, up, down, mode, gamma):
  """PyTorch ``CyclicLR.get_lr`` as documented, in float64 (written from its formulas)."""
  total = up + down
  ratio = up / total
  cycle = math.floor(1 + step / total)
  x = 1.0 + step / total - cycle
  factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
  height = (max_lr - base_lr) * factor
  if mode == "triangular":
    return base_lr + height
  if mode == "triangular2":
    return base_lr + height / (2.0 ** (cycle - 1))
  return base_lr + height * gamma**step


@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0),
                                         ("exp_range", 0.9995)])
@pytest.mark.parametrize("up, down", [(50, None), (30, 70), (12.5, 12.5)])
def test_cyclical_schedule_matches_torch_cyclic_lr(mode, gamma, up, down):
  schedule = optax_lr.cyclical_schedule(1e-3, 1.0, up, down, mode=mode, gamma=gamma)
  steps = np.arange(0, 1000)
  got = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))
  want = [_torch_cyclic_lr(int(s), 1e-3, 1.0, up, up if down is None else down, mode, gamma)
          for s in steps]
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_cyclical_schedule_landmarks():
  schedule = optax_lr.cyclical_schedule(0.1, 0.5, 4, 6, mode="triangular2")
  values = [float(schedule(t)) for t in (0, 2, 4, 7, 10, 14, 20)]
  # min, half-way up, max, half-way down, min of cycle 2, max of cycle 2 (half amplitude), min.
  np.testing.assert_allclose(values, [0.1, 0.3, 0.5, 0.3, 0.1, 0.3, 0.1], rtol=1e-6)


def test_n_cycle_schedule():
  schedule = optax_lr.n_cycle_schedule(0.001, 1.0, cycle_epochs=25, steps_per_epoch=10)
  for epoch, want in [(0, 0.001), (12.5, 1.0), (25, 0.001), (37.5, 1.0), (50, 0.001)]:
    np.testing.assert_allclose(float(schedule(int(epoch * 10))), want, rtol=1e-6)
  # 13 epochs of the 25-cycle (Section 4.5.2's switch point) are just past the peak.
  np.testing.assert_allclose(float(schedule(130)), 0.001 + 0.999 * (250 - 130) / 125, rtol=1e-6)


def test_random_schedule_is_uniform_and_a_pure_function_of_the_step():
  schedule = optax_lr.random_schedule(0.001, 1.0, seed=3)
  steps = jnp.arange(4000)
  values = np.asarray(jax.jit(jax.vmap(schedule))(steps))
  assert values.min() >= 0.001 and values.max() < 1.0
  np.testing.assert_allclose(values.mean(), 0.5005, atol=0.02)  # uniform mean, sd 0.29/sqrt(n)
  assert np.all(values[1:] != values[:-1])  # a fresh rate every step
  np.testing.assert_array_equal(values[17], float(schedule(17)))  # same inside and outside jit
  other = np.asarray(jax.vmap(optax_lr.random_schedule(0.001, 1.0, seed=4))(steps))
  assert not np.array_equal(values, other)


def test_exponential_decay_rate_eq_4_1():
  # Eq. 4.1: from 1.0 to 0.001 over 100 epochs of 50000 / 128 steps.
  rate = optax_lr.exponential_decay_rate(1.0, 0.001, 100 * 50000 / 128)
  np.testing.assert_allclose(rate, 0.9998231771, rtol=1e-10)
  schedule = optax_lr.exponential_decay_schedule(1.0, 0.001, 1000)
  np.testing.assert_allclose(float(schedule(0)), 1.0)
  np.testing.assert_allclose(float(schedule(500)), math.sqrt(0.001), rtol=1e-4)
  np.testing.assert_allclose(float(schedule(1000)), 0.001, rtol=1e-4)
  np.testing.assert_allclose(float(schedule(5000)), 0.001, rtol=1e-6)


@pytest.mark.parametrize("make, name", [
    (lambda: optax_lr.cyclical_schedule(1.0, 0.1, 10), "min_lr"),
    (lambda: optax_lr.cyclical_schedule(0.1, 1.0, 0), "step_size_up"),
    (lambda: optax_lr.cyclical_schedule(0.1, 1.0, 10, -5), "step_size_down"),
    (lambda: optax_lr.cyclical_schedule(0.1, 1.0, 10, mode="sine"), "mode"),
    (lambda: optax_lr.cyclical_schedule(0.1, 1.0, 10, mode="exp_range", gamma=0.0), "gamma"),
    (lambda: optax_lr.n_cycle_schedule(0.1, 1.0, 0, 10), "cycle_epochs"),
    (lambda: optax_lr.n_cycle_schedule(0.1, 1.0, 25, 0), "steps_per_epoch"),
    (lambda: optax_lr.random_schedule(1.0, 0.5), "min_lr"),
    (lambda: optax_lr.random_schedule(-0.1, 0.5), "min_lr"),
    (lambda: optax_lr.exponential_decay_rate(0.1, 1.0, 10), "min_lr"),
    (lambda: optax_lr.exponential_decay_rate(1.0, 0.1, 0), "steps"),
])
def test_bad_arguments_raise(make, name):
  with pytest.raises(ValueError, match=name):
    make()
