"""What a run reports: rate readings (train/reporting.py), the epoch line and summary table, and
curves.png (train/plotting.py)."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from train import optimizers, plotting, reporting

PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}


def _floats(values):
  return {k: float(v) for k, v in values.items()}


def test_a_single_rate_is_learning_rate_whatever_the_chain():
  for name in ("tlr_sgd", "sgd", "sgd_multistep", "cus_adam", "autodrop_sgd"):
    tx = optax.chain(optax.add_decayed_weights(1e-4),
                     optimizers.create_optimizer(name, 0.05, 10, 100))
    state = tx.init(PARAMS)
    values = _floats(reporting.rate_values(state, PARAMS))
    assert values["learning_rate"] == pytest.approx(0.05), name
    assert not any(k.startswith(("0/", "1/", "hyperparams")) for k in values), values


def test_per_tensor_rates_count_once_per_element():
  class State(NamedTuple):
    learning_rate: dict

  state = State({"Dense_0": {"bias": jnp.asarray(0.5), "kernel": jnp.asarray(2.0)}})
  values = _floats(reporting.rate_values(state, PARAMS))
  assert values["learning_rate/Dense_0/kernel"] == 2.0
  assert values["learning_rate/Dense_0/bias"] == 0.5
  # 6 kernel elements at 2.0 and 2 bias elements at 0.5: mean (12 + 1) / 8.
  assert values["learning_rate/mean"] == pytest.approx(13 / 8)
  assert (values["learning_rate/min"], values["learning_rate/max"]) == (0.5, 2.0)
  assert values["learning_rate/norm"] == pytest.approx(math.sqrt(6 * 4.0 + 2 * 0.25))
  # Without the params the sizes are unknown: only the per-tensor rates.
  assert set(_floats(reporting.rate_values(state))) == {"learning_rate/Dense_0/bias",
                                                        "learning_rate/Dense_0/kernel"}


def test_per_element_rates_give_statistics_over_elements():
  class State(NamedTuple):
    learning_rate: dict
    angular_velocity: jax.Array

  state = State({"a": jnp.asarray([1.0, 3.0]), "b": jnp.asarray([[2.0, 6.0]])}, jnp.asarray(7.0))
  values = _floats(reporting.rate_values(state))
  assert values == {"learning_rate/mean": 3.0, "learning_rate/min": 1.0,
                    "learning_rate/max": 6.0, "learning_rate/norm": pytest.approx(50 ** 0.5),
                    "angular_velocity": 7.0}


def _cam_hd_state(decay_rate=0.0):
  tx = optimizers.create_optimizer(
      "adam_cam_hd", 1e-3, 10, 100,
      options={"weights": (0.2, 0.8), "decay_rate": decay_rate, "levels": ("layer", "global")})
  state = tx.init(PARAMS)
  cam = state if isinstance(state, optax_lr.CamHDState) else [
      s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax_lr.CamHDState))
      if isinstance(s, optax_lr.CamHDState)][0]
  rates = dict(cam.learning_rate)
  rates["layer"] = {"Dense_0": {"bias": jnp.asarray(4e-3, jnp.float32),
                                "kernel": jnp.asarray(2e-3, jnp.float32)}}
  rates["global"] = jnp.asarray(1e-3, jnp.float32)
  return cam._replace(learning_rate=rates, count=jnp.asarray(10, jnp.int32))


def test_cam_hd_reports_the_effective_rate_not_a_combination_weight():
  values = _floats(reporting.rate_values(_cam_hd_state()))
  # kappa = 0.2 * layer + 0.8 * global per element: kernel 1.2e-3 (6 elements), bias 1.6e-3 (2).
  kernel, bias = 0.2 * 2e-3 + 0.8 * 1e-3, 0.2 * 4e-3 + 0.8 * 1e-3
  assert values["learning_rate/mean"] == pytest.approx((6 * kernel + 2 * bias) / 8)
  assert values["learning_rate/min"] == pytest.approx(kernel)
  assert values["learning_rate/max"] == pytest.approx(bias)
  assert values["combination_weights/layer"] == pytest.approx(0.2)
  assert values["combination_weights/global"] == pytest.approx(0.8)
  assert values["learning_rate/global"] == pytest.approx(1e-3)
  assert values["learning_rate/layer/Dense_0/kernel"] == pytest.approx(2e-3)
  assert reporting.representative_rate(values) == pytest.approx((6 * kernel + 2 * bias) / 8)
  assert "0.2" not in reporting.rate_text(values) and "0.8" not in reporting.rate_text(values)


def test_cam_hd_effective_rate_blends_towards_the_final_rate():
  # The blend comes from the state alone: three steps of a registry optimizer with decay_rate,
  # and the reading equals kappa computed by hand from the state's rates and tau = exp(-3 r).
  decay = 0.05
  tx = optimizers.create_optimizer(
      "adam_cam_hd", 1e-3, 10, 100, options={"weights": (0.2, 0.8), "decay_rate": decay,
                                             "levels": ("layer", "global"),
                                             "hypergrad_lr": 1e-2, "combination_lr": 0.0})
  state = tx.init(PARAMS)
  for seed in range(3):
    grads = jax.tree.map(lambda x, s=seed: jnp.full_like(x, 1.0 + s), PARAMS)
    _, state = tx.update(grads, state, PARAMS)
  cam = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax_lr.CamHDState))
         if isinstance(s, optax_lr.CamHDState)][0]
  values = _floats(reporting.rate_values(state, PARAMS))
  tau = math.exp(-decay * 3)
  layer = cam.learning_rate["layer"]["Dense_0"]
  glob = float(cam.learning_rate["global"])
  kernel, bias = (tau * (0.2 * float(layer[k]) + 0.8 * glob) + (1 - tau) * 1e-3
                  for k in ("kernel", "bias"))
  assert abs(glob - 1e-3) > 1e-6  # the rates moved
  assert values["learning_rate/mean"] == pytest.approx((6 * kernel + 2 * bias) / 8, rel=1e-5)
  assert values["learning_rate/min"] == pytest.approx(min(kernel, bias), rel=1e-5)


def test_two_rate_fields_keep_their_paths():
  tx = optimizers.create_optimizer("clr_simple_adasecant", 0.1, 10, 100)
  values = _floats(reporting.rate_values(tx.init(PARAMS), PARAMS))
  assert values["first_state/hyperparams/learning_rate"] == pytest.approx(1e-3)  # CLR's minimum
  assert values["second_state/learning_rate/mean"] == 1.0  # Simple AdaSecant's initial rates
  names = [name for name, _ in reporting.current_rates(values)]
  assert names == ["first_state/hyperparams/learning_rate", "second_state/learning_rate"]


def test_reduce_on_plateau_reports_the_applied_rate():
  tx = optimizers.create_optimizer("reduce_on_plateau", 0.1, 10, 100)
  state = tx.init(PARAMS)
  state = (state[0], state[1]._replace(scale=jnp.asarray(0.25, jnp.float32)))
  values = _floats(reporting.rate_values(state, PARAMS))
  assert values == {"learning_rate": pytest.approx(0.025), "reduce_on_plateau/scale": 0.25}


def test_a_schedule_counter_is_not_a_rate():
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(1.0, 0.0, 10))
  assert set(_floats(reporting.rate_values(tx.init(PARAMS)))) == {"learning_rate"}


def _row(epoch, **extra):
  return {"epoch": epoch, "train_loss": 0.5, "test_loss": 0.25, "test_accuracy": 0.9,
          "epoch_time": 1.0, "images_per_second": 100.0, **extra}


def test_epoch_line_carries_the_rate():
  assert reporting.epoch_line(_row(3, learning_rate=0.0526), 15) == (
      "epoch 3/15: train_loss 0.5000 test_loss 0.2500 test_accuracy 0.9000 lr 0.0526 (1.0 s)")
  many = _row(1, **{"learning_rate/mean": 1.02e-3, "learning_rate/min": 9.8e-4,
                    "learning_rate/max": 1.1e-3, "learning_rate/norm": 5.0,
                    "combination_weights/global": 0.8})
  assert reporting.epoch_line(many, 2).endswith(
      "lr mean 0.00102 [min 0.00098, max 0.0011] (1.0 s)")
  assert "lr -" in reporting.epoch_line(_row(1), 2)  # a method without a rate field


def test_summary_table_says_when_it_is_cut():
  rows = [_row(e, learning_rate=0.1) for e in range(1, 31)]
  table = reporting.summary_table(rows)
  lines = table.splitlines()
  assert lines[0] == "last 12 of 30 epochs (every epoch is in metrics.jsonl):"
  assert [line.split()[0] for line in lines[3:15]] == [str(e) for e in range(19, 31)]
  assert lines[-1] == "final test accuracy 0.9000; best 0.9000 at epoch 1; 30.0 s in epochs"
  short = reporting.summary_table(rows[:12]).splitlines()
  assert short[0].startswith("epoch") and len(short) == 2 + 12 + 1


def test_summary_table_marks_divergence_and_keeps_huge_losses_readable():
  rows = [_row(1, learning_rate=100.0, train_loss=2.3e30),
          _row(2, learning_rate=147.0, train_loss=float("nan"), test_loss=None, diverged=True)]
  lines = reporting.summary_table(rows).splitlines()
  assert lines[2].split()[:2] == ["1", "2.300e+30"]
  assert lines[3].split()[:3] == ["2", "nan", "nan"] and lines[3].endswith("diverged")
  assert lines[-1] == "the run diverged at epoch 2"
  message = reporting.diverged_message(rows[1], reporting.divergence(float("nan"), 10),
                                       stopping=True)
  assert "epoch 2 is not finite" in message and "stop_on_divergence=false" in message
  assert "\n" not in message


def test_divergence_is_a_non_finite_loss_or_100_times_the_chance_level_loss():
  # Chance level for 10 classes: log(10) = 2.302585; the bound is 100 times that.
  assert reporting.divergence_bound(10) == pytest.approx(230.2585, rel=1e-6)
  assert reporting.divergence_bound(1000) == pytest.approx(690.7755, rel=1e-6)
  assert reporting.divergence(2.302585, 10) is None  # a run at chance level is slow, not diverged
  assert reporting.divergence(230.0, 10) is None
  assert reporting.divergence(231.0, 10) == ("is 231.0000, above 230.3 = 100 x log(10), the "
                                             "chance-level loss")
  assert reporting.divergence(500.0, 1000) is None  # below 690.8 with 1000 classes
  # The run of `--set learning_rate=100`: finite, 1e13 times the bound.
  assert reporting.divergence(2.662e15, 10).startswith("is 2.662e+15, above 230.3")
  for loss in (float("nan"), float("inf"), None):
    assert reporting.divergence(loss, 10) == "is not finite"
  with pytest.raises(ValueError, match="`num_classes` must be >= 2; got 1"):
    reporting.divergence_bound(1)
  message = reporting.diverged_message(_row(1, learning_rate=100.0, train_loss=2.662e15),
                                       reporting.divergence(2.662e15, 10), stopping=True)
  assert message.startswith("diverged: the training loss of epoch 1 is 2.662e+15, above 230.3")


def test_the_last_epoch_diverges_above_3_times_the_chance_level_loss():
  # A byte model: log(256) = 5.545177; the per-epoch bound 554.5 lets the exploded Simple
  # AdaSecant run (535 nats held out, 429 over its last 50 steps) through, the last epoch's
  # bound 3 x 5.545177 = 16.64 does not.
  assert reporting.divergence_bound(256) == pytest.approx(554.5177, rel=1e-6)
  assert reporting.divergence_bound(256, final=True) == pytest.approx(16.63553, rel=1e-6)
  assert reporting.divergence_bound(10, final=True) == pytest.approx(6.907755, rel=1e-6)
  assert reporting.divergence(535.0, 256) is None  # a middle epoch may still recover
  assert reporting.divergence(535.0, 256, final=True) == (
      "is 535.0000 at the last epoch, above 16.6 = 3 x log(256), the chance-level loss")
  assert reporting.divergence(16.6, 256, final=True) is None
  assert reporting.divergence(7.0, 10, final=True).startswith("is 7.0000 at the last epoch, "
                                                              "above 6.9 = 3 x log(10)")
  # A run that learned nothing ends at chance level: slow, not diverged.
  assert reporting.divergence(2.302585, 10, final=True) is None
  # Above the per-epoch bound, the message names that bound, last epoch or not.
  assert reporting.divergence(600.0, 256, final=True).startswith("is 600.0000, above 554.5")
  assert reporting.divergence(float("nan"), 10, final=True) == "is not finite"


def test_blow_up_reads_the_optimizer_s_own_test():
  assert reporting.blow_up(_row(1)) is None  # an optimizer without the test
  assert reporting.blow_up(_row(1, largest_step_ratio=10.0)) is None  # at the bound: not above
  message = reporting.blow_up(_row(1, largest_step_ratio=88.6))
  assert message == ("the optimizer reports a blow-up: a step 88.6 times its first (above 10, "
                     "optax_lr.blown_up)")
  rows = [_row(1, largest_step_ratio=1.0, blown_up=False),
          _row(2, largest_step_ratio=88.6, blown_up=True)]
  lines = reporting.summary_table(rows).splitlines()
  assert lines[3].endswith("blown up") and not lines[2].endswith("blown up")
  assert lines[-1] == message
  # rate_values reads the field wherever it sits in a state.
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax_lr.simple_adasecant())
  values = reporting.rate_values(opt.init({"w": jnp.ones(3)}), {"w": jnp.ones(3)})
  assert float(values["largest_step_ratio"]) == 0.0


def test_rate_curves_keep_one_kind_of_quantity():
  keys = ["learning_rate/mean", "learning_rate/min", "learning_rate/max", "learning_rate/norm",
          "learning_rate/global", "learning_rate/layer/Dense_0/kernel",
          "learning_rate/filter/mean", "learning_rate/filter/min", "combination_weights/global",
          "angular_velocity", "train_loss"]
  singles, bases, components = plotting.rate_curves(keys)
  assert singles == [] and bases == ["learning_rate"]
  assert components == ["learning_rate/global", "learning_rate/layer/Dense_0/kernel",
                        "learning_rate/filter/mean"]


def test_figure_puts_weights_and_norms_on_their_own_axes_and_marks_divergence():
  import matplotlib.pyplot as plt

  rows = [_row(e, **{"learning_rate/mean": 1e-3 * e, "learning_rate/min": 5e-4,
                     "learning_rate/max": 2e-3 * e, "learning_rate/norm": 0.5,
                     "combination_weights/global": 0.8, "combination_weights/layer": 0.2})
          for e in (1, 2, 3)]
  rows[-1]["diverged"] = True
  fig, axes = plotting.figure(rows)
  try:
    assert list(axes) == ["loss", "accuracy", "rate", "weights", "norm"]
    labels = lambda name: [line.get_label() for line in axes[name].get_lines()
                           if not line.get_label().startswith("_")]
    assert labels("rate") == ["learning_rate mean (band: min-max)"]
    assert labels("weights") == ["global", "layer"]
    assert labels("norm") == ["learning_rate/norm"]
    for axis in axes.values():  # the diverged epoch: a vertical line at x = 3 on every panel
      assert any(list(line.get_xdata()) == [3, 3] for line in axis.get_lines())
  finally:
    plt.close(fig)


def test_curve_writer_writes_at_most_every_few_seconds_and_at_the_end(tmp_path):
  now = [0.0]
  writer = plotting.CurveWriter(tmp_path / "curves.png", "t", 10.0, clock=lambda: now[0])
  rows = []
  wrote = []
  for epoch in range(1, 9):  # an epoch every 3 s
    now[0] += 3.0
    rows.append(_row(epoch, learning_rate=0.1))
    wrote.append(writer.update(rows))
  assert wrote == [False, False, False, True, False, False, False, True]  # at 12 s and 24 s
  assert writer.finish(rows) is False  # the last write already shows every epoch
  rows.append(_row(9, learning_rate=0.1))
  assert writer.finish(rows) is True and writer.writes == 3
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not np.any([p.name.startswith(".tmp-") for p in tmp_path.iterdir()])
