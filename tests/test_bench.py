"""The benchmark machinery: aggregation on hand-made curves, rate read-out, the grid runner against
the training loop, and a one-method compare run end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr
from train import optimizers
from train import train as training
from train.bench import __main__ as dispatcher
from train.bench import claims, compare

# --- aggregation ----------------------------------------------------------------------------------

def test_epochs_to_fraction_of_best_on_hand_made_curves():
  # best 1.0; 95% of it is 0.95: epoch 3 (0.96) is the first to reach it.
  assert compare.epochs_to_fraction_of_best([0.5, 0.9, 0.96, 1.0]) == 3
  # Fraction 1: the first epoch at the best, not a later tie.
  assert compare.epochs_to_fraction_of_best([0.2, 0.8, 0.8, 0.7], 1.0) == 2
  # NaN never counts as reached and does not poison the best.
  assert compare.epochs_to_fraction_of_best([math.nan, 0.4, 0.39], 0.95) == 2
  assert compare.epochs_to_fraction_of_best([0.1, 0.5], 0.1) == 1
  assert compare.epochs_to_fraction_of_best([math.nan, math.nan]) is None


def test_mean_and_standard_error():
  stats = compare.mean_and_standard_error([1.0, 2.0, 3.0, None, math.nan])
  assert stats["mean"] == 2.0 and stats["n"] == 3
  assert stats["se"] == pytest.approx(1.0 / math.sqrt(3.0))  # std(ddof=1) = 1
  assert stats["values"] == [1.0, 2.0, 3.0, None, None]
  assert compare.mean_and_standard_error([0.5])["se"] is None
  assert compare.mean_and_standard_error([None])["mean"] is None


def test_summarize_setting_on_hand_made_runs():
  accuracy = np.array([[0.50, 0.80, 0.90, 0.85],   # best 0.90, final 0.85, 95% (0.855) at 3
                       [0.70, 0.96, 0.97, 0.10]])  # best 0.97, final 0.10, 95% (0.9215) at 2
  loss = np.array([[1.0, 0.5, 0.4, 0.3], [1.0, 0.5, 0.4, math.nan]])
  summary = compare.summarize_setting(accuracy, loss)
  assert summary["best_accuracy"]["mean"] == pytest.approx(0.935)
  assert summary["best_accuracy"]["se"] == pytest.approx(0.035)  # |0.97 - 0.90| / 2
  assert summary["final_accuracy"]["mean"] == pytest.approx(0.475)
  assert summary["epochs_to_fraction_of_best"]["values"] == [3, 2]
  assert summary["epochs_to_fraction_of_best"]["mean"] == 2.5
  assert summary["diverged_seeds"] == 1


def _entry(lr, best, final, epochs):
  return {"learning_rate": lr, "best_accuracy": {"mean": best},
          "final_accuracy": {"mean": final}, "epochs_to_fraction_of_best": {"mean": epochs}}


def test_worst_case_over_initial_rates():
  entries = [_entry(1e-3, 0.90, 0.88, 9.0), _entry(1e-2, 0.97, 0.96, 4.0),
             _entry(1e-1, 0.95, 0.20, 2.0)]
  worst = compare.worst_case(entries)
  assert worst["best_accuracy"] == {"value": 0.90, "learning_rate": 1e-3}
  assert worst["final_accuracy"] == {"value": 0.20, "learning_rate": 1e-1}
  assert worst["epochs_to_fraction_of_best"] == {"value": 9.0, "learning_rate": 1e-3}
  assert worst["final_accuracy_spread"] == pytest.approx(0.76)
  assert worst["settings"] == 3
  # A setting without numbers (every seed NaN) is left out, not taken as the worst.
  nothing = _entry(1.0, None, None, None)
  assert compare.worst_case([*entries, nothing])["final_accuracy"]["value"] == 0.20


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
  tlr = compare.rate_metrics(optimizers.create_optimizer("tlr_sgd", 0.1, 10, 100).init(PARAMS))
  assert float(tlr["rate"]) == pytest.approx(0.1)
  multistep = optimizers.create_optimizer("sgd_multistep", 0.05, 10, 100)
  values = compare.rate_metrics(multistep.init(PARAMS))
  assert float(values["rate"]) == pytest.approx(0.05)
  assert not any(k.endswith("/count") for k in values)  # a step counter is not a rate
  # Per-tensor rates: one scalar key per leaf, the representative is their mean.
  per_tensor = optax_lr.tlr_sgd(0.2, per_tensor=True)
  values = compare.rate_metrics(per_tensor.init(PARAMS))
  assert {k for k in values if k.startswith("rate/")} == {
      "rate/learning_rate/dense/bias", "rate/learning_rate/dense/kernel"}
  # Prodigy's step size is its d estimate; COCOB has none.
  prodigy = optax.contrib.prodigy(1.0, estim_lr0=1e-5)
  assert float(compare.rate_metrics(prodigy.init(PARAMS))["rate"]) == pytest.approx(1e-5)
  assert math.isnan(float(compare.rate_metrics(optax.contrib.cocob().init(PARAMS))["rate"]))


def test_method_kind_follows_the_registry_sections():
  assert compare.method_kind("tlr_sgd") == "optax_lr"
  assert compare.method_kind("clr_simple_adasecant") == "optax_lr"
  assert compare.method_kind("sgd") == "peer"
  assert compare.method_kind("prodigy") == "peer"


# --- the grid runner and the command --------------------------------------------------------------

@pytest.fixture(scope="module")
def runner():
  return compare.GridRunner("digits")


def test_grid_run_matches_train_and_evaluate(runner, tmp_path):
  """The vmapped grid reproduces the training loop's own numbers for the same config."""
  config = compare.make_config("sgd", num_epochs=2, learning_rate=0.05)
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
  config = compare.make_config("inspecting_sgd", num_epochs=1)
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
  assert "| cocob | peer |" in (tmp_path / "c.md").read_text()
  for name in ("bench_c_accuracy.png", "bench_c_rates.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


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
          "final_accuracy": compare.mean_and_standard_error(values)}


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
         "base_bytes_per_param": 40.0002, "copies": 0, "state_param_buffers": 2.0,
         "floor_state_param_buffers": 2}
  lines = overhead.floor_table([row]).splitlines()
  assert lines[0] == "| method | bytes/param (floor; base) | copies | state buffers (floor) |"
  assert lines[2] == "| adam_hd | 52.0 (40; 40) | 0 | 2.00 (2) |"
  assert len(lines) == 3
  assert overhead.DEFAULT_OUT.endswith("docs/results/overhead.json")
