"""Every method side by side on one small task: ``python -m train.bench compare``.

Every optimizer of the registry (``train.optimizers``: the ``optax_lr`` methods, the papers'
baselines -- multistep SGD, Adam, SLS and SPS for Trainable Learning Rate, L4 over Adam and
momentum and AdaBound for Adaptive Hierarchical Hyper-gradient Descent -- and the peers a user
would pick instead) trains the same model on the same data, over the initial rates
{1e-4, 1e-3, 1e-2, 1e-1} (three orders of magnitude) for the methods that take one (the
registry's ``takes_learning_rate``) and over 3 seeds. Four tasks need no download: the
digits (the default), ``digits_warped`` (8 random affine warps with pixel noise of every digit,
harder), ``shapes`` (generated 32x32 RGB shapes for a CNN, ``patch_cnn``) and ``bytes_lm`` (a
byte-level transformer language model on standard-library sources, held-out next-token loss:
:func:`run_lm_compare`); the last two default to five decades of initial rates, 1e-5 ... 1, and
to :data:`ISSUE_METHODS`. Every results page opens with a computed verdict (:func:`verdict`): the
recommended optimizer's worst case against the best learning-rate-free peer and tuned AdamW
(``adamw_cosine`` at the best rate of its half-decade grid). Per method and setting the
benchmark reports the best and the final test accuracy, the
number of epochs a run needs to reach 95% of its own best accuracy, and, per method, the worst
case over the initial rates: what a user who does not tune the rate risks. The "goal" section
(:func:`goal`) sets every method's worst case against the learning-rate-free peers Prodigy and
D-Adaptation, names the best ``optax_lr`` method with its margin, and lists the settings where an
``optax_lr`` "auto" entry diverged. It writes JSON (one entry per method and setting), a markdown
table and plots of the accuracy and learning-rate curves (mean ± standard error over seeds).

Runs on the embedded digits are tiny, so the cost is compiling, not training. :class:`GridRunner`
therefore compiles one program per method that trains every (initial rate, seed) pair of the grid
at once: the training loop's own ``train_step`` / ``eval_step`` (``train.train``), with the named
device axis of a one-device run, under ``jax.vmap`` over the initial rates (the optimizer is built
from the registry *inside* the traced function, so the rate is a traced value) and over the seeds,
with the epochs and the steps in ``lax.scan``. A method whose constructor cannot take a traced rate
(it inspects the value in Python) falls back to one program per rate, vmapped over the seeds. The
numbers are those of ``train.train.train_and_evaluate`` on one device with the same config (a test
checks it), and the loss-based baselines get what they declare from that step: the loss ``value``
(SPS, L4) and the loss function ``value_fn`` (SLS's line search).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from train import input_pipeline, io_utils, optimizers, reporting
from train.bench import lm
from train.bench.grid import (
  GridRunner,
  make_config,
  method_kind,
  rejected_entry,
  rejected_rates,
  summarize_grid,
  switch_boundary,
)
from train.bench.report import (
  FIGURES_DIR,
  RESULTS_DIR,
  fmt,
  fmt_lr,
  fmt_value,
  fmt_versus,
  fmt_worst,
  platform_name,
  pyplot,
  save_figure,
  write_json,
)
from train.bench.stats import (
  BEST_FRACTION,
  TIE,
  best_setting,
  curve,
  curve_se,
  difference,
  mean_and_standard_error,
  per_seed,
  worst_case,
  worst_setting,
)

#: The initial rates of the grid (for methods that take one): three orders of magnitude.
LEARNING_RATES = (1e-4, 1e-3, 1e-2, 1e-1)
#: Seeds per setting.
SEEDS = (0, 1, 2)
#: Epochs of a ``--quick`` run and of a full run, per dataset (others: those of the digits).
#: ``digits_warped`` has 8x the digits' steps per epoch (179 against 22): 20 epochs are 3,580
#: steps per run, and the whole registry's run stays near 15 minutes on 2 CPU cores (about 200 s of
#: compiling and tracing plus 30 s per epoch, measured).
QUICK_EPOCHS = {"digits": 10, "digits_warped": 5, "shapes": 1}
FULL_EPOCHS = {"digits": 30, "digits_warped": 20, "shapes": 5}
#: The learning-rate-free peers the goal section compares against (registry names).
REFERENCES = ("prodigy", "dadapt_adamw")
#: Registry entries named with this suffix (or this prefix) are the library's "auto"
#: (robust-default) entries.
AUTO_SUFFIX = "_auto"
AUTO_PREFIX = "auto_"

#: The issue's initial rates: five decades, 1e-5 ... 1 (the default of the tasks below).
WIDE_LEARNING_RATES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Datasets whose default initial rates are :data:`WIDE_LEARNING_RATES`.
WIDE_DATASETS = ("shapes", lm.LM_DATASET)
#: The tuned baseline: AdamW with warm-up and cosine decay, run over a half-decade grid of peak
#: rates (whatever the rates of the others) and reported at its best rate.
TUNED = "adamw_cosine"
TUNED_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: The learning-rate-free peers of the verdict (registry names; they set their own rate).
RATE_FREE_PEERS = ("prodigy", "dadapt_adamw")
#: The optimizer the verdict judges by default (``--recommended`` names another).
RECOMMENDED = "auto_adam"
#: The methods a run of the issue's tasks trains by default (``shapes``, ``bytes_lm``): the
#: library's "auto" entries and the peers of the verdict.
ISSUE_METHODS = ("auto_adam", "auto_adam_no_tail", "adam_hd_auto", "adam_cam_hd_auto",
                 "sgdn_hd_auto", "tlr_sgd_auto", "prodigy", "dadapt_adamw",
                 "schedule_free_adamw", TUNED)
#: The model of each dataset when ``--model`` is not given (others: the MLP).
DEFAULT_MODELS = {"shapes": "patch_cnn", lm.LM_DATASET: "transformer_lm"}
#: Steps of a ``--quick`` and of a full run of the language-model task (:func:`run_lm_compare`).
LM_QUICK_STEPS = 20
LM_FULL_STEPS = 300
#: A held-out loss is capped at the loss of the uniform prediction over bytes, ln 256 nats: a
#: diverged run (non-finite or worse than uniform) counts as guessing.
LM_CHANCE_LOSS = math.log(256)
#: A seed whose final training loss is above this (or not finite) diverged: the training loop's
#: last-epoch bound, 3 ln 256 = 16.6 nats (``train.reporting.divergence_bound``).
LM_DIVERGED_LOSS = reporting.divergence_bound(256, final=True)

#: The lower end of the accuracy axis of the figures, per dataset (others: 0).
ACCURACY_AXIS_FLOOR = {"digits": 0.5, "digits_warped": 0.3}


PyTree = Any


def goal(document: dict[str, Any], references: Sequence[str] = REFERENCES) -> dict[str, Any]:
  """The issue's goal on one task, from the document's entries and worst cases.

  The goal: the best ``optax_lr`` method's worst case over the initial rates (lowest mean final
  accuracy) is at least that of each learning-rate-free reference, and no ``optax_lr`` "auto"
  entry (a name ending in :data:`AUTO_SUFFIX` or starting with :data:`AUTO_PREFIX`) diverges at
  any initial rate.

  Args:
    document: :func:`run_compare`'s document (``"worst_case"`` and ``"entries"``; entries need
      ``method``, ``kind``, ``learning_rate`` and ``diverged_seeds``).
    references: the registry names to compare against (those absent from the document are left
      out).

  Returns:
    ``"references"``: name -> the reference's worst final accuracy ``{"mean", "se",
    "learning_rate"}``; ``"methods"``: per ``optax_lr`` method (best worst case first) its worst
    final accuracy and ``"versus"``: reference -> ``{"difference", "se", "beyond_2se",
    "in_se"}`` (accuracy as a fraction; ``in_se`` = difference / se, None when se is 0);
    ``"best_optax_lr"``: the first of those (None without any); ``"best_at_least_references"``:
    whether its difference to every reference is >= 0 up to float rounding (``stats.TIE``;
    None without a reference); ``"best_within_2se_of_references"``: whether it is at most two
    standard errors of the difference below every reference;
    ``"auto_diverged"``: ``{"method", "learning_rate", "diverged_seeds", "seeds"}`` of every
    setting of an auto entry with a diverged seed; ``"auto_methods"``: the auto entries found;
    ``"met"``: both parts of the goal hold.
  """

  def worst_final(w: dict[str, Any]) -> dict[str, Any]:
    final = w["final_accuracy"]
    return {"mean": final["value"], "se": final.get("se"), "learning_rate": final["learning_rate"]}

  worst = {w["method"]: w for w in document["worst_case"]}
  refs = {name: worst_final(worst[name]) for name in references if name in worst}
  ranked = sorted((w for w in document["worst_case"] if w["kind"] == "optax_lr"),
                  key=lambda w: -math.inf if w["final_accuracy"]["value"] is None
                  else w["final_accuracy"]["value"], reverse=True)
  methods = []
  for w in ranked:
    final = worst_final(w)
    versus = {}
    for name, ref in refs.items():
      diff = difference(final, ref)
      diff["in_se"] = (diff["difference"] / diff["se"]
                       if diff["difference"] is not None and diff["se"] else None)
      versus[name] = diff
    methods.append({"method": w["method"], **final, "versus": versus})
  best = methods[0] if methods else None
  at_least = within = None
  if best is not None and refs:
    # A tie (equal accuracies up to float rounding of the means) counts as "at least".
    at_least = all(v["difference"] is not None and v["difference"] >= -TIE
                   for v in best["versus"].values())
    within = all(v["difference"] is not None and v["difference"] >= -2 * v["se"] - TIE
                 for v in best["versus"].values())
  auto = [w["method"] for w in ranked
          if w["method"].endswith(AUTO_SUFFIX) or w["method"].startswith(AUTO_PREFIX)]
  diverged = [{"method": e["method"], "learning_rate": e["learning_rate"],
               "diverged_seeds": e["diverged_seeds"], "seeds": len(e["final_accuracy"]["values"])}
              for e in document["entries"] if e["method"] in auto and e["diverged_seeds"] > 0]
  return {"references": refs, "methods": methods,
          "best_optax_lr": best["method"] if best else None,
          "best_at_least_references": at_least, "best_within_2se_of_references": within,
          "auto_methods": auto,
          "auto_diverged": diverged, "met": bool(at_least) and not diverged}


def metric_of(document: dict[str, Any]) -> tuple[str, bool]:
  """``(entry key, higher is better)`` of the document's headline measure: the final test
  accuracy (higher is better), or the final held-out loss of the language-model task (lower)."""
  metric = document.get("metric", {"key": "final_accuracy", "higher_is_better": True})
  return metric["key"], metric["higher_is_better"]


def verdict(document: dict[str, Any], recommended: str | None = None,
            peers: Sequence[str] = RATE_FREE_PEERS, tuned: str = TUNED) -> dict[str, Any]:
  """The issue's verdict on one task, from the document's entries.

  ``recommended`` (default: the document's ``"recommended"``, else :data:`RECOMMENDED`) passes
  when its worst case over the initial rates (the worst mean of the headline measure,
  :func:`metric_of`) is (a) at least the best learning-rate-free peer's worst case minus one
  standard error of their difference, and (b) at least tuned AdamW's (``tuned`` at its best rate)
  minus one standard error of their difference. "At least" is in the measure's own direction
  (for a loss: at most plus one standard error); a standard error of a difference is
  ``sqrt(se_a^2 + se_b^2)`` (:func:`~train.bench.stats.difference`).

  Returns:
    ``"recommended"``, ``"metric"``, ``"higher_is_better"``; ``"worst"`` (the recommended
    method's worst setting: ``{"mean", "se", "learning_rate"}``); ``"peers"``: name -> its worst
    setting; ``"best_peer"`` (the name whose worst case is best; None without one);
    ``"tuned"``: tuned AdamW's best setting (None when absent); ``"versus_peer"`` and
    ``"versus_tuned"``: ``{"difference", "se", "margin", "passed"}`` with ``margin`` = the
    difference in the measure's better direction plus one standard error (passed: margin >= 0
    up to :data:`~train.bench.stats.TIE`; None when a side is missing); ``"passed"``: both hold
    (False when either is missing).
  """
  key, higher = metric_of(document)
  name = recommended or document.get("recommended") or RECOMMENDED
  sign = 1.0 if higher else -1.0

  def settings(method: str) -> list[dict[str, Any]]:
    return [e for e in document["entries"] if e["method"] == method and "rejected" not in e]

  def versus(a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any] | None:
    if b is None or a["mean"] is None or b["mean"] is None:
      return None
    diff = difference(a, b)
    margin = sign * diff["difference"] + diff["se"]
    return {"difference": diff["difference"], "se": diff["se"], "margin": margin,
            "passed": margin >= -TIE}

  worst = worst_setting(settings(name), key, higher)
  found = {p: worst_setting(settings(p), key, higher) for p in peers if settings(p)}
  found = {p: w for p, w in found.items() if w["mean"] is not None}
  best_peer = max(found, key=lambda p: sign * found[p]["mean"]) if found else None
  tuned_best = best_setting(settings(tuned), key, higher) if settings(tuned) else None
  if tuned_best is not None and tuned_best["mean"] is None:
    tuned_best = None
  vs_peer = versus(worst, found.get(best_peer)) if best_peer else None
  vs_tuned = versus(worst, tuned_best)
  return {"recommended": name, "metric": key, "higher_is_better": higher, "worst": worst,
          "peers": found, "best_peer": best_peer, "tuned": tuned_best, "tuned_name": tuned,
          "versus_peer": vs_peer, "versus_tuned": vs_tuned,
          "passed": bool(vs_peer and vs_peer["passed"] and vs_tuned and vs_tuned["passed"])}


def verdict_markdown(section: dict[str, Any]) -> list[str]:
  """The verdict paragraph that opens a results page (:func:`verdict`)."""
  higher = section["higher_is_better"]
  scale, unit = (100.0, "% test accuracy") if higher else (1.0, " nats held-out loss")
  digits = 1 if higher else 3

  def value(x: dict[str, Any] | None) -> str:
    if x is None or x["mean"] is None:
      return "-"
    return f"{fmt(x, scale, digits)} (at {fmt_lr(x['learning_rate'])})"

  def diff(v: dict[str, Any] | None) -> str:
    if v is None:
      return "not compared (missing)"
    outcome = "passes" if v["passed"] else "fails"
    return (f"difference {scale * v['difference']:+.{digits}f} ± {scale * v['se']:.{digits}f}"
            f", {outcome}")

  name, peer, tuned = section["recommended"], section["best_peer"], section["tuned_name"]
  better = "higher" if higher else "lower"
  line = (f"**Verdict: {'PASS' if section['passed'] else 'FAIL'}.** `{name}`'s worst case over "
          f"the initial rates ({better} is better; mean ± s.e. over seeds): "
          f"{value(section['worst'])}{unit}. "
          f"Against the best learning-rate-free peer"
          + (f" `{peer}` {value(section['peers'][peer])}" if peer else " (none was run)")
          + f" it must not be worse by more than one s.e. of the difference: "
          f"{diff(section['versus_peer'])}. Against tuned AdamW (`{tuned}` at its best rate"
          + (f", {value(section['tuned'])}" if section["tuned"] else ", not run")
          + f"), the same rule: {diff(section['versus_tuned'])}.")
  others = "; ".join(f"`{p}` {value(w)}" for p, w in section["peers"].items() if p != peer)
  if others:
    line += f" Other learning-rate-free peers' worst cases: {others}."
  return [line, ""]


# --- reusing an earlier run

#: The settings two documents must share for entries of one to stand beside those of the other.
TASK_KEYS = ("benchmark", "dataset", "model", "batch_size", "weight_decay", "epochs", "steps",
             "task", "seeds", "learning_rates", "optimizer_options")


def task_mismatch(earlier: dict[str, Any], task: dict[str, Any]) -> str | None:
  """The first key of ``task`` whose value ``earlier`` does not share; None when all match."""
  return next((key for key, value in task.items() if earlier.get(key) != value), None)


def reuse_entries(document: dict[str, Any], earlier: dict[str, Any],
                  source: str) -> dict[str, Any]:
  """``document`` with the methods it did not run taken from ``earlier`` (an earlier run of the
  same task), its goal and verdict recomputed.

  For a change that touches some methods only (a new setting of the recommended optimizer), the
  others' runs do not change: they are reused instead of rerun, and the page says which, from
  where and from which platform. Every key of :data:`TASK_KEYS` present in either document must
  be equal (the same task, seeds, initial rates and options); otherwise a ValueError names the
  first that differs.
  """
  key = task_mismatch(earlier, {key: document.get(key) for key in TASK_KEYS})
  if key is not None:
    raise ValueError(f"cannot reuse {source}: its `{key}` is {earlier.get(key)!r}, this run's "
                     f"is {document.get(key)!r} (entries are comparable only on the same task)")
  ran = {w["method"] for w in document["worst_case"]}
  taken = [w["method"] for w in earlier["worst_case"] if w["method"] not in ran]
  merged = dict(document)
  merged["entries"] = document["entries"] + [e for e in earlier["entries"]
                                             if e["method"] in taken]
  merged["worst_case"] = document["worst_case"] + [w for w in earlier["worst_case"]
                                                   if w["method"] in taken]
  merged["reused"] = {"source": source, "methods": taken, "platform": earlier.get("platform"),
                      "wall_s": earlier.get("wall_s")}
  if "goal" in document:
    merged["goal"] = goal(merged)
  merged["verdict"] = verdict(merged)
  return merged


def reuse_markdown(document: dict[str, Any]) -> list[str]:
  """The line that names the reused entries (:func:`reuse_entries`); none when nothing was."""
  reused = document.get("reused")
  if not reused or not reused["methods"]:
    return []
  return [f"Reused from `{reused['source']}` (the same task, seeds and initial rates; "
          f"{reused['platform']}, {reused['wall_s']:.0f} s): the entries of " +
          ", ".join(f"`{m}`" for m in reused["methods"]) + "; the time above is this run's "
          "only.", ""]


# --- the comparison

def run_compare(methods: Sequence[str] | None = None, *, epochs: int | None = None,
                seeds: Sequence[int] = SEEDS, learning_rates: Sequence[float] = LEARNING_RATES,
                dataset: str = "digits", model: str = "mlp", batch_size: int = 64,
                data_dir: str | None = None, optimizer_options: dict[str, Any] | None = None,
                keep_rate_keys: bool = False, recommended: str = RECOMMENDED,
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains every method (default: the whole registry) and returns the JSON document.

  ``epochs`` defaults to the dataset's quick count (:func:`epochs_for`); ``optimizer_options``
  go to every method's registry constructor (unknown ones fail there); ``keep_rate_keys`` keeps
  every ``rate/...`` curve and AutoDrop's ``angular_velocity`` (:func:`rate_metrics`) in the
  entries, not only the representative ``rate``. The document holds the
  entries (one per method and setting), the worst cases and the goal section (:func:`goal`).
  """
  if epochs is None:
    epochs = epochs_for(dataset, quick=True)
  options = dict(optimizer_options or {})
  start = time.perf_counter()
  names = list(methods or optimizers.OPTIMIZERS)
  for name in names:  # unknown names and options fail before any training
    unknown = sorted(set(options) - set(optimizers.get_spec(name).options()))
    if unknown:
      raise ValueError(f"`optimizer_options` {unknown} are not options of {name!r}; its options "
                       f"are {sorted(optimizers.get_spec(name).options())}.")
  runner = GridRunner(dataset, data_dir)
  entries, worst = [], []
  for name in names:
    config = make_config(name, num_epochs=epochs, dataset=dataset, model=model,
                         batch_size=batch_size, data_dir=data_dir, optimizer_options=options)
    steps = runner.dataset.info.num_train // batch_size
    rates = rates_for(name, learning_rates)
    kind = method_kind(name)
    rejected = rejected_rates(name, rates or [], steps, steps * epochs, options)
    method_entries = []
    compile_s = run_s = 0.0
    if rates is None or len(rejected) < len(rates):
      kept = None if rates is None else [lr for lr in rates if lr not in rejected]
      result = runner.run(config, kept, seeds, switch_boundary(name, options, steps))
      compile_s, run_s = result.compile_seconds, result.run_seconds
      method_entries = summarize_grid(name, result, {"kind": kind}, keep_rate_keys)
      for entry in method_entries:
        entry["compile_s"] = compile_s
        entry["run_s"] = run_s
    worst.append({"method": name, "kind": kind, **worst_case(method_entries),
                  "rejected_rates": list(rejected)})
    method_entries += [rejected_entry(name, kind, lr, message, len(seeds))
                       for lr, message in rejected.items()]
    order = {lr: i for i, lr in enumerate(rates or [None])}
    method_entries.sort(key=lambda e: order[e["learning_rate"]])
    entries.extend(method_entries)
    summary = ", ".join(f"{fmt_lr(e['learning_rate'])}: best {fmt(e['best_accuracy'])} final "
                        f"{fmt(e['final_accuracy'])}" if "rejected" not in e else
                        f"{fmt_lr(e['learning_rate'])}: rejected" for e in method_entries)
    log(f"{name:>22} compile {compile_s:5.1f}s run {run_s:5.1f}s | {summary}")
  document = {"benchmark": "compare", "dataset": dataset, "model": model,
              "batch_size": batch_size,
              "weight_decay": make_config("sgd", num_epochs=1).weight_decay, "epochs": epochs,
              "seeds": list(seeds), "learning_rates": list(learning_rates),
              "optimizer_options": options, "best_fraction": BEST_FRACTION,
              "platform": platform_name(), "wall_s": time.perf_counter() - start,
              "recommended": recommended, "entries": entries, "worst_case": worst}
  document["goal"] = goal(document)
  document["verdict"] = verdict(document)
  return document


def _capped(values: np.ndarray) -> np.ndarray:
  """Held-out losses with non-finite ones and those above :data:`LM_CHANCE_LOSS` at it."""
  values = np.asarray(values, np.float64)
  return np.where(np.isfinite(values), np.minimum(values, LM_CHANCE_LOSS), LM_CHANCE_LOSS)


def summarize_lm(name: str, result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
  """One entry per initial rate of :func:`train.bench.lm.run_lm_grid`'s result: final and best
  held-out loss (capped at :data:`LM_CHANCE_LOSS`) as mean ± s.e. over seeds, the diverged seeds
  (a training loss at the end that is not finite or above :data:`LM_DIVERGED_LOSS`, 16.6
  nats: an exploded run that stays finite, 535 nats, is counted too, not only capped at chance)
  and the curves per evaluation."""
  entries = []
  for i, lr in enumerate(result["learning_rates"]):
    test = _capped(result["test_loss"][i])
    train = np.asarray(result["train_loss"][i], np.float64)
    entries.append({
        "method": name, "kind": kind, "learning_rate": lr,
        "final_loss": mean_and_standard_error(list(test[:, -1])),
        "best_loss": mean_and_standard_error(list(test.min(axis=1))),
        "diverged_seeds": int(np.sum(~(np.isfinite(train[:, -1])
                                       & (train[:, -1] <= LM_DIVERGED_LOSS)))),
        "curves": {"test_loss": curve(test), "train_loss": curve(train),
                   "rate": curve(result["rate"][i])},
        "curves_se": {"test_loss": curve_se(test), "rate": curve_se(result["rate"][i])},
        "rate_per_seed": per_seed(result["rate"][i]),
        "compile_s": result["compile_seconds"], "run_s": result["run_seconds"]})
  return entries


def rates_for(name: str, learning_rates: Sequence[float]) -> list[float] | None:
  """The initial rates a method runs at: None when it sets its own, :data:`TUNED_LEARNING_RATES`
  for the tuned baseline, ``learning_rates`` otherwise."""
  if not optimizers.get_spec(name).takes_learning_rate:
    return None
  return list(TUNED_LEARNING_RATES) if name == TUNED else list(learning_rates)


def run_lm_compare(methods: Sequence[str] | None = None, *, steps: int = LM_QUICK_STEPS,
                   seeds: Sequence[int] = SEEDS,
                   learning_rates: Sequence[float] = WIDE_LEARNING_RATES,
                   optimizer_options: dict[str, Any] | None = None,
                   recommended: str = RECOMMENDED, task: lm.LMTask | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """The language-model task (``--dataset bytes_lm``): every method (default
  :data:`ISSUE_METHODS`) trains :mod:`train.bench.lm`'s byte transformer (2 blocks, width 128,
  batch 32, 64-byte windows) for ``steps`` steps per (initial rate, seed); the document holds the
  final and best held-out next-token loss (lower is better) per setting, the worst cases and the
  verdict (:func:`verdict`)."""
  start = time.perf_counter()
  options = dict(optimizer_options or {})
  task = task or lm.LMTask(steps=steps)
  names = list(methods or ISSUE_METHODS)
  entries, worst = [], []
  for name in names:
    kind = method_kind(name)
    rates = rates_for(name, learning_rates)
    result = lm.run_lm_grid(name, rates, seeds, task=task, options=options)
    method_entries = summarize_lm(name, result, kind)
    entries.extend(method_entries)
    worst.append({"method": name, "kind": kind,
                  "final_loss": worst_setting(method_entries, "final_loss", False),
                  "best_loss": worst_setting(method_entries, "best_loss", False),
                  "diverged_seeds": sum(e["diverged_seeds"] for e in method_entries),
                  "settings": len(method_entries)})
    summary = ", ".join(f"{fmt_lr(e['learning_rate'])}: {fmt(e['final_loss'], 1.0, 3)}"
                        for e in method_entries)
    log(f"{name:>22} compile {result['compile_seconds']:5.1f}s run "
        f"{result['run_seconds']:5.1f}s | held-out loss {summary}")
  document = {"benchmark": "compare", "dataset": lm.LM_DATASET, "model": "transformer_lm",
              "metric": {"key": "final_loss", "higher_is_better": False,
                         "name": "held-out next-token loss (nats)"},
              "task": dataclasses.asdict(task), "steps": task.steps,
              "evaluations": lm.LM_EVALUATIONS, "batch_size": task.batch_size,
              "seq_len": task.seq_len, "weight_decay": 0.0, "seeds": list(seeds),
              "learning_rates": list(learning_rates), "optimizer_options": options,
              "recommended": recommended, "platform": platform_name(),
              "wall_s": time.perf_counter() - start, "entries": entries, "worst_case": worst}
  document["verdict"] = verdict(document)
  return document


def lm_markdown(document: dict[str, Any]) -> str:
  """The language-model task's page: the verdict, the worst cases and every setting."""
  def loss(x: dict[str, Any]) -> str:
    return fmt(x, 1.0, 3)

  lines = verdict_markdown(document.get("verdict") or verdict(document))
  lines += [f"Task {document['dataset']}: byte-level transformer ({document['task']['num_layers']}"
            f" blocks, width {document['task']['width']}), batch {document['batch_size']}, "
            f"{document['seq_len']}-byte windows, {document['steps']} steps, seeds "
            f"{document['seeds']}; held-out next-token loss in nats (mean ± standard error over "
            f"seeds, lower is better, capped at ln 256 = {LM_CHANCE_LOSS:.3f}). "
            f"{document['platform']}; {document['wall_s']:.0f} s in all.", "",
            *reuse_markdown(document),
            "Worst case over the initial rates {" +
            ", ".join(f"{lr:g}" for lr in document["learning_rates"]) + "} (`" + TUNED + "`: {" +
            ", ".join(f"{lr:g}" for lr in TUNED_LEARNING_RATES) + "}; methods that set their "
            "own rate have one setting):", "",
            "| method | kind | worst final loss (at rate) | worst best loss (at rate) | "
            "diverged seeds |", "| --- | --- | --- | --- | --- |"]
  ranked = sorted(document["worst_case"], key=lambda w: (w["final_loss"]["mean"] is None,
                                                         w["final_loss"]["mean"] or 0.0))
  for w in ranked:
    lines.append(f"| {w['method']} | {w['kind']} | {loss(w['final_loss'])} "
                 f"({fmt_lr(w['final_loss']['learning_rate'])}) | {loss(w['best_loss'])} "
                 f"({fmt_lr(w['best_loss']['learning_rate'])}) | {w['diverged_seeds']} |")
  lines += ["", "Every setting:", "", "| method | initial rate | final loss | best loss | "
            "diverged seeds |", "| --- | --- | --- | --- | --- |"]
  for e in document["entries"]:
    lines.append(f"| {e['method']} | {fmt_lr(e['learning_rate'])} | {loss(e['final_loss'])} | "
                 f"{loss(e['best_loss'])} | {e['diverged_seeds']} |")
  return "\n".join(lines) + "\n"


def goal_markdown(section: dict[str, Any]) -> list[str]:
  """The lines of :func:`goal`'s section: the verdict and the table of the ``optax_lr`` methods."""
  refs = section["references"]

  def final(x: dict[str, Any]) -> str:
    return f"{fmt(x)} ({fmt_lr(x['learning_rate'])})"

  lines = ["**The goal** (worst case over the initial rates, final test accuracy in %): the best "
           "`optax_lr` method's worst case at least that of each learning-rate-free reference, "
           "and no `optax_lr` \"auto\" entry diverging at any initial rate."]
  if refs:
    lines.append("References: " + "; ".join(f"`{n}` {final(r)}" for n, r in refs.items()) + ".")
  else:
    lines.append("References: none of " + ", ".join(f"`{n}`" for n in REFERENCES) +
                 " was run.")
  best = section["methods"][0] if section["methods"] else None
  if best is None:
    lines.append("No `optax_lr` method was run.")
  else:
    versus = ", ".join(f"{fmt_versus(d)} against `{n}`" for n, d in best["versus"].items())
    verdict = {True: "at least", False: "below", None: "not compared with"}[
        section["best_at_least_references"]]
    noise = ""
    if section["best_at_least_references"] is False:
      noise = (" (within two standard errors of each)"
               if section["best_within_2se_of_references"]
               else " (by more than two standard errors of at least one)")
    lines.append(f"Best `optax_lr` method: `{best['method']}`, {final(best)}"
                 + (f": {versus} (points; in standard errors of the difference)" if versus
                    else "") + f"; its worst case is {verdict} the references'{noise}.")
  auto = section["auto_methods"]
  if not auto:
    lines.append("No \"auto\" entry was run.")
  elif section["auto_diverged"]:
    lines.append("\"Auto\" entries that diverged: " + "; ".join(
        f"`{d['method']}` at {fmt_lr(d['learning_rate'])} ({d['diverged_seeds']} of "
        f"{d['seeds']} seeds)"
        for d in section["auto_diverged"]) + f" (of {', '.join(f'`{a}`' for a in auto)}).")
  else:
    lines.append(f"No \"auto\" entry diverged ({', '.join(f'`{a}`' for a in auto)}, every "
                 "initial rate and seed).")
  lines.append(f"Goal {'reached' if section['met'] else 'not reached'} on this task.")
  text = [" ".join(lines), ""]
  if best is not None:
    text += ["| `optax_lr` method | worst final acc. (at rate) |" +
             "".join(f" minus `{n}`: points (s.e.) |" for n in refs),
             "| --- | --- |" + " --- |" * len(refs)]
    for m in section["methods"]:
      cells = "".join(f" {fmt_versus(m['versus'][n])} |" for n in refs)
      text.append(f"| {m['method']} | {final(m)} |{cells}")
  return text


def markdown(document: dict[str, Any]) -> str:
  """The goal section (:func:`goal`), the worst-case table (methods ranked by worst final
  accuracy) and the per-setting table."""
  lines = [f"Dataset {document['dataset']}, model {document['model']}, batch "
           f"{document['batch_size']}, weight decay {document['weight_decay']:g}, "
           f"{document['epochs']} epochs, seeds {document['seeds']}; accuracy in % (mean ± "
           "standard error over seeds); epochs to 95% = first epoch reaching 95% of the run's "
           f"own best accuracy. {document['platform']}; {document['wall_s']:.0f} s in all.", ""]
  lines = verdict_markdown(document.get("verdict") or verdict(document)) + lines
  lines += reuse_markdown(document)
  lines += goal_markdown(document["goal"] if "goal" in document else goal(document))
  lines += ["", "Worst case over the initial rates {" +
            ", ".join(f"{lr:g}" for lr in document["learning_rates"]) + "} (methods that set "
            "their own rate have one setting):", "",
            "| method | kind | worst best acc. (at rate) | worst final acc. (at rate) | "
            "final-acc. spread over rates | most epochs to 95% (at rate) | diverged seeds |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  ranked = sorted(document["worst_case"], key=lambda w: -(w["final_accuracy"]["value"] or 0.0))
  for w in ranked:
    spread = w["final_accuracy_spread"] if w["settings"] > 1 else None
    lines.append(
        f"| {w['method']} | {w['kind']} | {fmt_worst(w['best_accuracy'])} | "
        f"{fmt_worst(w['final_accuracy'])} | {fmt_value(spread)} | "
        f"{fmt_worst(w['epochs_to_fraction_of_best'], 1.0)} | {w.get('diverged_seeds', 0)} |")
  rejected = [e for e in document["entries"] if "rejected" in e]
  if rejected:
    lines += ["", "Left out (the constructor rejects the initial rate): " + "; ".join(
        f"{e['method']} at {fmt_lr(e['learning_rate'])} ({e['rejected'].split(';')[0]})"
        for e in rejected) + "."]
  lines += ["", "Every setting:", "",
            "| method | initial rate | best acc. | final acc. | epochs to 95% of best | "
            "diverged seeds |", "| --- | --- | --- | --- | --- | --- |"]
  for e in document["entries"]:
    if "rejected" in e:
      lines.append(f"| {e['method']} | {fmt_lr(e['learning_rate'])} | rejected | - | - | - |")
      continue
    lines.append(f"| {e['method']} | {fmt_lr(e['learning_rate'])} | {fmt(e['best_accuracy'])} "
                 f"| {fmt(e['final_accuracy'])} | "
                 f"{fmt(e['epochs_to_fraction_of_best'], 1.0)} | {e['diverged_seeds']} |")
  return "\n".join(lines) + "\n"


# --- figures

def plot_compare(document: dict[str, Any], key: str, path: str, ylabel: str,
                 log_scale: bool = False) -> None:
  """One panel per method, one curve per initial rate of ``curves[key]``: the mean over seeds
  with a band of ± one standard error where the entry has ``curves_se[key]``."""
  plt = pyplot()
  methods = list(dict.fromkeys(e["method"] for e in document["entries"]))
  columns = min(6, len(methods))
  rows = -(-len(methods) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.1 * rows), squeeze=False,
                           sharex=True)
  for ax, name in zip(axes.flat, methods, strict=False):
    for e in (e for e in document["entries"] if e["method"] == name):
      values = np.array([np.nan if v is None else v for v in e["curves"][key]], np.float64)
      epochs = np.arange(1, len(values) + 1)
      (line,) = ax.plot(epochs, values, label=fmt_lr(e["learning_rate"]))
      se = e.get("curves_se", {}).get(key)
      if se is not None:
        se = np.array([np.nan if v is None else v for v in se], np.float64)
        low, high = values - se, values + se
        if log_scale:  # a band reaching zero or below has no place on a log axis
          low = np.where(low > 0, low, np.nan)
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_title(name, fontsize=8)
    ax.tick_params(labelsize=6)
    if log_scale and any(v is not None and v > 0 for e in document["entries"]
                         if e["method"] == name for v in e["curves"][key]):
      ax.set_yscale("log")
      ax.tick_params(labelsize=6, which="both")  # a log axis labels its minor ticks too
    elif key == "test_accuracy":
      ax.set_ylim(ACCURACY_AXIS_FLOOR.get(document["dataset"], 0.0), 1.0)
  for ax in list(axes.flat)[len(methods):]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.suptitle(f"{ylabel} per epoch ({document['dataset']}, {document['model']}, mean ± s.e. "
               f"over {len(document['seeds'])} seeds)", fontsize=10, x=0.01, ha="left")
  # Above the panels, right of the title: a full last row leaves no free panel for it.
  fig.legend(handles, labels, title="initial rate", loc="upper right", fontsize=7,
             title_fontsize=7, ncol=max(1, len(labels)), frameon=False)
  fig.supxlabel("epoch", fontsize=8)
  fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.45 / fig.get_figheight()))
  save_figure(fig, path)


# --- command line

def epochs_for(dataset: str, quick: bool) -> int:
  """The default epochs of a ``dataset`` (:data:`QUICK_EPOCHS` / :data:`FULL_EPOCHS`; a dataset
  without its own count gets the digits')."""
  table = QUICK_EPOCHS if quick else FULL_EPOCHS
  return table.get(dataset, table["digits"])


def default_paths(benchmark: str, quick: bool, out: str | None,
                  dataset: str = "digits") -> tuple[str, str, str]:
  """``(json, markdown, figure prefix)``: ``docs/results/<name>.json`` and ``.md``, figures
  ``docs/figures/bench_<name>_*.png``; ``<name>`` is ``benchmark``, then ``_<dataset>`` for a
  dataset other than the digits (so each task keeps its own files), then ``_quick`` for quick
  runs. With ``out``, everything goes beside it under its stem (figures in the figures folder when
  ``out`` is among the results pages)."""
  stem = benchmark + ("" if dataset == "digits" else f"_{dataset}") + ("_quick" if quick else "")
  json_path = out or os.path.join(RESULTS_DIR, stem + ".json")
  stem = os.path.splitext(os.path.basename(json_path))[0]
  # An --out among the results pages keeps its figures with the others.
  in_results = os.path.abspath(os.path.dirname(json_path)) == os.path.abspath(RESULTS_DIR)
  figures = FIGURES_DIR if out is None or in_results else os.path.dirname(json_path) or "."
  return (json_path, os.path.splitext(json_path)[0] + ".md",
          os.path.join(figures, f"bench_{stem}"))


def main(argv: list[str]) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m train.bench compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="fewer epochs (per dataset: " + ", ".join(
                          f"{d} {QUICK_EPOCHS[d]} instead of {FULL_EPOCHS[d]}"
                          for d in FULL_EPOCHS) + f"; {lm.LM_DATASET}: {LM_QUICK_STEPS} steps "
                      f"instead of {LM_FULL_STEPS})")
  parser.add_argument("--out", help="JSON output (default docs/results/compare[_DATASET]"
                      "[_quick].json, no _DATASET for the digits); the markdown goes beside it, "
                      "figures too when --out is given")
  parser.add_argument("--dataset", default="digits",
                      choices=[*input_pipeline.DATASETS, lm.LM_DATASET],
                      help=f"{lm.LM_DATASET}: the byte-level transformer language model on "
                      "standard-library sources (held-out next-token loss)")
  parser.add_argument("--data-dir", default=None, help="TFDS data directory")
  parser.add_argument("--model", default=None, help="a name of models.MODELS (default: " +
                      ", ".join(f"{m} for {d}" for d, m in DEFAULT_MODELS.items()) +
                      ", mlp otherwise; ignored for the language model)")
  parser.add_argument("--batch-size", type=int, default=64, help="(images; the language model "
                      "uses 32)")
  parser.add_argument("--methods", nargs="*", choices=list(optimizers.OPTIMIZERS),
                      help="default: every registry entry; for " + ", ".join(WIDE_DATASETS) +
                      ": " + " ".join(ISSUE_METHODS))
  parser.add_argument("--epochs", type=int, help="override the number of epochs")
  parser.add_argument("--steps", type=int, help=f"override the steps of {lm.LM_DATASET} (a "
                      f"multiple of {lm.LM_EVALUATIONS})")
  parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0, 1, ...)")
  parser.add_argument("--learning-rates", type=float, nargs="*", default=None,
                      help="default: " + " ".join(f"{lr:g}" for lr in LEARNING_RATES) +
                      "; for " + ", ".join(WIDE_DATASETS) + ": " +
                      " ".join(f"{lr:g}" for lr in WIDE_LEARNING_RATES) + f" (`{TUNED}` always "
                      "runs at " + " ".join(f"{lr:g}" for lr in TUNED_LEARNING_RATES) + ")")
  parser.add_argument("--recommended", default=RECOMMENDED,
                      help=f"the registry entry the verdict judges (default {RECOMMENDED})")
  parser.add_argument("--options", type=json.loads, default={},
                      help="registry options for every method, as a JSON object "
                      "(e.g. '{\"drop_delay\": 5}')")
  parser.add_argument("--reuse", metavar="JSON", default=None,
                      help="an earlier run of the same task (same seeds, rates and options): "
                      "the methods this run does not train are taken from it, and the page "
                      "says so")
  parser.add_argument("--rate-keys", action="store_true",
                      help="keep every rate/... curve and AutoDrop's angular velocity in the JSON")
  args = parser.parse_args(argv)
  if not isinstance(args.options, dict):
    parser.error(f"--options must be a JSON object, got {args.options!r}")
  wide = args.dataset in WIDE_DATASETS
  rates = args.learning_rates or list(WIDE_LEARNING_RATES if wide else LEARNING_RATES)
  methods = args.methods or (list(ISSUE_METHODS) if wide else None)
  earlier = None
  if args.reuse:  # checked before any training: the task's keys known from the arguments
    with open(args.reuse) as f:
      earlier = json.load(f)
    known = {"dataset": args.dataset, "seeds": list(range(args.seeds)),
             "learning_rates": list(rates), "optimizer_options": args.options}
    if args.dataset == lm.LM_DATASET:
      known["steps"] = args.steps or (LM_QUICK_STEPS if args.quick else LM_FULL_STEPS)
    else:
      known["epochs"] = args.epochs or epochs_for(args.dataset, args.quick)
    key = task_mismatch(earlier, known)
    if key is not None:
      parser.error(f"--reuse {args.reuse}: its `{key}` is {earlier.get(key)!r}, this run's "
                   f"would be {known[key]!r} (entries are comparable only on the same task)")
  if args.dataset == lm.LM_DATASET:
    steps = args.steps or (LM_QUICK_STEPS if args.quick else LM_FULL_STEPS)
    document = run_lm_compare(methods, steps=steps, seeds=tuple(range(args.seeds)),
                              learning_rates=rates, optimizer_options=args.options,
                              recommended=args.recommended)
    render = lm_markdown
    curve_key, label = "test_loss", "held-out loss"
  else:
    epochs = args.epochs or epochs_for(args.dataset, args.quick)
    model = args.model or DEFAULT_MODELS.get(args.dataset, "mlp")
    document = run_compare(methods, epochs=epochs, seeds=tuple(range(args.seeds)),
                           learning_rates=rates, dataset=args.dataset, model=model,
                           batch_size=args.batch_size, data_dir=args.data_dir,
                           optimizer_options=args.options, keep_rate_keys=args.rate_keys,
                           recommended=args.recommended)
    render = markdown
    curve_key, label = "test_accuracy", "test accuracy"
  document["quick"] = args.quick
  if earlier is not None:
    document = reuse_entries(document, earlier, args.reuse)
  table = render(document)
  json_path, md_path, figure_prefix = default_paths("compare", args.quick, args.out,
                                                    args.dataset)
  print(table)
  write_json(json_path, document)
  io_utils.write_atomic(md_path, table)
  suffix = "accuracy" if curve_key == "test_accuracy" else "loss"
  plot_compare(document, curve_key, f"{figure_prefix}_{suffix}.png", label)
  plot_compare(document, "rate", figure_prefix + "_rates.png", "learning rate", log_scale=True)
  print(f"wrote {json_path}, {md_path}, {figure_prefix}_{{{suffix},rates}}.png")
