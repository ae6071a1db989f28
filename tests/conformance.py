"""The conformance suite every method of the library registers in.

The pattern of optax's contrib common tests: each method is a :class:`Case` (a factory for the
transformation, the keyword arguments its ``update`` needs, and the budget it needs to converge on
the two test problems). ``tests/test_conformance.py`` runs every check on every registered case.

Checks (each a function below, each asserting a property a user relies on). The optax contract
checks are this project's port of optax's contrib common tests (``optax/contrib/_common_test.py``),
written for these methods:
  - jits once and does not recompile on the second call;
  - runs inside ``lax.scan`` and gives the same result as a Python loop of jitted steps;
  - under ``jax.jit`` on an 8-device CPU mesh with replicated params, the state keeps its sharding;
  - float16, bfloat16, float32 and float64 params (float64 under ``jax_enable_x64``) keep their
    dtypes: updates, and every state leaf after ``update`` as after ``init``; rates are float32,
    float64 for float64 params; in float64 the step compiles once and scans;
  - extra keyword arguments of ``update`` are accepted and ignored (``value=`` of
    ``optax.contrib.reduce_on_plateau``, in a chain and directly);
  - ``optax.inject_hyperparams`` with every numeric argument injected (defaults included) gives
    the same updates and states as the plain constructor, jitted, over several steps;
  - ``optax.MultiSteps`` gradient accumulation: ``k`` micro-steps of one constant gradient equal
    one step of the method;
  - ``init`` returns fresh buffers (no array twice, none aliasing params): params and state donate;
  - round-trips through an orbax checkpoint and continues bit-identically;
  - converges on a parabola and on Rosenbrock;
  - ``optax.apply_if_finite(method)`` leaves params and the rate state untouched on a NaN step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr

GradFn = Callable[[Any], Any]

#: The library's arguments documented as static: each sets the optimizer state's structure (TLR's
#: window buffer, AutoDrop's average), so it cannot be an injected array (the factories refuse
#: one); every other number can be injected. Options grouped in an object (AutoDrop's
#: ``DropTrigger``, whose ``smoothing`` sets the angle history's length) are passed through.
STRUCTURAL_ARGS = ("update_every", "drop_delay")


def no_extra_args(grad_fn: GradFn, params: Any) -> dict[str, Any]:
  del grad_fn, params
  return {}


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
  """One method registered in the suite.

  Attributes:
    name: test id.
    factory: the constructor (a function of keyword arguments returning the transformation).
    kwargs: its arguments for the convergence checks; ``factory(**kwargs)`` is the method, and
      ``optax.inject_hyperparams(factory)(**kwargs)`` injects every numeric one.
    extra_args: ``(grad_fn, params) -> dict`` of keyword arguments for ``update`` (for example
      ``{"grad_fn": grad_fn}`` for naive TLR, ``{"next_grads": grad_fn(params)}`` for AdaSecant).
    parabola_steps / rosenbrock_steps: budget for the convergence checks.
    parabola_tol / rosenbrock_tol: the final loss must fall below these (the initial losses are 8
      for :func:`parabola` and 1 for :func:`rosenbrock`).
    make_for_rosenbrock: optional different settings for Rosenbrock (its curvature is 1000x the
      parabola's); defaults to ``make``.
    static_args: arguments ``inject_hyperparams`` must not touch besides the library's
      structural ones (:data:`STRUCTURAL_ARGS`, added for every factory that takes them):
      callables that are not schedules (``layer_labels``), which it would otherwise call with the
      step count.
  """

  name: str
  factory: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  extra_args: Callable[[GradFn, Any], dict[str, Any]] = no_extra_args
  parabola_steps: int = 500
  parabola_tol: float = 1e-3
  rosenbrock_steps: int = 5000
  rosenbrock_tol: float = 1e-2
  make_for_rosenbrock: Callable[[], optax.GradientTransformation] | None = None
  static_args: tuple[str, ...] = ()

  def make(self) -> optax.GradientTransformation:
    return self.factory(**self.kwargs)

  @property
  def inject_static_args(self) -> tuple[str, ...]:
    """What ``optax.inject_hyperparams`` gets as ``static_args`` for this case."""
    parameters = inspect.signature(self.factory).parameters
    return self.static_args + tuple(name for name in STRUCTURAL_ARGS
                                    if name in parameters and name not in self.static_args)


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


def _dtypes(tree):
  return jax.tree.map(lambda x: jnp.asarray(x).dtype, tree)


def check_dtypes_kept(case: Case, dtype):
  """Updates in the params' dtype; state dtypes and shapes after ``update`` as after ``init``.

  Float64 runs under ``jax_enable_x64`` and also checks that every rate is float64, that a jitted
  step compiles once over three steps and that ``lax.scan`` runs (it requires the carry to keep
  its types). Other dtypes get float32 rates.
  """
  context = jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext()
  with context:
    opt = case.make()
    params = jax.tree.map(lambda x: x.astype(dtype), parabola_init())
    state = opt.init(params)
    init_shapes = jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), state)
    grad_fn = jax.grad(parabola)
    grads = grad_fn(params)
    updates, new_state = jax.jit(
        lambda g, s, p: opt.update(g, s, p, **case.extra_args(grad_fn, p)))(grads, state, params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
      assert u.dtype == p.dtype, (u.dtype, p.dtype)
    assert jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), new_state) == init_shapes
    new_params = optax.apply_updates(params, updates)
    assert all(x.dtype == dtype for x in jax.tree.leaves(new_params))
    rate_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
    for name, rate in optax_lr.learning_rates(new_state).items():
      assert rate.dtype == rate_dtype, (name, rate.dtype)
    if dtype == jnp.float64:
      step = jax.jit(make_step(opt, parabola, case.extra_args))
      p, s = params, state
      for _ in range(3):
        p, s = step(p, s)
      assert step._cache_size() == 1, "the float64 step recompiled: the state changed dtype"
      scanned, _ = run_scan(opt, parabola, params, 3, case.extra_args)
      np.testing.assert_allclose(np.asarray(scanned["w"]), np.asarray(p["w"]), rtol=1e-12)


def check_extra_args_ignored(case: Case):
  """Unknown ``update`` keywords are accepted and ignored, directly and through a chain.

  ``optax.contrib.reduce_on_plateau`` needs ``value=``; a chain forwards it to every member, so
  each method must take it (or be a plain ``GradientTransformation``, which ``optax.chain``
  wraps). With ``reduce_on_plateau``'s scale still 1, the chained updates equal the method's.
  """
  grad_fn = jax.grad(parabola)
  params = parabola_init()
  grads = grad_fn(params)
  extra = case.extra_args(grad_fn, params)
  opt = case.make()  # called directly: a method must take keywords it does not use
  state = opt.init(params)
  plain, _ = opt.update(grads, state, params, **extra)
  # A method that reads `value` itself (L4: the loss) gets its case's own, the same loss
  # reduce_on_plateau then reads in the chain; `unused_keyword` stays unknown to every method.
  direct, _ = opt.update(grads, state, params,
                         **{"value": jnp.asarray(1.0), "unused_keyword": 3, **extra})
  assert_trees_equal(plain, direct)
  chained = optax.chain(case.make(), optax.contrib.reduce_on_plateau(patience=2))
  state = chained.init(params)
  step = jax.jit(lambda g, s, p, v: chained.update(g, s, p, **{"value": v, **extra}))
  updates, state = step(grads, state, params, parabola(params))
  np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(plain["w"]), rtol=1e-6)
  updates, state = step(grads, state, params, parabola(params))
  assert step._cache_size() == 1


def numeric_arguments(factory, kwargs) -> set[str]:
  """The arguments ``optax.inject_hyperparams`` injects: every int, float or array, defaults too."""
  bound = inspect.signature(factory).bind(**kwargs)
  bound.apply_defaults()
  return {name for name, value in bound.arguments.items()
          if not isinstance(value, bool) and not callable(value)
          and isinstance(value, int | float | np.ndarray | jax.Array)}


def check_inject_hyperparams(case: Case):
  """``inject_hyperparams(factory)(**kwargs)`` equals ``factory(**kwargs)``, jitted, for 4 steps.

  Every numeric argument is injected (``inject_hyperparams`` applies the defaults) but the static
  ones (:data:`STRUCTURAL_ARGS`): ``momentum`` and ``weight_decay`` arrive as arrays, concrete in
  ``init`` and traced in the jitted ``update``, and the state keeps the plain call's structure,
  since a stage's presence depends on an argument's None-ness only.
  """
  injected_opt = optax.inject_hyperparams(case.factory, static_args=case.inject_static_args)(
      **case.kwargs)
  opt = case.make()
  params = parabola_init()
  grad_fn = jax.grad(parabola)
  injected_state = jax.jit(injected_opt.init)(params)
  assert set(injected_state.hyperparams) == (numeric_arguments(case.factory, case.kwargs)
                                             - set(case.inject_static_args))
  state = jax.jit(opt.init)(params)

  def stepper(transform):
    @jax.jit
    def step(params, state):
      grads = grad_fn(params)
      updates, state = transform.update(grads, state, params, **case.extra_args(grad_fn, params))
      return optax.apply_updates(params, updates), updates, state
    return step

  step, injected_step = stepper(opt), stepper(injected_opt)
  p, q = params, params
  for _ in range(4):
    p, updates, state = step(p, state)
    q, injected_updates, injected_state = injected_step(q, injected_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 updates, injected_updates)
    # The state's structure depends on static information only, so the injected state is the
    # plain one (optax's contrib common test: the same structure, values to rtol = atol = 1e-5).
    assert jax.tree.structure(injected_state.inner_state) == jax.tree.structure(state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 injected_state.inner_state, state)
  assert injected_step._cache_size() == 1


def check_gradient_accumulation(case: Case, every_k: int = 3):
  """``optax.MultiSteps(method, k)``: ``k`` micro-steps of one gradient are one method step.

  The micro-gradients are equal (params do not move until the k-th), so their running mean is
  that gradient exactly and the accumulated run must equal the plain one step for step.
  """
  opt = case.make()
  accumulated = optax.MultiSteps(case.make(), every_k_schedule=every_k)
  params = parabola_init()
  grad_fn = jax.grad(parabola)
  step = jax.jit(make_step(opt, parabola, case.extra_args))
  micro_step = jax.jit(make_step(accumulated, parabola, case.extra_args))
  state, micro_state = opt.init(params), accumulated.init(params)
  p, q = params, params
  for _ in range(3):
    p, state = step(p, state)
    for k in range(every_k):
      before = q
      q, micro_state = micro_step(q, micro_state)
      if k < every_k - 1:
        assert_trees_equal(before, q)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p, q)
  del grad_fn
  assert micro_step._cache_size() == 1


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
