"""AutoDrop (Teng, Wang, Choromanska, Algorithm 1): the rule on scripted trajectories.

Most tests drive ``scale_by_autodrop`` with ``steps_per_epoch = 1`` and unit directions in the
plane that turn by scripted angles, so that the angle between window displacements (Definition 1)
is known by construction whatever the rate. Indexing: call ``c`` (1-based) applies direction
``d_{c-1}``; with one-step windows call ``e`` ends window ``e`` and processes boundary ``e`` (the
parameters after its own step), whose angle is ``omega_e = angle(d_{e-1}, d_{e-2}) = turns[e - 1]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_lr
from optax_lr.autodrop import ScaleByAutoDropState
from tests.conformance import assert_trees_equal, parabola, parabola_init

START = np.array([10.0, 10.0], np.float32)


def _directions(turns_degrees):
  """Unit directions ``d_j``, each turned by ``turns[j]`` degrees from ``d_{j-1}`` (d_0 at 0)."""
  phases = np.radians(np.cumsum(np.asarray(turns_degrees, np.float64)))
  return np.stack([np.cos(phases), np.sin(phases)], axis=1).astype(np.float32)


def _run(opt, directions, start=START):
  """Applies ``opt`` to the scripted directions; returns per-call (params_in, updates, state)."""

  @jax.jit
  def run(directions):
    params = {"w": jnp.asarray(start)}
    state = opt.init(params)

    def body(carry, direction):
      params, state = carry
      updates, state = opt.update({"w": direction}, state, params)
      return (optax.apply_updates(params, updates), state), (params, updates, state)

    (last_params, _), trace = jax.lax.scan(body, (params, state), jnp.asarray(directions))
    return last_params, trace

  last_params, (params_in, updates, states) = run(directions)
  return last_params, params_in, updates, states


def _autodrop_state(state) -> ScaleByAutoDropState:
  return next(s for s in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, ScaleByAutoDropState))
      if isinstance(s, ScaleByAutoDropState))


def _after(states, call):
  """The AutoDrop state after the ``call``-th update (1-based)."""
  return jax.tree.map(lambda x: x[call - 1], _autodrop_state(states))


def test_angle_degrees_definition_1():
  x = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([0.0])}
  cases = {(1.0, 0.0, 0.0): 0.0, (0.0, 1.0, 0.0): 90.0, (-1.0, 0.0, 0.0): 180.0,
           (0.5, math.sqrt(3) / 2, 0.0): 60.0, (0.0, 0.0, 0.0): 90.0}
  for (u, v, w), expected in cases.items():
    y = {"a": jnp.array([u, v]), "b": jnp.array([w])}
    np.testing.assert_allclose(float(optax_lr.angle_degrees(y, x)), expected, atol=2e-3)
  # The angle spans the whole tree, not one leaf: (1, 0 | 1) vs (1, 0 | -1) is 90 degrees.
  np.testing.assert_allclose(float(optax_lr.angle_degrees(
      {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0])},
      {"a": jnp.array([1.0, 0.0]), "b": jnp.array([-1.0])})), 90.0, atol=1e-4)


def test_trigger_on_change_latch_and_k_weighted_landing():
  # omega_2.. = 10, 30, 60, 60.001 (change 0.001 < 0.01 at boundary 5), then large changes.
  turns = [0, 10, 30, 60, 60.001, 90, 10, 170, 20, 40]
  opt = optax_lr.scale_by_autodrop(0.5, steps_per_epoch=1, drop_factor=0.2, drop_delay=3,
                                   trigger=optax_lr.DropTrigger(threshold=0.01))
  last, params_in, updates, states = _run(opt, _directions(turns))
  del last
  d = _directions(turns)
  # Boundary 4 (call 4): change |60 - 30| = 30, no trigger; boundary 5 (call 5): trigger, k = 1.
  assert not bool(_after(states, 4).drop_pending)
  at_trigger = _after(states, 5)
  assert bool(at_trigger.drop_pending) and int(at_trigger.delay_count) == 1
  np.testing.assert_allclose(float(at_trigger.angular_velocity), 60.001, atol=1e-3)
  # Latched: boundary 6 (change 29.999) does not reset it; k = 2.
  assert bool(_after(states, 6).drop_pending) and int(_after(states, 6).delay_count) == 2
  assert int(_after(states, 6).num_drops) == 0
  # Boundary 7 (call 7): k = 3 = drop_delay -> drop, landing on (1 x5 + 2 x6 + 3 x7) / 6, with
  # x7 the end point of call 7's own step (x_e = params + (-0.5 d_6), never applied as such).
  dropped = _after(states, 7)
  assert int(dropped.num_drops) == 1 and not bool(dropped.drop_pending)
  assert int(dropped.delay_count) == 0 and int(dropped.num_displacements) == 0
  np.testing.assert_allclose(float(dropped.learning_rate), 0.5 * 0.2, rtol=1e-7)
  np.testing.assert_allclose(float(dropped.threshold), 0.01 / 0.2, rtol=1e-6)
  x = np.asarray(params_in["w"])  # x[c - 1] = parameters entering call c (float32)
  x7 = x[6] + (-np.float32(0.5) * d[6])
  expected = (1 * x[5].astype(np.float64) + 2 * x[6] + 3 * x7.astype(np.float64)) / 6
  np.testing.assert_allclose(np.asarray(dropped.average["w"]), expected, rtol=1e-6)
  landed = x[7]  # the parameters after call 7
  np.testing.assert_allclose(landed, expected, rtol=1e-6)
  # Exact landing: parameters and average within a factor 2, so average - params is exact and
  # apply_updates reproduces the average bit for bit; the new anchor is those parameters.
  np.testing.assert_array_equal(landed, np.asarray(dropped.average["w"]))
  np.testing.assert_array_equal(np.asarray(updates["w"][6]),
                                np.asarray(dropped.average["w"]) - x[6])
  np.testing.assert_array_equal(np.asarray(dropped.anchor["w"]), landed)
  # Before the drop every update is -0.5 d; after it, -0.1 d (call 8 starts the next window).
  np.testing.assert_array_equal(np.asarray(updates["w"][5]), -np.float32(0.5) * d[5])
  np.testing.assert_allclose(np.asarray(updates["w"][7]), -0.1 * d[7], rtol=1e-6)


def test_first_trigger_at_third_boundary_and_after_each_reset():
  # Constant angles: the change is 0 as soon as two angles exist (Algorithm 1's t > 2).
  # drop_delay = 1 drops at the trigger boundary; the history restarts after each drop.
  opt = optax_lr.scale_by_autodrop(
      0.5, steps_per_epoch=1, drop_factor=0.2, min_learning_rate=0.01, drop_delay=1,
      trigger=optax_lr.DropTrigger(threshold=0.01, max_threshold=1.0))
  _, _, updates, states = _run(opt, _directions([0] + [50] * 14))
  num_drops = [int(_after(states, c).num_drops) for c in range(1, 15)]
  # Boundaries 3, 6, 9, 12: the third boundary from the start and after each drop.
  assert num_drops == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
  rates = [float(_after(states, c).learning_rate) for c in (2, 3, 6, 9, 12)]
  np.testing.assert_allclose(rates, [0.5, 0.1, 0.02, 0.01, 0.01], rtol=1e-6)  # floor 0.01
  thresholds = [float(_after(states, c).threshold) for c in (2, 3, 6, 9, 12)]
  np.testing.assert_allclose(thresholds, [0.01, 0.05, 0.25, 1.0, 1.0], rtol=1e-6)  # cap 1
  # Without averaging the call that ends the window takes its step at the old rate (it is part
  # of the epoch, Algorithm 1); the new rate scales the next window.
  d = _directions([0] + [50] * 14)
  np.testing.assert_array_equal(np.asarray(updates["w"][2]), -np.float32(0.5) * d[2])
  np.testing.assert_allclose(np.asarray(updates["w"][3]), -0.1 * d[3], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["w"][5]), -0.1 * d[5], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["w"][6]), -0.02 * d[6], rtol=1e-6)


def test_smoothing_compares_overlapping_means():
  # m = 2: (omega_4 - omega_2) / 2 = 0.002 triggers at boundary 4 (the first with m + 1 angles),
  # although consecutive raw angles differ by 40 degrees; m = 1 never triggers on them.
  turns = [0, 10, 50, 10.004, 80, 20]
  smoothed = optax_lr.scale_by_autodrop(0.5, steps_per_epoch=1, drop_delay=20,
                                        trigger=optax_lr.DropTrigger(smoothing=2))
  _, _, _, states = _run(smoothed, _directions(turns))
  assert not bool(_after(states, 3).drop_pending)
  assert bool(_after(states, 4).drop_pending)
  assert _after(states, 4).angle_history.shape == (3,)
  np.testing.assert_allclose(np.asarray(_after(states, 4).angle_history), [10, 50, 10.004],
                             atol=1e-3)
  raw = optax_lr.scale_by_autodrop(0.5, steps_per_epoch=1, drop_delay=20,
                                   trigger=optax_lr.DropTrigger(smoothing=1))
  _, _, _, states = _run(raw, _directions(turns))
  assert not bool(_after(states, 6).drop_pending)
  # Constant angles with m = 2: the first possible trigger is boundary m + 2 = 4 (call 4).
  _, _, _, states = _run(smoothed, _directions([0] + [30] * 6))
  assert not bool(_after(states, 3).drop_pending) and bool(_after(states, 4).drop_pending)


def test_windows_of_several_steps():
  # steps_per_epoch = 3: each window moves 3 steps along one direction; windows turn by 40, 40,
  # 70 degrees. Boundary e is processed by call 3 e, the window's last; between boundaries no
  # buffer changes.
  turns = [0, 0, 0, 40, 0, 0, 40, 0, 0, 70, 0, 0, 0]
  opt = optax_lr.scale_by_autodrop(0.5, steps_per_epoch=3, drop_delay=20)
  _, params_in, _, states = _run(opt, _directions(turns))
  angles = [float(_after(states, c).angular_velocity) for c in range(1, 14)]
  assert all(math.isnan(a) for a in angles[:5])
  np.testing.assert_allclose(angles[5:], [40] * 6 + [70] * 2, atol=1e-3)
  for boundary in (1, 2, 3):
    state = _after(states, 3 * boundary)
    # The anchor is x_e: the parameters after the window's last step, bit for bit.
    np.testing.assert_array_equal(np.asarray(state.anchor["w"]),
                                  np.asarray(params_in["w"][3 * boundary]))
    for call in (3 * boundary + 1, 3 * boundary + 2):
      assert_trees_equal((state.anchor, state.previous_displacement),
                         (_after(states, call).anchor, _after(states, call).previous_displacement))
  # Boundary 3 (call 9): angles 40, 40 -> trigger.
  assert not bool(_after(states, 8).drop_pending) and bool(_after(states, 9).drop_pending)


def test_over_adam_matches_adam_until_the_drop():
  grads = jax.random.normal(jax.random.key(0), (16, 5))
  lr, rho = 0.01, 0.5
  # A threshold of 180 degrees triggers at the first possible boundary: 3 (call 6); k = 2 at
  # boundary 4 (call 8) drops and lands.
  over_adam = optax.chain(optax.scale_by_adam(), optax_lr.scale_by_autodrop(
      lr, steps_per_epoch=2, drop_factor=rho, drop_delay=2,
      trigger=optax_lr.DropTrigger(threshold=180.0, max_threshold=180.0)))
  _, params_in, updates, states = _run(over_adam, grads, start=np.ones(5, np.float32))
  _, _, adam_updates, _ = _run(optax.adam(lr), grads, start=np.ones(5, np.float32))
  u, a = np.asarray(updates["w"]), np.asarray(adam_updates["w"])
  # Before the drop: Adam's updates, to rounding (XLA fuses Adam's arithmetic differently in the
  # two programs, and an update that nearly cancels keeps only the absolute error, ~1e-7 lr).
  np.testing.assert_allclose(u[:7], a[:7], rtol=1e-6, atol=1e-9)
  assert int(_after(states, 7).num_drops) == 0 and int(_after(states, 8).num_drops) == 1
  landing = _after(states, 8)
  np.testing.assert_array_equal(u[7], np.asarray(landing.average["w"] - params_in["w"][7]))
  # Adam's, rate * rho, until the second drop: the history restarts at boundary 4, so boundary 7
  # triggers again and boundary 8 (call 16) lands.
  np.testing.assert_allclose(u[8:15], rho * a[8:15], rtol=1e-6, atol=1e-9)
  assert int(_after(states, 15).num_drops) == 1 and int(_after(states, 16).num_drops) == 2
  assert optax_lr.learning_rates(states).keys() == {"1/learning_rate"}


@pytest.mark.parametrize("inner", ["adam", "nesterov_decay"])
def test_with_autodrop_is_the_chain_and_lands_on_its_own_end_points(inner):
  # with_autodrop(inner) recomputes inner's direction inside the boundary loop instead of
  # storing it: the same rule as chain(inner, scale_by_autodrop), on a noisy quadratic with drops
  # and landings, in the donated jitted step a training loop uses.
  make_inner = {"adam": optax.scale_by_adam,
                "nesterov_decay": lambda: optax.chain(optax.add_decayed_weights(1e-3),
                                                      optax.trace(0.9, nesterov=True))}[inner]
  options = dict(drop_factor=0.5, drop_delay=2,
                 trigger=optax_lr.DropTrigger(threshold=180.0, max_threshold=180.0))
  lr, window, calls = 0.05, 3, 27
  fused = optax_lr.with_autodrop(make_inner(), lr, window, **options)
  chained = optax.chain(make_inner(), optax_lr.scale_by_autodrop(lr, window, **options))
  noise = jax.random.normal(jax.random.key(1), (calls, 3, 4))

  def trajectory(opt):
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s, u))(
        *opt.update(g, s, p)), donate_argnums=(0, 1))
    params = {"w": jnp.full((3, 4), 2.0), "b": jnp.ones(4)}
    state = opt.init(params)
    out = []
    for call in range(calls):
      grads = {"w": params["w"] + 0.3 * noise[call], "b": 2.0 * params["b"]}
      params, state, updates = step(params, state, grads)
      # Host copies: the next call takes the buffers.
      out.append(jax.tree.map(np.asarray, (params, _autodrop_state(state), updates)))
    return out

  fused_run, chained_run = trajectory(fused), trajectory(chained)
  drops = [int(s.num_drops) for _, s, _ in fused_run]
  # Triggers at boundary 3 and, the history restarting at the drop, 3 boundaries later at 7;
  # drops one boundary after each (calls 12 and 24), landing on the k-weighted average.
  assert drops == [int(s.num_drops) for _, s, _ in chained_run]
  assert drops[10] == 0 and drops[11] == 1 and drops[22] == 1 and drops[23] == 2
  for (params, state, updates), (params_c, state_c, updates_c) in zip(fused_run, chained_run,
                                                                     strict=True):
    # The two programs fuse inner's arithmetic differently (as Adam alone and Adam in a chain
    # do), so they agree to float32 rounding.
    for x, y in zip(jax.tree.leaves((params, updates, state.anchor, state.average)),
                    jax.tree.leaves((params_c, updates_c, state_c.anchor, state_c.average)),
                    strict=True):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(float(state.learning_rate), float(state_c.learning_rate))
  for call in range(window - 1, calls, window):
    params, state, _ = fused_run[call]
    # The loop's x_e (inner's direction recomputed from its buffers) is where the step lands, to
    # one float32 ulp: the step adds the landing select's output, the loop the plain step, and
    # XLA:CPU rounds the two programs' p + (-lr d) differently in some elements (the chain does
    # the same in the same elements); without averaging, bit for bit. At a drop the parameters
    # are the average (apply_updates reproduces it exactly here).
    for x, y in zip(jax.tree.leaves(state.anchor), jax.tree.leaves(params), strict=True):
      np.testing.assert_array_max_ulp(x, y, maxulp=1)
    if drops[call] != drops[call - 1]:
      assert_trees_equal(state.average, params)
  assert fused_run[-1][1].learning_rate == np.float32(lr) * np.float32(0.25)  # two drops
  assert isinstance(fused.init({"w": jnp.zeros(2)}), optax_lr.WithAutoDropState)


def test_with_autodrop_bad_inner_raises():
  with pytest.raises(TypeError, match="`inner`"):
    optax_lr.with_autodrop(optax.scale_by_adam, 0.1, 10)
  with pytest.raises(ValueError, match="`steps_per_epoch`"):
    optax_lr.with_autodrop(optax.scale_by_adam(), 0.1, 0)
  with pytest.raises(ValueError, match="requires|params"):
    opt = optax_lr.with_autodrop(optax.scale_by_adam(), 0.1, 10)
    opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))


def test_over_tlr_multiplies_tlr_rate():
  # AutoDrop with learning_rate=1.0 after TLR (its update turned back into a direction) is a
  # multiplier on TLR's own rate, which keeps adapting as it would alone.
  grads = jax.random.normal(jax.random.key(1), (16, 5))
  rho = 0.2
  over_tlr = optax.chain(
      optax.trace(0.9), optax_lr.scale_by_tlr(0.1, update_every=2), optax.scale(-1.0),
      optax_lr.scale_by_autodrop(
          1.0, steps_per_epoch=2, drop_factor=rho, drop_delay=2,
          trigger=optax_lr.DropTrigger(threshold=180.0, max_threshold=180.0)))
  alone = optax.chain(optax.trace(0.9), optax_lr.scale_by_tlr(0.1, update_every=2))
  _, _, updates, states = _run(over_tlr, grads, start=np.ones(5, np.float32))
  _, _, tlr_updates, tlr_states = _run(alone, grads, start=np.ones(5, np.float32))
  u, t = np.asarray(updates["w"]), np.asarray(tlr_updates["w"])
  np.testing.assert_allclose(u[:7], t[:7], rtol=1e-6, atol=0)
  np.testing.assert_allclose(u[8:15], rho * t[8:15], rtol=1e-6, atol=0)
  rates = optax_lr.learning_rates(states)
  assert rates.keys() == {"1/learning_rate", "3/learning_rate"}
  np.testing.assert_array_equal(np.asarray(rates["1/learning_rate"]),
                                np.asarray(optax_lr.learning_rates(tlr_states)["1/learning_rate"]))
  np.testing.assert_allclose(np.asarray(rates["3/learning_rate"])[[14, 15]], [rho, rho**2],
                             rtol=1e-7)  # the second drop at call 16


def test_checkpoint_in_the_middle_of_the_drop_delay_resumes_bit_identically(tmp_path):
  opt = optax_lr.autodrop_sgd(0.1, steps_per_epoch=2, momentum=0.5, drop_delay=4,
                              trigger=optax_lr.DropTrigger(threshold=180.0, max_threshold=180.0))
  grad_fn = jax.grad(parabola)

  @jax.jit
  def step(params, state):
    updates, state = opt.update(grad_fn(params), state, params)
    return optax.apply_updates(params, updates), state

  params = parabola_init()
  state = opt.init(params)
  for _ in range(9):  # trigger at boundary 3 (call 6), k = 2 at boundary 4 (call 8)
    params, state = step(params, state)
  assert bool(state[-1].drop_pending) and int(state[-1].delay_count) == 2
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / "ckpt", {"params": params, "opt_state": state})
  checkpointer.close()
  resumed_params, resumed_state = restored["params"], restored["opt_state"]
  for _ in range(8):  # through the drop at boundary 6 (call 12)
    params, state = step(params, state)
    resumed_params, resumed_state = step(resumed_params, resumed_state)
  assert int(state[-1].num_drops) == 1
  assert_trees_equal((params, state), (resumed_params, resumed_state))


def test_state_layout():
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2, jnp.bfloat16)}
  state = optax_lr.scale_by_autodrop(
      0.1, steps_per_epoch=5, trigger=optax_lr.DropTrigger(smoothing=4)).init(params)
  assert optax.tree_utils.tree_get(state, "learning_rate").dtype == jnp.float32
  big = [x for x in jax.tree.leaves(state) if x.shape in ((3, 2), (2,))]
  assert len(big) == 3 * 2  # anchor, previous displacement, average
  assert state.anchor["b"].dtype == jnp.bfloat16 and state.average["b"].dtype == jnp.bfloat16
  assert state.angle_history.shape == (5,)
  assert state.window_step.dtype == state.num_drops.dtype == jnp.int32
  assert math.isnan(float(state.angular_velocity))
  no_average = optax_lr.scale_by_autodrop(0.1, steps_per_epoch=5, average=False).init(params)
  assert no_average.average == optax.EmptyState()
  single = optax_lr.scale_by_autodrop(0.1, steps_per_epoch=5, drop_delay=1).init(params)
  assert single.average == optax.EmptyState()  # the average of one point is that point


def test_update_requires_params():
  opt = optax_lr.scale_by_autodrop(0.1, steps_per_epoch=2)
  params = {"w": jnp.zeros(2)}
  with pytest.raises(ValueError, match="requires the current value of parameters"):
    opt.update(params, opt.init(params))


@pytest.mark.parametrize("kwargs, name", [
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"steps_per_epoch": 2.5}, "steps_per_epoch"),
    ({"drop_factor": 0.0}, "drop_factor"),
    ({"drop_factor": 1.0}, "drop_factor"),
    ({"drop_factor": -0.5}, "drop_factor"),
    ({"drop_delay": 0}, "drop_delay"),
    ({"min_learning_rate": -1e-4}, "min_learning_rate"),
    ({"min_learning_rate": 0.2}, "min_learning_rate"),
])
def test_bad_arguments_raise(kwargs, name):
  arguments = {"learning_rate": 0.1, "steps_per_epoch": 10} | kwargs
  with pytest.raises(ValueError, match=f"`{name}`"):
    optax_lr.scale_by_autodrop(**arguments)
  with pytest.raises(ValueError, match=f"`{name}`"):
    optax_lr.autodrop_sgd(**arguments)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": -0.01}, r"`DropTrigger.threshold` must be a finite number >= 0"),
    ({"max_threshold": -1.0}, r"`DropTrigger.max_threshold` must be a finite number >= 0"),
    ({"threshold": 0.5, "max_threshold": 0.1}, r"`DropTrigger.max_threshold` must be >= "),
    ({"smoothing": 0}, r"`DropTrigger.smoothing` must be an integer >= 1"),
    ({"eps": -1.0}, r"`DropTrigger.eps` must be a finite number >= 0"),
    ({"threshold_rule": "adaptive"}, r"`DropTrigger.threshold_rule` must be one of 'fixed'"),
    ({"relative_threshold": 0.0}, r"`DropTrigger.relative_threshold` must be in \(0.0, 1.0\]"),
])
def test_bad_trigger_raises_naming_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optax_lr.DropTrigger(**kwargs)


def test_autodrop_sgd_bad_base_arguments_raise():
  with pytest.raises(ValueError, match="`momentum`"):
    optax_lr.autodrop_sgd(0.1, 10, momentum=1.0)
  with pytest.raises(ValueError, match="`weight_decay`"):
    optax_lr.autodrop_sgd(0.1, 10, weight_decay=-1.0)


def _algorithm_1(grads, x0, *, learning_rate, steps_per_epoch, momentum, drop_factor,
                 min_learning_rate, threshold, max_threshold, drop_delay, average, smoothing,
                 eps=1e-8):
  """Algorithm 1 of the AutoDrop paper in NumPy float64, momentum SGD as the base optimizer.

  Read as the library documents it: the first displacement is measured from x_0; the trigger is
  on the change of the (m-smoothed) angle and latches; k = 1 at the trigger epoch and the drop at
  k = n_d with the normalised weighted average z / (n_d (n_d + 1) / 2); after a drop the angle
  history restarts from the new parameters. The momentum trace carries on across epochs.
  ``grads(x, t)`` is the stochastic gradient at step t. Returns the parameters after every step
  (after the averaging, at a drop) and the rate of every step.
  """
  x, alpha, theta = np.array(x0, np.float64), learning_rate, threshold
  trace = np.zeros_like(x)
  previous, angles, pending, k, z = None, [], False, 0, np.zeros_like(x)
  path, rates, t = [], [], 0
  while t < len(grads.noise):
    start = x.copy()
    for _ in range(steps_per_epoch):
      trace = grads(x, t) + momentum * trace
      x = x + (-alpha * trace)
      rates.append(alpha)
      path.append(x.copy())
      t += 1
    s = x - start
    if previous is not None:
      cosine = np.clip((s @ previous) / (np.linalg.norm(s) * np.linalg.norm(previous) + eps), -1, 1)
      angles.append(np.degrees(np.arccos(cosine)))
    previous = s
    m = smoothing
    if (not pending and len(angles) >= m + 1
        and abs(np.mean(angles[-m:]) - np.mean(angles[-m - 1:-1])) < theta):
      pending, k, z = True, 0, np.zeros_like(x)
    if pending:
      k += 1
      z = z + k * x
      if k == drop_delay:
        if average:
          x = z / (drop_delay * (drop_delay + 1) / 2)
          path[-1] = x.copy()
        alpha = max(min_learning_rate, drop_factor * alpha)
        theta = min(max_threshold, theta / drop_factor)
        pending, previous, angles = False, None, []
  return np.stack(path), np.asarray(rates)


class _NoisyQuadratic:
  """``g(x, t) = a * (x - c_t)``: a diagonal quadratic with a fresh random centre every step."""

  def __init__(self, steps, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    self.curvature = np.linspace(0.2, 2.0, dim)
    self.noise = rng.normal(size=(steps, dim))

  def __call__(self, x, t):
    return self.curvature * (x - self.noise[t])


@pytest.mark.parametrize("average, smoothing", [(True, 1), (False, 1), (True, 2), (False, 3)])
def test_equals_algorithm_1_in_float64(average, smoothing):
  settings = dict(learning_rate=0.2, steps_per_epoch=5, momentum=0.5, drop_factor=0.5,
                  min_learning_rate=1e-3, threshold=8.0, max_threshold=40.0, drop_delay=3,
                  average=average, smoothing=smoothing)
  grads = _NoisyQuadratic(steps=5 * 40)
  x0 = np.full(8, 3.0)
  expected_path, expected_rates = _algorithm_1(grads, x0, **settings)
  # The library's rate drops, counted on the transcription: the test must see several.
  assert len(set(expected_rates)) >= 3
  with jax.enable_x64(True):
    opt = optax_lr.autodrop_sgd(
        settings["learning_rate"], settings["steps_per_epoch"], momentum=settings["momentum"],
        drop_factor=settings["drop_factor"], min_learning_rate=settings["min_learning_rate"],
        drop_delay=settings["drop_delay"], average=average,
        trigger=optax_lr.DropTrigger(threshold=settings["threshold"],
                                     max_threshold=settings["max_threshold"],
                                     smoothing=smoothing))
    curvature, noise = jnp.asarray(grads.curvature), jnp.asarray(grads.noise)

    @jax.jit
    def run(params):
      def body(carry, centre):
        params, state = carry
        updates, state = opt.update(curvature * (params - centre), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, _autodrop_state(state).learning_rate)

      return jax.lax.scan(body, (params, opt.init(params)), noise)[1]

    path, rates = jax.device_get(run(jnp.asarray(x0)))
  assert path.dtype == np.float64 and rates.dtype == np.float64
  # The rate of the step taken at every call is the rate in the state before it.
  np.testing.assert_array_equal(np.concatenate([[settings["learning_rate"]], rates[:-1]]),
                                expected_rates)
  np.testing.assert_allclose(path, expected_path, rtol=1e-12, atol=1e-12)


# --- the relative threshold rule (threshold_rule="relative") ---

def _relative(threshold_rule="relative"):
  trigger = optax_lr.DropTrigger(threshold_rule=threshold_rule, relative_threshold=0.2)
  return optax_lr.scale_by_autodrop(1.0, 1, drop_factor=0.5, min_learning_rate=0.0,
                                    drop_delay=1, average=False, trigger=trigger)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_relative_threshold_fires_on_the_first_small_change(scale):
  # omega_2..omega_7 = 10, 20, 30, 40, 41.5, 60 (times scale); changes from boundary 3 on:
  # c3 = c4 = c5 = 10, c6 = 1.5, c7 = 18.5. Boundary 5: two earlier changes, c5 = 10 above
  # 0.2 * 10 = 2. Boundary 6: 1.5 <= 0.2 * mean(10, 10, 10) = 2: trigger, and with
  # drop_delay = 1 the rate drops at once (1 -> 0.5). The same at any scale of the angles.
  turns = np.array([0, 10, 20, 30, 40, 41.5, 60, 80]) * scale
  _, _, _, states = _run(_relative(), _directions(turns))
  drops = [int(_after(states, c).num_drops) for c in range(1, 9)]
  assert drops == [0, 0, 0, 0, 0, 1, 1, 1]
  assert float(_after(states, 5).threshold) == pytest.approx(0.01)  # the fixed part: unchanged
  np.testing.assert_allclose(float(_after(states, 5).mean_change), 10.0 * scale, rtol=1e-3)
  assert float(_after(states, 6).learning_rate) == 0.5
  # After the drop the mean restarts with the history.
  assert int(_after(states, 6).num_changes) == 0
  # The paper's fixed 0.01 degrees never fires on these changes (>= 0.15 degrees).
  fixed = optax_lr.scale_by_autodrop(1.0, 1, drop_factor=0.5, min_learning_rate=0.0,
                                     drop_delay=1, average=False)
  _, _, _, states = _run(fixed, _directions(turns))
  assert int(_after(states, 8).num_drops) == 0


def test_relative_threshold_is_never_later_than_the_fixed_one():
  # A constant 10-degree turn: every change is 0 up to float32 rounding, below the fixed 0.01
  # degrees at boundary 3 (the first change, before two earlier changes exist): both rules fire.
  turns = [0] + [10] * 7
  for opt in (_relative(), _relative(threshold_rule="fixed")):
    _, _, _, states = _run(opt, _directions(turns))
    assert [int(_after(states, c).num_drops) for c in range(1, 4)] == [0, 0, 1]


def test_relative_threshold_keeps_steady_changes_undropped_and_validates():
  # Changes of 10 every boundary: never below 0.2 * 10.
  turns = np.concatenate([[0], np.cumsum(np.full(11, 10.0)) % 170])
  _, _, _, states = _run(_relative(), _directions(turns[:10]))
  assert int(_after(states, 10).num_drops) == 0
  with pytest.raises(ValueError, match="threshold_rule"):
    optax_lr.DropTrigger(threshold_rule="adaptive")
  with pytest.raises(ValueError, match="relative_threshold"):
    optax_lr.DropTrigger(threshold_rule="relative", relative_threshold=0.0)
  with pytest.raises(TypeError, match="`trigger` must be None"):
    optax_lr.scale_by_autodrop(1.0, 1, trigger={"threshold_rule": "relative"})
