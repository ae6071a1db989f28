"""A small byte-level language-model task: a transformer on standard-library sources.

:func:`train_lm` trains :class:`models.TransformerLM` (2 blocks, width 128, 4 heads by default) on
:mod:`train.text_data`'s corpus with any optax transformation for a number of steps and reports
the training losses, the held-out loss and, per parameter group (:func:`param_group`), the largest
per-element learning rate the optimizer state holds (``optax_lr.learning_rates``). Optimizers that
take ``next_grads`` (AdaSecant) get the gradient of the *next* batch of the stream at the same
parameters, as the training loop (``train.train.train_step``) supplies it; that batch is the next
step's batch.

``python -m train.bench lm --optimizer adasecant --steps 300 --seeds 0 1`` prints one line per
run; ``--optimizer adam --learning_rate 1e-3`` for Adam (``adam``, ``adasecant`` and
``simple_adasecant`` take ``--option KEY=VALUE`` for their keyword arguments).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import optax_lr
from train import text_data

# Parameter groups of the transformer, in the order they are reported: (name, path pattern).
GROUPS: tuple[tuple[str, str], ...] = (
    ("token_embed", r"token_embed/"),
    ("pos_embed", r"pos_embed"),
    ("ln_scale", r"ln_\w+/scale"),
    ("ln_bias", r"ln_\w+/bias"),
    ("attn_qkv", r"attn/(query|key|value)/"),
    ("attn_out", r"attn/out/"),
    ("mlp", r"mlp_(in|out)/"),
    ("head", r"head/"),
)


def param_group(path: str) -> str:
  """The group (a name of :data:`GROUPS`) of a ``/``-joined parameter or rate path."""
  for name, pattern in GROUPS:
    if re.search(pattern, path):
      return name
  raise ValueError(f"no parameter group matches {path!r}")


def _path(path: Sequence[Any]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def group_max(tree: Any, transform: Callable[[jax.Array], jax.Array] = jnp.abs) -> dict[str, float]:
  """The largest ``transform(leaf)`` element in each parameter group of a params-shaped tree."""
  out: dict[str, float] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    group = param_group(_path(path))
    value = float(jnp.max(transform(leaf)))
    out[group] = max(out.get(group, -np.inf), value)
  return out


def rate_group_max(opt_state: Any) -> dict[str, float]:
  """The largest per-element rate of each parameter group (empty for a state without rates)."""
  out: dict[str, float] = {}
  for key, rate in optax_lr.learning_rates(opt_state).items():
    if jnp.ndim(rate) == 0:
      continue
    group = param_group(key)
    out[group] = max(out.get(group, -np.inf), float(jnp.max(rate)))
  return out


# A run whose loss ends this many times above its loss at initialisation is reported as diverged.
DIVERGENCE_FACTOR = 3.0


@dataclasses.dataclass(frozen=True)
class LMTask:
  """The task's sizes (defaults: the AdaSecant issue's model, batch 32, 64-byte windows).

  Attributes:
    steps: training steps.
    batch_size: windows per step.
    seq_len: bytes per window (and the model's ``max_len``).
    num_layers, width, num_heads: the model.
    corpus_bytes: bytes of :func:`train.text_data.load_corpus` (10% held out).
    eval_batches: held-out batches (of ``batch_size`` consecutive windows) in the held-out loss.
  """

  steps: int = 300
  batch_size: int = 32
  seq_len: int = 64
  num_layers: int = 2
  width: int = 128
  num_heads: int = 4
  corpus_bytes: int = 1_000_000
  eval_batches: int = 16

  def corpus(self) -> text_data.Corpus:
    """The task's corpus, 10% held out."""
    return text_data.load_corpus(max_bytes=self.corpus_bytes, held_out=0.1)

  def model(self) -> models.TransformerLM:
    """The task's transformer."""
    return models.TransformerLM(num_layers=self.num_layers, width=self.width,
                                num_heads=self.num_heads, max_len=self.seq_len)


def _loss(model, params, x, y):
  logits = model.apply({"params": params}, x)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train_lm(tx: optax.GradientTransformation, *, seed: int = 0, needs_next: bool = False,
             task: LMTask = LMTask(),
             probe: Callable[..., None] | None = None) -> dict[str, Any]:
  """Trains the transformer LM with ``tx`` and reports losses and rates.

  Args:
    tx: the optimizer (a complete one: its updates are added to the parameters).
    seed: seeds the initialisation and the batch stream.
    needs_next: pass ``next_grads`` (the next batch's gradient at the same parameters).
    task: the sizes.
    probe: called after every step as ``probe(step, old_params, new_params, grads, opt_state,
      loss)`` (host side).

  Returns:
    A dict: ``train_loss`` (list, per step), ``val_loss`` (held-out mean loss at the end),
    ``initial_val_loss``, ``rate_max`` (per-group largest rate at the end), ``seconds``,
    ``diverged`` (:func:`diverged`: finite losses far above the start count too),
    ``largest_step_ratio`` (``optax_lr.largest_step_ratio``, None for a state without one) and
    ``blown_up`` (``optax_lr.blown_up``: the method's own blow-up test).
  """
  corpus = task.corpus()
  model = task.model()
  params = model.init(jax.random.key(seed), jnp.zeros((1, task.seq_len), jnp.int32))["params"]
  opt_state = tx.init(params)
  loss_and_grad = jax.value_and_grad(lambda p, x, y: _loss(model, p, x, y))

  @jax.jit
  def step(params, opt_state, x, y, x_next, y_next):
    loss, grads = loss_and_grad(params, x, y)
    extra = {}
    if needs_next:
      extra["next_grads"] = jax.grad(lambda p: _loss(model, p, x_next, y_next))(params)
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  eval_loss = jax.jit(lambda p, x, y: _loss(model, p, x, y))

  def held_out(p):
    losses = [float(eval_loss(p, x, y)) for x, y in text_data.held_out_batches(
        corpus.held_out, task.batch_size, task.seq_len, task.eval_batches)]
    return float(np.mean(losses))

  initial = held_out(params)
  stream = text_data.batches(corpus.train, seed, task.batch_size, task.seq_len)
  batch = next(stream)
  losses = []
  start = time.perf_counter()
  for t in range(task.steps):
    following = next(stream)
    old = params
    params, opt_state, loss, grads = step(params, opt_state, *batch, *following)
    losses.append(float(loss))
    if probe is not None:
      probe(t, old, params, grads, opt_state, float(loss))
    batch = following
  seconds = time.perf_counter() - start
  val = held_out(params)
  return {"train_loss": losses, "val_loss": val, "initial_val_loss": initial,
          "rate_max": rate_group_max(opt_state), "seconds": seconds,
          "diverged": diverged(losses, initial, val),
          "largest_step_ratio": _optional_float(optax_lr.largest_step_ratio(opt_state)),
          "blown_up": bool(optax_lr.blown_up(opt_state))}


def _optional_float(value: jax.Array | None) -> float | None:
  return None if value is None else float(value)


def diverged(train_loss: Sequence[float], initial: float, final: float,
             factor: float = DIVERGENCE_FACTOR) -> bool:
  """A run diverged when a loss is not finite, or the held-out loss at the end or the mean
  training loss of the last 50 steps is above ``factor`` times the loss at initialisation (a
  byte model starts near ln 256 = 5.5 nats; an exploded one ends at hundreds)."""
  last = float(np.mean(train_loss[-50:])) if len(train_loss) else initial
  values = [initial, final, last]
  return (not all(np.isfinite(values))) or final > factor * initial or last > factor * initial


def make_optimizer(name: str, learning_rate: float | None = None,
                   **options: Any) -> tuple[optax.GradientTransformation, bool]:
  """``(tx, needs_next)`` for ``adam``, ``adasecant`` or ``simple_adasecant``."""
  if name == "adam":
    return optax.adam(learning_rate if learning_rate is not None else 1e-3, **options), False
  if name == "adasecant":
    return optax_lr.adasecant(**options), True
  if name == "simple_adasecant":
    return optax_lr.simple_adasecant(**options), False
  raise ValueError(f"unknown optimizer {name!r}; valid: adam, adasecant, simple_adasecant")


def summary(result: dict[str, Any]) -> str:
  """One line: mean training loss over the first 50 steps, the last 50, held-out loss, rates."""
  losses = np.asarray(result["train_loss"])
  rates = " ".join(f"{k}={v:.3g}" for k, v in result["rate_max"].items())
  return (f"train[:50]={losses[:50].mean():.3f} train[-50:]={losses[-50:].mean():.3f} "
          f"val={result['val_loss']:.3f} (init {result['initial_val_loss']:.3f}) "
          f"{result['seconds']:.0f}s max_rate: {rates or '-'}"
          + (f" step_ratio={ratio:.3g}" if (ratio := result.get("largest_step_ratio")) is not None
             else "")
          + ("  DIVERGED (loss far above its start)" if result["diverged"] else "")
          + ("  BLOWN UP (the optimizer's own test)" if result.get("blown_up") else ""))


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m train.bench lm", description=__doc__)
  parser.add_argument("--optimizer", default="adasecant")
  parser.add_argument("--learning_rate", type=float, default=None)
  parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  args = parser.parse_args(argv)
  options = {}
  for item in args.option:
    key, value = item.split("=", 1)
    try:
      options[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      options[key] = value
  task = LMTask(steps=args.steps, seq_len=args.seq_len)
  for seed in args.seeds:
    tx, needs_next = make_optimizer(args.optimizer, args.learning_rate, **options)
    result = train_lm(tx, seed=seed, needs_next=needs_next, task=task)
    print(f"{args.optimizer} {options or ''} lr={args.learning_rate} seed={seed}: "
          f"{summary(result)}", flush=True)


# --- the comparison task (``python -m train.bench compare --dataset bytes_lm``)

#: The name of the language-model task in ``python -m train.bench compare --dataset``.
LM_DATASET = "bytes_lm"
#: Held-out evaluations per run (the "epochs" of the comparison's curves).
LM_EVALUATIONS = 10


def _stream(corpus: text_data.Corpus, seed: int, task: LMTask) -> tuple[np.ndarray, np.ndarray]:
  """The first ``steps + 1`` batches of seed ``seed``'s stream: ``(steps + 1, B, L)`` inputs and
  targets (the last one is only the final step's ``next_grads`` batch)."""
  stream = text_data.batches(corpus.train, seed, task.batch_size, task.seq_len)
  xs, ys = zip(*(next(stream) for _ in range(task.steps + 1)), strict=True)
  return np.stack(xs), np.stack(ys)


def run_lm_grid(name: str, learning_rates: Sequence[float] | None, seeds: Sequence[int], *,
                task: LMTask = LMTask(), options: dict[str, Any] | None = None,
                evaluations: int = LM_EVALUATIONS) -> dict[str, Any]:
  """Trains the transformer with the registry optimizer ``name`` for every (rate, seed) pair.

  The optimizer gets what its registry entry declares, as from ``train.train.train_step`` with
  no weight decay: ``value`` (the batch loss), ``value_fn`` / ``grad_fn`` (the loss and its
  gradient on the step's batch) and ``next_grads`` (the gradient of the next batch of the
  stream at the same parameters). The held-out loss is measured ``evaluations`` times (every
  ``steps / evaluations`` steps, the "epoch" the registry's ``steps_per_epoch`` sees) at the
  registry's evaluation point (``eval_params``: schedule-free's averaged parameters). All pairs
  run in one compiled program, one after the other (``lax.map`` over rates and seeds,
  ``lax.scan`` over steps: vmapping the runs batches every weight, and on 2 CPU cores 18 vmapped
  runs took 0.30 s per step and run against 0.037 s for one); a constructor that inspects the
  rate in Python falls back to one program per rate.

  Returns:
    ``{"train_loss", "test_loss", "rate"}``, each ``(settings, seeds, evaluations)`` (training
    loss: the mean over the interval's steps), ``"learning_rates"`` (``[None]`` for a method
    without one), ``"compile_seconds"``, ``"run_seconds"``.
  """
  from train import optimizers
  from train.bench import grid

  if task.steps % evaluations:
    raise ValueError(f"steps ({task.steps}) must be a multiple of evaluations ({evaluations}).")
  spec = optimizers.get_spec(name)
  interval = task.steps // evaluations
  corpus = task.corpus()
  streams = [_stream(corpus, seed, task) for seed in seeds]
  xs = jnp.asarray(np.stack([s[0] for s in streams]))
  ys = jnp.asarray(np.stack([s[1] for s in streams]))
  held = list(text_data.held_out_batches(corpus.held_out, task.batch_size, task.seq_len,
                                         task.eval_batches))
  hx = jnp.asarray(np.stack([h[0] for h in held]))
  hy = jnp.asarray(np.stack([h[1] for h in held]))
  model = task.model()
  loss = functools.partial(_loss, model)
  extra_args = spec.extra_args

  def one_run(learning_rate, seed, x_all, y_all):
    params = model.init(jax.random.key(seed), x_all[0, :1])["params"]
    tx = optimizers.create_optimizer(name, learning_rate, interval, task.steps, options)
    opt_state = tx.init(params)

    def step(carry, t):
      params, opt_state = carry
      x, y = x_all[t], y_all[t]
      value, grads = jax.value_and_grad(loss)(params, x, y)
      extra = {}
      if "value" in extra_args:
        extra["value"] = value
      if "value_fn" in extra_args:
        extra["value_fn"] = lambda p: loss(p, x, y)
      if "grad_fn" in extra_args:
        extra["grad_fn"] = lambda p: jax.grad(loss)(p, x, y)
      if "next_grads" in extra_args:
        extra["next_grads"] = jax.grad(loss)(params, x_all[t + 1], y_all[t + 1])
      updates, opt_state = tx.update(grads, opt_state, params, **extra)
      return (optax.apply_updates(params, updates), opt_state), value

    def evaluation(carry, k):
      carry, values = jax.lax.scan(step, carry, k * interval + jnp.arange(interval))
      params, opt_state = carry
      point = spec.eval_params(opt_state, params) if spec.eval_params else params
      held_out = jnp.mean(jax.lax.map(lambda b: loss(point, *b), (hx, hy)))
      rate = grid.rate_metrics(opt_state)["rate"]
      return carry, (jnp.mean(values), held_out, rate)

    _, (train_loss, test_loss, rate) = jax.lax.scan(evaluation, (params, opt_state),
                                                    jnp.arange(evaluations))
    return train_loss, test_loss, rate

  seed_array = jnp.asarray(list(seeds), jnp.uint32)

  def over_seeds(learning_rate, seed_values, x_all, y_all):
    return jax.lax.map(lambda run: one_run(learning_rate, *run), (seed_values, x_all, y_all))

  compile_s = run_s = 0.0

  def compile_and_run(fn, *args):
    nonlocal compile_s, run_s
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s += time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    run_s += time.perf_counter() - start
    return out

  if learning_rates is None:
    outs = [compile_and_run(lambda s, x, y: over_seeds(None, s, x, y), seed_array, xs, ys)]
  else:
    rates = jnp.asarray(list(learning_rates), jnp.float32)
    try:
      outs = [compile_and_run(lambda r, s, x, y: jax.lax.map(
          lambda lr: over_seeds(lr, s, x, y), r), rates, seed_array, xs, ys)]
      outs = [tuple(o[i] for o in outs[0]) for i in range(len(learning_rates))]
    except Exception as error:  # noqa: BLE001 - a constructor that needs a concrete rate
      if not grid._traced_value_error(error):
        raise
      outs = [compile_and_run(lambda s, x, y, lr=lr: over_seeds(lr, s, x, y), seed_array, xs,
                              ys) for lr in learning_rates]
  stacked = [np.stack([np.asarray(o[i], np.float64) for o in outs]) for i in range(3)]
  return {"train_loss": stacked[0], "test_loss": stacked[1], "rate": stacked[2],
          "learning_rates": list(learning_rates) if learning_rates is not None else [None],
          "compile_seconds": compile_s, "run_seconds": run_s}
