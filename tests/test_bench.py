"""The benchmark machinery: aggregation on hand-made curves, rate read-out, the grid runner against
the training loop, and a one-method compare run end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from train import optimizers
from train import train as training
from train.bench import __main__ as dispatcher
from train.bench import claims, compare, grid, hlo, report, stats

# --- aggregation ----------------------------------------------------------------------------------

def test_epochs_to_fraction_of_best_on_hand_made_curves():
  # best 1.0; 95% of it is 0.95: epoch 3 (0.96) is the first to reach it.
  assert stats.epochs_to_fraction_of_best([0.5, 0.9, 0.96, 1.0]) == 3
  # Fraction 1: the first epoch at the best, not a later tie.
  assert stats.epochs_to_fraction_of_best([0.2, 0.8, 0.8, 0.7], 1.0) == 2
  # NaN never counts as reached and does not poison the best.
  assert stats.epochs_to_fraction_of_best([math.nan, 0.4, 0.39], 0.95) == 2
  assert stats.epochs_to_fraction_of_best([0.1, 0.5], 0.1) == 1
  assert stats.epochs_to_fraction_of_best([math.nan, math.nan]) is None


def test_mean_and_standard_error():
  summary = stats.mean_and_standard_error([1.0, 2.0, 3.0, None, math.nan])
  assert summary["mean"] == 2.0 and summary["n"] == 3
  assert summary["se"] == pytest.approx(1.0 / math.sqrt(3.0))  # std(ddof=1) = 1
  assert summary["values"] == [1.0, 2.0, 3.0, None, None]
  assert stats.mean_and_standard_error([0.5])["se"] is None
  assert stats.mean_and_standard_error([None])["mean"] is None


def test_summarize_setting_on_hand_made_runs():
  accuracy = np.array([[0.50, 0.80, 0.90, 0.85],   # best 0.90, final 0.85, 95% (0.855) at 3
                       [0.70, 0.96, 0.97, 0.10]])  # best 0.97, final 0.10, 95% (0.9215) at 2
  loss = np.array([[1.0, 0.5, 0.4, 0.3], [1.0, 0.5, 0.4, math.nan]])
  summary = stats.summarize_setting(accuracy, loss)
  assert summary["best_accuracy"]["mean"] == pytest.approx(0.935)
  assert summary["best_accuracy"]["se"] == pytest.approx(0.035)  # |0.97 - 0.90| / 2
  assert summary["final_accuracy"]["mean"] == pytest.approx(0.475)
  assert summary["epochs_to_fraction_of_best"]["values"] == [3, 2]
  assert summary["epochs_to_fraction_of_best"]["mean"] == 2.5
  assert summary["diverged_seeds"] == 1


def _entry(lr, best, final, epochs, se=None, diverged=0):
  return {"learning_rate": lr, "best_accuracy": {"mean": best, "se": se},
          "final_accuracy": {"mean": final, "se": se},
          "epochs_to_fraction_of_best": {"mean": epochs, "se": se}, "diverged_seeds": diverged}


def test_worst_case_over_initial_rates():
  entries = [_entry(1e-3, 0.90, 0.88, 9.0), _entry(1e-2, 0.97, 0.96, 4.0),
             _entry(1e-1, 0.95, 0.20, 2.0, se=0.05, diverged=2)]
  worst = stats.worst_case(entries)
  assert worst["best_accuracy"] == {"value": 0.90, "se": None, "learning_rate": 1e-3}
  # The standard error is the one of the setting where the worst case happens.
  assert worst["final_accuracy"] == {"value": 0.20, "se": 0.05, "learning_rate": 1e-1}
  assert worst["epochs_to_fraction_of_best"] == {"value": 9.0, "se": None, "learning_rate": 1e-3}
  assert worst["final_accuracy_spread"] == pytest.approx(0.76)
  assert worst["settings"] == 3 and worst["diverged_seeds"] == 2
  # A setting without numbers (every seed NaN) is left out, not taken as the worst.
  nothing = _entry(1.0, None, None, None)
  assert stats.worst_case([*entries, nothing])["final_accuracy"]["value"] == 0.20
  assert stats.worst_case([nothing])["final_accuracy"] == {"value": None, "se": None,
                                                              "learning_rate": None}
  # The markdown cell: value ± se (at rate), in points.
  assert report.fmt_worst(worst["final_accuracy"]) == "20.0 ± 5.0 (0.1)"
  assert report.fmt_worst(worst["epochs_to_fraction_of_best"], 1.0) == "9.0 (0.001)"


def test_curve_standard_error_per_epoch():
  # Epoch 1: seeds 0.5 and 0.7, std(ddof=1) = 0.1414, se = 0.1; epoch 2: one finite seed.
  se = stats.curve_se(np.array([[0.5, math.nan], [0.7, 0.2]]))
  assert se[0] == pytest.approx(0.1) and se[1] is None


def _method_entries(method, kind, finals_per_rate, diverged_at=()):
  """Entries of one method from per-rate final accuracies of 2 seeds (2 epochs: 0.5, final);
  a rate in ``diverged_at`` gets a NaN final training loss on its first seed."""
  entries = []
  for lr, finals in finals_per_rate.items():
    accuracy = np.array([[0.5, f] for f in finals])
    loss = np.array([[1.0, math.nan if lr in diverged_at and i == 0 else 0.5]
                     for i in range(len(finals))])
    entries.append({"method": method, "kind": kind, "learning_rate": lr,
                    **stats.summarize_setting(accuracy, loss)})
  return entries


def _document(prodigy=(0.80, 0.82), diverge=True):
  methods = [("prodigy", "peer", {None: prodigy}, ()),
             ("dadapt_adamw", "peer", {None: (0.78, 0.78)}, ()),
             ("tlr_sgd", "optax_lr", {1e-4: (0.70, 0.74), 1e-1: (0.85, 0.85)}, ()),
             ("adam_hd_auto", "optax_lr", {1e-4: (0.83, 0.85), 1e-1: (0.86, 0.88)},
              (1e-1,) if diverge else ()),
             ("sgdn_hd_auto", "optax_lr", {1e-4: (0.60, 0.60), 1e-1: (0.90, 0.90)}, ()),
             ("sgd", "peer", {1e-4: (0.95, 0.95)}, (1e-4,))]  # a peer: never "the best optax_lr"
  entries, worst = [], []
  for name, kind, finals, diverged in methods:
    own = _method_entries(name, kind, finals, diverged)
    entries += own
    worst.append({"method": name, "kind": kind, **stats.worst_case(own)})
  return {"entries": entries, "worst_case": worst}


def test_goal_on_hand_made_entries():
  section = compare.goal(_document())
  # prodigy: (0.80, 0.82) -> 0.81, se = 0.01414 / sqrt(2) = 0.01; dadapt_adamw 0.78, se 0.
  assert section["references"]["prodigy"]["mean"] == pytest.approx(0.81)
  assert section["references"]["prodigy"]["se"] == pytest.approx(0.01)
  assert section["references"]["dadapt_adamw"] == {"mean": pytest.approx(0.78), "se": 0.0,
                                                   "learning_rate": None}
  # Worst cases: adam_hd_auto 0.84 (se 0.01) at 1e-4, tlr_sgd 0.72 (se 0.02), sgdn_hd_auto 0.60.
  assert [m["method"] for m in section["methods"]] == ["adam_hd_auto", "tlr_sgd", "sgdn_hd_auto"]
  best = section["methods"][0]
  assert section["best_optax_lr"] == "adam_hd_auto"
  assert best["mean"] == pytest.approx(0.84) and best["learning_rate"] == 1e-4
  # 0.84 - 0.81 = 0.03 with se sqrt(0.01^2 + 0.01^2) = 0.01414: 2.12 se;
  # 0.84 - 0.78 = 0.06 with se 0.01: 6 se.
  assert best["versus"]["prodigy"]["difference"] == pytest.approx(0.03)
  assert best["versus"]["prodigy"]["in_se"] == pytest.approx(0.03 / math.sqrt(2e-4))
  assert best["versus"]["prodigy"]["beyond_2se"]
  assert best["versus"]["dadapt_adamw"]["in_se"] == pytest.approx(6.0)
  # tlr_sgd: 0.72 - 0.81 = -0.09 with se sqrt(0.02^2 + 0.01^2); -0.06 / 0.02 = -3 against dadapt.
  tlr = section["methods"][1]["versus"]
  assert tlr["prodigy"]["in_se"] == pytest.approx(-0.09 / math.sqrt(5e-4))
  assert tlr["dadapt_adamw"]["in_se"] == pytest.approx(-3.0)
  assert section["best_at_least_references"]
  # The auto entries: adam_hd_auto lost a seed at 0.1; sgd's divergence is a peer's, not counted.
  assert section["auto_methods"] == ["adam_hd_auto", "sgdn_hd_auto"]
  assert section["auto_diverged"] == [{"method": "adam_hd_auto", "learning_rate": 1e-1,
                                       "diverged_seeds": 1, "seeds": 2}]
  assert not section["met"]
  assert compare.goal(_document(diverge=False))["met"]
  # An entry named auto_* (the recommendation, which sets its own rate) is an auto entry too.
  document = _document(diverge=False)
  own = _method_entries("auto_adam", "optax_lr", {None: (0.86, 0.88)}, (None,))
  document["entries"] += own
  document["worst_case"].append({"method": "auto_adam", "kind": "optax_lr",
                                 **stats.worst_case(own)})
  section = compare.goal(document)
  assert "auto_adam" in section["auto_methods"]
  assert section["auto_diverged"] == [{"method": "auto_adam", "learning_rate": None,
                                       "diverged_seeds": 1, "seeds": 2}]
  # Prodigy at 0.90 beats the best worst case by 6 points: not reached, a negative margin.
  behind = compare.goal(_document(prodigy=(0.90, 0.90), diverge=False))
  assert behind["best_at_least_references"] is False and not behind["met"]
  assert behind["methods"][0]["versus"]["prodigy"]["difference"] == pytest.approx(-0.06)
  assert behind["best_within_2se_of_references"] is False  # -0.06 with se 0.01: -6 se
  # Prodigy at 0.85: -0.01 with se 0.01, one standard error: below, but within noise.
  close = compare.goal(_document(prodigy=(0.85, 0.85), diverge=False))
  assert close["best_at_least_references"] is False
  assert close["best_within_2se_of_references"] is True
  # Prodigy at (0.83, 0.85): the same mean as the best, up to float rounding: a tie is "at least".
  tie = compare.goal(_document(prodigy=(0.83, 0.85), diverge=False))
  assert abs(tie["methods"][0]["versus"]["prodigy"]["difference"]) < 1e-12
  assert tie["best_at_least_references"] and tie["met"]
  # Without the references there is nothing to compare with: the goal is not reached.
  alone = compare.goal(_document(), references=("missing",))
  assert alone["references"] == {} and alone["best_at_least_references"] is None
  assert not alone["met"]


def test_goal_markdown_states_the_numbers():
  text = "\n".join(compare.goal_markdown(compare.goal(_document())))
  assert ("Best `optax_lr` method: `adam_hd_auto`, 84.0 ± 1.0 (0.0001): +3.0 (+2.1 s.e.) "
          "against `prodigy`, +6.0 (+6.0 s.e.) against `dadapt_adamw`") in text
  assert "`prodigy` 81.0 ± 1.0 (own); `dadapt_adamw` 78.0 ± 0.0 (own)" in text
  assert "`adam_hd_auto` at 0.1 (1 of 2 seeds)" in text and "Goal not reached" in text
  assert "| tlr_sgd | 72.0 ± 2.0 (0.0001) | -9.0 (-4.0 s.e.) | -6.0 (-3.0 s.e.) |" in text
  text = "\n".join(compare.goal_markdown(compare.goal(_document(diverge=False))))
  assert "No \"auto\" entry diverged" in text and "Goal reached" in text
  text = "\n".join(compare.goal_markdown(compare.goal(_document(prodigy=(0.83, 0.85)))))
  assert "0.0 (tie) against `prodigy`" in text
  text = "\n".join(compare.goal_markdown(compare.goal(_document(prodigy=(0.85, 0.85)))))
  assert "-1.0 (-1.0 s.e.) against `prodigy`" in text
  assert "below the references' (within two standard errors of each)" in text


def test_a_rate_the_constructor_rejects_is_reported_not_run():
  # AutoDrop-SGD's floor is 1e-4: an initial rate of 1e-5 is below it; 1e-2 is valid.
  rejected = grid.rejected_rates("autodrop_sgd", [1e-5, 1e-2], 10, 100, {})
  assert list(rejected) == [1e-5] and "min_learning_rate" in rejected[1e-5]
  entry = grid.rejected_entry("autodrop_sgd", "optax_lr", 1e-5, rejected[1e-5], 3)
  assert entry["final_accuracy"]["n"] == 0 and entry["final_accuracy"]["mean"] is None
  valid = _method_entries("autodrop_sgd", "optax_lr", {1e-2: (0.9, 0.92)})
  worst = stats.worst_case(valid)
  assert worst["final_accuracy"]["value"] == pytest.approx(0.91) and worst["settings"] == 1
  document = {"dataset": "digits", "model": "mlp", "batch_size": 64, "weight_decay": 5e-4,
              "epochs": 2, "seeds": [0, 1], "platform": "cpu", "wall_s": 1.0,
              "learning_rates": [1e-5, 1e-2], "entries": [entry, *valid],
              "worst_case": [{"method": "autodrop_sgd", "kind": "optax_lr", **worst}]}
  text = compare.markdown(document)
  assert "| autodrop_sgd | 1e-05 | rejected | - | - | - |" in text
  assert ("Left out (the constructor rejects the initial rate): autodrop_sgd at 1e-05 "
          "(`min_learning_rate`") in text


def test_cyclical_entries_keep_a_cycle_below_their_floor():
  # The registry's CLR floor (1e-3 for SGD) drops to a decade below a peak under ten times it,
  # so the grid's 1e-4 is a cycle 1e-5..1e-4 instead of a rejected setting; 1e-2 keeps 1e-3.
  assert optimizers._cycle_floor(1e-3, 1e-4) == pytest.approx(1e-5)
  assert optimizers._cycle_floor(1e-3, 1e-2) == 1e-3
  assert optimizers._cycle_floor(1e-3, 0.1) == 1e-3
  traced = jax.jit(lambda lr: optimizers._cycle_floor(1e-3, lr))
  np.testing.assert_allclose([float(traced(1e-4)), float(traced(0.1))], [1e-5, 1e-3], rtol=1e-6)
  assert grid.rejected_rates("clr_sgd", [1e-4, 1e-2], 10, 100, {}) == {}


def test_unknown_option_fails_before_training():
  # An option no method of the run has fails before any training, naming it.
  with pytest.raises(ValueError, match="drop_delay.*'sgd'"):
    compare.run_compare(["sgd"], optimizer_options={"drop_delay": 5})


def test_autodrop_events_on_hand_made_read_outs():
  # Seed 0: a trigger at 2, the drop at 3, a trigger at 4, the drop at 5. Seed 1: one trigger at
  # the last epoch, still pending.
  drops = np.array([[0, 0, 1, 1, 2], [0, 0, 0, 0, 0]])
  pending = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]])
  assert grid.autodrop_events(drops, pending) == {
      "drops": [2, 0], "drop_epochs": [[3, 5], []], "triggers": [2, 1],
      "first_trigger_epoch": [2, 5]}
  # A drop with drop_delay = 1 happens at its trigger: never seen pending.
  assert grid.autodrop_events(np.array([[0, 1]]), np.array([[0, 0]]))["triggers"] == [1]
  assert grid.autodrop_events(np.array([[0, 0]]), np.array([[0, 0]]))[
      "first_trigger_epoch"] == [None]


def test_output_paths_and_epochs_per_dataset():
  assert compare.LEARNING_RATES == (1e-4, 1e-3, 1e-2, 1e-1)  # three orders of magnitude
  assert compare.default_paths("compare", False, None) == (
      "docs/results/compare.json", "docs/results/compare.md", "docs/figures/bench_compare")
  # Each task keeps its own files.
  assert compare.default_paths("compare", True, None, "digits_warped") == (
      "docs/results/compare_digits_warped_quick.json",
      "docs/results/compare_digits_warped_quick.md",
      "docs/figures/bench_compare_digits_warped_quick")
  # An --out among the results pages keeps its figures with the others; elsewhere, beside it.
  assert compare.default_paths("compare", False, "docs/results/compare_digits_wide.json") == (
      "docs/results/compare_digits_wide.json", "docs/results/compare_digits_wide.md",
      "docs/figures/bench_compare_digits_wide")
  assert compare.default_paths("compare", False, "/tmp/x/c.json") == (
      "/tmp/x/c.json", "/tmp/x/c.md", "/tmp/x/bench_c")
  assert compare.epochs_for("digits", quick=False) == 30
  assert compare.epochs_for("digits", quick=True) == 10
  assert compare.epochs_for("digits_warped", quick=False) == compare.FULL_EPOCHS["digits_warped"]
  assert compare.epochs_for("mnist", quick=True) == 10  # no count of its own: the digits'


def test_claims_helpers():
  assert claims.rate_drop_epochs([0.1, 0.1, 0.02, 0.02, 0.004]) == [3, 5]
  assert claims.rate_drop_epochs([0.1, 0.2, 0.2]) == []
  diff = claims.difference({"mean": 8.0, "se": 0.3}, {"mean": 7.0, "se": 0.4})
  assert diff["difference"] == 1.0 and diff["se"] == pytest.approx(0.5)
  assert not diff["beyond_2se"]
  assert claims.difference({"mean": 9.0, "se": 0.3}, {"mean": 7.0, "se": 0.4})["beyond_2se"]


# --- what the state says about its rate ----------------------------------------------------------

PARAMS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}


def test_rate_metrics_reads_rates_and_skips_schedule_counters():
  tlr = grid.rate_metrics(optimizers.create_optimizer("tlr_sgd", 0.1, 10, 100).init(PARAMS))
  assert float(tlr["rate"]) == pytest.approx(0.1)
  multistep = optimizers.create_optimizer("sgd_multistep", 0.05, 10, 100)
  values = grid.rate_metrics(multistep.init(PARAMS))
  assert float(values["rate"]) == pytest.approx(0.05)
  assert not any(k.endswith("/count") for k in values)  # a step counter is not a rate
  # Per-tensor rates: one scalar key per leaf, the representative is their mean.
  per_tensor = optax_lr.tlr_sgd(0.2, per_tensor=True)
  values = grid.rate_metrics(per_tensor.init(PARAMS))
  assert {k for k in values if k.startswith("rate/")} == {
      "rate/learning_rate/dense/bias", "rate/learning_rate/dense/kernel"}
  # AutoDrop's drop count and latch, 0 at the start.
  autodrop = grid.rate_metrics(optimizers.create_optimizer("autodrop_sgd", 0.1, 10, 100)
                                  .init(PARAMS))
  assert float(autodrop["autodrop/num_drops"]) == 0.0
  assert float(autodrop["autodrop/drop_pending"]) == 0.0
  assert "autodrop/num_drops" not in tlr
  # Prodigy's step size is its d estimate; COCOB has none.
  prodigy = optax.contrib.prodigy(1.0, estim_lr0=1e-5)
  assert float(grid.rate_metrics(prodigy.init(PARAMS))["rate"]) == pytest.approx(1e-5)
  assert math.isnan(float(grid.rate_metrics(optax.contrib.cocob().init(PARAMS))["rate"]))


def test_method_kind_follows_the_registry_sections():
  assert grid.method_kind("tlr_sgd") == "optax_lr"
  assert grid.method_kind("clr_simple_adasecant") == "optax_lr"
  assert grid.method_kind("sgd") == "peer"
  assert grid.method_kind("prodigy") == "peer"


# --- the grid runner and the command --------------------------------------------------------------

@pytest.fixture(scope="module")
def runner():
  return grid.GridRunner("digits")


def test_grid_run_matches_train_and_evaluate(runner, tmp_path):
  """The vmapped grid reproduces the training loop's own numbers for the same config."""
  config = grid.make_config("sgd", num_epochs=2, learning_rate=0.05)
  rows = training.train_and_evaluate(config, str(tmp_path), log=lambda _: None)
  result = runner.run(config, [0.05, 0.01], [0])
  assert result.traced_rate
  for key in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose(result.metrics[key][0, 0], [r[key] for r in rows], rtol=2e-4,
                               err_msg=key)
  np.testing.assert_allclose(result.metrics["rate"][:, 0, -1], [0.05, 0.01], rtol=1e-6)


def test_grid_falls_back_to_one_program_per_rate(runner, monkeypatch):
  """A constructor that inspects the rate in Python cannot take a traced one: each rate gets
  its own program, with the same numbers as the traced grid of an equivalent optimizer."""

  def inspecting(learning_rate, steps_per_epoch, total_steps):
    if learning_rate > 1.0:  # Python branching on the rate
      raise ValueError("too large")
    return optimizers.create_optimizer("sgd", learning_rate, steps_per_epoch, total_steps)

  spec = optimizers.OptimizerSpec("inspecting_sgd", inspecting, "test only")
  monkeypatch.setitem(optimizers.OPTIMIZERS, "inspecting_sgd", spec)
  config = grid.make_config("inspecting_sgd", num_epochs=1)
  fallback = runner.run(config, [0.1, 0.01], [0])
  traced = runner.run(dataclasses.replace(config, optimizer="sgd"), [0.1, 0.01], [0])
  assert not fallback.traced_rate and traced.traced_rate
  np.testing.assert_allclose(fallback.metrics["train_loss"], traced.metrics["train_loss"],
                             rtol=1e-4)


def test_compare_command_writes_valid_outputs(tmp_path):
  assert {"compare", "claims"} <= set(dispatcher.COMMANDS)
  out = tmp_path / "c.json"
  dispatcher.main(["compare", "--methods", "cocob", "--epochs", "1", "--seeds", "2",
                   "--out", str(out)])

  def no_nan(token):
    raise AssertionError(f"non-standard JSON constant {token}")

  document = json.loads(out.read_text(), parse_constant=no_nan)
  assert document["epochs"] == 1 and document["seeds"] == [0, 1]
  (entry,) = document["entries"]  # cocob sets its own rate: one setting
  assert entry["method"] == "cocob" and entry["learning_rate"] is None
  assert entry["kind"] == "peer"
  assert entry["best_accuracy"]["n"] == 2 and 0.1 < entry["best_accuracy"]["mean"] <= 1.0
  assert entry["epochs_to_fraction_of_best"]["values"] == [1, 1]  # one epoch: it is the best
  assert len(entry["curves"]["test_accuracy"]) == 1
  assert entry["curves"]["rate"] == [None]  # COCOB has no rate
  (worst,) = document["worst_case"]
  assert worst["final_accuracy"]["value"] == entry["final_accuracy"]["mean"]
  assert entry["curves_se"]["test_accuracy"][0] >= 0.0  # two seeds: a standard error
  assert entry["curves_se"]["rate"] == [None]
  assert document["goal"] == compare.goal(document)
  assert document["goal"]["best_optax_lr"] is None  # a peer only
  text = (tmp_path / "c.md").read_text()
  assert "| cocob | peer |" in text and "**The goal**" in text
  assert "No `optax_lr` method was run." in text
  for name in ("bench_c_accuracy.png", "bench_c_rates.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_compare_reads_autodrop_and_keeps_rate_curves():
  document = compare.run_compare(["autodrop_sgd_auto"], epochs=2, seeds=(0,),
                                 learning_rates=(0.1,), optimizer_options={"drop_delay": 1},
                                 keep_rate_keys=True, log=lambda _: None)
  assert document["optimizer_options"] == {"drop_delay": 1}
  (entry,) = document["entries"]
  # Two 22-step windows: one angle after the second, no change of angle yet, so no trigger.
  assert entry["autodrop"] == {"drops": [0], "drop_epochs": [[]], "triggers": [0],
                               "first_trigger_epoch": [None]}
  angle = entry["curves"]["angular_velocity"]
  assert angle[0] is None and 0.0 < angle[1] < 180.0
  assert entry["curves"]["rate/learning_rate"] == pytest.approx([0.1, 0.1])
  assert entry["rate_per_seed"] == [pytest.approx([0.1, 0.1])]  # one seed, two epochs
  assert document["goal"]["auto_methods"] == ["autodrop_sgd_auto"]
  assert document["goal"]["auto_diverged"] == []


def test_tlr_grid_verdict_counts_every_seed():
  from train.bench import tlr_grid

  entries = [{"window_sum": "gradient", "final_accuracy": {"values": [0.97, 0.951, 0.95]}},
             {"window_sum": "gradient", "final_accuracy": {"values": [0.98, 0.99, 0.96]}},
             {"window_sum": "displacement", "final_accuracy": {"values": [0.97, None, 0.1]}}]
  result = tlr_grid.verdict(entries, ("gradient", "displacement"), target=0.95)
  assert result["gradient"] == {"runs": 6, "runs_at_or_above_target": 6,
                                "min_final_accuracy": 0.95, "max_final_accuracy": 0.99,
                                "every_run_at_or_above_target": True}
  assert result["displacement"]["runs_at_or_above_target"] == 1
  assert result["displacement"]["min_final_accuracy"] == 0.1
  assert not result["displacement"]["every_run_at_or_above_target"]
  from train.bench import __main__ as dispatcher

  assert "tlr-grid" in dispatcher.COMMANDS


# --- the claims command: papers by name -----------------------------------------------------------

def test_claims_select_papers_by_name_with_real_citations(tmp_path):
  assert claims.PAPERS == ("autodrop", "tlr", "cam-hd", "thesis")
  assert set(claims.CLAIMS) == set(claims.PAPERS) == set(claims.CITATIONS) == set(claims.TITLES)
  assert "Teng, Jing Wang, Anna Choromanska" in claims.CITATIONS["autodrop"]
  assert "Adaptive Hierarchical Hyper-gradient Descent" in claims.CITATIONS["cam-hd"]
  assert "Robin Sasse" in claims.CITATIONS["thesis"]
  assert claims.output_paths("cam-hd", True, None) == (
      "docs/results/claims_quick_cam_hd.json", "docs/results/claims_quick_cam_hd.md",
      "docs/figures/bench_claims_quick")
  assert claims.output_paths("tlr", False, str(tmp_path)) == (
      f"{tmp_path}/claims_tlr.json", f"{tmp_path}/claims_tlr.md", f"{tmp_path}/bench_claims")
  for bad in (["--paper", "002"], ["--paper", "seed"]):
    with pytest.raises(SystemExit):
      claims.main(bad)
  # Nothing the command writes names a paper by number.
  section = {"claim": "a claim", "citation": claims.CITATIONS["tlr"], "epochs": 1, "seeds": [0],
             "wall_s": 1.0, "figure": "f.png", "entries": [], "verdict": {"ok": True}}
  text = claims.markdown({"claims": {"tlr": section}})
  assert text.startswith("### Trainable Learning Rate (ICLR 2021 submission): a claim")
  assert "Anonymous authors. Trainable Learning Rate." in text
  assert not re.search(r"seed (paper )?0*\d", text, re.IGNORECASE)


def _peer_entry(method, batch, values):
  return {"method": method, "batch_size": batch,
          "final_accuracy": stats.mean_and_standard_error(values)}


def test_figure3_verdict_on_hand_made_entries():
  # Two batch sizes. At 64 TLR (0.97, 0.97) trails Adam (0.98, 0.98) by 0.01 with no spread:
  # beyond 2 se, so not within noise; SLS at 64 spreads (0.5, 0.9), SPS at 512 spreads too.
  values = {("sgd_mstep", 64): [0.9, 0.9], ("adam", 64): [0.98, 0.98], ("sls", 64): [0.5, 0.9],
            ("sps", 64): [0.96, 0.96], ("sgd_tlr", 64): [0.97, 0.97],
            ("sgd_tlr_pl", 64): [0.95, 0.95],
            ("sgd_mstep", 512): [0.9, 0.9], ("adam", 512): [0.95, 0.95], ("sls", 512): [0.9, 0.9],
            ("sps", 512): [0.7, 0.9], ("sgd_tlr", 512): [0.97, 0.97],
            ("sgd_tlr_pl", 512): [0.96, 0.96]}
  entries = [_peer_entry(m, b, v) for (m, b), v in values.items()]
  methods = ["sgd_mstep", "adam", "sls", "sps", "sgd_tlr", "sgd_tlr_pl"]
  verdict = claims._figure3_verdict(entries, methods, (64, 512))
  assert verdict["figure3_final_accuracy"]["sls"] == {"64": pytest.approx(0.7),
                                                      "512": pytest.approx(0.9)}
  assert not verdict["tlr_within_2se_of_the_best_at_every_batch"]
  assert verdict["batches_where_a_tlr_variant_is_best"] == [512]
  assert verdict["sls_seed_spread_at_smallest_batch_exceeds_tlr"]
  assert verdict["sps_seed_spread_at_largest_batch_exceeds_tlr"]
  assert verdict["sps_minus_adam_final_accuracy"] == {"64": pytest.approx(-0.02),
                                                      "512": pytest.approx(-0.15)}
  # With TLR's 64 runs spread as much as the gap, it is within noise of the best.
  values[("sgd_tlr", 64)] = [0.95, 0.99]
  entries = [_peer_entry(m, b, v) for (m, b), v in values.items()]
  assert claims._figure3_verdict(entries, methods, (64, 512))[
      "tlr_within_2se_of_the_best_at_every_batch"]


def test_cam_hd_orderings_count_ties_as_no_win():
  # 352/360 in every seed: the means differ by float rounding only (1.2e-8 measured) - a tie.
  final = {"Adam-CAM-HD": 0.97777778, "Adam-HD": 0.9772, "Adam": 0.9794, claims.SGDN_CAM_HD: 0.1,
           "SGDN": 0.975, "Adam-L4": 0.9711, "AdaBound": 0.97777777}
  assert claims.cam_hd_orderings(final) == {
      "adam_cam_hd_beats_adam_hd_and_adam": False, "sgdn_cam_hd_beats_sgdn": False,
      "adam_cam_hd_beats_adam_l4": True, "adam_cam_hd_beats_adabound": False}
  assert claims.beats(0.5, 0.5 - 2e-6) and not claims.beats(None, 0.1)


def test_overhead_floor_table_rows():
  # The compact memory table: bytes/param with the floor and the base's measured figure, the
  # copies, and the state against the floor, one row per method, from the result fields.
  from train.bench import overhead

  row = {"method": "adam_hd", "bytes_per_param": 52.0004, "floor_bytes_per_param": 40.0,
         "base_bytes_per_param": 40.0002, "copies": 0, "temp_bytes_per_param": 4.00001,
         "state_param_buffers": 2.0, "floor_state_param_buffers": 2}
  lines = overhead.floor_table([row]).splitlines()
  assert lines[0] == ("| method | bytes/param (floor; base) | copies | temporaries B/param | "
                      "state buffers (floor) |")
  assert lines[2] == "| adam_hd | 52.0 (40; 40) | 0 | 4.0 | 2.00 (2) |"
  assert len(lines) == 3
  assert overhead.DEFAULT_OUT.endswith("docs/results/overhead.json")


def test_overhead_temporaries_and_page_faults():
  # The two figures that explain XLA:CPU's step times: the temporaries of a compiled step (its
  # memory analysis) and the minor page faults a first touch of fresh memory costs (getrusage).
  from train.bench import overhead

  x = jnp.ones((1 << 16,), jnp.float32)
  in_place = jax.jit(lambda x: x * 2.0, donate_argnums=0).lower(x).compile()
  assert hlo.temporary_bytes(in_place) < x.nbytes  # no array-sized temporary
  size, page = 64 << 20, mmap.PAGESIZE
  fresh = mmap.mmap(-1, size)  # fresh anonymous memory, as XLA:CPU's per-call temporaries
  before = overhead._minor_faults()
  fresh[::page] = b"\x01" * (size // page)  # the first touch of every page
  after = overhead._minor_faults()
  fresh.close()
  # One fault per page touched; where transparent huge pages are on for every mapping
  # ("always"), one per 2 MiB huge page may be all it takes.
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      huge_always = "[always]" in f.read()
  except OSError:
    huge_always = False
  least = size // (2 << 20) if huge_always else size // page
  assert least <= after - before <= size // page + 256


# --- the tasks: shapes, the byte language model, the verdict -----------------------------

def test_shapes_dataset_is_deterministic_balanced_and_rgb():
  from train import input_pipeline

  a_images, a_labels = input_pipeline._shapes(40, seed=3)
  b_images, b_labels = input_pipeline._shapes(40, seed=3)
  np.testing.assert_array_equal(a_images, b_images)
  np.testing.assert_array_equal(a_labels, b_labels)
  assert not np.array_equal(input_pipeline._shapes(40, seed=4)[0], a_images)
  assert a_images.shape == (40, 32, 32, 3) and a_images.dtype == np.uint8
  assert a_labels.dtype == np.int32 and np.bincount(a_labels).tolist() == [4] * 10
  dataset = input_pipeline.load("shapes")
  info = dataset.info
  assert (info.num_classes, info.image_shape, info.augment) == (10, (32, 32, 3), "none")
  assert (info.num_train, info.num_test) == (input_pipeline.SHAPES_TRAIN,
                                             input_pipeline.SHAPES_TEST)
  x_train, x_test, y_train, y_test = input_pipeline._shapes_dataset()
  assert np.bincount(y_train).tolist() == [info.num_train // 10] * 10
  assert np.bincount(y_test).tolist() == [info.num_test // 10] * 10
  assert dataset.train[0]["image"].shape == (32, 32, 3)
  assert 0 < x_train.std() and x_train.min() < 30 and x_train.max() > 225  # colour, contrast
  assert not np.array_equal(x_train[:len(x_test)], x_test)  # train and test from other seeds


def _verdict_document(higher: bool, values: dict[str, list[tuple]]) -> dict:
  key = "final_accuracy" if higher else "final_loss"
  return {"metric": {"key": key, "higher_is_better": higher},
          "entries": [{"method": name, "learning_rate": lr, key: {"mean": mean, "se": se}}
                      for name, settings in values.items() for lr, mean, se in settings]}


def test_verdict_on_hand_made_losses_and_accuracies():
  # Losses (lower is better). Worst case of the recommended method: 1.70 ± 0.01 (at rate 1).
  # Best rate-free peer: prodigy 1.69 ± 0.01 (dadapt's 1.75 is worse). Difference +0.01, its
  # s.e. sqrt(0.01^2 + 0.01^2) = 0.01414: worse by less than one s.e. -> passes, margin 0.00414.
  # Tuned AdamW at its best rate (3e-3): 1.65 ± 0.02; difference +0.05, s.e. sqrt(1e-4 + 4e-4)
  # = 0.02236: worse by more than one s.e. -> fails, so the verdict fails.
  doc = _verdict_document(False, {
      "auto_adam": [(1e-5, 1.60, 0.01), (1.0, 1.70, 0.01)],
      "prodigy": [(None, 1.69, 0.01)], "dadapt_adamw": [(None, 1.75, 0.01)],
      "adamw_cosine": [(1e-3, 1.66, 0.01), (3e-3, 1.65, 0.02)]})
  section = compare.verdict(doc)
  assert section["worst"] == {"mean": 1.70, "se": 0.01, "learning_rate": 1.0}
  assert section["best_peer"] == "prodigy"
  peer = section["versus_peer"]
  assert peer["difference"] == pytest.approx(0.01)
  assert peer["se"] == pytest.approx(0.0141421356)
  assert peer["margin"] == pytest.approx(0.0041421356) and peer["passed"]
  assert section["tuned"] == {"mean": 1.65, "se": 0.02, "learning_rate": 3e-3}
  tuned = section["versus_tuned"]
  assert tuned["se"] == pytest.approx(0.0223606798)
  assert tuned["margin"] == pytest.approx(-0.0276393202) and not tuned["passed"]
  assert not section["passed"]
  # Tuned AdamW at 1.69 ± 0.01 instead: +0.01 with s.e. 0.01414 -> both pass.
  doc["entries"][-1]["final_loss"] = {"mean": 1.69, "se": 0.01}
  doc["entries"][-2]["final_loss"] = {"mean": 1.72, "se": 0.01}
  assert compare.verdict(doc)["passed"]
  # Worse than the peer by more than one s.e.: 1.72 vs 1.69 (difference 0.03 > 0.01414).
  doc["entries"][1]["final_loss"] = {"mean": 1.72, "se": 0.01}
  assert not compare.verdict(doc)["versus_peer"]["passed"]
  # Accuracies (higher is better): worst 0.80 ± 0.01 vs the best peer 0.815 ± 0.01 (dadapt):
  # -0.015, s.e. 0.01414 -> fails; tuned AdamW 0.81 ± 0.00 -> -0.01 within 0.01 -> passes.
  acc = _verdict_document(True, {
      "auto_adam": [(1e-3, 0.90, 0.01), (1e-1, 0.80, 0.01)],
      "prodigy": [(None, 0.70, 0.02)], "dadapt_adamw": [(None, 0.815, 0.01)],
      "adamw_cosine": [(1e-4, 0.5, 0.0), (1e-3, 0.81, 0.0)]})
  section = compare.verdict(acc)
  assert section["best_peer"] == "dadapt_adamw" and section["worst"]["learning_rate"] == 0.1
  assert not section["versus_peer"]["passed"] and section["versus_tuned"]["passed"]
  text = "\n".join(compare.verdict_markdown(section))
  assert text.startswith("**Verdict: FAIL.**") and "`dadapt_adamw` 81.5 ± 1.0 (at own)" in text
  # A missing side fails the verdict.
  del acc["entries"][-2:]
  assert compare.verdict(acc)["versus_tuned"] is None and not compare.verdict(acc)["passed"]


def test_the_tuned_baseline_runs_on_its_half_decade_grid():
  assert compare.rates_for("adamw_cosine", [1e-5, 1.0]) == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
  assert compare.rates_for("prodigy", [1e-5, 1.0]) is None
  assert compare.rates_for("adam_hd_auto", [1e-5, 1.0]) == [1e-5, 1.0]
  tx = optimizers.create_optimizer("adamw_cosine", 1e-2, steps_per_epoch=10, total_steps=100)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  rates = []
  for _ in range(100):
    _, state = tx.update({"w": jnp.ones(3)}, state, params)
    rates.append(float(state.hyperparams["learning_rate"]))
  # The logged rate is the schedule's value at the step: warm-up over 5 steps, then the cosine.
  assert rates[0] == 0.0 and rates[5] == pytest.approx(1e-2) and rates[-1] < 1e-5
  assert max(rates) == pytest.approx(1e-2)


_TINY_LM = dict(num_layers=1, width=32, num_heads=2, corpus_bytes=200_000, eval_batches=2)


def test_lm_compare_quick_document(monkeypatch):
  from train.bench import lm

  task = lm.LMTask(steps=20, **_TINY_LM)
  document = compare.run_lm_compare(
      ["adam_hd_auto", "adasecant", "prodigy", "adamw_cosine"], seeds=(0, 1),
      learning_rates=(1e-3, 1.0), task=task, log=lambda _: None)
  assert document["dataset"] == "bytes_lm" and document["steps"] == 20
  assert document["metric"] == {"key": "final_loss", "higher_is_better": False,
                                "name": "held-out next-token loss (nats)"}
  rates = {(e["method"], e["learning_rate"]) for e in document["entries"]}
  tuned = {("adamw_cosine", lr) for lr in compare.TUNED_LEARNING_RATES}
  assert rates == {("adam_hd_auto", 1e-3), ("adam_hd_auto", 1.0), ("adasecant", None),
                   ("prodigy", None), *tuned}
  for e in document["entries"]:
    assert e["final_loss"]["n"] == 2 and 0.0 < e["final_loss"]["mean"] <= compare.LM_CHANCE_LOSS
    assert e["best_loss"]["mean"] <= e["final_loss"]["mean"] + 1e-12
    assert len(e["curves"]["test_loss"]) == lm.LM_EVALUATIONS
  # Adam-HD at 1e-3 learns something in 20 steps (uniform over bytes is ln 256 = 5.545).
  (adam,) = [e for e in document["entries"] if e["learning_rate"] == 1e-3
             and e["method"] == "adam_hd_auto"]
  assert adam["final_loss"]["mean"] < 5.0
  assert document["verdict"] == compare.verdict(document)
  assert document["verdict"]["best_peer"] == "prodigy"
  text = compare.lm_markdown(document)
  assert text.startswith("**Verdict: ") and "| adamw_cosine | 0.003 |" in text
  json.dumps(document, allow_nan=False)


def test_lm_grid_evaluates_schedule_free_at_its_eval_params(monkeypatch):
  from train.bench import lm

  # An evaluation point of zeros gives all-zero logits: the held-out loss is exactly ln 256.
  spec = optimizers.get_spec("schedule_free_adamw")
  assert spec.eval_params is not None
  zeros = dataclasses.replace(spec, eval_params=lambda state, params: jax.tree.map(
      jnp.zeros_like, params))
  monkeypatch.setitem(optimizers.OPTIMIZERS, "schedule_free_adamw", zeros)
  result = lm.run_lm_grid("schedule_free_adamw", [1e-3], (0,), task=lm.LMTask(steps=10,
                                                                              **_TINY_LM))
  np.testing.assert_allclose(result["test_loss"], math.log(256), rtol=1e-4)  # float32
  assert result["test_loss"].shape == (1, 1, lm.LM_EVALUATIONS)
  assert np.isfinite(result["train_loss"]).all() and result["train_loss"][0, 0, -1] < 5.5


def test_compare_command_bytes_lm_writes_the_page(tmp_path):
  out = tmp_path / "lm.json"
  dispatcher.main(["compare", "--dataset", "bytes_lm", "--steps", "10", "--methods", "prodigy",
                   "--seeds", "1", "--out", str(out)])
  document = json.loads(out.read_text())
  assert document["dataset"] == "bytes_lm" and document["steps"] == 10
  assert document["learning_rates"] == list(compare.WIDE_LEARNING_RATES)
  (entry,) = document["entries"]
  assert entry["method"] == "prodigy" and entry["final_loss"]["n"] == 1
  assert document["verdict"]["best_peer"] == "prodigy" and not document["verdict"]["passed"]
  text = (tmp_path / "lm.md").read_text()
  assert text.startswith("**Verdict: FAIL.**") and "| prodigy | peer |" in text
  for name in ("bench_lm_loss.png", "bench_lm_rates.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_reuse_takes_the_methods_not_rerun_and_recomputes_the_verdict():
  task = {"benchmark": "compare", "dataset": "shapes", "model": "patch_cnn", "batch_size": 64,
          "weight_decay": 5e-4, "epochs": 5, "seeds": [0, 1], "learning_rates": [1e-4, 1e-1],
          "optimizer_options": {}, "platform": "cpu", "wall_s": 10.0,
          "recommended": "adam_hd_auto"}
  earlier = {**task, **_document(diverge=False)}
  # This run trains adam_hd_auto only, now behind Prodigy (0.81): worst (0.70, 0.72) = 0.71.
  own = _method_entries("adam_hd_auto", "optax_lr", {1e-4: (0.70, 0.72), 1e-1: (0.90, 0.90)})
  document = {**task, "wall_s": 2.0, "entries": own,
              "worst_case": [{"method": "adam_hd_auto", "kind": "optax_lr",
                              **stats.worst_case(own)}]}
  merged = compare.reuse_entries(document, earlier, "old.json")
  names = [w["method"] for w in merged["worst_case"]]
  assert names[0] == "adam_hd_auto" and sorted(names[1:]) == sorted(
      ["prodigy", "dadapt_adamw", "tlr_sgd", "sgdn_hd_auto", "sgd"])
  assert merged["reused"]["methods"] == ["prodigy", "dadapt_adamw", "tlr_sgd", "sgdn_hd_auto",
                                         "sgd"]
  # The new worst case 0.71 against Prodigy's 0.81 (se 0.01 each): -0.10 with se 0.0141.
  assert merged["verdict"]["worst"]["mean"] == pytest.approx(0.71)
  assert merged["verdict"]["versus_peer"]["difference"] == pytest.approx(-0.10)
  assert not merged["verdict"]["passed"]
  # The earlier adam_hd_auto entries are not mixed in.
  assert sum(e["method"] == "adam_hd_auto" for e in merged["entries"]) == 2
  assert "Reused from `old.json`" in compare.markdown(merged)
  with pytest.raises(ValueError, match="`epochs` is 5, this run's is 3"):
    compare.reuse_entries({**document, "epochs": 3}, earlier, "old.json")


def test_rate_range_doubles_the_rate_and_reports_the_cosine(tmp_path):
  from train.bench import rate_range

  document = rate_range.run("shapes", seeds=(0, 1), start=1e-4, doublings=2, steps_per_rate=2)
  assert document["rate"] == [1e-4, 2e-4]
  assert len(document["per_seed"]) == 2 and len(document["cosine_mean"]) == 2
  cosines = np.asarray([r["cosine"] for r in document["per_seed"]])
  np.testing.assert_allclose(document["cosine_mean"], cosines.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(document["cosine_se"], cosines.std(axis=0, ddof=1) / np.sqrt(2),
                             rtol=1e-12)
  assert np.all(np.abs(cosines) <= 1.0)
  # At a negligible rate consecutive gradients of the same initialisation agree.
  assert np.all(cosines[:, 0] > 0.1)
  text = rate_range.markdown(document)
  assert f"| 1.0e-04 | {document['cosine_mean'][0]:+.3f} ± " in text


def test_lm_summary_counts_a_finite_blow_up_as_diverged():
  # Three seeds at one rate, two evaluations. Seed 0 learns (2.9 nats at the end); seed 1 ends at
  # 535 nats, finite but far above 3 x ln 256 = 16.64; seed 2 ends at NaN. The held-out losses
  # of both blown-up seeds are capped at ln 256 = 5.545, and both count as diverged.
  result = {"learning_rates": [None], "compile_seconds": 1.0, "run_seconds": 1.0,
            "train_loss": np.array([[[4.0, 2.9], [20.0, 535.0], [5.0, math.nan]]]),
            "test_loss": np.array([[[4.0, 2.9], [20.0, 535.0], [5.0, math.nan]]]),
            "rate": np.ones((1, 3, 2))}
  (entry,) = compare.summarize_lm("simple_adasecant", result, "rate_free")
  assert entry["diverged_seeds"] == 2
  assert entry["rate_per_seed"] == [[1.0, 1.0]] * 3  # each seed's rate, not only the mean
  assert entry["final_loss"]["mean"] == pytest.approx((2.9 + 2 * math.log(256)) / 3)
  # At the bound (16.6 nats) a seed is slow, not diverged.
  result["train_loss"][0, 1, -1] = 3 * math.log(256)
  assert compare.summarize_lm("x", result, "rate_free")[0]["diverged_seeds"] == 1


def test_reuse_of_another_task_stops_before_training(tmp_path, capsys):
  earlier = tmp_path / "earlier.json"
  earlier.write_text(json.dumps({"dataset": "digits", "seeds": [0, 1, 2],
                                 "learning_rates": [1e-4], "optimizer_options": {},
                                 "epochs": 30}))
  start = time.perf_counter()
  with pytest.raises(SystemExit):
    compare.main(["--dataset", "digits", "--methods", "sgd", "--learning-rates", "1e-3",
                  "--reuse", str(earlier), "--out", str(tmp_path / "c.json")])
  assert time.perf_counter() - start < 5  # nothing trained
  assert "`learning_rates` is [0.0001], this run's would be [0.001]" in capsys.readouterr().err
  assert not (tmp_path / "c.json").exists()


def test_compare_command_reuse_writes_the_merged_page(tmp_path):
  common = ["--dataset", "digits", "--epochs", "1", "--seeds", "1", "--learning-rates", "0.01"]
  compare.main([*common, "--methods", "sgd", "prodigy", "--out", str(tmp_path / "a.json")])
  compare.main([*common, "--methods", "sgd", "--reuse", str(tmp_path / "a.json"),
                "--out", str(tmp_path / "b.json")])
  document = json.loads((tmp_path / "b.json").read_text())
  assert [w["method"] for w in document["worst_case"]] == ["sgd", "prodigy"]
  assert document["reused"]["methods"] == ["prodigy"]
  text = (tmp_path / "b.md").read_text()
  assert f"Reused from `{tmp_path / 'a.json'}`" in text and "| prodigy | peer |" in text
