"""Every constructor rejects wrong types and values with an error naming the argument.

``TypeError`` for the wrong kind (a bool where a number is meant, ``None``, a string, an array
that is not a scalar, a number where a flag is meant, a schedule where a learned initial rate is
needed); ``ValueError`` for a number out of range. Only tracers pass unchecked (an injected
hyperparameter inside ``jit``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from optax_lr import _checks

# constructor, its valid base arguments, and the numeric arguments to corrupt.
CONSTRUCTORS = [
    (optax_lr.sgd_hd, dict(learning_rate=0.1),
     ["learning_rate", "hypergrad_lr", "momentum", "weight_decay"]),
    (optax_lr.adam_hd, dict(), ["learning_rate", "hypergrad_lr", "b1", "b2", "eps",
                                "weight_decay"]),
    (optax_lr.hypergradient, dict(inner=optax.identity(), learning_rate=0.1, hypergrad_lr=1e-3),
     ["learning_rate", "hypergrad_lr", "min_learning_rate"]),
    (optax_lr.sgd_cam_hd, dict(learning_rate=0.1),
     ["learning_rate", "hypergrad_lr", "momentum", "weight_decay"]),
    (optax_lr.adam_cam_hd, dict(), ["learning_rate", "hypergrad_lr", "b1", "b2", "eps",
                                    "weight_decay"]),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1),
     ["learning_rate", "update_every", "momentum", "weight_decay", "bound"]),
    (optax_lr.scale_by_tlr, dict(learning_rate=0.1), ["learning_rate", "update_every", "bound"]),
    (optax_lr.scale_by_tlr_fixed_meta_rate, dict(learning_rate=0.1, meta_learning_rate=0.01),
     ["learning_rate", "meta_learning_rate", "update_every"]),
    (optax_lr.naive_tlr, dict(learning_rate=0.1, meta_learning_rate=0.01),
     ["learning_rate", "meta_learning_rate"]),
    (optax_lr.autodrop_sgd, dict(learning_rate=0.1, steps_per_epoch=10),
     ["learning_rate", "steps_per_epoch", "momentum", "weight_decay", "drop_factor",
      "min_learning_rate", "drop_delay"]),
    (optax_lr.scale_by_autodrop, dict(learning_rate=0.1, steps_per_epoch=10),
     ["learning_rate", "steps_per_epoch", "drop_factor", "drop_delay"]),
    (optax_lr.adasecant, dict(), ["gamma_clip", "outlier_reset", "max_rate", "eps"]),
    (optax_lr.simple_adasecant, dict(), ["threshold"]),
    (optax_lr.cus_adam, dict(learning_rate=0.1), ["b1", "b2", "eps"]),
    (optax_lr.scale_by_cus_adam, dict(), ["b1", "b2", "eps"]),
    (optax_lr.cyclical_schedule, dict(min_lr=0.01, max_lr=0.1, step_size_up=10),
     ["min_lr", "max_lr", "step_size_up", "gamma"]),
    (optax_lr.n_cycle_schedule, dict(min_lr=0.01, max_lr=0.1, cycle_epochs=2, steps_per_epoch=5),
     ["min_lr", "max_lr", "cycle_epochs", "steps_per_epoch"]),
    (optax_lr.random_schedule, dict(min_lr=0.01, max_lr=0.1), ["min_lr", "max_lr", "seed"]),
    (optax_lr.exponential_decay_rate, dict(max_lr=0.1, min_lr=0.01, steps=10),
     ["max_lr", "min_lr", "steps"]),
    (optax_lr.exponential_decay_schedule, dict(max_lr=0.1, min_lr=0.01, steps=10),
     ["max_lr", "min_lr", "steps"]),
    (optax_lr.switch_at, dict(boundary_step=3, first=optax.sgd(0.1), second=optax.sgd(0.1)),
     ["boundary_step"]),
    (optax_lr.update_every_from_fraction, dict(steps_per_epoch=30), ["steps_per_epoch",
                                                                     "fraction"]),
]

WRONG_KINDS = {
    "bool": True,
    "None": None,
    "string": "0.1",
    "vector": np.ones(3),
    "jax_vector": jnp.ones((2,)),
}

# Arguments whose documented default is None (None is valid there), and those where None
# leaves a stage out, as in optax (every factory).
OPTIONAL = {"min_learning_rate", "final_learning_rate"}
OFF_WHEN_NONE = {"momentum", "weight_decay"}

CASES = [(factory, base, name, kind)
         for factory, base, names in CONSTRUCTORS for name in names for kind in WRONG_KINDS
         if not (kind == "None" and name in OPTIONAL and factory is not optax_lr.autodrop_sgd)
         and not (kind == "None" and name in OFF_WHEN_NONE)]


@pytest.mark.parametrize("factory,base,name,kind", CASES,
                         ids=[f"{f.__name__}-{n}-{k}" for f, _, n, k in CASES])
def test_wrong_kind_raises_type_error_naming_the_argument(factory, base, name, kind):
  with pytest.raises(TypeError, match=f"`{name}`"):
    factory(**{**base, name: WRONG_KINDS[kind]})


# Option objects: each field is checked when the object is built, the error naming the class and
# the field.
OPTION_FIELDS = [
    (optax_lr.DropTrigger, ["threshold", "max_threshold", "relative_threshold", "smoothing",
                            "eps"]),
    (optax_lr.RateRule, ["min_learning_rate"]),
]
OPTION_CASES = [(cls, name, kind) for cls, names in OPTION_FIELDS for name in names
                for kind in WRONG_KINDS if not (kind == "None" and name in OPTIONAL)]


@pytest.mark.parametrize("cls,name,kind", OPTION_CASES,
                         ids=[f"{c.__name__}-{n}-{k}" for c, n, k in OPTION_CASES])
def test_option_field_of_wrong_kind_raises_type_error_naming_it(cls, name, kind):
  with pytest.raises(TypeError, match=f"`{cls.__name__}.{name}`"):
    cls(**{name: WRONG_KINDS[kind]})


@pytest.mark.parametrize("cls,kwargs,message", [
    (optax_lr.DropTrigger, dict(threshold=-1.0),
     r"`DropTrigger.threshold` must be a finite number >= 0; got -1.0"),
    (optax_lr.DropTrigger, dict(threshold=float("inf")),
     r"`DropTrigger.threshold` must be a finite number >= 0"),
    (optax_lr.DropTrigger, dict(threshold=2.0),
     r"`DropTrigger.max_threshold` must be >= threshold=2.0; got 1.0"),
    (optax_lr.DropTrigger, dict(relative_threshold=1.5),
     r"`DropTrigger.relative_threshold` must be in \(0.0, 1.0\]; got 1.5"),
    (optax_lr.DropTrigger, dict(smoothing=0), r"`DropTrigger.smoothing` must be an integer >= 1"),
    (optax_lr.DropTrigger, dict(smoothing=2.0),
     r"`DropTrigger.smoothing` must be an integer >= 1"),
    (optax_lr.DropTrigger, dict(threshold_rule="adaptive"),
     r"`DropTrigger.threshold_rule` must be one of 'fixed', 'relative'"),
    (optax_lr.RateRule, dict(kind="scale_free"),
     r"`RateRule.kind` must be one of 'additive', 'multiplicative'"),
    (optax_lr.RateRule, dict(min_learning_rate=-0.1),
     r"`RateRule.min_learning_rate` must be a finite number >= 0; got -0.1"),
    (optax_lr.RateRule, dict(search=optax_lr.RateSearch()),
     r"`RateRule.search` needs kind='multiplicative'"),
])
def test_option_field_out_of_range_raises_value_error_naming_it(cls, kwargs, message):
  with pytest.raises(ValueError, match=message):
    cls(**kwargs)


def test_structural_option_field_refuses_an_array():
  with pytest.raises(TypeError, match="`DropTrigger.smoothing` sets the structure"):
    optax_lr.DropTrigger(smoothing=jnp.asarray(2))


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind=None), r"`RateRule.kind` must be one of"),
    (dict(store_previous_direction=1), r"`RateRule.store_previous_direction` must be a bool"),
    (dict(kind="multiplicative", search=2.0), r"`RateRule.search` must be None \(off\) or an "
                                              r"optax_lr.RateSearch"),
    (dict(backtrack=optax_lr.RateSearch()), r"`RateRule.backtrack` must be None \(off\) or an "
                                           r"optax_lr.LossBacktrack"),
])
def test_rate_rule_refuses_other_types(kwargs, message):
  with pytest.raises(TypeError, match=message):
    optax_lr.RateRule(**kwargs)


@pytest.mark.parametrize("factory,kwargs", [
    (optax_lr.scale_by_autodrop, dict(learning_rate=0.1, steps_per_epoch=5)),
    (optax_lr.autodrop_sgd, dict(learning_rate=0.1, steps_per_epoch=5)),
    (optax_lr.with_autodrop, dict(inner=optax.identity(), learning_rate=0.1, steps_per_epoch=5)),
])
def test_trigger_must_be_a_drop_trigger(factory, kwargs):
  with pytest.raises(TypeError, match=r"`trigger` must be None \(DropTrigger\(\)\) or an "
                                      r"optax_lr.DropTrigger"):
    factory(**kwargs, trigger=dict(threshold=0.1))


@pytest.mark.parametrize("factory,kwargs", [
    (optax_lr.cam_hd, dict(inner=optax.identity(), learning_rate=0.1, hypergrad_lr=1e-3)),
    (optax_lr.sgd_cam_hd, dict(learning_rate=0.1)),
    (optax_lr.adam_cam_hd, dict()),
])
def test_rule_must_be_a_rate_rule(factory, kwargs):
  with pytest.raises(TypeError, match=r"`rule` must be None \(RateRule\(\)\) or an "
                                      r"optax_lr.RateRule"):
    factory(**kwargs, rule="multiplicative")


@pytest.mark.parametrize("factory,kwargs,name", [
    (optax_lr.sgd_hd, dict(learning_rate=0.1, nesterov=1), "nesterov"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, per_tensor=2), "per_tensor"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, nesterov="yes"), "nesterov"),
    (optax_lr.autodrop_sgd, dict(learning_rate=0.1, steps_per_epoch=5, average="no"), "average"),
    (optax_lr.scale_by_autodrop, dict(learning_rate=0.1, steps_per_epoch=5, average=0),
     "average"),
    (optax_lr.simple_adasecant, dict(mode=0), "mode"),
    (optax_lr.adasecant, dict(rate_rule=None), "rate_rule"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, window_sum=1), "window_sum"),
    (optax_lr.switch_at, dict(boundary_step=1, first=optax.sgd(0.1), second="sgd"), "second"),
])
def test_flags_and_choices_refuse_other_types(factory, kwargs, name):
  with pytest.raises(TypeError, match=f"`{name}`"):
    factory(**kwargs)


@pytest.mark.parametrize("factory,kwargs,name", [
    (optax_lr.sgd_hd, dict(learning_rate=-0.1), "learning_rate"),
    (optax_lr.sgd_hd, dict(learning_rate=0.1, momentum=1.0), "momentum"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, update_every=0), "update_every"),
    (optax_lr.tlr_sgd, dict(learning_rate=0.1, update_every=2.5), "update_every"),
    (optax_lr.autodrop_sgd, dict(learning_rate=0.1, steps_per_epoch=5, drop_factor=1.5),
     "drop_factor"),
    (optax_lr.cus_adam, dict(learning_rate=0.0), "learning_rate"),
    (optax_lr.adam_hd, dict(eps=float("nan")), "eps"),
    (optax_lr.sgd_hd, dict(learning_rate=jnp.float32(-1.0)), "learning_rate"),
])
def test_out_of_range_raises_value_error(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    factory(**kwargs)


def test_momentum_true_is_refused_while_its_float_is_checked():
  # Before: momentum=True ran with decay 1 while 1.0 was rejected.
  with pytest.raises(TypeError, match="`momentum`"):
    optax_lr.sgd_hd(0.1, momentum=True)
  with pytest.raises(ValueError, match="`momentum`"):
    optax_lr.sgd_hd(0.1, momentum=1.0)


@pytest.mark.parametrize("factory,kwargs", [
    (optax_lr.sgd_hd, {}), (optax_lr.adam_hd, {}), (optax_lr.sgd_cam_hd, {}),
    (optax_lr.adam_cam_hd, {}), (optax_lr.tlr_sgd, {}), (optax_lr.scale_by_tlr, {}),
    (optax_lr.naive_tlr, dict(meta_learning_rate=0.01)),
    (optax_lr.scale_by_tlr_fixed_meta_rate, dict(meta_learning_rate=0.01)),
    (optax_lr.autodrop_sgd, dict(steps_per_epoch=5)),
    (optax_lr.scale_by_autodrop, dict(steps_per_epoch=5)),
    (optax_lr.with_autodrop, dict(inner=optax.scale_by_adam(), steps_per_epoch=5)),
])
def test_learned_rates_refuse_a_schedule_and_say_why(factory, kwargs):
  with pytest.raises(TypeError, match="`learning_rate`.*learns its rate"):
    factory(learning_rate=optax.linear_schedule(0.1, 0.01, 100), **kwargs)


def test_cus_adam_applies_a_schedule_as_given():
  # cus_adam applies its rate as given, so a schedule is its rate at each step: with the
  # schedule 0.1 -> 0.0 over 2 steps, the second update is half the constant-0.1 one's.
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  scheduled = optax_lr.cus_adam(optax.linear_schedule(0.1, 0.0, 2))
  constant = optax_lr.cus_adam(0.1)
  s1, s2 = scheduled.init(params), constant.init(params)
  for _ in range(2):
    u1, s1 = scheduled.update(grads, s1, params)
    u2, s2 = constant.update(grads, s2, params)
  np.testing.assert_allclose(u1["w"], 0.5 * u2["w"], rtol=1e-6)
  with pytest.raises(TypeError, match="`learning_rate`"):
    optax_lr.cus_adam(None)


def test_tracers_pass_unchecked_but_concrete_arrays_are_checked():
  seen = []

  @jax.jit
  def build(rate):
    _checks.positive("learning_rate", rate)  # traced: cannot be inspected
    seen.append(True)
    return rate

  build(jnp.float32(-1.0))
  assert seen
  with pytest.raises(ValueError, match="`learning_rate`"):
    _checks.positive("learning_rate", jnp.float32(-1.0))
  with pytest.raises(TypeError, match="`x`"):
    jax.jit(lambda v: _checks.positive("x", v))(jnp.ones(3))


def test_rate_summary_skips_empty_leaves():
  summary = optax_lr.rate_summary({"empty": jnp.zeros((0, 3)), "r": jnp.array([1.0, 3.0])})
  np.testing.assert_allclose([float(summary[k]) for k in ("mean", "min", "max", "norm")],
                             [2.0, 1.0, 3.0, np.sqrt(10.0)], rtol=1e-6)
  only_empty = optax_lr.rate_summary({"empty": jnp.zeros((0,))})
  assert np.isnan(float(only_empty["mean"])) and float(only_empty["norm"]) == 0.0


def test_switch_at_handles_integer_leaves():
  # optax.adam's moments of an integer leaf start as integers and come back as floats; the
  # switch keeps each state's init dtypes so both cond branches agree, jitted.
  params = {"w": jnp.ones(3), "step": jnp.zeros((2,), jnp.int32)}
  grads = {"w": jnp.array([1.0, -1.0, 2.0]), "step": jnp.ones((2,), jnp.int32)}
  opt = optax_lr.switch_at(1, optax.sgd(optax_lr.cyclical_schedule(0.01, 0.5, 2)),
                           optax.adam(0.1))
  state = opt.init(params)
  update = jax.jit(opt.update)
  for _ in range(3):
    updates, new_state = update(grads, state, params)
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
    state = new_state
  assert updates["step"].dtype == jnp.int32
  # Third step, second transform (adam), step 2: its float leaf matches optax.adam's.
  reference = optax.adam(0.1)
  ref_state = reference.init({"w": params["w"]})
  for _ in range(2):
    ref_updates, ref_state = reference.update({"w": grads["w"]}, ref_state)
  np.testing.assert_allclose(updates["w"], ref_updates["w"], rtol=1e-6)
