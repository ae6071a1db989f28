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
    ``initial_val_loss``, ``rate_max`` (per-group largest rate at the end), ``seconds``.
  """
  corpus = text_data.load_corpus(max_bytes=task.corpus_bytes, held_out=0.1)
  model = models.TransformerLM(num_layers=task.num_layers, width=task.width,
                               num_heads=task.num_heads, max_len=task.seq_len)
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
  return {"train_loss": losses, "val_loss": held_out(params), "initial_val_loss": initial,
          "rate_max": rate_group_max(opt_state), "seconds": seconds}


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
          f"{result['seconds']:.0f}s max_rate: {rates or '-'}")


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
