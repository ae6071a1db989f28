"""Every method of the library runs through the conformance suite (``tests/conformance.py``).

Register a method by adding a :class:`conformance.Case` to ``CASES`` in its section below: its
constructor and keyword arguments (``optax.inject_hyperparams`` wraps the constructor, so a
composite is registered as a small factory function of its numeric arguments).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from tests import conformance
from tests.conformance import Case


def _grad_fn_arg(grad_fn, params):
  del params
  return {"grad_fn": grad_fn}


def _next_grads_arg(grad_fn, params):
  return {"next_grads": grad_fn(params)}


# Composites, as factories of their numeric arguments (what inject_hyperparams injects).
def momentum_tlr_fixed_meta_rate(learning_rate=1e-3, meta_learning_rate=1e-7, momentum=0.9):
  return optax.chain(optax.trace(momentum),
                     optax_lr.scale_by_tlr_fixed_meta_rate(learning_rate, meta_learning_rate))


def autodrop_adam(learning_rate=0.1, steps_per_epoch=5, drop_factor=0.5, drop_delay=3,
                  min_learning_rate=0.01):
  return optax.chain(optax.scale_by_adam(), optax_lr.scale_by_autodrop(
      learning_rate, steps_per_epoch, drop_factor=drop_factor, drop_delay=drop_delay,
      min_learning_rate=min_learning_rate))


def with_autodrop_adam(learning_rate=0.1, steps_per_epoch=5, drop_factor=0.5, drop_delay=3,
                       min_learning_rate=0.01):
  return optax_lr.with_autodrop(optax.scale_by_adam(), learning_rate, steps_per_epoch,
                                drop_factor=drop_factor, drop_delay=drop_delay,
                                min_learning_rate=min_learning_rate)


def autodrop_over_tlr(learning_rate=0.1, steps_per_epoch=5, drop_factor=0.5, drop_delay=3,
                      min_learning_rate=0.25):
  return optax.chain(optax_lr.scale_by_tlr(learning_rate), optax.scale(-1.0),
                     optax_lr.scale_by_autodrop(1.0, steps_per_epoch, drop_factor=drop_factor,
                                                drop_delay=drop_delay,
                                                min_learning_rate=min_learning_rate))


def clr_sgd_then_simple_adasecant(boundary_step=5, min_lr=0.01, max_lr=0.5, step_size_up=2,
                                  threshold=10.0):
  return optax_lr.switch_at(
      boundary_step, optax.sgd(optax_lr.cyclical_schedule(min_lr, max_lr, step_size_up)),
      optax_lr.simple_adasecant(threshold))


def adabound_schedule(init_value=0.1, decay_rate=0.9, weight_decay=1e-6):
  # optax.exponential_decay(init_value, 100, decay_rate), written out: optax's constructor tests
  # `decay_rate == 0` in Python, which an injected (traced) decay rate cannot answer. The
  # schedule reaches AdaBound as a schedule, so final_lr follows it in both runs.
  def schedule(count):
    return init_value * jnp.power(decay_rate, count / 100)

  return optax_lr.adabound(schedule, amsbound=True, weight_decay=weight_decay)


def _value_arg(grad_fn, params):
  """``{"value": loss(params)}`` for L4: the suite's two problems are told apart by their
  parameter names (``w``/``b`` for the parabola, ``x``/``y`` for Rosenbrock)."""
  del grad_fn
  loss = conformance.rosenbrock if "x" in params else conformance.parabola
  return {"value": loss(params)}


CASES = [
    # --- The recommendation (optax_lr/auto.py): its defaults (the hypergradient decay), and the
    # tail of a run of known length (here past the parabola's steps: the estimate alone) ---
    Case("auto_adam", optax_lr.auto_adam),
    Case("auto_adam_tail", optax_lr.auto_adam, dict(total_steps=10_000)),
    # --- The hypergradient presets: their defaults, the search starting at 1e-6 ---
    Case("auto_adam_hd", optax_lr.auto_adam_hd, extra_args=_value_arg, parabola_steps=1500),
    Case("auto_sgd", optax_lr.auto_sgd, extra_args=_value_arg, parabola_steps=1000),
    # --- TLR and hypergradient descent (optax_lr/tlr.py, optax_lr/hypergradient.py) ---
    # Rosenbrock's curvature spans three orders of magnitude: with the paper's bound c = 1/4 the
    # rate grows 1.25x per window along the valley and overshoots into the quartic wall, where the
    # iterate overflows (the paper's App. D.3 also sees large bounds diverge); c = 0.01 converges.
    Case("tlr_sgd", optax_lr.tlr_sgd, dict(learning_rate=0.1),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, momentum=0.9, bound=0.01)),
    Case("tlr_sgd_window", optax_lr.tlr_sgd,
         dict(learning_rate=0.1, update_every=3, momentum=0.5),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, update_every=10, momentum=0.9,
                                                      bound=0.01, per_tensor=True)),
    Case("tlr_sgd_per_tensor", optax_lr.tlr_sgd,
         dict(learning_rate=0.1, per_tensor=True, weight_decay=1e-6),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, per_tensor=True, bound=0.01)),
    # The loss backtrack reads the loss as `value`; on Rosenbrock it is what lets the paper's
    # bound c = 1/4 converge (the rate is halved whenever the loss rises past the tolerance).
    Case("tlr_sgd_backtrack", optax_lr.tlr_sgd,
         dict(learning_rate=0.1, backtrack=optax_lr.WindowBacktrack()), extra_args=_value_arg,
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, momentum=0.9,
                                                      backtrack=optax_lr.WindowBacktrack())),
    Case("tlr_fixed_meta_rate", optax_lr.scale_by_tlr_fixed_meta_rate,
         dict(learning_rate=0.1, meta_learning_rate=0.01),
         make_for_rosenbrock=lambda: momentum_tlr_fixed_meta_rate()),
    Case("naive_tlr", optax_lr.naive_tlr, dict(learning_rate=0.1, meta_learning_rate=0.01),
         extra_args=_grad_fn_arg,
         make_for_rosenbrock=lambda: optax_lr.naive_tlr(1e-3, meta_learning_rate=1e-6)),
    Case("sgd_hd", optax_lr.sgd_hd, dict(learning_rate=0.1, hypergrad_lr=1e-3),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-3, hypergrad_lr=1e-7, momentum=0.9)),
    Case("sgdn_hd", optax_lr.sgd_hd,
         dict(learning_rate=0.1, momentum=0.5, nesterov=True, weight_decay=1e-6),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-3, 1e-7, momentum=0.9, nesterov=True)),
    Case("sgd_hd_heavy_ball", optax_lr.sgd_hd,
         dict(learning_rate=0.1, hypergrad_lr=1e-4, momentum=0.5),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-3, hypergrad_lr=1e-7, momentum=0.9)),
    Case("adam_hd", optax_lr.adam_hd, dict(learning_rate=0.1, hypergrad_lr=1e-4),
         parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_hd(0.01, hypergrad_lr=1e-6)),
    # The scale-free multiplicative rate rule (optax_lr/_rate_rule.py). On a deterministic
    # problem E cos = 0 only where the stiffest direction starts to oscillate, so SGD's rate
    # settles at the stability edge (2/1002 on Rosenbrock) and beta must keep the overshoot past
    # it small: from 1e-3, beta = 1e-2 overshoots to 3e-3 and diverges, beta = 1e-3 converges.
    Case("sgdn_hd_multiplicative", optax_lr.sgd_hd,
         dict(learning_rate=0.1, hypergrad_lr=0.05, momentum=0.5, nesterov=True,
              rate_rule="multiplicative"),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-4, 1e-3, momentum=0.9, nesterov=True,
                                                     rate_rule="multiplicative")),
    Case("adam_hd_multiplicative", optax_lr.adam_hd,
         dict(learning_rate=0.1, hypergrad_lr=0.02, rate_rule="multiplicative"),
         parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_hd(0.01, 1e-2, rate_rule="multiplicative")),
    Case("adam_cam_hd_multiplicative", optax_lr.adam_cam_hd,
         dict(learning_rate=0.1, hypergrad_lr=0.02, levels=("filter", "layer", "global"),
              combination=optax_lr.CombinationWeights((0.3, 0.3, 0.4), 0.01),
              rule=optax_lr.RateRule("multiplicative")),
         parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_cam_hd(
             0.01, 1e-2, levels=("layer", "global"), rule=optax_lr.RateRule("multiplicative"))),
    # The auto entries' rule: multiplicative with the rate search and the loss backtrack, reading
    # the loss as value=. The backtrack lets Rosenbrock run at beta = 0.1 from any rate: the
    # search doubles the rate to past the stability edge, and every blow-up of the loss halves it.
    Case("sgdn_hd_guarded", optax_lr.sgd_hd,
         dict(learning_rate=1e-3, hypergrad_lr=0.1, momentum=0.5, nesterov=True,
              rate_rule="multiplicative", backtrack=optax_lr.LossBacktrack(),
              search=optax_lr.RateSearch()),
         extra_args=_value_arg,
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(
             1e-5, 0.1, momentum=0.9, nesterov=True, rate_rule="multiplicative",
             backtrack=optax_lr.LossBacktrack(), search=optax_lr.RateSearch())),
    Case("adam_hd_guarded", optax_lr.adam_hd,
         dict(learning_rate=1e-3, hypergrad_lr=0.1, rate_rule="multiplicative",
              backtrack=optax_lr.LossBacktrack(), search=optax_lr.RateSearch(start=1e-2)),
         extra_args=_value_arg, parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_hd(
             1e-5, 0.1, rate_rule="multiplicative", backtrack=optax_lr.LossBacktrack(),
             search=optax_lr.RateSearch())),
    Case("adam_cam_hd_guarded", optax_lr.adam_cam_hd,
         dict(learning_rate=1e-3, hypergrad_lr=0.1, levels=("layer", "global"),
              rule=optax_lr.RateRule("multiplicative", backtrack=optax_lr.LossBacktrack(),
                                     search=optax_lr.RateSearch())),
         extra_args=_value_arg, parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_cam_hd(
             1e-5, 0.1, levels=("layer", "global"),
             rule=optax_lr.RateRule("multiplicative", backtrack=optax_lr.LossBacktrack(),
                                    search=optax_lr.RateSearch()))),
    # --- AutoDrop (optax_lr/autodrop.py) ---
    # Small windows and delays so that drops (and landings on the average) happen inside the
    # convergence budgets; the floors keep the final rates useful (each run drops 3-28 times).
    Case("autodrop_sgd", optax_lr.autodrop_sgd,
         dict(learning_rate=0.1, steps_per_epoch=5, momentum=0.5, drop_delay=3,
              min_learning_rate=0.02),
         make_for_rosenbrock=lambda: optax_lr.autodrop_sgd(
             1e-3, steps_per_epoch=50, drop_factor=0.5, drop_delay=5, min_learning_rate=5e-4)),
    Case("autodrop_nesterov_smoothed", optax_lr.autodrop_sgd,
         dict(learning_rate=0.1, steps_per_epoch=3, momentum=0.5, nesterov=True,
              weight_decay=1e-6, average=False, trigger=optax_lr.DropTrigger(smoothing=3),
              drop_delay=2, min_learning_rate=0.02),
         make_for_rosenbrock=lambda: optax_lr.autodrop_sgd(
             1e-3, steps_per_epoch=20, nesterov=True, average=False, drop_delay=2,
             drop_factor=0.5, min_learning_rate=5e-4,
             trigger=optax_lr.DropTrigger(smoothing=3))),
    Case("autodrop_sgd_relative", optax_lr.autodrop_sgd,
         dict(learning_rate=0.1, steps_per_epoch=5, momentum=0.5, drop_delay=3,
              min_learning_rate=0.02,
              trigger=optax_lr.DropTrigger(threshold_rule="relative", relative_threshold=0.3)),
         make_for_rosenbrock=lambda: optax_lr.autodrop_sgd(
             1e-3, steps_per_epoch=50, drop_factor=0.5, drop_delay=5, min_learning_rate=5e-4,
             trigger=optax_lr.DropTrigger(threshold_rule="relative"))),
    Case("autodrop_adam", autodrop_adam,
         make_for_rosenbrock=lambda: autodrop_adam(0.02, 20, 0.5, 5, 1e-3)),
    Case("with_autodrop_adam", with_autodrop_adam,
         make_for_rosenbrock=lambda: with_autodrop_adam(0.02, 20, 0.5, 5, 1e-3)),
    Case("autodrop_over_tlr", autodrop_over_tlr,
         make_for_rosenbrock=lambda: optax.chain(
             optax.trace(0.9), optax_lr.scale_by_tlr(1e-3, bound=0.01), optax.scale(-1.0),
             optax_lr.scale_by_autodrop(1.0, steps_per_epoch=20, drop_factor=0.5, drop_delay=5,
                                        min_learning_rate=0.25))),
    # --- CAM-HD (optax_lr/cam_hd.py) ---
    # Each CAM-HD case reaches well below the default tolerances (a 1e-6 parabola, a 1e-4
    # Rosenbrock from 1), with learned combination weights and tau-blending switched on in some.
    # The option objects (CombinationWeights, Blending, LevelGroups) are passed through by
    # inject_hyperparams, not injected; the numeric arguments are.
    Case("sgd_cam_hd", optax_lr.sgd_cam_hd, dict(learning_rate=0.1, hypergrad_lr=1e-3),
         parabola_steps=300, parabola_tol=1e-6, rosenbrock_steps=2500, rosenbrock_tol=1e-4,
         make_for_rosenbrock=lambda: optax_lr.sgd_cam_hd(1e-3, hypergrad_lr=1e-7, momentum=0.9)),
    Case("sgdn_cam_hd_filter", optax_lr.sgd_cam_hd,
         dict(learning_rate=0.1, hypergrad_lr=1e-3, momentum=0.5,
              nesterov=True, weight_decay=1e-6, levels=("filter", "global"),
              combination=optax_lr.CombinationWeights((0.2, 0.8), 0.03),
              blending=optax_lr.Blending(0.002)),
         parabola_steps=300, parabola_tol=1e-6, rosenbrock_steps=2500, rosenbrock_tol=1e-4,
         make_for_rosenbrock=lambda: optax_lr.sgd_cam_hd(
             1e-3, 1e-7, momentum=0.9, nesterov=True, levels=("filter", "global"),
             combination=optax_lr.CombinationWeights((0.2, 0.8), 0.03),
             blending=optax_lr.Blending(0.001))),
    Case("adam_cam_hd_three_levels", optax_lr.adam_cam_hd,
         dict(learning_rate=0.1, hypergrad_lr=1e-4, levels=("parameter", "layer", "global"),
              combination=optax_lr.CombinationWeights((0.3, 0.3, 0.4), 0.01),
              groups=optax_lr.LevelGroups(optax_lr.parent_module_label)),
         parabola_steps=300, parabola_tol=1e-6,
         rosenbrock_steps=2500, rosenbrock_tol=1e-4,
         make_for_rosenbrock=lambda: optax_lr.adam_cam_hd(
             0.01, 1e-6, levels=("parameter", "layer", "global"),
             combination=optax_lr.CombinationWeights((0.3, 0.3, 0.4), 0.01))),
    Case("cam_hd_softmax_all_levels",
         lambda learning_rate=0.1, hypergrad_lr=1e-4: optax_lr.cam_hd(
             optax.scale_by_adam(), learning_rate, hypergrad_lr,
             levels=("parameter", "filter", "layer", "global"),
             combination=optax_lr.CombinationWeights(learning_rate=0.01,
                                                     parametrization="softmax"),
             blending=optax_lr.Blending(1e-3, 0.05), groups=optax_lr.LevelGroups(scaling="mean")),
         parabola_steps=300, parabola_tol=1e-6, rosenbrock_steps=2500, rosenbrock_tol=1e-4,
         make_for_rosenbrock=lambda: optax_lr.cam_hd(
             optax.scale_by_adam(), 0.01, 1e-6, levels=("parameter", "filter", "layer", "global"),
             combination=optax_lr.CombinationWeights(learning_rate=0.01,
                                                     parametrization="softmax"),
             blending=optax_lr.Blending(1e-3, 0.005))),
    # --- AdaSecant family, CUS-Adam, schedules, switch_at (optax_lr/adasecant.py, ...) ---
    Case("simple_adasecant", optax_lr.simple_adasecant, parabola_steps=20,
         rosenbrock_steps=2000),
    Case("simple_adasecant_clip", optax_lr.simple_adasecant, dict(threshold=3.0, mode="clip"),
         parabola_steps=20, rosenbrock_steps=2000),
    Case("adasecant", optax_lr.adasecant, parabola_steps=20, rosenbrock_steps=2000),
    Case("adasecant_next_grads", optax_lr.adasecant, dict(normalize="global"),
         extra_args=_next_grads_arg, parabola_steps=20, rosenbrock_steps=2000),
    Case("cus_adam", optax_lr.cus_adam, dict(learning_rate=0.1), parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.cus_adam(0.01)),
    Case("switch_clr_sgd_to_simple_adasecant", clr_sgd_then_simple_adasecant,
         parabola_steps=30, rosenbrock_steps=2000,
         make_for_rosenbrock=lambda: clr_sgd_then_simple_adasecant(50, 1e-4, 2e-3, 10)),
    # --- Baselines of the papers' comparisons: L4, AdaBound (optax_lr/l4.py, adabound.py) ---
    # L4 removes a fixed share alpha (1 - gamma) = 1.5% of the loss per step once L_min tracks it
    # (0.985^1500 = 1.4e-10 of the parabola's 8), and needs the loss as `value`.
    Case("l4_adam", optax_lr.l4_adam, extra_args=_value_arg, parabola_steps=1500),
    Case("l4_momentum", optax_lr.l4_momentum, dict(weight_decay=0.0), extra_args=_value_arg,
         parabola_steps=1500),
    Case("adabound", optax_lr.adabound, dict(learning_rate=0.1, final_learning_rate=0.1),
         parabola_steps=1000, make_for_rosenbrock=lambda: optax_lr.adabound(
             0.01, final_learning_rate=1e-3)),
    Case("amsbound_schedule", adabound_schedule, parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adabound(
             0.01, final_learning_rate=1e-3, amsbound=True)),
]

_IDS = [case.name for case in CASES]


@pytest.fixture(params=CASES, ids=_IDS)
def case(request):
  return request.param


def test_names_unique():
  assert len(set(_IDS)) == len(_IDS)


def test_jit_once(case):
  conformance.check_jit_once(case)


def test_scan_matches_loop(case):
  conformance.check_scan_matches_loop(case)


def test_sharding_kept(case):
  conformance.check_sharding_kept(case)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64],
                         ids=["f16", "bf16", "f32", "f64"])
def test_dtypes_kept(case, dtype):
  conformance.check_dtypes_kept(case, dtype)


def test_extra_args_ignored(case):
  conformance.check_extra_args_ignored(case)


def test_inject_hyperparams(case):
  conformance.check_inject_hyperparams(case)


def test_gradient_accumulation(case):
  conformance.check_gradient_accumulation(case)


def test_fresh_buffers_donate(case):
  conformance.check_fresh_buffers_donate(case)


def test_checkpoint_roundtrip(case, tmp_path):
  conformance.check_checkpoint_roundtrip(case, tmp_path)


@pytest.mark.parametrize("problem", ["parabola", "rosenbrock"])
def test_converges(case, problem):
  conformance.check_converges(case, problem)


def test_apply_if_finite(case):
  conformance.check_apply_if_finite(case)


def _scaled_by_value():
  """An inner direction ``value * g`` that needs the extra argument ``value``."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, value, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: value * g, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@pytest.mark.parametrize("wrap", [
    lambda inner: optax_lr.hypergradient(inner, 0.1, 0.0),
    lambda inner: optax_lr.cam_hd(inner, 0.1, 0.0),
    lambda inner: optax_lr.scale_by_tlr(0.1, inner=inner),
    lambda inner: optax_lr.scale_by_tlr_fixed_meta_rate(0.1, 0.01, update_every=2, inner=inner),
    lambda inner: optax_lr.switch_at(1, inner, inner),
], ids=["hypergradient", "cam_hd", "scale_by_tlr", "tlr_fixed_meta_rate", "switch_at"])
def test_wrappers_forward_extra_args_to_the_inner_transform(wrap):
  # The first update's rate is the initial one (no hypergradient yet, the TLR window only fills),
  # so the update scales with the value the inner transform received: value=2 gives twice value=1.
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  opt = wrap(_scaled_by_value())
  state = opt.init(params)
  one, _ = opt.update(grads, state, params, value=1.0, unrelated=0)
  two, _ = opt.update(grads, state, params, value=2.0, unrelated=0)
  np.testing.assert_allclose(np.asarray(two["w"]), 2.0 * np.asarray(one["w"]), rtol=1e-6)
  assert float(jnp.abs(one["w"]).sum()) > 0
