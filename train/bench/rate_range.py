"""What the hypergradient sees as the rate grows: ``python -m train.bench rate-range``.

The hypergradient presets (:func:`optax_lr.auto_adam_hd`; :func:`optax_lr.auto_adam`'s decay
without a run length uses the same signal) learn their rate from the cosine of the incoming
gradient and Adam's previous direction, ``cos(g_t, d_{t-1})``: the rate search doubles
the rate while it is positive, and the rule then moves the rate by ``1 + beta cos`` per step. This
benchmark measures that signal over the whole range of rates, the way a learning-rate range test
does: plain Adam from the same initialisation and batch stream as the comparison benchmark, its
rate doubled every ``steps_per_rate`` steps from ``start`` upward, and per rate the mean of the
cosine over those steps, its spread over the seeds, and the mean training loss.

Where the cosine falls steadily as the rate grows (a curvature signal), the search and the rule
can find a rate; where it is zero within its noise over a wide range of rates, no hypergradient
rule can tell those rates apart, and the rate ends wherever the search stopped. The JSON and
markdown go to ``docs/results/rate_range_<task>.{json,md}``.

``python -m train.bench rate-range --task bytes_lm`` (about 2 minutes) and ``--task shapes``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import optax_lr
from optax_lr import _rate_rule
from train import input_pipeline, io_utils
from train.bench import lm
from train.bench.report import RESULTS_DIR, platform_name, write_json

#: The tasks: the comparison's language model and its shapes CNN.
TASKS = (lm.LM_DATASET, "shapes")
SEEDS = (0, 1, 2)


def _lm_task(seed: int, steps: int) -> tuple[Any, Callable[..., Any], Callable[[int], Any]]:
  task = lm.LMTask(steps=steps)
  model = task.model()
  xs, ys = lm._stream(task.corpus(), seed, task)
  params = model.init(jax.random.key(seed), jnp.asarray(xs[0, :1]))["params"]
  return params, functools.partial(lm._loss, model), lambda t: (xs[t], ys[t])


def _shapes_task(seed: int, steps: int, batch_size: int = 64
                 ) -> tuple[Any, Callable[..., Any], Callable[[int], Any]]:
  dataset = input_pipeline.load("shapes")
  images, labels = input_pipeline.read_all(dataset.train)
  images = np.asarray(input_pipeline.normalize(jnp.asarray(images), dataset.info))
  model = models.create_model("patch_cnn", num_classes=dataset.info.num_classes)
  params = model.init(jax.random.key(seed), jnp.zeros((1, *images.shape[1:])))["params"]
  rng = np.random.default_rng(seed)
  order = [rng.integers(0, len(images), batch_size) for _ in range(steps)]

  def loss(p, x, y):
    logits = model.apply({"params": p}, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  return params, loss, lambda t: (images[order[t]], labels[order[t]])


def range_test(task: str, seed: int, *, start: float = 1e-5, doublings: int = 17,
               steps_per_rate: int = 4) -> dict[str, list[float]]:
  """Adam with its rate doubled every ``steps_per_rate`` steps from ``start``; per rate, the mean
  ``cos(g_t, d_{t-1})`` (``d`` read off Adam's moments, as :func:`optax_lr.auto_adam_hd` does) and
  the mean training loss over its steps."""
  steps = doublings * steps_per_rate
  make = _lm_task if task == lm.LM_DATASET else _shapes_task
  params, loss, batch = make(seed, steps)
  adam = optax.scale_by_adam()
  previous = optax_lr.adam_previous_direction(0.9, 0.999, 1e-8)

  @jax.jit
  def step(params, state, x, y, rate):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    cos = _rate_rule.cosine(*_rate_rule.tree_dot_and_norms(grads, previous(state)))
    direction, state = adam.update(grads, state)
    return jax.tree.map(lambda p, d: p - rate * d, params, direction), state, value, cos

  state = adam.init(params)
  rates, cosines, losses = [], [], []
  for k in range(doublings):
    rate = start * 2.0 ** k
    cos_k, loss_k = [], []
    for t in range(k * steps_per_rate, (k + 1) * steps_per_rate):
      params, state, value, cos = step(params, state, *batch(t), jnp.float32(rate))
      if t > 0:  # the first step has no previous direction
        cos_k.append(float(cos))
      loss_k.append(float(value))
    rates.append(rate)
    cosines.append(float(np.mean(cos_k)))
    losses.append(float(np.mean(loss_k)))
  return {"rate": rates, "cosine": cosines, "loss": losses}


def run(task: str, seeds: Sequence[int] = SEEDS, **options: Any) -> dict[str, Any]:
  """Every seed's range test and the per-rate mean and standard error over seeds."""
  start = time.perf_counter()
  runs = [range_test(task, seed, **options) for seed in seeds]
  cosines = np.asarray([r["cosine"] for r in runs])
  losses = np.asarray([r["loss"] for r in runs])
  n = len(seeds)
  se = (cosines.std(axis=0, ddof=1) / np.sqrt(n)) if n > 1 else np.zeros(cosines.shape[1])
  return {"benchmark": "rate_range", "task": task, "seeds": list(seeds), "options": options,
          "rate": runs[0]["rate"], "cosine_mean": cosines.mean(axis=0).tolist(),
          "cosine_se": se.tolist(), "loss_mean": losses.mean(axis=0).tolist(),
          "per_seed": runs, "platform": platform_name(),
          "wall_s": time.perf_counter() - start}


def markdown(document: dict[str, Any]) -> str:
  """One row per rate: the mean cosine ± its standard error over seeds, and the mean loss."""
  options = document["options"]
  lines = [f"Task {document['task']}: Adam, the rate doubled every "
           f"{options.get('steps_per_rate', 4)} steps; seeds {document['seeds']}; mean over each "
           "rate's steps, then mean ± standard error over seeds. "
           f"{document['platform']}; {document['wall_s']:.0f} s.", "",
           "| rate | cos(g_t, d_t-1) | training loss |", "| --- | --- | --- |"]
  for rate, c, s, loss in zip(document["rate"], document["cosine_mean"], document["cosine_se"],
                              document["loss_mean"], strict=True):
    lines.append(f"| {rate:.1e} | {c:+.3f} ± {s:.3f} | {loss:.3f} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  import argparse
  import os

  parser = argparse.ArgumentParser(prog="python -m train.bench rate-range", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", choices=TASKS, default=lm.LM_DATASET)
  parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0, 1, ...)")
  parser.add_argument("--start", type=float, default=1e-5, help="the first rate (> 0)")
  parser.add_argument("--doublings", type=int, default=17, help="rates tried (>= 1)")
  parser.add_argument("--steps-per-rate", type=int, default=4, help="steps at each rate (>= 2)")
  parser.add_argument("--out", default=None, help="JSON output (default docs/results/"
                      "rate_range_<task>.json; the markdown goes beside it)")
  args = parser.parse_args(argv)
  if not args.start > 0:
    parser.error(f"--start must be > 0; got {args.start}")
  if args.doublings < 1 or args.steps_per_rate < 2 or args.seeds < 1:
    parser.error("--doublings must be >= 1, --steps-per-rate >= 2 and --seeds >= 1")
  document = run(args.task, tuple(range(args.seeds)), start=args.start,
                 doublings=args.doublings, steps_per_rate=args.steps_per_rate)
  path = args.out or os.path.join(RESULTS_DIR, f"rate_range_{args.task}.json")
  text = markdown(document)
  print(text)
  write_json(path, document)
  io_utils.write_atomic(os.path.splitext(path)[0] + ".md", text)
  print(f"wrote {path}")
