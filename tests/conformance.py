"""The conformance suite every method of the library registers in.

The pattern of optax's contrib common tests: each method is a :class:`Case` (a factory for the
transformation, the keyword arguments its ``update`` needs, and the budget it needs to converge on
the two test problems). ``tests/test_conformance.py`` runs every check on every registered case.

Checks (each a function below, each asserting a property a user relies on):
  - jits once and does not recompile on the second call;
  - runs inside ``lax.scan`` and gives the same result as a Python loop of jitted steps;
  - under ``jax.jit`` on an 8-device CPU mesh with replicated params, the state keeps its sharding;
  - bf16 and f32 params keep their dtypes (updates and every state leaf);
  - ``init`` returns fresh buffers (no array twice, none aliasing params): params and state donate;
  - round-trips through an orbax checkpoint and continues bit-identically;
  - converges on a parabola and on Rosenbrock;
  - ``optax.apply_if_finite(method)`` leaves params and the rate state untouched on a NaN step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr

GradFn = Callable[[Any], Any]


def no_extra_args(grad_fn: GradFn, params: Any) -> dict[str, Any]:
  del grad_fn, params
  return {}


@dataclasses.dataclass(frozen=True)
class Case:
  """One method registered in the suite.

  Attributes:
    name: test id.
    make: builds a fresh transformation (the settings the convergence checks use).
    extra_args: ``(grad_fn, params) -> dict`` of keyword arguments for ``update`` (for example
      ``{"grad_fn": grad_fn}`` for naive TLR, ``{"next_grads": grad_fn(params)}`` for AdaSecant).
    parabola_steps / rosenbrock_steps: budget for the convergence checks.
    parabola_tol / rosenbrock_tol: the final loss must fall below these (the initial losses are 8
      for :func:`parabola` and 1 for :func:`rosenbrock`).
    make_for_rosenbrock: optional different settings for Rosenbrock (its curvature is 1000x the
      parabola's); defaults to ``make``.
  """

  name: str
  make: Callable[[], optax.GradientTransformation]
  extra_args: Callable[[GradFn, Any], dict[str, Any]] = no_extra_args
  parabola_steps: int = 500
  parabola_tol: float = 1e-3
  rosenbrock_steps: int = 5000
  rosenbrock_tol: float = 1e-2
  make_for_rosenbrock: Callable[[], optax.GradientTransformation] | None = None


def parabola(params):
  """``sum_i (x_i - 1)^2 / 2`` over a small tree; minimum 0 at all-ones; initial loss 8 at 0."""
  return 0.5 * sum(jnp.sum(jnp.square(x.astype(jnp.float32) - 1.0))
                   for x in jax.tree.leaves(params))


def parabola_init():
  return {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}


def rosenbrock(params):
  """Rosenbrock ``(1 - x)^2 + 100 (y - x^2)^2``; minimum 0 at (1, 1); initial loss 1 at (0, 0)."""
  x, y = params["x"], params["y"]
  return jnp.sum(jnp.square(1.0 - x) + 100.0 * jnp.square(y - jnp.square(x)))


def rosenbrock_init():
  return {"x": jnp.zeros(()), "y": jnp.zeros(())}


def make_step(opt: optax.GradientTransformation, loss_fn, extra_args):
  """One optimisation step ``(params, state) -> (params, state)`` (not jitted)."""
  grad_fn = jax.grad(loss_fn)

  def step(params, state):
    grads = grad_fn(params)
    updates, state = opt.update(grads, state, params, **extra_args(grad_fn, params))
    return optax.apply_updates(params, updates), state

  return step


def run_scan(opt, loss_fn, params, steps, extra_args):
  """``steps`` updates under ``lax.scan``; returns the final params and state."""
  step = make_step(opt, loss_fn, extra_args)

  @jax.jit
  def run(params):
    state = opt.init(params)

    def body(carry, _):
      return step(*carry), None

    (params, state), _ = jax.lax.scan(body, (params, state), None, length=steps)
    return params, state

  return run(params)


def assert_trees_equal(a, b):
  """Bit-identical trees (same structure, dtypes and values; NaNs compare equal)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------------------------
# The checks.
# --------------------------------------------------------------------------------------------


def check_jit_once(case: Case):
  opt = case.make()
  params = parabola_init()
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  state = opt.init(params)
  params, state = step(params, state)
  params, state = step(params, state)
  params, state = step(params, state)
  assert step._cache_size() == 1, "the step recompiled: the state changed structure or dtype"


def check_scan_matches_loop(case: Case):
  opt = case.make()
  params = parabola_init()
  scanned_params, scanned_state = run_scan(opt, parabola, params, 4, case.extra_args)
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  state = opt.init(params)
  for _ in range(4):
    params, state = step(params, state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (params, state), (scanned_params, scanned_state))


def check_sharding_kept(case: Case):
  devices = jax.devices()
  assert len(devices) >= 8, "the suite needs 8 simulated CPU devices (see conftest.py)"
  mesh = jax.sharding.Mesh(np.array(devices[:8]), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  opt = case.make()
  params = jax.device_put(parabola_init(), replicated)
  state = jax.jit(opt.init, out_shardings=replicated)(params)
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  params, state = step(params, state)
  params, new_state = step(params, state)
  for leaf in jax.tree.leaves((params, new_state)):
    assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim), leaf.sharding


def check_dtypes_kept(case: Case, dtype):
  opt = case.make()
  params = jax.tree.map(lambda x: x.astype(dtype), parabola_init())
  state = opt.init(params)
  init_dtypes = jax.tree.map(lambda x: jnp.asarray(x).dtype, state)
  grad_fn = jax.grad(parabola)
  grads = grad_fn(params)
  updates, state = jax.jit(
      lambda g, s, p: opt.update(g, s, p, **case.extra_args(grad_fn, p)))(grads, state, params)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
    assert u.dtype == p.dtype, (u.dtype, p.dtype)
  assert jax.tree.map(lambda x: jnp.asarray(x).dtype, state) == init_dtypes
  new_params = optax.apply_updates(params, updates)
  assert all(x.dtype == dtype for x in jax.tree.leaves(new_params))


def check_fresh_buffers_donate(case: Case):
  opt = case.make()
  params = parabola_init()
  state = opt.init(params)
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((params, state))
              if isinstance(x, jax.Array)]
  assert len(pointers) == len(set(pointers)), "init returned an array twice or aliased params"
  step = jax.jit(make_step(opt, parabola, case.extra_args), donate_argnums=(0, 1))
  params, state = step(params, state)
  params, state = step(params, state)
  assert np.isfinite(float(parabola(params)))


def check_checkpoint_roundtrip(case: Case, directory):
  import orbax.checkpoint as ocp

  opt = case.make()
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  params = parabola_init()
  state = opt.init(params)
  for _ in range(3):
    params, state = step(params, state)
  checkpointer = ocp.StandardCheckpointer()
  path = directory / "ckpt"
  checkpointer.save(path, {"params": params, "opt_state": state})
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(path, {"params": params, "opt_state": state})
  checkpointer.close()
  restored_params, restored_state = restored["params"], restored["opt_state"]
  assert_trees_equal((params, state), (restored_params, restored_state))
  for _ in range(3):
    params, state = step(params, state)
    restored_params, restored_state = step(restored_params, restored_state)
  assert_trees_equal((params, state), (restored_params, restored_state))


def check_converges(case: Case, problem: str):
  if problem == "parabola":
    opt, loss_fn, init, steps, tol = (case.make(), parabola, parabola_init(),
                                      case.parabola_steps, case.parabola_tol)
  else:
    make = case.make_for_rosenbrock or case.make
    opt, loss_fn, init, steps, tol = (make(), rosenbrock, rosenbrock_init(),
                                      case.rosenbrock_steps, case.rosenbrock_tol)
  params, _ = run_scan(opt, loss_fn, init, steps, case.extra_args)
  final = float(loss_fn(params))
  assert final < tol, f"{problem}: loss {final:.3g} after {steps} steps (needs < {tol})"


def check_apply_if_finite(case: Case):
  opt = optax.apply_if_finite(case.make(), max_consecutive_errors=10)
  params = parabola_init()
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  state = opt.init(params)
  for _ in range(2):
    params, state = step(params, state)
  rates_before = optax_lr.learning_rates(state.inner_state)
  grad_fn = jax.grad(parabola)
  nan_grads = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), grad_fn(params))

  @jax.jit
  def nan_step(params, state):
    updates, state = opt.update(nan_grads, state, params, **case.extra_args(grad_fn, params))
    return optax.apply_updates(params, updates), state

  new_params, new_state = nan_step(params, state)
  assert_trees_equal(params, new_params)
  assert_trees_equal(state.inner_state, new_state.inner_state)
  assert_trees_equal(rates_before, optax_lr.learning_rates(new_state.inner_state))
  assert int(new_state.notfinite_count) == 1
