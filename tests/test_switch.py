"""switch_at: the first transformation before the boundary, the second from it on."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from tests.conformance import assert_trees_equal


def _grads(t):
  return {"w": jnp.array([1.0, -2.0, 0.5]) / (t + 1.0)}


def test_boundary_and_untouched_states():
  boundary = 3
  first, second = optax.sgd(0.1, momentum=0.9), optax_lr.simple_adasecant()
  opt = optax_lr.switch_at(boundary, first, second)
  params = {"w": jnp.zeros(3)}
  state = opt.init(params)
  step = jax.jit(opt.update)
  first_state, second_state = first.init(params), second.init(params)
  for t in range(6):
    updates, state = step(_grads(t), state, params)
    if t < boundary:
      want, first_state = first.update(_grads(t), first_state, params)
      assert_trees_equal(state.second_state, second.init(params))  # untouched
    else:
      want, second_state = second.update(_grads(t), second_state, params)
      # Frozen at the boundary (the reference ran eagerly: equal up to float rounding).
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                   state.first_state, first_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, want)
  # The second transformation started fresh at the boundary: its first rate was 1.
  assert int(state.second_state.count) == 6 - boundary


def test_boundary_zero_runs_second_only_and_forwards_extra_args():
  opt = optax_lr.switch_at(0, optax.sgd(0.1), optax_lr.adasecant())
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  reference = optax_lr.adasecant()
  ref_state = reference.init(params)
  # Both compiled: the switch always is (inside lax.cond), and XLA may fuse a multiply-add that
  # eager evaluation rounds twice.
  update, reference_update = jax.jit(opt.update), jax.jit(reference.update)
  for t in range(3):
    extra = {"next_grads": _grads(t + 10)}
    updates, state = update(_grads(t), state, params, **extra)
    want, ref_state = reference_update(_grads(t), ref_state, params, **extra)
    assert_trees_equal(updates, want)
  assert_trees_equal(state.second_state, ref_state)


def test_bad_boundary_raises():
  with pytest.raises(ValueError, match="boundary_step"):
    optax_lr.switch_at(-1, optax.sgd(0.1), optax.sgd(0.2))
  with pytest.raises(ValueError, match="boundary_step"):
    optax_lr.switch_at(2.5, optax.sgd(0.1), optax.sgd(0.2))
