"""The data-parallel training loop: ``create_train_state``, pure ``train_step`` / ``eval_step``,
checkpoints, and ``train_and_evaluate(config, workdir)``.

Layout after Flax's imagenet example. One per-device step function computes the loss, averages the
gradients with ``lax.pmean`` over the named axis ``"batch"`` (BatchNorm statistics are averaged
through the model's ``axis_name``), and applies the optax update. It is mapped over the devices
with ``jax.shard_map`` under ``jax.jit`` (default) or with ``jax.pmap``; both run the same function
and give the same numbers. The train state (params, batch statistics, optimizer state) is donated.

The data lives on the devices as uint8 (``input_pipeline``); each step gathers its examples by
index, so a step is a pure function of (state, data, epoch permutation, step index). Everything
that changes is in :class:`TrainState`, and the data position is the epoch: a checkpoint after
every epoch resumes a run bit for bit.

Multi-host: call ``jax.distributed.initialize(...)`` before anything touches JAX (``python -m
train --coordinator HOST:PORT --num_processes N --process_id I``); the mesh then spans every
device of every process, each process holds the data and computes its shard of each batch, and
process 0 writes the logs (every process takes part in checkpointing).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import models
import optax_lr
from train import input_pipeline, io_utils, optimizers, plotting
from train.configs import COSMETIC_FIELDS, Config, validate

#: The mapped device axis: gradients are averaged over it and BatchNorm models sync over it.
AXIS = "batch"

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: int32, optimizer steps taken.
    params: the model parameters.
    batch_stats: BatchNorm statistics (an empty dict for models without BatchNorm).
    opt_state: the optimizer state.
    rng: uint32[2] raw key; each step's augmentation and dropout keys are derived from it and the
      step, so resuming needs nothing else.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Setup:
  """The pieces of a run built from a config, before any state exists."""

  config: Config
  info: input_pipeline.DatasetInfo
  model: nn.Module
  spec: optimizers.OptimizerSpec
  tx: optax.GradientTransformation
  devices: tuple[Any, ...]
  steps_per_epoch: int
  total_steps: int
  eval_batch_size: int


# --- building ------------------------------------------------------------------------------------

def create_model(config: Config, info: input_pipeline.DatasetInfo) -> nn.Module:
  """The configured model; BatchNorm models get ``axis_name=AXIS``."""
  model = models.create_model(config.model, info.num_classes, **config.model_options)
  if hasattr(model, "axis_name"):
    model = model.clone(axis_name=AXIS)
  return model


def select_devices(config: Config) -> tuple[Any, ...]:
  """Every device of every process, or the first ``num_devices`` local ones."""
  if config.num_devices is None:
    return tuple(jax.devices())
  local = jax.local_devices()
  if jax.process_count() > 1:
    raise ValueError("`num_devices` can only be set in a single-process run")
  if config.num_devices > len(local):
    raise ValueError(f"`num_devices` is {config.num_devices} but only {len(local)} local "
                     "devices exist")
  return tuple(local[:config.num_devices])


def build(config: Config, info: input_pipeline.DatasetInfo, num_train: int) -> Setup:
  """Model, optimizer and step counts; every config error is raised here, before any output."""
  validate(config)
  devices = select_devices(config)
  if config.batch_size % len(devices):
    raise ValueError(f"`batch_size` {config.batch_size} is not divisible by the number of "
                     f"devices {len(devices)}; pick a multiple of {len(devices)}")
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {config.batch_size} exceeds the {num_train} training "
                     "examples")
  total_steps = steps_per_epoch * config.num_epochs
  spec = optimizers.get_spec(config.optimizer)
  tx = optimizers.create_optimizer(config.optimizer, config.learning_rate, steps_per_epoch,
                                   total_steps, config.weight_decay, config.optimizer_options)
  model = create_model(config, info)
  eval_batch = -(-config.eval_batch_size // len(devices)) * len(devices)
  return Setup(config, info, model, spec, tx, devices, steps_per_epoch, total_steps, eval_batch)


def create_train_state(rng: jax.Array, setup: Setup) -> TrainState:
  """Initial state (on the default device): fresh params, statistics and optimizer state."""
  init_key, state_key = jax.random.split(rng)
  dummy = jnp.zeros((1, *setup.info.image_shape), jnp.float32)

  @jax.jit
  def init(key):
    variables = setup.model.init({"params": key, "dropout": key}, dummy, train=False)
    params = variables["params"]
    return params, variables.get("batch_stats", {}), setup.tx.init(params)

  params, batch_stats, opt_state = init(init_key)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, rng=state_key)


# --- the per-device steps ------------------------------------------------------------------------

def _loss_fn(params, batch_stats, images, labels, dropout_key, model):
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  logits, new_variables = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": dropout_key})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, (new_variables.get("batch_stats", {}), logits)


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, epoch_indices: jax.Array,
               index: jax.Array, *, setup: Setup) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on this device's shard of batch ``index`` (runs under a mapped axis).

  Args:
    state: the replicated train state.
    images: uint8 ``(N, H, W, C)``, the whole training set (replicated).
    labels: int32 ``(N,)``.
    epoch_indices: this device's columns of the epoch permutation, ``(steps, local_batch)``.
    index: int32, the batch within the epoch.
    setup: static pieces of the run.

  Returns:
    The new state and ``{"loss", "accuracy"}`` averaged over the global batch.
  """
  local_batch = epoch_indices.shape[1]
  device = jax.lax.axis_index(AXIS)
  step_key = jax.random.fold_in(state.rng, state.step)
  augment_key, dropout_key, next_key = jax.random.split(step_key, 3)
  dropout_key = jax.random.fold_in(dropout_key, device)

  def batch(i, key):
    rows = jax.lax.dynamic_index_in_dim(epoch_indices, i, keepdims=False)
    x = input_pipeline.preprocess(images[rows], setup.info, key, offset=device * local_batch,
                                  global_batch=local_batch * jax.lax.axis_size(AXIS))
    return x, labels[rows]

  x, y = batch(index, augment_key)
  loss_fn = functools.partial(_loss_fn, model=setup.model)
  (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, x, y, dropout_key)
  grads = jax.lax.pmean(grads, AXIS)
  loss = jax.lax.pmean(loss, AXIS)

  def objective_grad(params, x, y):
    """The gradient the optimizer's direction sees: the data term averaged over devices, plus
    the coupled weight decay that ``create_optimizer`` chains in front (for extra arguments)."""
    g = jax.grad(lambda p: loss_fn(p, state.batch_stats, x, y, dropout_key)[0])(params)
    g = jax.lax.pmean(g, AXIS)
    if setup.config.weight_decay:
      g = jax.tree.map(lambda gi, p: gi + setup.config.weight_decay * p, g, params)
    return g

  def objective_value(params, data_loss):
    """The objective whose gradient the optimizer receives: the device-averaged batch loss plus
    the coupled weight decay ``wd/2 ||w||^2`` (its gradient is what ``create_optimizer`` adds)."""
    if not setup.config.weight_decay:
      return data_loss
    return data_loss + 0.5 * setup.config.weight_decay * sum(
        jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params))

  extra = {}
  if "value" in setup.spec.extra_args:
    extra["value"] = objective_value(state.params, loss)
  if "value_fn" in setup.spec.extra_args:
    # The same objective at other parameters, on this step's batch, dropout key and BatchNorm
    # statistics (the line search compares it with `value`).
    extra["value_fn"] = lambda params: objective_value(params, jax.lax.pmean(
        loss_fn(params, state.batch_stats, x, y, dropout_key)[0], AXIS))
  if "grad_fn" in setup.spec.extra_args:
    extra["grad_fn"] = lambda params: objective_grad(params, x, y)
  if "next_grads" in setup.spec.extra_args:
    # The next batch of the epoch (wrapping to its first) at the same parameters: AdaSecant's
    # variance reduction compares two independent gradients of one point.
    extra["next_grads"] = objective_grad(
        state.params, *batch((index + 1) % epoch_indices.shape[0], next_key))
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params, **extra)
  params = optax.apply_updates(state.params, updates)
  accuracy = jax.lax.pmean(jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)), AXIS)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, images: jax.Array, labels: jax.Array, indices: jax.Array,
              mask: jax.Array, *, setup: Setup) -> dict[str, jax.Array]:
  """Loss and correct-count sums over the whole test set (runs under a mapped axis).

  ``indices`` / ``mask`` are this device's columns of the padded test order,
  ``(num_batches, local_batch)``; padded rows have mask 0.
  """
  params = state.params
  if setup.spec.eval_params is not None:
    params = setup.spec.eval_params(state.opt_state, params)
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats

  def body(i, totals):
    rows, weights = indices[i], mask[i]
    logits = setup.model.apply(variables, input_pipeline.preprocess(images[rows], setup.info),
                               train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels[rows])
    correct = (jnp.argmax(logits, -1) == labels[rows]).astype(jnp.float32)
    return (totals[0] + jnp.sum(losses * weights), totals[1] + jnp.sum(correct * weights),
            totals[2] + jnp.sum(weights))

  zero = jnp.zeros((), jnp.float32)
  loss, correct, count = jax.lax.fori_loop(0, indices.shape[0], body, (zero, zero, zero))
  loss, correct, count = jax.lax.psum((loss, correct, count), AXIS)
  return {"test_loss": loss / count, "test_accuracy": correct / count}


# --- mapping over devices ------------------------------------------------------------------------

class Runner:
  """The compiled steps for one mapping, and conversions between its state layout and the
  canonical one (arrays replicated over the mesh) used for checkpoints and logging."""

  def __init__(self, setup: Setup):
    self.setup = setup
    self.mode = setup.config.mapping
    self.devices = setup.devices
    self.mesh = Mesh(np.asarray(self.devices), (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.columns = NamedSharding(self.mesh, P(None, AXIS))
    train_fn = functools.partial(train_step, setup=setup)
    eval_fn = functools.partial(eval_step, setup=setup)
    if self.mode == "shard_map":
      # check_vma=False gives pmap's semantics: gradients of the replicated params are per-device
      # values that the step averages itself with lax.pmean. (With the check on, autodiff would
      # already sum them over devices, and one step function could not serve both mappings.)
      self._train = jax.jit(
          jax.shard_map(train_fn, mesh=self.mesh, in_specs=(P(), P(), P(), P(None, AXIS), P()),
                        out_specs=(P(), P()), check_vma=False),
          donate_argnums=(0,))
      self._eval = jax.jit(jax.shard_map(
          eval_fn, mesh=self.mesh, in_specs=(P(), P(), P(), P(None, AXIS), P(None, AXIS)),
          out_specs=P(), check_vma=False))
    else:
      # Data and state carry a leading device axis (copies made once, not per call).
      self._train = jax.pmap(train_fn, axis_name=AXIS, in_axes=(0, 0, 0, 0, None),
                             devices=self.devices, donate_argnums=(0,))
      self._eval = jax.pmap(eval_fn, axis_name=AXIS, devices=self.devices)
    self._permutation = jax.jit(
        input_pipeline.epoch_permutation, static_argnums=(2, 3, 4), out_shardings=self.columns)

  # Data placement.
  def put_data(self, array: np.ndarray) -> jax.Array:
    """A host array replicated on every device of the mesh (works across processes)."""
    if self.mode == "pmap":
      return self._stack(array)
    return jax.make_array_from_callback(array.shape, self.replicated, lambda index: array[index])

  def _split_columns(self, array: jax.Array) -> jax.Array:
    """``(rows, global_batch)`` -> ``(devices, rows, local_batch)`` for pmap."""
    rows, width = array.shape
    n = len(self.devices)
    return jnp.transpose(jnp.reshape(array, (rows, n, width // n)), (1, 0, 2))

  def epoch_indices(self, key: jax.Array, epoch: int, num_examples: int) -> jax.Array:
    indices = self._permutation(key, epoch, num_examples, self.setup.steps_per_epoch,
                                self.setup.config.batch_size)
    return self._split_columns(indices) if self.mode == "pmap" else indices

  def eval_indices(self, num_examples: int) -> tuple[jax.Array, jax.Array]:
    width = self.setup.eval_batch_size
    rows = -(-num_examples // width)
    order = np.arange(rows * width)
    indices = (order % num_examples).astype(np.int32).reshape(rows, width)
    mask = (order < num_examples).astype(np.float32).reshape(rows, width)
    if self.mode == "pmap":
      return self._split_columns(jnp.asarray(indices)), self._split_columns(jnp.asarray(mask))
    put = lambda a: jax.make_array_from_callback(a.shape, self.columns, lambda i: a[i])
    return put(indices), put(mask)

  # State layout.
  def _stack(self, tree: PyTree) -> PyTree:
    """One copy per device along a new leading axis, the layout pmap takes."""
    stacked = NamedSharding(self.mesh, P(AXIS))
    n = len(self.devices)
    return jax.tree.map(lambda x: jax.device_put(np.broadcast_to(x, (n, *np.shape(x))), stacked),
                        tree)

  def to_runner(self, state: TrainState) -> TrainState:
    if self.mode == "pmap":
      return self._stack(state)
    return jax.device_put(state, self.replicated)

  def to_canonical(self, state: TrainState) -> TrainState:
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], state)
    return state

  def train(self, state, images, labels, epoch_indices, index):
    state, metrics = self._train(state, images, labels, epoch_indices, jnp.int32(index))
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics

  def evaluate(self, state, images, labels, indices, mask) -> dict[str, jax.Array]:
    metrics = self._eval(state, images, labels, indices, mask)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return metrics


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated array's value, from this process's first shard (no cross-process gather)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


# --- logging -------------------------------------------------------------------------------------

def rate_values(opt_state: PyTree) -> dict[str, jax.Array]:
  """Every rate of the state as float32 scalars (traceable).

  The rate itself for scalar fields, ``<field>/<mean|min|max|norm>`` for rate arrays, and
  AutoDrop's ``angular_velocity`` (``angular_velocity/<i>`` when there are several).
  """
  values = {}
  for name, rate in optax_lr.learning_rates(opt_state).items():
    if jnp.size(rate) == 1:
      values[name] = jnp.reshape(rate, ()).astype(jnp.float32)
    else:
      for stat, value in optax_lr.rate_summary(rate).items():
        values[f"{name}/{stat}"] = value
  found = optax.tree.get_all_with_path(opt_state, "angular_velocity")
  for i, (_, value) in enumerate(found):
    key = "angular_velocity" if len(found) == 1 else f"angular_velocity/{i}"
    values[key] = jnp.reshape(value, ()).astype(jnp.float32)
  return values


_jitted_rate_values = jax.jit(rate_values)


def optimizer_metrics(opt_state: PyTree) -> dict[str, float]:
  """Rates (keys containing ``learning_rate``) and AutoDrop's ``angular_velocity``, as floats."""
  return {k: float(to_host(v)) for k, v in _jitted_rate_values(opt_state).items()}


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The lines of ``workdir/metrics.jsonl`` (empty when there is none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _json_value(value: Any) -> Any:
  """Non-finite floats as null (strict JSON; AutoDrop's angle is NaN until measured)."""
  return None if isinstance(value, float) and not math.isfinite(value) else value


def _write_metrics(workdir: str, rows: list[dict[str, Any]]) -> None:
  io_utils.write_atomic(os.path.join(workdir, "metrics.jsonl"), "".join(
      json.dumps({k: _json_value(v) for k, v in row.items()}, sort_keys=True, allow_nan=False)
      + "\n" for row in rows))


def _current_rate(rates: dict[str, float]) -> float | None:
  for key, value in rates.items():
    if "learning_rate" in key and not key.endswith(("/min", "/max", "/norm")):
      return value
  return None


def summary_table(rows: list[dict[str, Any]], max_rows: int = 12) -> str:
  """A plain-text table of the per-epoch metrics (the last ``max_rows`` epochs) and totals."""
  header = f"{'epoch':>5} {'train_loss':>10} {'test_loss':>10} {'test_acc':>8} {'rate':>10} " \
           f"{'time_s':>7} {'img/s':>8}"
  lines = [header, "-" * len(header)]
  def cell(value, width, spec):
    return f"{'-' if value is None else format(value, spec):>{width}}"

  for row in rows[-max_rows:]:
    lines.append(" ".join([
        cell(row["epoch"], 5, "d"), cell(row["train_loss"], 10, ".4f"),
        cell(row["test_loss"], 10, ".4f"), cell(row["test_accuracy"], 8, ".4f"),
        cell(_current_rate(row), 10, ".3g"), cell(row["epoch_time"], 7, ".2f"),
        cell(row["images_per_second"], 8, ".0f")]))
  if rows:
    best = max(rows, key=lambda r: r["test_accuracy"])
    total = sum(r["epoch_time"] for r in rows)
    lines.append(f"final test accuracy {rows[-1]['test_accuracy']:.4f}; best "
                 f"{best['test_accuracy']:.4f} at epoch {best['epoch']}; {total:.1f} s in epochs")
  return "\n".join(lines)


# --- checkpoints ---------------------------------------------------------------------------------

def _checkpoint_manager(workdir: str, config: Config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, epoch: int) -> None:
  """Saves ``{"state", "data"}`` after ``epoch`` epochs; the data position is (epoch, batch 0)."""
  data = {"epoch": np.asarray(epoch, np.int32), "batch": np.zeros((), np.int32)}
  manager.save(epoch, args=ocp.args.StandardSave({"state": state, "data": data}))
  manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager,
                       state: TrainState) -> tuple[TrainState, int]:
  """The latest checkpoint restored into ``state``'s structure and shardings, and its epoch."""
  epoch = manager.latest_step()
  target = {"state": jax.tree.map(ocp.utils.to_shape_dtype_struct, state),
            "data": {"epoch": np.zeros((), np.int32), "batch": np.zeros((), np.int32)}}
  restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
  return restored["state"], int(restored["data"]["epoch"])


# --- the loop ------------------------------------------------------------------------------------

def _check_workdir_config(workdir: str, config: Config) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json())
  different = sorted(k for k in current if k not in COSMETIC_FIELDS
                     and saved.get(k) != current[k])
  if different:
    raise ValueError(f"{workdir} holds a run with a different config ({', '.join(different)} "
                     "differ); resume with the same config or use a new --workdir")


def train_and_evaluate(config: Config, workdir: str,
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Trains and evaluates, writing ``config.json``, ``metrics.jsonl``, ``curves.png`` and
  checkpoints to ``workdir``, and resumes from the latest checkpoint there.

  Args:
    config: the run's :class:`~train.configs.Config`.
    workdir: output directory (created if missing).
    log: where progress lines go (process 0 only).

  Returns:
    The per-epoch metric rows (as in ``metrics.jsonl``).

  Raises:
    ValueError: a bad config (unknown names list the valid ones), a batch size not divisible by
      the device count, a workdir holding a different run, or a dataset that is not prepared.
  """
  # Everything that can fail on bad input fails before the workdir is touched.
  validate(config)
  dataset = input_pipeline.load(config.dataset, config.data_dir)
  setup = build(config, dataset.info, len(dataset.train_labels))
  _check_workdir_config(workdir, config)
  lead = jax.process_index() == 0
  log = log if lead else (lambda _: None)

  runner = Runner(setup)
  rng = jax.random.PRNGKey(config.seed)
  init_key, data_key = jax.random.split(rng)
  state = runner.to_canonical(runner.to_runner(create_train_state(init_key, setup)))

  os.makedirs(workdir, exist_ok=True)
  if lead:
    io_utils.write_atomic(os.path.join(workdir, "config.json"), config.to_json())
  manager = _checkpoint_manager(workdir, config) if config.checkpoint else None
  start_epoch = 0
  if manager is not None and manager.latest_step() is not None:
    state, start_epoch = restore_checkpoint(manager, state)
    log(f"resumed from {workdir} after epoch {start_epoch}")
  rows = [r for r in read_metrics(workdir) if r["epoch"] <= start_epoch]

  train_images = runner.put_data(dataset.train_images)
  train_labels = runner.put_data(dataset.train_labels)
  test_images = runner.put_data(dataset.test_images)
  test_labels = runner.put_data(dataset.test_labels)
  eval_indices, eval_mask = runner.eval_indices(len(dataset.test_labels))
  num_train = len(dataset.train_labels)
  log(f"{config.dataset}: {num_train} train / {len(dataset.test_labels)} test; model "
      f"{config.model} ({models.count_params(state.params):,} params); optimizer "
      f"{config.optimizer}; {len(setup.devices)} device(s), {config.mapping}; "
      f"{setup.steps_per_epoch} steps/epoch")

  state = runner.to_runner(state)
  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    start = time.perf_counter()
    indices = runner.epoch_indices(data_key, epoch, num_train)
    loss_sum = jnp.zeros((), jnp.float32)
    bar = _progress(config, lead, epoch, setup.steps_per_epoch)
    for index in range(setup.steps_per_epoch):
      state, metrics = runner.train(state, train_images, train_labels, indices, index)
      loss_sum = loss_sum + metrics["loss"]
      if bar is not None:
        bar.update(1)
        if index % 10 == 0 or index == setup.steps_per_epoch - 1:
          rate = _current_rate(optimizer_metrics(runner.to_canonical(state).opt_state))
          postfix = {"loss": f"{float(to_host(metrics['loss'])):.4f}"}
          if rate is not None:
            postfix["lr"] = f"{rate:.3g}"
          bar.set_postfix(postfix)
    train_loss = float(to_host(loss_sum)) / setup.steps_per_epoch
    train_time = time.perf_counter() - start
    canonical = runner.to_canonical(state)
    test = runner.evaluate(state, test_images, test_labels, eval_indices, eval_mask)
    row = {"epoch": epoch, "step": int(to_host(canonical.step)), "train_loss": train_loss,
           "test_loss": float(to_host(test["test_loss"])),
           "test_accuracy": float(to_host(test["test_accuracy"]))}
    row.update(optimizer_metrics(canonical.opt_state))
    row["epoch_time"] = time.perf_counter() - start
    row["images_per_second"] = setup.steps_per_epoch * config.batch_size / train_time
    if bar is not None:
      bar.close()
    rows.append(row)
    if lead:
      # Metrics before the checkpoint: a run killed between the two re-does this epoch and
      # the resumed run drops the line (rows after the checkpoint's epoch are discarded).
      _write_metrics(workdir, rows)
      if config.plot:
        io_utils.write_atomic(os.path.join(workdir, "curves.png"),
                      plotting.render_curves(rows, title=_title(config)))
    if manager is not None:
      save_checkpoint(manager, canonical, epoch)
    log(f"epoch {epoch}: train_loss {train_loss:.4f} test_loss {row['test_loss']:.4f} "
        f"test_accuracy {row['test_accuracy']:.4f} ({row['epoch_time']:.1f} s)")
  if manager is not None:
    manager.close()
  log(summary_table(rows))
  return rows


def _title(config: Config) -> str:
  return f"{config.model} / {config.dataset} / {config.optimizer}"


def _progress(config: Config, lead: bool, epoch: int, total: int):
  if not (config.progress and lead):
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, desc=f"epoch {epoch}/{config.num_epochs}", leave=False)
