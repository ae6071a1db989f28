"""Every method side by side on one small task: ``python -m train.bench compare``.

Every optimizer of the registry (``train.optimizers``: the ``optax_lr`` methods, the papers'
baselines -- multistep SGD, Adam, SLS and SPS for Trainable Learning Rate, L4 over Adam and
momentum and AdaBound for Adaptive Hierarchical Hyper-gradient Descent -- and the peers a user
would pick instead) trains the same model on the same data, over the initial rates
{1e-4, 1e-3, 1e-2, 1e-1} (three orders of magnitude) for the methods that take one (the
registry's ``takes_learning_rate``) and over 3 seeds. Two embedded tasks need no download: the
digits (the default) and ``digits_warped`` (8 random affine warps with pixel noise of every digit,
harder). Per method and setting the benchmark reports the best and the final test accuracy, the
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
import functools
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr
from train import input_pipeline, io_utils, optimizers
from train import train as training
from train.configs import Config, get_config

#: The initial rates of the grid (for methods that take one): three orders of magnitude.
LEARNING_RATES = (1e-4, 1e-3, 1e-2, 1e-1)
#: Seeds per setting.
SEEDS = (0, 1, 2)
#: Epochs of a ``--quick`` run and of a full run, per dataset (others: those of the digits).
#: ``digits_warped`` has 8x the digits' steps per epoch (179 against 22): 20 epochs are 3,580
#: steps per run, and the whole registry's run stays near 15 minutes on 2 CPU cores (about 200 s of
#: compiling and tracing plus 30 s per epoch, measured).
QUICK_EPOCHS = {"digits": 10, "digits_warped": 5}
FULL_EPOCHS = {"digits": 30, "digits_warped": 20}
#: The learning-rate-free peers the goal section compares against (registry names).
REFERENCES = ("prodigy", "dadapt_adamw")
#: Registry entries named with this suffix are the library's "auto" (robust-default) entries.
AUTO_SUFFIX = "_auto"
#: "Epochs to reach this fraction of the best test accuracy" is the speed measure.
BEST_FRACTION = 0.95

#: The lower end of the accuracy axis of the figures, per dataset (others: 0).
ACCURACY_AXIS_FLOOR = {"digits": 0.5, "digits_warped": 0.3}

RESULTS_DIR = os.path.join("docs", "results")
FIGURES_DIR = os.path.join("docs", "figures")

PyTree = Any


# --- aggregation (pure numpy; tested on hand-made curves)

def epochs_to_fraction_of_best(accuracy: Sequence[float],
                               fraction: float = BEST_FRACTION) -> int | None:
  """The first epoch (1-based) whose accuracy reaches ``fraction`` of the curve's best.

  Non-finite entries never count as reached. None when the curve has no finite value.

  Example: ``[0.5, 0.9, 0.96, 1.0]`` with 0.95 -> 3 (0.96 >= 0.95 * 1.0).
  """
  values = np.asarray(accuracy, np.float64)
  finite = np.isfinite(values)
  if not finite.any():
    return None
  target = fraction * np.max(values[finite])
  reached = np.flatnonzero(finite & (values >= target))
  return int(reached[0]) + 1


def mean_and_standard_error(values: Sequence[float | None]) -> dict[str, Any]:
  """``{"mean", "se", "n", "values"}`` over the finite values (None and NaN are left out).

  The standard error is ``std(ddof=1) / sqrt(n)``; None when fewer than two values remain.
  """
  kept = [float(v) for v in values if v is not None and math.isfinite(v)]
  n = len(kept)
  mean = float(np.mean(kept)) if n else None
  se = float(np.std(kept, ddof=1) / math.sqrt(n)) if n > 1 else None
  return {"mean": mean, "se": se, "n": n, "values": [_finite_or_none(v) for v in values]}


def summarize_setting(accuracy: np.ndarray, train_loss: np.ndarray | None = None,
                      fraction: float = BEST_FRACTION) -> dict[str, Any]:
  """Best and final test accuracy and epochs to ``fraction`` of the best, over seeds.

  Args:
    accuracy: ``(seeds, epochs)`` test accuracy.
    train_loss: ``(seeds, epochs)`` training loss; a seed whose final loss is not finite counts as
      diverged.
    fraction: the share of the best accuracy that counts as reached.

  Returns:
    ``{"best_accuracy", "final_accuracy", "epochs_to_fraction_of_best"}`` (each
    :func:`mean_and_standard_error` over seeds; epochs measured on each seed's own curve) and
    ``"diverged_seeds"``.
  """
  accuracy = np.asarray(accuracy, np.float64)
  best = [float(np.nanmax(a)) if np.isfinite(a).any() else None for a in accuracy]
  final = [float(a[-1]) for a in accuracy]
  epochs = [epochs_to_fraction_of_best(a, fraction) for a in accuracy]
  diverged = 0
  if train_loss is not None:
    diverged = int(np.sum(~np.isfinite(np.asarray(train_loss)[:, -1])))
  return {"best_accuracy": mean_and_standard_error(best),
          "final_accuracy": mean_and_standard_error(final),
          "epochs_to_fraction_of_best": mean_and_standard_error(epochs),
          "diverged_seeds": diverged}


def worst_case(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The worst case of one method over its settings (initial rates).

  Lowest mean best accuracy, lowest mean final accuracy and highest mean epochs-to-95%, each with
  its standard error over seeds and the rate where it happens (the first such setting on a tie),
  plus the spread (max - min) of the mean final accuracy.

  Args:
    entries: the method's entries as :func:`summarize_setting` returns them, each with a
      ``"learning_rate"`` key.

  Returns:
    ``{"best_accuracy", "final_accuracy", "epochs_to_fraction_of_best"}``, each
    ``{"value", "se", "learning_rate"}`` (all None when no setting has a number), and
    ``"final_accuracy_spread"``, ``"diverged_seeds"`` (summed over the settings), ``"settings"``.
  """
  def pick(key: str, worst: Callable[[Sequence[float]], float]) -> dict[str, Any]:
    scored = [e for e in entries if e[key]["mean"] is not None]
    if not scored:
      return {"value": None, "se": None, "learning_rate": None}
    value = worst([e[key]["mean"] for e in scored])
    chosen = next(e for e in scored if e[key]["mean"] == value)
    return {"value": value, "se": chosen[key].get("se"), "learning_rate": chosen["learning_rate"]}

  finals = [e["final_accuracy"]["mean"] for e in entries if e["final_accuracy"]["mean"] is not None]
  return {"best_accuracy": pick("best_accuracy", min),
          "final_accuracy": pick("final_accuracy", min),
          "epochs_to_fraction_of_best": pick("epochs_to_fraction_of_best", max),
          "final_accuracy_spread": (max(finals) - min(finals)) if finals else None,
          "diverged_seeds": sum(e.get("diverged_seeds", 0) for e in entries),
          "settings": len(entries)}


def goal(document: dict[str, Any], references: Sequence[str] = REFERENCES) -> dict[str, Any]:
  """The issue's goal on one task, from the document's entries and worst cases.

  The goal: the best ``optax_lr`` method's worst case over the initial rates (lowest mean final
  accuracy) is at least that of each learning-rate-free reference, and no ``optax_lr`` "auto"
  entry (a name ending in :data:`AUTO_SUFFIX`) diverges at any initial rate.

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
    whether its difference to every reference is >= 0 up to float rounding (``claims.TIE``;
    None without a reference); ``"best_within_2se_of_references"``: whether it is at most two
    standard errors of the difference below every reference;
    ``"auto_diverged"``: ``{"method", "learning_rate", "diverged_seeds", "seeds"}`` of every
    setting of an auto entry with a diverged seed; ``"auto_methods"``: the auto entries found;
    ``"met"``: both parts of the goal hold.
  """
  from train.bench.claims import TIE, difference  # claims imports this module

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
  auto = [w["method"] for w in ranked if w["method"].endswith(AUTO_SUFFIX)]
  diverged = [{"method": e["method"], "learning_rate": e["learning_rate"],
               "diverged_seeds": e["diverged_seeds"], "seeds": len(e["final_accuracy"]["values"])}
              for e in document["entries"] if e["method"] in auto and e["diverged_seeds"] > 0]
  return {"references": refs, "methods": methods,
          "best_optax_lr": best["method"] if best else None,
          "best_at_least_references": at_least, "best_within_2se_of_references": within,
          "auto_methods": auto,
          "auto_diverged": diverged, "met": bool(at_least) and not diverged}


def _finite_or_none(value: Any) -> Any:
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _curve(values: np.ndarray) -> list[float | None]:
  """Mean over seeds per epoch (NaN where every seed is NaN) as JSON-safe floats."""
  values = np.asarray(values, np.float64)
  with np.errstate(all="ignore"):
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  return [_finite_or_none(v) for v in mean]


def _curve_se(values: np.ndarray) -> list[float | None]:
  """Standard error over seeds per epoch of :func:`_curve` (finite seeds; None below two)."""
  return [mean_and_standard_error(column)["se"] for column in np.asarray(values, np.float64).T]


#: The curves of every entry; their standard errors over seeds are in ``"curves_se"``.
CURVES = ("test_accuracy", "train_loss", "test_loss", "rate")
#: The curves that get ``"curves_se"`` (what the figures draw as bands).
SE_CURVES = ("test_accuracy", "rate")


# --- what the optimizer state says about its rate

def _find(tree: PyTree, cls: type) -> list[Any]:
  return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, cls))
          if isinstance(x, cls)]


def _mean_rate(rates: dict[str, jax.Array]) -> jax.Array:
  """Mean over every rate element of every field (NaN when there is none)."""
  if not rates:
    return jnp.float32(jnp.nan)
  return optax_lr.rate_summary(list(rates.values()))["mean"]


def rate_metrics(opt_state: PyTree, boundary_step: int | None = None) -> dict[str, jax.Array]:
  """The rates of an optimizer state as float32 scalars, inside ``jit``.

  ``"rate"`` is one representative number per method (what the plots show): the mean over every
  element of every ``learning_rate`` field; for CAM-HD the mean effective rate
  (``optax_lr.cam_hd_rate_summary``); for ``switch_at`` the active transformation's rates
  (``boundary_step`` says when the second takes over); for the ``optax.contrib`` peers their own
  step-size variable: Prodigy's and D-Adaptation's ``estim_lr`` (d, which scales an Adam
  direction), DoG's ``max_dist / sqrt(sum of squared gradient norms)``, Mechanic's ``sum(s)``;
  NaN when the state holds none (COCOB, schedule-free). The other keys are
  ``"rate/<field>"`` for scalar fields and ``"rate/<field>/<mean|min|max|norm>"`` for arrays, and
  AutoDrop's ``"angular_velocity"`` (degrees) when the state has one
  (``train.train.rate_values``), with its ``"autodrop/num_drops"`` (drops so far) and
  ``"autodrop/drop_pending"`` (1 while a triggered drop waits for its averaging delay).
  """
  rates = optax_lr.learning_rates(opt_state)
  # The training loop's own read-out, with the rate keys under "rate/".
  values = {key if key.startswith("angular_velocity") else f"rate/{key}": value
            for key, value in training.rate_values(opt_state).items()}
  switches = _find(opt_state, optax_lr.SwitchState)
  if _find(opt_state, optax_lr.CamHDState):
    representative = optax_lr.cam_hd_rate_summary(opt_state)["mean"]
  elif switches and boundary_step is not None:
    switch = switches[0]
    first = optax_lr.learning_rates(switch.first_state)
    second = optax_lr.learning_rates(switch.second_state)
    representative = jnp.where(switch.count <= boundary_step, _mean_rate(first),
                               _mean_rate(second))
  elif rates:
    representative = _mean_rate(rates)
  else:
    representative = _peer_step_size(opt_state)
  values["rate"] = jnp.asarray(representative, jnp.float32)
  autodrop = _find(opt_state, optax_lr.ScaleByAutoDropState)
  if autodrop:
    values["autodrop/num_drops"] = sum(jnp.asarray(a.num_drops, jnp.float32) for a in autodrop)
    values["autodrop/drop_pending"] = sum(jnp.asarray(a.drop_pending, jnp.float32)
                                          for a in autodrop)
  return values


def _peer_step_size(opt_state: PyTree) -> jax.Array:
  estimates = [v for _, v in optax.tree.get_all_with_path(opt_state, "estim_lr")]
  if estimates:
    return jnp.reshape(estimates[0], ()).astype(jnp.float32)
  dog = _find(opt_state, optax.contrib.DoGState)
  if dog:
    ratios = jax.tree.map(lambda d, g: d / jnp.sqrt(jnp.maximum(g, 1e-30)), dog[0].max_dist,
                          dog[0].sum_sq_norm_grads)
    return optax_lr.rate_summary(ratios)["mean"]
  mechanic = _find(opt_state, optax.contrib.MechanicState)
  if mechanic:
    return jnp.sum(mechanic[0].s).astype(jnp.float32)
  return jnp.float32(jnp.nan)


# --- the grid runner

@dataclasses.dataclass
class GridResult:
  """Per-epoch metrics of every run of a grid.

  Attributes:
    metrics: name -> ``(settings, seeds, epochs)`` array; ``train_loss``, ``test_loss``,
      ``test_accuracy``, ``rate`` and the ``rate/...`` keys of :func:`rate_metrics`.
    learning_rates: the settings' initial rates (``[None]`` for a method that takes none).
    seeds: the seeds.
    compile_seconds: compile time of the grid's program(s).
    run_seconds: time to run them.
    traced_rate: whether one program served every rate (False: one program per rate).
  """

  metrics: dict[str, np.ndarray]
  learning_rates: list[float | None]
  seeds: list[int]
  compile_seconds: float
  run_seconds: float
  traced_rate: bool


def make_config(optimizer: str, *, num_epochs: int, dataset: str = "digits", model: str = "mlp",
                model_options: dict[str, Any] | None = None, batch_size: int = 64,
                weight_decay: float = 5e-4,
                optimizer_options: dict[str, Any] | None = None,
                learning_rate: float | None = 0.1, data_dir: str | None = None) -> Config:
  """The main job's config (``train/configs/default.py``: MLP, weight decay 5e-4, batch 64) with
  another optimizer, on one device, without checkpoints, plots or progress bars."""
  config = get_config("default")
  return dataclasses.replace(
      config, dataset=dataset, data_dir=data_dir, model=model,
      model_options=dict(model_options or {}), optimizer=optimizer,
      optimizer_options=dict(optimizer_options or {}), learning_rate=learning_rate,
      weight_decay=weight_decay, batch_size=batch_size, num_epochs=num_epochs, num_devices=1,
      checkpoint=False, progress=False, plot=False)


def _one_device(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` under the training loop's named axis with one device (``pmean`` is the identity)."""
  mapped = jax.vmap(fn, in_axes=None, axis_size=1, axis_name=training.AXIS)
  return lambda *args: jax.tree.map(lambda x: x[0], mapped(*args))


def _traced_value_error(error: BaseException) -> bool:
  while error is not None:
    if isinstance(error, jax.errors.ConcretizationTypeError):
      return True
    error = error.__cause__ or error.__context__
  return False


class GridRunner:
  """Trains grids of (initial rate x seed) runs of one config in one compiled program.

  The data is loaded and placed on the device once; :meth:`run` compiles per config.
  """

  def __init__(self, dataset: str = "digits", data_dir: str | None = None):
    self.dataset = input_pipeline.load(dataset, data_dir)
    # The grid trains whole runs inside one compiled program, so the splits live on the device
    # and batches are gathered there (no augmentation: the grids run on the digits).
    train_images, train_labels = input_pipeline.read_all(self.dataset.train)
    test_images, test_labels = input_pipeline.read_all(self.dataset.test)
    self.train_images, self.train_labels = jnp.asarray(train_images), jnp.asarray(train_labels)
    self.test_images, self.test_labels = jnp.asarray(test_images), jnp.asarray(test_labels)

  def _eval_indices(self, width: int) -> tuple[jax.Array, jax.Array]:
    """The test set in order, padded to whole batches of ``width`` (padded rows masked)."""
    count = self.dataset.info.num_test
    rows = -(-count // width)
    order = np.arange(rows * width)
    return (jnp.asarray((order % count).astype(np.int32).reshape(rows, width)),
            jnp.asarray((order < count).astype(np.float32).reshape(rows, width)))

  def _program(self, config: Config, setup: training.Setup,
               boundary_step: int | None) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
    """``(learning_rate, seed) -> per-epoch metrics`` of one run, as a traceable function."""
    steps = setup.steps_per_epoch
    needs_next = "next_grads" in setup.spec.extra_args
    eval_indices, eval_mask = self._eval_indices(setup.eval_batch_size)
    images, labels = self.train_images, self.train_labels

    def one_run(learning_rate, run):
      seed, orders = run  # orders: the training loop's batches, (epochs + 1, steps, batch)
      following_batches = orders.reshape(-1, orders.shape[-1])
      # The decay is config.weight_decay, which training.train_step adds to the objective.
      tx = optimizers.create_optimizer(config.optimizer, learning_rate, steps, setup.total_steps,
                                       config.optimizer_options)
      run_setup = dataclasses.replace(setup, tx=tx)
      # The initialisation key of train_and_evaluate (``training.run_keys``).
      init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
      state = training.create_train_state(init_key, run_setup)
      train_step = _one_device(functools.partial(training.train_step, setup=run_setup))
      eval_step = _one_device(functools.partial(training.eval_step, setup=run_setup))

      def epoch(state, number):
        indices = orders[number - 1]

        def gather(rows):
          return {"image": images[rows], "label": labels[rows]}

        def step(state, index):
          # AdaSecant's next batch: the next one of the stream, as in the training loop.
          following = gather(following_batches[(number - 1) * steps + index + 1]) \
              if needs_next else None
          state, metrics = train_step(state, gather(indices[index]), following)
          return state, metrics["loss"]

        def evaluate(totals, i):
          rows = eval_indices[i]
          sums = eval_step(state, {"image": self.test_images[rows],
                                   "label": self.test_labels[rows], "mask": eval_mask[i]})
          return jax.tree.map(jnp.add, totals, sums), None

        state, losses = jax.lax.scan(step, state, jnp.arange(steps, dtype=jnp.int32))
        zero = jnp.zeros((), jnp.float32)
        sums, _ = jax.lax.scan(evaluate, {"loss": zero, "correct": zero, "count": zero},
                               jnp.arange(eval_indices.shape[0]))
        test = {"test_loss": sums["loss"] / sums["count"],
                "test_accuracy": sums["correct"] / sums["count"]}
        row = {"train_loss": jnp.mean(losses), **test,
               **rate_metrics(state.opt_state, boundary_step)}
        return state, row

      _, rows = jax.lax.scan(epoch, state, jnp.arange(1, config.num_epochs + 1))
      return rows

    return one_run

  def run(self, config: Config, learning_rates: Sequence[float] | None,
          seeds: Sequence[int], boundary_step: int | None = None,
          sequential_seeds: bool | None = None) -> GridResult:
    """Trains ``config`` for every initial rate and seed.

    Args:
      config: the run's config (its ``learning_rate`` is replaced by each of ``learning_rates``).
      learning_rates: the initial rates, or None for a method that takes none.
      seeds: seeds (``config.seed`` is ignored).
      boundary_step: for a ``switch_at`` optimizer, the step of the switch (see
        :func:`rate_metrics`).
      sequential_seeds: run the seeds one after the other (``lax.map``) instead of vmapped.
        Vmapping convolutions over per-seed weights turns them into grouped convolutions, which
        are slow on CPU; the default (None) is sequential for every model but the MLP.

    Returns:
      A :class:`GridResult`.
    """
    data = self.dataset
    placeholder = learning_rates[0] if learning_rates else None
    setup = training.build(dataclasses.replace(config, learning_rate=placeholder), data.info)
    one_run = self._program(config, setup, boundary_step)
    # Each seed with the data order the training loop would read (from its grain stream).
    orders = np.stack([input_pipeline.epoch_orders(
        data.info.num_train, config.batch_size, training.run_keys(int(s))[1],
        config.num_epochs + 1) for s in seeds])
    seed_array = (jnp.asarray(list(seeds), jnp.int32), jnp.asarray(orders))
    rates = list(learning_rates) if learning_rates else [None]

    def compile_and_run(fn, *args):
      start = time.perf_counter()
      compiled = jax.jit(fn).lower(*args).compile()
      middle = time.perf_counter()
      out = jax.device_get(compiled(*args))
      return out, middle - start, time.perf_counter() - middle

    if sequential_seeds is None:
      sequential_seeds = config.model != "mlp"

    def over_seeds(lr):
      if sequential_seeds:
        return lambda seeds: jax.lax.map(lambda seed: one_run(lr, seed), seeds)
      return jax.vmap(lambda seed: one_run(lr, seed))

    if learning_rates is None:
      out, compile_s, run_s = compile_and_run(over_seeds(None), seed_array)
      return GridResult({k: np.asarray(v)[None] for k, v in out.items()}, rates, list(seeds),
                        compile_s, run_s, traced_rate=True)
    rate_array = jnp.asarray(rates, jnp.float32)
    grid = jax.vmap(lambda lr, s: over_seeds(lr)(s), (0, None))
    try:
      jax.eval_shape(grid, rate_array, seed_array)
    except Exception as error:  # noqa: BLE001 - only "a traced rate was inspected" falls back
      if not _traced_value_error(error):
        raise
    else:
      out, compile_s, run_s = compile_and_run(grid, rate_array, seed_array)
      return GridResult({k: np.asarray(v) for k, v in out.items()}, rates, list(seeds),
                        compile_s, run_s, traced_rate=True)
    outs, compile_s, run_s = [], 0.0, 0.0
    for lr in rates:
      out, c, r = compile_and_run(over_seeds(float(lr)), seed_array)
      outs.append(out)
      compile_s, run_s = compile_s + c, run_s + r
    metrics = {k: np.stack([np.asarray(o[k]) for o in outs]) for k in outs[0]}
    return GridResult(metrics, rates, list(seeds), compile_s, run_s, traced_rate=False)


# --- the comparison

def method_kind(name: str) -> str:
  """``"optax_lr"`` for the registry's library methods, ``"peer"`` for its baselines and peers."""
  return optimizers.get_spec(name).family


def switch_boundary(name: str, options: dict[str, Any], steps_per_epoch: int) -> int | None:
  """The switch step of a registry entry with a ``switch_epoch`` option, else None."""
  defaults = optimizers.get_spec(name).options()
  if "switch_epoch" not in defaults:
    return None
  return max(1, round(options.get("switch_epoch", defaults["switch_epoch"]) * steps_per_epoch))


def autodrop_events(num_drops: np.ndarray, drop_pending: np.ndarray) -> dict[str, Any]:
  """AutoDrop's drops and triggers per seed, from its per-epoch state read-out.

  Args:
    num_drops: ``(seeds, epochs)`` drops so far at the end of each epoch.
    drop_pending: ``(seeds, epochs)`` 1 where a triggered drop waits (its averaging delay).

  Returns:
    Per seed (lists): ``"drops"`` (the final count), ``"drop_epochs"`` (1-based epochs whose end
    has more drops than the epoch before), ``"triggers"`` (drops plus a drop still pending at the
    end: the rule latches one trigger at a time) and ``"first_trigger_epoch"`` (the first epoch
    ending with a drop done or pending; None when none).
  """
  num_drops = np.asarray(num_drops, np.float64)
  drop_pending = np.asarray(drop_pending, np.float64)
  out = {"drops": [], "drop_epochs": [], "triggers": [], "first_trigger_epoch": []}
  for drops, pending in zip(num_drops, drop_pending, strict=True):
    before = np.concatenate([[0.0], drops[:-1]])
    out["drops"].append(int(drops[-1]))
    out["drop_epochs"].append([int(i) + 1 for i in np.flatnonzero(drops > before)])
    out["triggers"].append(int(drops[-1]) + int(pending[-1] > 0))
    fired = np.flatnonzero((drops > 0) | (pending > 0))
    out["first_trigger_epoch"].append(int(fired[0]) + 1 if fired.size else None)
  return out


def summarize_grid(name: str, result: GridResult, extra: dict[str, Any] | None = None,
                   keep_rate_keys: bool = False) -> list[dict[str, Any]]:
  """One JSON entry per setting of ``result``: summaries, mean curves over seeds (``"curves"``)
  and their standard errors (``"curves_se"``, for :data:`SE_CURVES`), and for AutoDrop the drops
  and triggers per seed (``"autodrop"``, :func:`autodrop_events`)."""
  entries = []
  for i, lr in enumerate(result.learning_rates):
    metrics = {k: v[i] for k, v in result.metrics.items()}
    entry = {"method": name, "learning_rate": lr, **(extra or {}),
             **summarize_setting(metrics["test_accuracy"], metrics["train_loss"]),
             "curves": {k: _curve(metrics[k]) for k in CURVES},
             "curves_se": {k: _curve_se(metrics[k]) for k in SE_CURVES}}
    if "autodrop/num_drops" in metrics:
      entry["autodrop"] = autodrop_events(metrics["autodrop/num_drops"],
                                          metrics["autodrop/drop_pending"])
    if keep_rate_keys:
      entry["curves"].update({k: _curve(v) for k, v in metrics.items()
                               if k.startswith("rate/") or k == "angular_velocity"})
    entries.append(entry)
  return entries


def rejected_rates(name: str, learning_rates: Sequence[float], steps_per_epoch: int,
                   total_steps: int, options: dict[str, Any]) -> dict[float, str]:
  """The initial rates whose registry constructor raises ``ValueError``, with the message.

  A cyclical schedule whose floor (``min_learning_rate``) is above the initial (peak) rate is no
  schedule at all; such a setting is reported as rejected instead of stopping the whole run.
  """
  rejected = {}
  for lr in learning_rates:
    try:
      optimizers.create_optimizer(name, float(lr), steps_per_epoch, total_steps, options)
    except ValueError as error:
      rejected[lr] = str(error)
  return rejected


def rejected_entry(name: str, kind: str, learning_rate: float, message: str,
                   seeds: int) -> dict[str, Any]:
  """The entry of a setting :func:`rejected_rates` found: no numbers, the constructor's message
  under ``"rejected"``; :func:`worst_case` leaves it out."""
  nothing = mean_and_standard_error([None] * seeds)
  return {"method": name, "learning_rate": learning_rate, "kind": kind, "rejected": message,
          "best_accuracy": nothing, "final_accuracy": nothing,
          "epochs_to_fraction_of_best": nothing, "diverged_seeds": 0,
          "curves": {k: [] for k in CURVES}, "curves_se": {k: [] for k in SE_CURVES}}


def run_compare(methods: Sequence[str] | None = None, *, epochs: int | None = None,
                seeds: Sequence[int] = SEEDS, learning_rates: Sequence[float] = LEARNING_RATES,
                dataset: str = "digits", model: str = "mlp", batch_size: int = 64,
                data_dir: str | None = None, optimizer_options: dict[str, Any] | None = None,
                keep_rate_keys: bool = False,
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
    spec = optimizers.get_spec(name)
    config = make_config(name, num_epochs=epochs, dataset=dataset, model=model,
                         batch_size=batch_size, data_dir=data_dir, optimizer_options=options)
    steps = runner.dataset.info.num_train // batch_size
    rates = list(learning_rates) if spec.takes_learning_rate else None
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
    summary = ", ".join(f"{_fmt_lr(e['learning_rate'])}: best {_fmt(e['best_accuracy'])} final "
                        f"{_fmt(e['final_accuracy'])}" if "rejected" not in e else
                        f"{_fmt_lr(e['learning_rate'])}: rejected" for e in method_entries)
    log(f"{name:>22} compile {compile_s:5.1f}s run {run_s:5.1f}s | {summary}")
  document = {"benchmark": "compare", "dataset": dataset, "model": model,
              "batch_size": batch_size,
              "weight_decay": make_config("sgd", num_epochs=1).weight_decay, "epochs": epochs,
              "seeds": list(seeds), "learning_rates": list(learning_rates),
              "optimizer_options": options, "best_fraction": BEST_FRACTION,
              "platform": _platform(), "wall_s": time.perf_counter() - start,
              "entries": entries, "worst_case": worst}
  document["goal"] = goal(document)
  return document


def _platform() -> str:
  return f"{jax.devices()[0].platform}, {os.cpu_count()} cores, {platform.machine()}"


def _fmt(stats: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
  if stats["mean"] is None:
    return "-"
  text = f"{scale * stats['mean']:.{digits}f}"
  if stats["se"] is not None:
    text += f" ± {scale * stats['se']:.{digits}f}"
  return text


def _fmt_lr(lr: float | None) -> str:
  return "own" if lr is None else f"{lr:g}"


def _fmt_value(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
  return "-" if value is None else f"{scale * value:.{digits}f}"


def _fmt_worst(worst: dict[str, Any], scale: float = 100.0) -> str:
  """``value ± se (at rate)`` of one :func:`worst_case` pick."""
  text = _fmt({"mean": worst["value"], "se": worst.get("se")}, scale)
  return text if worst["value"] is None else f"{text} ({_fmt_lr(worst['learning_rate'])})"


def _fmt_versus(diff: dict[str, Any]) -> str:
  """A :func:`goal` difference: ``+0.3 (1.2 s.e.)`` in accuracy points."""
  if diff["difference"] is None:
    return "-"
  from train.bench.claims import TIE

  if abs(diff["difference"]) <= TIE:
    return "0.0 (tie)"
  in_se = "-" if diff["in_se"] is None else f"{diff['in_se']:+.1f}"
  return f"{100 * diff['difference']:+.1f} ({in_se} s.e.)"


def goal_markdown(section: dict[str, Any]) -> list[str]:
  """The lines of :func:`goal`'s section: the verdict and the table of the ``optax_lr`` methods."""
  refs = section["references"]

  def final(x: dict[str, Any]) -> str:
    return f"{_fmt(x)} ({_fmt_lr(x['learning_rate'])})"

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
    versus = ", ".join(f"{_fmt_versus(d)} against `{n}`" for n, d in best["versus"].items())
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
        f"`{d['method']}` at {_fmt_lr(d['learning_rate'])} ({d['diverged_seeds']} of "
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
      cells = "".join(f" {_fmt_versus(m['versus'][n])} |" for n in refs)
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
        f"| {w['method']} | {w['kind']} | {_fmt_worst(w['best_accuracy'])} | "
        f"{_fmt_worst(w['final_accuracy'])} | {_fmt_value(spread)} | "
        f"{_fmt_worst(w['epochs_to_fraction_of_best'], 1.0)} | {w.get('diverged_seeds', 0)} |")
  rejected = [e for e in document["entries"] if "rejected" in e]
  if rejected:
    lines += ["", "Left out (the constructor rejects the initial rate): " + "; ".join(
        f"{e['method']} at {_fmt_lr(e['learning_rate'])} ({e['rejected'].split(';')[0]})"
        for e in rejected) + "."]
  lines += ["", "Every setting:", "",
            "| method | initial rate | best acc. | final acc. | epochs to 95% of best | "
            "diverged seeds |", "| --- | --- | --- | --- | --- | --- |"]
  for e in document["entries"]:
    if "rejected" in e:
      lines.append(f"| {e['method']} | {_fmt_lr(e['learning_rate'])} | rejected | - | - | - |")
      continue
    lines.append(f"| {e['method']} | {_fmt_lr(e['learning_rate'])} | {_fmt(e['best_accuracy'])} "
                 f"| {_fmt(e['final_accuracy'])} | "
                 f"{_fmt(e['epochs_to_fraction_of_best'], 1.0)} | {e['diverged_seeds']} |")
  return "\n".join(lines) + "\n"


# --- figures

def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig: Any, path: str) -> None:
  """Writes a PNG atomically, then closes the figure."""
  try:
    io_utils.write_atomic(path, io_utils.figure_png(fig))
  finally:
    _pyplot().close(fig)


def plot_compare(document: dict[str, Any], key: str, path: str, ylabel: str,
                 log_scale: bool = False) -> None:
  """One panel per method, one curve per initial rate of ``curves[key]``: the mean over seeds
  with a band of ± one standard error where the entry has ``curves_se[key]``."""
  plt = _pyplot()
  methods = list(dict.fromkeys(e["method"] for e in document["entries"]))
  columns = min(6, len(methods))
  rows = -(-len(methods) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.1 * rows), squeeze=False,
                           sharex=True)
  for ax, name in zip(axes.flat, methods, strict=False):
    for e in (e for e in document["entries"] if e["method"] == name):
      values = np.array([np.nan if v is None else v for v in e["curves"][key]], np.float64)
      epochs = np.arange(1, len(values) + 1)
      (line,) = ax.plot(epochs, values, label=_fmt_lr(e["learning_rate"]))
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
  runs. With ``out``, everything goes beside it under its stem."""
  stem = benchmark + ("" if dataset == "digits" else f"_{dataset}") + ("_quick" if quick else "")
  json_path = out or os.path.join(RESULTS_DIR, stem + ".json")
  stem = os.path.splitext(os.path.basename(json_path))[0]
  return (json_path, os.path.splitext(json_path)[0] + ".md",
          os.path.join(FIGURES_DIR if out is None else os.path.dirname(json_path) or ".",
                       f"bench_{stem}"))


def write_json(path: str, document: dict[str, Any]) -> None:
  io_utils.write_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def main(argv: list[str]) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m train.bench compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="fewer epochs (per dataset: " + ", ".join(
                          f"{d} {QUICK_EPOCHS[d]} instead of {FULL_EPOCHS[d]}"
                          for d in FULL_EPOCHS) + ")")
  parser.add_argument("--out", help="JSON output (default docs/results/compare[_DATASET]"
                      "[_quick].json, no _DATASET for the digits); the markdown goes beside it, "
                      "figures too when --out is given")
  parser.add_argument("--dataset", default="digits", choices=input_pipeline.DATASETS)
  parser.add_argument("--data-dir", default=None, help="TFDS data directory")
  parser.add_argument("--model", default="mlp", help="a name of models.MODELS (default mlp)")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--methods", nargs="*", choices=list(optimizers.OPTIMIZERS),
                      help="default: every registry entry")
  parser.add_argument("--epochs", type=int, help="override the number of epochs")
  parser.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0, 1, ...)")
  parser.add_argument("--learning-rates", type=float, nargs="*", default=list(LEARNING_RATES))
  parser.add_argument("--options", type=json.loads, default={},
                      help="registry options for every method, as a JSON object "
                      "(e.g. '{\"drop_delay\": 5}')")
  parser.add_argument("--rate-keys", action="store_true",
                      help="keep every rate/... curve and AutoDrop's angular velocity in the JSON")
  args = parser.parse_args(argv)
  if not isinstance(args.options, dict):
    parser.error(f"--options must be a JSON object, got {args.options!r}")
  epochs = args.epochs or epochs_for(args.dataset, args.quick)
  document = run_compare(args.methods, epochs=epochs, seeds=tuple(range(args.seeds)),
                         learning_rates=args.learning_rates, dataset=args.dataset,
                         model=args.model, batch_size=args.batch_size, data_dir=args.data_dir,
                         optimizer_options=args.options, keep_rate_keys=args.rate_keys)
  document["quick"] = args.quick
  json_path, md_path, figure_prefix = default_paths("compare", args.quick, args.out,
                                                    args.dataset)
  table = markdown(document)
  print(table)
  write_json(json_path, document)
  io_utils.write_atomic(md_path, table)
  plot_compare(document, "test_accuracy", figure_prefix + "_accuracy.png", "test accuracy")
  plot_compare(document, "rate", figure_prefix + "_rates.png", "learning rate", log_scale=True)
  print(f"wrote {json_path}, {md_path}, {figure_prefix}_{{accuracy,rates}}.png")
