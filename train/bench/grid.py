"""The grid runner the benchmarks share: :class:`GridRunner` trains grids of (initial rate x
seed) runs of one config in one compiled program, with the training loop's own ``train_step`` /
``eval_step`` (``train.train``); :func:`make_config` is the main job's config with another
optimizer; :func:`summarize_grid` turns a :class:`GridResult` into per-setting entries (with
:mod:`train.bench.stats`). Imports no other benchmark module but ``stats``."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr
from train import input_pipeline, optimizers
from train import train as training
from train.bench.stats import (
  curve,
  curve_se,
  mean_and_standard_error,
  per_seed,
  summarize_setting,
)
from train.configs import Config, get_config

PyTree = Any

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
      sequential_seeds: run the seeds and the initial rates one after the other (``lax.map``)
        instead of vmapped. Vmapping convolutions over per-run weights turns them into grouped
        convolutions, which are slow on CPU (a 32x32 RGB CNN epoch: 92 s vmapped over one rate
        against 1 s mapped); the default (None) is sequential for every model but the MLP.

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
    if sequential_seeds:  # the rates one after the other too: a vmap would batch the weights
      def grid(lrs, s):
        return jax.lax.map(lambda lr: over_seeds(lr)(s), lrs)
    else:
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
  and their standard errors (``"curves_se"``, for :data:`SE_CURVES`), each seed's rate per epoch
  (``"rate_per_seed"``), and for AutoDrop the drops and triggers per seed (``"autodrop"``,
  :func:`autodrop_events`)."""
  entries = []
  for i, lr in enumerate(result.learning_rates):
    metrics = {k: v[i] for k, v in result.metrics.items()}
    entry = {"method": name, "learning_rate": lr, **(extra or {}),
             **summarize_setting(metrics["test_accuracy"], metrics["train_loss"]),
             "curves": {k: curve(metrics[k]) for k in CURVES},
             "curves_se": {k: curve_se(metrics[k]) for k in SE_CURVES},
             "rate_per_seed": per_seed(metrics["rate"])}
    if "autodrop/num_drops" in metrics:
      entry["autodrop"] = autodrop_events(metrics["autodrop/num_drops"],
                                          metrics["autodrop/drop_pending"])
    if keep_rate_keys:
      entry["curves"].update({k: curve(v) for k, v in metrics.items()
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

