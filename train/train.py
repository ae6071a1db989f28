"""The data-parallel training loop: ``create_train_state``, pure ``train_step`` / ``eval_step``,
checkpoints, and ``train_and_evaluate(config, workdir)``.

Layout after Flax's imagenet example. One per-device step function computes the loss, averages the
gradients with ``lax.pmean`` over the named axis ``"batch"`` (BatchNorm statistics are averaged
through the model's ``axis_name``), and applies the optax update. It is mapped over the devices
with ``jax.shard_map`` under ``jax.jit`` (default) or with ``jax.pmap``; both run the same function
and give the same numbers. The train state (params, batch statistics, optimizer state) is donated.

The data comes from the grain pipeline of ``input_pipeline``: each process reads its rows of
every global batch, and :meth:`Runner.put_batch` assembles them into global arrays with
``jax.make_array_from_process_local_data``; a step is a pure function of (state, batch).
Everything that changes is in :class:`TrainState`; a checkpoint (``checkpointing``) holds it, the
grain iterator's state (the data position) and the partial epoch loss, so a run resumed from any
step ends bit for bit as an uninterrupted one. The workdir is locked for the run (``workdir``).

Multi-host: call ``jax.distributed.initialize(...)`` before anything touches JAX (``python -m
train --coordinator HOST:PORT --num_processes N --process_id I``); the mesh then spans every
device of every process, each process reads a disjoint shard of every epoch (its rows of each
global batch), process 0 holds the workdir lock and writes the logs, and every process takes part
in checkpointing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import models
from train import checkpointing, input_pipeline, io_utils, optimizers, plotting, reporting
from train import workdir as workdir_lib
from train.configs import Config, check_resumable, validate

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


def build(config: Config, info: input_pipeline.DatasetInfo, num_train: int | None = None) -> Setup:
  """Model, optimizer and step counts; every config error is raised here, before any output."""
  validate(config)
  return _assemble(config, info, num_train)


def _assemble(config: Config, info: input_pipeline.DatasetInfo, num_train: int | None) -> Setup:
  """:func:`build` for a validated config: the checks that need the devices and the data, and
  the optimizer's own option ranges, where it is constructed (once, with the real step counts)."""
  devices = select_devices(config)
  if config.batch_size % len(devices):
    raise ValueError(f"`batch_size` {config.batch_size} is not divisible by the number of "
                     f"devices {len(devices)}; pick a multiple of {len(devices)}")
  num_train = info.num_train if num_train is None else num_train
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"`batch_size` {config.batch_size} exceeds the {num_train} training "
                     "examples")
  total_steps = steps_per_epoch * config.num_epochs
  spec = optimizers.get_spec(config.optimizer)
  # No weight decay here: train_step adds it to the objective (its one place).
  tx = optimizers.create_optimizer(config.optimizer, config.learning_rate, steps_per_epoch,
                                   total_steps, config.optimizer_options)
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


def train_step(state: TrainState, batch: dict[str, jax.Array], next_batch: dict | None, *,
               setup: Setup) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on this device's shard of the global batch (runs under a mapped axis).

  Args:
    state: the replicated train state.
    batch: this device's ``{"image": uint8 (B, H, W, C), "label": int32 (B,)}``, augmented by
      the input pipeline.
    next_batch: the next step's batch, for optimizers that take ``next_grads``; else None.
    setup: static pieces of the run.

  Returns:
    The new state and ``{"loss", "accuracy"}`` averaged over the global batch.
  """
  device = jax.lax.axis_index(AXIS)
  step_key = jax.random.fold_in(state.rng, state.step)
  dropout_key = jax.random.fold_in(step_key, device)
  x = input_pipeline.normalize(batch["image"], setup.info)
  y = batch["label"]
  loss_fn = functools.partial(_loss_fn, model=setup.model)
  (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats, x, y, dropout_key)
  loss = jax.lax.pmean(loss, AXIS)
  # The objective the optimizer minimises is the device-averaged batch loss plus the coupled
  # weight decay wd/2 ||w||^2. This step is the one place the decay enters, in the gradient
  # (`decayed`) and in the value (`objective_value`): the optimizer itself has no decay term, so
  # the gradient, `value`, `value_fn`, `grad_fn` and `next_grads` all see the same objective.
  wd = setup.config.weight_decay

  def decayed(data_grad, params):
    """The objective's gradient from the device-averaged data gradient: ``g + wd * w``, the
    expression of ``optax.add_decayed_weights`` (torch SGD's coupled decay)."""
    if not wd:
      return data_grad
    return jax.tree.map(lambda g, p: g + wd * p, data_grad, params)

  def objective_grad(params, x, y):
    g = jax.grad(lambda p: loss_fn(p, state.batch_stats, x, y, dropout_key)[0])(params)
    return decayed(jax.lax.pmean(g, AXIS), params)

  def objective_value(params, data_loss):
    if not wd:
      return data_loss
    return data_loss + 0.5 * wd * sum(
        jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params))

  grads = decayed(jax.lax.pmean(grads, AXIS), state.params)

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
    # The next batch of the stream at the same parameters: AdaSecant's variance reduction
    # compares two independent gradients of one point.
    extra["next_grads"] = objective_grad(
        state.params, input_pipeline.normalize(next_batch["image"], setup.info),
        next_batch["label"])
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params, **extra)
  params = optax.apply_updates(state.params, updates)
  accuracy = jax.lax.pmean(jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)), AXIS)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              setup: Setup) -> dict[str, jax.Array]:
  """Sums of the loss, the correct predictions and the mask over one global test batch (runs
  under a mapped axis); ``batch`` is this device's ``{"image", "label", "mask"}`` (padded rows
  have mask 0)."""
  params = state.params
  if setup.spec.eval_params is not None:
    params = setup.spec.eval_params(state.opt_state, params)
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  logits = setup.model.apply(variables, input_pipeline.normalize(batch["image"], setup.info),
                             train=False)
  weights = batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  sums = (jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights))
  loss, correct, count = jax.lax.psum(sums, AXIS)
  return {"loss": loss, "correct": correct, "count": count}


# --- mapping over devices ------------------------------------------------------------------------

class Runner:
  """The compiled steps for one mapping, the placement of per-process batches as global arrays,
  and conversions between its state layout and the canonical one (arrays replicated over the
  mesh) used for checkpoints and logging."""

  def __init__(self, setup: Setup):
    self.setup = setup
    self.mode = setup.config.mapping
    self.devices = setup.devices
    self.mesh = Mesh(np.asarray(self.devices), (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.rows = NamedSharding(self.mesh, P(AXIS))
    # The one place the two mappings differ: how a per-device function is compiled and the layout
    # of its inputs and outputs. Everything else (the step functions, placing batches, the state
    # conversions, reading metrics) is shared code through these four members.
    if self.mode == "shard_map":
      def compile_step(fn, in_specs, out_specs, donate):
        # check_vma=False gives pmap's semantics: gradients of the replicated params are
        # per-device values that the step averages itself with lax.pmean. (With the check on,
        # autodiff would already sum them over devices, and one step function could not serve
        # both mappings.)
        return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                                     check_vma=False), donate_argnums=donate)

      self._to_runner = lambda tree: jax.device_put(tree, self.replicated)
      self._first = lambda tree: tree  # outputs are replicated arrays already
      self._device_rows = lambda x: x  # a batch is one row axis, split over the mesh
    else:
      def compile_step(fn, in_specs, out_specs, donate):
        del in_specs, out_specs  # pmap maps every argument and output over its leading axis
        return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=donate)

      # State, batches and outputs carry a leading device axis.
      self._to_runner = self._stack
      self._first = lambda tree: jax.tree.map(lambda x: x[0], tree)
      local_devices = len(self.devices) // jax.process_count()
      self._device_rows = lambda x: x.reshape(local_devices, x.shape[0] // local_devices,
                                              *x.shape[1:])
    self._train = compile_step(functools.partial(train_step, setup=setup),
                               (P(), P(AXIS), P(AXIS)), (P(), P()), (0,))
    self._eval = compile_step(functools.partial(eval_step, setup=setup), (P(), P(AXIS)), P(), ())

  def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a global batch -> global arrays split over the mesh's devices.

    Processes hold consecutive blocks of the global batch (the input pipeline's layout), which
    is how ``make_array_from_process_local_data`` assembles rows sharded over ``"batch"``.
    For pmap the global batch is reshaped to ``(devices, rows per device, ...)``.
    """
    processes = jax.process_count()

    def put(x):
      x = self._device_rows(np.asarray(x))
      return jax.make_array_from_process_local_data(
          self.rows, x, (x.shape[0] * processes, *x.shape[1:]))

    return {k: put(v) for k, v in local.items()}

  # State layout.
  def _stack(self, tree: PyTree) -> PyTree:
    """One copy per device along a new leading axis, the layout pmap takes."""
    n = len(self.devices)
    return jax.tree.map(lambda x: jax.device_put(np.broadcast_to(x, (n, *np.shape(x))),
                                                 self.rows), tree)

  def to_runner(self, state: TrainState) -> TrainState:
    return self._to_runner(state)

  def to_canonical(self, state: TrainState) -> TrainState:
    return self._first(state)

  def train(self, state, batch, next_batch=None):
    state, metrics = self._train(state, batch, next_batch)
    return state, self._first(metrics)

  def evaluate(self, state, batches) -> dict[str, float]:
    """``{"test_loss", "test_accuracy"}`` over the global test batches of ``batches``
    (local batches from ``input_pipeline.eval_batches``)."""
    totals = None
    iterator = iter(batches)
    try:
      for local in iterator:
        sums = self._first(self._eval(state, self.put_batch(local)))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    finally:
      if hasattr(iterator, "close"):
        iterator.close()  # grain worker processes end with the iterator
    loss, correct, count = (float(to_host(totals[k])) for k in ("loss", "correct", "count"))
    return {"test_loss": loss / count, "test_accuracy": correct / count}


def to_host(x: jax.Array) -> np.ndarray:
  """A replicated array's value, from this process's first shard (no cross-process gather)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


# --- logging -------------------------------------------------------------------------------------

#: The rate readings of :mod:`train.reporting` (keys such as ``learning_rate``,
#: ``learning_rate/mean``, ``combination_weights/global``), traceable.
rate_values = reporting.rate_values

_jitted_rate_values = jax.jit(rate_values)


def optimizer_metrics(opt_state: PyTree, params: PyTree | None = None) -> dict[str, float]:
  """The rate readings of ``opt_state`` (see :mod:`train.reporting`) and AutoDrop's
  ``angular_velocity``, as floats, read from the state alone (CAM-HD's state carries the blend
  and floor its effective per-element rate depends on)."""
  return {k: float(to_host(v)) for k, v in _jitted_rate_values(opt_state, params).items()}


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


summary_table = reporting.summary_table


# --- checkpoints and the data feed ---------------------------------------------------------------

class _Feed:
  """Global batches from the grain iterator, ``depth`` of them placed on the devices ahead.

  :meth:`position` is the iterator state from which the next :meth:`get` batch is read: the data
  position a checkpoint stores (batches already placed but not yet used are read again after a
  restore).
  """

  def __init__(self, iterator, put: Callable[[dict], dict], depth: int):
    self.iterator, self.put, self.depth = iterator, put, depth
    self.queue: collections.deque = collections.deque()

  def _fill(self) -> None:
    while len(self.queue) < self.depth:
      position = self.iterator.get_state()
      self.queue.append((position, self.put(next(self.iterator))))

  def get(self) -> dict[str, jax.Array]:
    self._fill()
    return self.queue.popleft()[1]

  def peek(self) -> dict[str, jax.Array]:
    self._fill()
    return self.queue[0][1]

  def position(self) -> dict[str, Any]:
    if not self.queue:  # after get() the queue holds the placed batches; reading more is avoided
      self._fill()
    return self.queue[0][0]

  def close(self) -> None:
    if hasattr(self.iterator, "close"):
      self.iterator.close()


class _StopSignal:
  """Turns SIGTERM (a TPU preemption notice) into a request to stop at the next step boundary."""

  def __init__(self):
    self.received: int | None = None
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum

  def requested(self) -> bool:
    """Whether any process received the signal (every process calls this at every step)."""
    if jax.process_count() == 1:
      return self.received is not None
    flags = multihost_utils.process_allgather(np.int32(self.received is not None))
    return bool(np.any(flags))

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@contextlib.contextmanager
def _owned(workdir: str):
  """Process 0 holds the workdir's lock for the block; every process fails if it cannot."""
  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lib.lock(workdir))
      except workdir_lib.WorkdirBusyError as busy:
        error = busy
    if jax.process_count() > 1:
      locked = multihost_utils.broadcast_one_to_all(np.int32(error is None))
      if not int(locked):
        raise error or workdir_lib.WorkdirBusyError(
            f"workdir {workdir} is in use by another run (process 0 could not lock it)")
    elif error is not None:
      raise error
    yield


# --- the loop ------------------------------------------------------------------------------------

#: The saved config of a resumed run must match (cosmetic fields and ``num_epochs`` aside).
_check_workdir_config = check_resumable


def train_and_evaluate(config: Config, workdir: str,
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Trains and evaluates, writing ``config.json``, ``metrics.jsonl``, ``curves.png`` and
  checkpoints to ``workdir``, and resumes from the newest intact checkpoint there.

  The run holds ``workdir``'s lock throughout. A checkpoint is saved every
  ``checkpoint_every_steps`` steps (default: at every epoch end), at the last step, and at the
  next step boundary after SIGTERM, after which this returns (the rows so far) with a message;
  calling it again resumes. ``num_epochs`` above a finished run's extends it.

  Each epoch logs one line with its losses, accuracy and rate(s) (:mod:`train.reporting`); the
  rows go to ``metrics.jsonl`` and ``curves.png`` is redrawn at most every
  ``plot_every_seconds`` and at the end. An epoch whose mean training loss is not finite or
  above :func:`train.reporting.divergence_bound` (100 times the chance-level loss; 3 times for
  the run's last epoch) is logged with ``"diverged": true`` and, with ``stop_on_divergence``
  (default), ends the run there without checkpointing its state. An optimizer that reports its
  own blow-up test (AdaSecant, Simple AdaSecant: ``largest_step_ratio``) gets ``"blown_up"`` in
  every row and a warning line when it first fires (:func:`train.reporting.blow_up`).

  Args:
    config: the run's :class:`~train.configs.Config`.
    workdir: output directory (created if missing).
    log: where progress lines go (process 0 only).

  Returns:
    The per-epoch metric rows (as in ``metrics.jsonl``).

  Raises:
    ValueError: a bad config (unknown names list the valid ones), a batch size not divisible by
      the device count, a workdir holding a different run or in use by another process, no
      intact checkpoint, or a dataset that is not prepared or damaged.
  """
  # Everything that can fail on bad input fails before the workdir is touched: the config is
  # validated once, before the data is opened (a bad name is not reported as missing data), then
  # the optimizer is built once with the real step counts, and a workdir holding another run is
  # refused.
  validate(config)
  dataset = input_pipeline.load(config.dataset, config.data_dir)
  setup = _assemble(config, dataset.info, dataset.info.num_train)
  _check_workdir_config(workdir, config)
  lead = jax.process_index() == 0
  log = log if lead else (lambda _: None)
  with _owned(workdir), _StopSignal() as stop:
    return _train_locked(setup, dataset, workdir, log, stop)


def run_keys(seed: int) -> tuple[jax.Array, int]:
  """The initialisation key and the input pipeline's seed (a plain int for grain) of a run."""
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  return init_key, int(jax.random.randint(data_key, (), 0, np.iinfo(np.int32).max))


def _train_locked(setup: Setup, dataset: input_pipeline.Dataset, workdir: str,
                  log: Callable[[str], None], stop: _StopSignal) -> list[dict[str, Any]]:
  config = setup.config
  lead = jax.process_index() == 0
  if lead:
    for path in workdir_lib.remove_temporary_files(workdir):
      log(f"removed {path}, left by an interrupted write")
  runner = Runner(setup)
  init_key, data_seed = run_keys(config.seed)
  state = runner.to_canonical(runner.to_runner(create_train_state(init_key, setup)))
  loss_sum = np.zeros((), np.float32)

  checkpointer = checkpointing.Checkpointer(workdir, config.keep_checkpoints, log) \
      if config.checkpoint else None
  iterator = iter(input_pipeline.train_batches(
      dataset, config.batch_size, data_seed, num_workers=config.data_workers,
      prefetch=config.prefetch_batches))
  start_step = 0
  if checkpointer is not None:
    restored = checkpointer.restore(state, {"epoch_loss_sum": loss_sum})
    if restored is not None:
      state, extra, data = restored
      loss_sum = np.asarray(extra["epoch_loss_sum"], np.float32)
      iterator.set_state(data["iterator"])
      start_step = int(data["step"])
      if start_step > setup.total_steps:
        raise ValueError(f"{workdir} holds a run trained for {start_step // setup.steps_per_epoch}"
                         f" epochs; `num_epochs` {config.num_epochs} cannot shorten it (pass "
                         f"at least {start_step // setup.steps_per_epoch})")
      epoch, batch = divmod(start_step, setup.steps_per_epoch)
      log(f"resumed from {workdir} at step {start_step} (epoch {epoch + 1}, batch {batch})"
          if batch else f"resumed from {workdir} after epoch {epoch}")
  if lead:
    io_utils.write_atomic(os.path.join(workdir, "config.json"), config.to_json())
  rows = [r for r in read_metrics(workdir) if r["epoch"] <= start_step // setup.steps_per_epoch]

  log(f"{config.dataset}: {dataset.info.num_train} train / {dataset.info.num_test} test; model "
      f"{config.model} ({models.count_params(state.params):,} params); optimizer "
      f"{config.optimizer}; {len(setup.devices)} device(s), {config.mapping}; "
      f"{setup.steps_per_epoch} steps/epoch")

  every = config.checkpoint_every_steps or setup.steps_per_epoch
  curves = plotting.CurveWriter(os.path.join(workdir, "curves.png"), _title(config),
                                config.plot_every_seconds) if lead and config.plot else None
  needs_next = "next_grads" in setup.spec.extra_args
  feed = _Feed(iterator, runner.put_batch, depth=2)
  state = runner.to_runner(state)
  epoch_loss = jnp.asarray(loss_sum)
  start, epoch_start_step, bar = time.perf_counter(), start_step, None
  try:
    for step in range(start_step, setup.total_steps):
      epoch, index = divmod(step, setup.steps_per_epoch)
      epoch += 1
      if bar is None:
        bar = _progress(config, lead, epoch, setup.steps_per_epoch, initial=index)
      batch = feed.get()
      state, metrics = runner.train(state, batch, feed.peek() if needs_next else None)
      epoch_loss = epoch_loss + metrics["loss"]
      if bar is not None:
        bar.update(1)
        if index % 10 == 0 or index == setup.steps_per_epoch - 1:
          canonical = runner.to_canonical(state)
          rates = optimizer_metrics(canonical.opt_state, canonical.params)
          bar.set_postfix_str(f"loss {float(to_host(metrics['loss'])):.4f}, "
                              f"{reporting.rate_text(rates)}")
      done = step + 1
      if done % setup.steps_per_epoch == 0:
        train_loss = float(to_host(epoch_loss)) / setup.steps_per_epoch
        train_time = time.perf_counter() - start
        canonical = runner.to_canonical(state)
        test = runner.evaluate(state, input_pipeline.eval_batches(
            dataset, setup.eval_batch_size, num_workers=config.data_workers,
            prefetch=config.prefetch_batches))
        row = {"epoch": epoch, "step": int(to_host(canonical.step)), "train_loss": train_loss,
               "test_loss": test["test_loss"], "test_accuracy": test["test_accuracy"]}
        row.update(optimizer_metrics(canonical.opt_state, canonical.params))
        reason = reporting.divergence(train_loss, setup.info.num_classes,
                                      final=done == setup.total_steps)
        row["diverged"] = reason is not None
        blow_up = reporting.blow_up(row)
        if reporting.STEP_RATIO in row:
          row["blown_up"] = blow_up is not None
        row["epoch_time"] = time.perf_counter() - start
        row["images_per_second"] = (done - epoch_start_step) * config.batch_size / train_time
        if bar is not None:
          bar.close()
          bar = None
        rows.append(row)
        if lead:
          # Metrics before the checkpoint: a run killed between the two re-does this epoch and
          # the resumed run drops the line (rows after the checkpoint's epoch are discarded).
          _write_metrics(workdir, rows)
          if curves is not None:
            curves.update(rows)
        log(reporting.epoch_line(row, config.num_epochs))
        if blow_up is not None and not (len(rows) > 1 and rows[-2].get("blown_up")):
          log(f"warning: {blow_up} at epoch {epoch}")
        if row["diverged"]:
          log(reporting.diverged_message(row, reason, stopping=config.stop_on_divergence))
          if config.stop_on_divergence:  # before the checkpoint: the diverged state is not saved
            break
        epoch_loss = jnp.zeros((), jnp.float32)
        start, epoch_start_step = time.perf_counter(), done
      stopping = stop.requested()
      if checkpointer is not None and (done % every == 0 or done == setup.total_steps
                                       or stopping):
        checkpointer.save(done, runner.to_canonical(state),
                          {"epoch_loss_sum": np.asarray(to_host(epoch_loss), np.float32)},
                          {"step": done, "iterator": feed.position()})
      if stopping:
        if bar is not None:
          bar.close()
        where = f"checkpoint saved at step {done}" if checkpointer is not None else \
            f"stopped at step {done} (checkpoint=false: nothing saved)"
        log(f"received SIGTERM: {where}; run the same command again to resume")
        if curves is not None:
          curves.finish(rows)
        return rows
  finally:
    feed.close()
    if checkpointer is not None:
      checkpointer.close()
  if curves is not None:
    curves.finish(rows)
  log(summary_table(rows))
  return rows


def _title(config: Config) -> str:
  return f"{config.model} / {config.dataset} / {config.optimizer}"


def _progress(config: Config, lead: bool, epoch: int, total: int, initial: int = 0):
  if not (config.progress and lead):
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc=f"epoch {epoch}/{config.num_epochs}",
              leave=False)
