"""The optimizer registry (train/optimizers.py): every entry builds and steps, metadata, options."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from train import optimizers

STEPS_PER_EPOCH = 6
TOTAL_STEPS = 30


def _loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _problem():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(8,)), jnp.float32)
  params = {"w": jnp.asarray([0.5, -0.3, 0.2], jnp.float32), "b": jnp.zeros((), jnp.float32)}
  return params, (x, y), (x[::-1] * 0.5, y[::-1])


def _extra_args(spec, params, batch, next_batch):
  extra = {}
  if "value" in spec.extra_args:
    extra["value"] = _loss(params, batch)
  if "value_fn" in spec.extra_args:
    extra["value_fn"] = lambda p: _loss(p, batch)
  if "grad_fn" in spec.extra_args:
    extra["grad_fn"] = lambda p: jax.grad(_loss)(p, batch)
  if "next_grads" in spec.extra_args:
    extra["next_grads"] = jax.grad(_loss)(params, next_batch)
  return extra


# SPS's default c = 0.2 is Loizou et al.'s deep-learning setting; on this convex least-squares
# problem it overshoots (5x the Polyak step), so the test takes their convex-setting c = 0.5.
_TEST_OPTIONS = {"sps": {"c": 0.5}}


@pytest.mark.parametrize("name", list(optimizers.OPTIMIZERS))
def test_every_entry_builds_and_steps(name):
  spec = optimizers.get_spec(name)
  # With the coupled decay in front, as the training step's objective adds it.
  tx = optax.chain(optax.add_decayed_weights(1e-4), optimizers.create_optimizer(
      name, 0.05 if spec.takes_learning_rate else None, STEPS_PER_EPOCH, TOTAL_STEPS,
      options=_TEST_OPTIONS.get(name)))
  params, batch, next_batch = _problem()

  @jax.jit
  def step(params, state):
    grads = jax.grad(_loss)(params, batch)
    updates, state = tx.update(grads, state, params,
                               **_extra_args(spec, params, batch, next_batch))
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  new_params, state = step(params, state)
  new_params, state = step(new_params, state)
  # (States may hold inf or NaN by design: reduce_on_plateau's best loss, AutoDrop's angle.)
  for leaf in jax.tree.leaves(new_params):
    assert np.all(np.isfinite(leaf))
  moved = sum(float(jnp.sum(jnp.abs(a - b))) for a, b in
              zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True))
  assert moved > 0, f"{name} did not move the parameters"
  assert _loss(new_params, batch) < _loss(params, batch), f"{name} did not descend"


def test_every_optax_lr_method_is_registered():
  # One entry per method of the library (aliases and hybrids), resolved from optax_lr itself.
  expected = {"tlr_sgd", "tlr_sgd_pl", "tlr_fixed_meta_rate", "naive_tlr", "sgd_hd", "sgdn_hd",
              "adam_hd", "autodrop_sgd", "autodrop_adam", "sgd_cam_hd", "sgdn_cam_hd",
              "adam_cam_hd", "adasecant", "simple_adasecant", "cus_adam", "clr_sgd", "clr_adam",
              "n_cycle_sgd", "clr_simple_adasecant", "sgdn_hd_auto", "adam_hd_auto",
              "adam_cam_hd_auto", "autodrop_sgd_auto", "tlr_sgd_auto", "auto_adam",
              "auto_adam_no_tail"}
  peers = {"sgd", "sgd_multistep", "adam", "radam", "one_cycle", "adamw_cosine", "prodigy",
           "dadapt_adamw", "dog",
           "mechanize_sgd", "cocob", "schedule_free_sgd", "schedule_free_adamw",
           "reduce_on_plateau", "sls_sgd", "sps", "l4_adam", "l4_momentum", "adabound"}
  assert set(optimizers.OPTIMIZERS) == expected | peers
  for attribute in ("autodrop_sgd", "scale_by_autodrop", "sgd_cam_hd", "adam_cam_hd",
                    "adasecant", "simple_adasecant", "cus_adam", "cyclical_schedule",
                    "n_cycle_schedule", "switch_at"):
    assert callable(getattr(optax_lr, attribute))


def test_metadata():
  assert optimizers.get_spec("adasecant").extra_args == ("next_grads",)
  assert optimizers.get_spec("naive_tlr").extra_args == ("grad_fn",)
  assert optimizers.get_spec("reduce_on_plateau").extra_args == ("value",)
  assert optimizers.names(extra_args=()) == [
      n for n, s in optimizers.OPTIMIZERS.items() if not s.extra_args]
  for spec in optimizers.OPTIMIZERS.values():
    assert set(spec.extra_args) <= set(optimizers.EXTRA_ARGS)
  assert set(optimizers.names(takes_learning_rate=False)) == {
      "adasecant", "simple_adasecant", "prodigy", "dadapt_adamw", "dog", "mechanize_sgd",
      "cocob", "sls_sgd", "sps", "l4_adam", "l4_momentum", "auto_adam", "auto_adam_no_tail"}
  assert optimizers.get_spec("sls_sgd").extra_args == ("value", "value_fn")
  for name in ("sps", "l4_adam", "l4_momentum"):
    assert optimizers.get_spec(name).extra_args == ("value",)
  assert optimizers.get_spec("tlr_sgd").options() == {
      "momentum": 0.8, "nesterov": False, "window_fraction": 1 / 3, "bound": 0.25,
      "window_sum": "gradient"}


def test_multistep_rates_at_the_milestones():
  # Milestones at 30%, 60%, 80% of 30 steps -> steps 9, 18, 24, each x0.2.
  tx = optimizers.create_optimizer("sgd_multistep", 0.1, STEPS_PER_EPOCH, TOTAL_STEPS)
  params, batch, _ = _problem()
  state = tx.init(params)
  seen = []
  grads = jax.grad(_loss)(params, batch)
  for _ in range(TOTAL_STEPS):
    _, state = tx.update(grads, state, params)
    seen.append(float(optax_lr.learning_rates(state)["hyperparams/learning_rate"]))
  expected = [0.1] * 9 + [0.02] * 9 + [0.004] * 6 + [0.0008] * 6
  np.testing.assert_allclose(seen, expected, rtol=1e-5)


def test_clr_one_cycle_over_the_run_by_default():
  # cycle_epochs=None: step_size_up = total_steps // 2, so the rate peaks at mid-run.
  tx = optimizers.create_optimizer("clr_sgd", 1.0, STEPS_PER_EPOCH, TOTAL_STEPS,
                                   options={"min_learning_rate": 0.1})
  params, batch, _ = _problem()
  state = tx.init(params)
  grads = jax.tree.map(jnp.zeros_like, params)
  seen = []
  for _ in range(TOTAL_STEPS):
    _, state = tx.update(grads, state, params)
    seen.append(float(optax_lr.learning_rates(state)["hyperparams/learning_rate"]))
  # the rate applied at step t is the schedule at t: 0.1 + 0.9 * t / 15 up to t = 15.
  np.testing.assert_allclose(seen[:16], 0.1 + 0.9 * np.arange(16) / 15, rtol=1e-5)
  np.testing.assert_allclose(seen[15:], 0.1 + 0.9 * (1 - np.arange(15) / 15), rtol=1e-5)


def test_tlr_window_is_a_third_of_an_epoch():
  # 30 steps per epoch, p = 1/3: the registry's tlr_sgd is optax_lr.tlr_sgd with windows of 10.
  tx = optimizers.create_optimizer("tlr_sgd", 0.1, 30, 300)
  params, batch, _ = _problem()

  def run(tx, steps=21):
    state, p, rates = tx.init(params), params, []
    for _ in range(steps):
      updates, state = tx.update(jax.grad(_loss)(p, batch), state, p)
      p = optax.apply_updates(p, updates)
      rates.append(float(list(optax_lr.learning_rates(state).values())[0]))
    return p, rates

  ours, our_rates = run(tx)
  reference, reference_rates = run(optax_lr.tlr_sgd(0.1, update_every=10, momentum=0.8))
  jax.tree.map(np.testing.assert_array_equal, ours, reference)
  assert our_rates == reference_rates
  # The rate changes only at the end of the second window (step 20), as windows of 10 imply.
  assert our_rates[:19] == [pytest.approx(0.1)] * 19 and our_rates[19] != pytest.approx(0.1)


def test_schedule_free_eval_params():
  spec = optimizers.get_spec("schedule_free_sgd")
  tx = optax.chain(optax.add_decayed_weights(1e-3), optimizers.create_optimizer(
      "schedule_free_sgd", 0.1, STEPS_PER_EPOCH, TOTAL_STEPS))
  params, batch, _ = _problem()
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(jax.grad(_loss)(params, batch), state, params)
    params = optax.apply_updates(params, updates)
  inner = state[1]
  assert isinstance(inner, optax.contrib.ScheduleFreeState)
  expected = optax.contrib.schedule_free_eval_params(inner, params)
  jax.tree.map(np.testing.assert_array_equal, spec.eval_params(state, params), expected)


def test_bad_input_lists_choices():
  with pytest.raises(ValueError, match="unknown optimizer 'sgdd'; valid choices: tlr_sgd, "):
    optimizers.get_spec("sgdd")
  with pytest.raises(ValueError, match=r"unknown option\(s\) momentun .*valid options: momentum"):
    optimizers.create_optimizer("sgd", 0.1, 10, 100, options={"momentun": 0.9})
  with pytest.raises(ValueError, match="learning_rate"):
    optimizers.create_optimizer("sgd", None, 10, 100)
  with pytest.raises(ValueError, match="learning_rate"):
    optimizers.create_optimizer("adam", -1.0, 10, 100)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    optimizers.create_optimizer("tlr_sgd", 0.1, 0, 100)
  with pytest.raises(ValueError, match=r"unknown option\(s\) nonsense for optimizer 'adasecant'; "
                     "valid options: rate_rule"):
    optimizers.create_optimizer("adasecant", None, 10, 100, options={"nonsense": 1})
  with pytest.raises(ValueError, match="milestones"):
    optimizers.create_optimizer("sgd_multistep", 0.1, 10, 100, options={"milestones": (1.5,)})
  # Methods that set their own rate ignore the initial one.
  optimizers.create_optimizer("simple_adasecant", None, 10, 100)


def test_sps_is_the_capped_polyak_step():
  # SPS_max (Loizou et al. 2021, Eq. 7): rate = min((f - f*) / (c ||g||^2), gamma_b), f* = 0.
  params, batch, _ = _problem()
  grads = jax.grad(_loss)(params, batch)
  value = float(_loss(params, batch))
  squared_norm = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads))
  for bound in (10.0, 0.01):
    tx = optimizers.create_optimizer("sps", None, STEPS_PER_EPOCH, TOTAL_STEPS,
                                     options={"max_learning_rate": bound})
    updates, _ = tx.update(grads, tx.init(params), params, value=value)
    rate = min(value / (0.2 * squared_norm), bound)
    jax.tree.map(lambda u, g, r=rate: np.testing.assert_allclose(u, -r * g, rtol=1e-5), updates,
                 grads)
  # 0.6015 / (0.2 * 1.813) = 1.66: the first bound does not bind, the second does.
  assert 0.01 < value / (0.2 * squared_norm) < 10.0


def test_sls_is_the_armijo_backtracking_step():
  # SLS (Vaswani et al. 2019, Algorithm 1 with the reset of Algorithm 2): the first trial is the
  # previous rate (1 initially) times 2 ** (1 / steps_per_epoch); shrink by 0.9 until
  # f(w - eta g) <= f(w) - 0.1 eta ||g||^2.
  params, batch, _ = _problem()
  tx = optimizers.create_optimizer("sls_sgd", None, STEPS_PER_EPOCH, TOTAL_STEPS)
  state = tx.init(params)
  expected_rate = 1.0
  for _ in range(3):
    grads = jax.grad(_loss)(params, batch)
    value = float(_loss(params, batch))
    squared_norm = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads))
    eta = min(expected_rate * 2.0 ** (1 / STEPS_PER_EPOCH), 10.0)
    trials = 1
    while float(_loss(jax.tree.map(lambda p, g, e=eta: p - e * g, params, grads), batch)) > (
        value - 0.1 * eta * squared_norm):
      eta *= 0.9
      trials += 1
    updates, state = tx.update(grads, state, params, value=value,
                               value_fn=lambda p: _loss(p, batch))
    jax.tree.map(lambda u, g, e=eta: np.testing.assert_allclose(u, -e * g, rtol=1e-4), updates,
                 grads)
    (rate,) = optax_lr.learning_rates(state).values()
    assert float(rate) == pytest.approx(eta, rel=1e-4)
    expected_rate = eta
    params = optax.apply_updates(params, updates)
  assert trials > 1  # the search backtracked at least once on the last step
