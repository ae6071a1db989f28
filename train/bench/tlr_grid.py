"""TLR's robustness grid on digits: ``python -m train.bench tlr-grid``.

The setting of "Trainable Learning Rate" (anonymous authors, under review at ICLR 2021) for its SGD
runs: ``tlr_sgd`` with momentum 0.8, coupled weight decay 5e-4, a window of a third of an epoch
and the bound ``c = 1/4``, over the initial rates {1e-3, 1e-2, 1e-1} x batch sizes {64, 128, 256}
x 3 seeds, 30 epochs, on the embedded digits with the default MLP. Both readings of the window sum
run (``window_sum="gradient"``, the default, and ``"displacement"``); the verdict is whether every
run of each reading ends at or above :data:`TARGET` test accuracy.

Each (reading, batch) pair is one compiled program of :class:`train.bench.grid.GridRunner`:
the training loop's own ``train_step`` under ``jax.vmap`` over the initial rates and the seeds, so
the whole grid is six programs (about a minute on two CPU cores). Results go to
``docs/results/tlr_grid.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from train import io_utils
from train.bench import grid, report, stats

#: The grid of the paper's Figure 1.
LEARNING_RATES = (1e-3, 1e-2, 1e-1)
BATCH_SIZES = (64, 128, 256)
SEEDS = (0, 1, 2)
EPOCHS = 30
READINGS = ("gradient", "displacement")
#: The final test accuracy every run should reach.
TARGET = 0.95
#: The paper's SGD setting.
OPTIONS = {"momentum": 0.8, "window_fraction": 1 / 3, "bound": 0.25}
WEIGHT_DECAY = 5e-4


def run_grid(*, epochs: int = EPOCHS, readings: Sequence[str] = READINGS,
             batch_sizes: Sequence[int] = BATCH_SIZES,
             learning_rates: Sequence[float] = LEARNING_RATES, seeds: Sequence[int] = SEEDS,
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains the grid for each reading; returns the JSON document (entries and verdict)."""
  start = time.perf_counter()
  runner = grid.GridRunner("digits")
  entries = []
  for reading in readings:
    for batch in batch_sizes:
      config = grid.make_config(
          "tlr_sgd", num_epochs=epochs, batch_size=batch, weight_decay=WEIGHT_DECAY,
          optimizer_options={**OPTIONS, "window_sum": reading})
      with warnings.catch_warnings():
        # The displacement reading's short-window warning is what this grid measures.
        warnings.filterwarnings("ignore", message=r"tlr_sgd\(window_sum='displacement'\)")
        result = runner.run(config, list(learning_rates), seeds)
      steps = len(runner.dataset.train_labels) // batch
      for i, lr in enumerate(result.learning_rates):
        accuracy = result.metrics["test_accuracy"][i]
        rate = result.metrics["rate"][i]
        finals = [float(a[-1]) for a in accuracy]
        entry = {"window_sum": reading, "batch_size": batch, "learning_rate": lr,
                 "steps_per_epoch": steps,
                 "update_every": max(1, round(OPTIONS["window_fraction"] * steps)),
                 **stats.summarize_setting(accuracy, result.metrics["train_loss"][i]),
                 "min_final_accuracy": min(finals),
                 "final_rate": [stats.finite_or_none(r[-1]) for r in rate],
                 "max_rate": [stats.finite_or_none(np.nanmax(r)) if np.isfinite(r).any()
                              else None for r in rate],
                 "curves": {k: stats.curve(result.metrics[k][i])
                            for k in ("test_accuracy", "train_loss", "rate")},
                 "compile_s": result.compile_seconds, "run_s": result.run_seconds}
        entries.append(entry)
      log(f"{reading:>12} batch {batch:3d}: compile {result.compile_seconds:5.1f}s run "
          f"{result.run_seconds:5.1f}s | " + ", ".join(
              f"{e['learning_rate']:g}: final {report.fmt(e['final_accuracy'])} "
              f"(min {100 * e['min_final_accuracy']:.1f})"
              for e in entries if e["window_sum"] == reading and e["batch_size"] == batch))
  return {"benchmark": "tlr-grid", "dataset": "digits", "model": "mlp", "optimizer": "tlr_sgd",
          "options": OPTIONS, "weight_decay": WEIGHT_DECAY, "epochs": epochs,
          "seeds": list(seeds), "learning_rates": list(learning_rates),
          "batch_sizes": list(batch_sizes), "target": TARGET, "platform": report.platform_name(),
          "wall_s": time.perf_counter() - start, "entries": entries,
          "verdict": verdict(entries, readings)}


def verdict(entries: Sequence[dict[str, Any]], readings: Sequence[str],
            target: float = TARGET) -> dict[str, Any]:
  """Per reading: how many runs (every seed of every setting) end at or above ``target``.

  A run whose final accuracy is None (not finite) counts as below the target.
  """
  result = {}
  for reading in readings:
    finals = [v for e in entries if e["window_sum"] == reading
              for v in e["final_accuracy"]["values"]]
    reached = [v is not None and v >= target for v in finals]
    kept = [v for v in finals if v is not None]
    result[reading] = {"runs": len(finals), "runs_at_or_above_target": int(sum(reached)),
                       "min_final_accuracy": min(kept, default=None),
                       "max_final_accuracy": max(kept, default=None),
                       "every_run_at_or_above_target": bool(finals) and all(reached)}
  return result


def markdown(document: dict[str, Any]) -> str:
  """One row per (batch, initial rate), one column group per reading."""
  readings = list(document["verdict"])
  lines = [f"`tlr_sgd` on digits (MLP), momentum {document['options']['momentum']}, weight decay "
           f"{document['weight_decay']:g}, window {document['options']['window_fraction']:.3g} of "
           f"an epoch, c = {document['options']['bound']}, {document['epochs']} epochs, seeds "
           f"{document['seeds']}. Final test accuracy in % (mean ± standard error over seeds; "
           "min = the worst seed) and the final rate (mean over seeds). "
           f"{document['platform']}; {document['wall_s']:.0f} s in all.", ""]
  header = "| batch | window (steps) | initial rate |"
  rule = "| --- | --- | --- |"
  for reading in readings:
    header += f" {reading}: final acc. | min | final rate |"
    rule += " --- | --- | --- |"
  lines += [header, rule]
  for batch in document["batch_sizes"]:
    for lr in document["learning_rates"]:
      row = None
      for reading in readings:
        e = next(e for e in document["entries"] if e["window_sum"] == reading
                 and e["batch_size"] == batch and e["learning_rate"] == lr)
        if row is None:
          row = f"| {batch} | {e['update_every']} | {lr:g} |"
        rates = [r for r in e["final_rate"] if r is not None]
        rate = f"{np.mean(rates):.3g}" if rates else "nan"
        row += (f" {report.fmt(e['final_accuracy'])} | {100 * e['min_final_accuracy']:.1f} | "
                f"{rate} |")
      lines.append(row)
  lines.append("")
  for reading, v in document["verdict"].items():
    low = "-" if v["min_final_accuracy"] is None else f"{100 * v['min_final_accuracy']:.1f}"
    high = "-" if v["max_final_accuracy"] is None else f"{100 * v['max_final_accuracy']:.1f}"
    lines.append(f"- `window_sum=\"{reading}\"`: {v['runs_at_or_above_target']} of {v['runs']} "
                 f"runs end at or above {100 * document['target']:.0f}% (final accuracy "
                 f"{low}–{high}%).")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m train.bench tlr-grid", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--epochs", type=int, default=EPOCHS)
  parser.add_argument("--readings", nargs="*", choices=READINGS, default=list(READINGS))
  parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0, 1, ...)")
  parser.add_argument("--out", help="JSON output (default docs/results/tlr_grid.json); the "
                      "markdown goes beside it")
  args = parser.parse_args(argv)
  document = run_grid(epochs=args.epochs, readings=args.readings, seeds=tuple(range(args.seeds)))
  json_path = args.out or "docs/results/tlr_grid.json"
  md_path = json_path.rsplit(".", 1)[0] + ".md"
  table = markdown(document)
  print(table)
  report.write_json(json_path, document)
  io_utils.write_atomic(md_path, table)
  print(f"wrote {json_path}, {md_path}")
