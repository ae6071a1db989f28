"""What a run reports about itself: its rates under readable metric keys, the epoch line, the
summary table, the divergence rule (:func:`divergence`) and the optimizer's own blow-up test
(:func:`blow_up`).

Metric keys (one value per epoch in ``metrics.jsonl``, read at the end of the epoch):

- ``learning_rate``: the rate, for methods with one scalar rate (TLR, HD, AutoDrop, a schedule
  under ``optax.inject_hyperparams``);
- ``learning_rate/mean``, ``/min``, ``/max``, ``/norm``: for methods with many rates, statistics
  of the *effective per-element rate*, the factor that multiplies each parameter's direction:
  AdaSecant's per-element rates; one rate per tensor counted once per element of its tensor;
  for CAM-HD the combined, blended rate ``kappa`` (:func:`optax_lr.cam_hd_effective_learning_rate`),
  never a combination weight. ``norm`` is the Euclidean norm over elements (the AdaSecant thesis
  plots it), a different quantity from the rates themselves;
- ``learning_rate/<leaf path>``: one rate per tensor (``learning_rate/Dense_0/kernel``);
- ``learning_rate/<level>[/<leaf path>]``: CAM-HD's level rates (``learning_rate/global``,
  ``learning_rate/layer/Dense_0/kernel``; a level with arrays as ``learning_rate/filter/mean``...);
- ``combination_weights/<level>``: CAM-HD's weights ``gamma`` (dimensionless, summing to 1);
- ``angular_velocity``: AutoDrop's angle in degrees;
- ``reduce_on_plateau/scale``: ``optax.contrib.reduce_on_plateau``'s factor, already applied to
  the rates above (they are the rates the updates see);
- ``largest_step_ratio``: AdaSecant's and Simple AdaSecant's blow-up test
  (:func:`optax_lr.largest_step_ratio`: the largest step so far over the first); above
  ``BLOW_UP_RATIO`` (10) the row gets ``"blown_up": true`` (:func:`blow_up`).

A state with several rate fields (``optax_lr.switch_at``) keeps each field's path in front
(``first_state/hyperparams/learning_rate``) so no two fields share a key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr
from optax_lr.adasecant import BLOW_UP_RATIO

PyTree = Any
RATE = "learning_rate"
STEP_RATIO = "largest_step_ratio"
WEIGHTS = "combination_weights"
SUMMARY = ("mean", "min", "max", "norm")


def _key_name(key: Any) -> str:
  for attribute in ("name", "key", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _path(path: Sequence[Any]) -> str:
  return "/".join(_key_name(k) for k in path)


def _float_leaves(tree: PyTree) -> list[tuple[str, jax.Array]]:
  """``(path, leaf)`` for the floating-point leaves (a schedule's int step counter is no rate)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(_path(p), x) for p, x in leaves
          if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def _scalar(x: jax.Array) -> jax.Array:
  return jnp.reshape(x, ()).astype(jnp.float32)


def _per_element(params: PyTree | None, rates: PyTree) -> list[jax.Array] | None:
  """One rate per tensor broadcast to its tensor's elements, when ``rates`` has the structure of
  ``params``; else None."""
  if params is None or jax.tree.structure(params) != jax.tree.structure(rates):
    return None
  return [jnp.broadcast_to(jnp.asarray(r, jnp.float32), np.shape(p))
          for r, p in zip(jax.tree.leaves(rates), jax.tree.leaves(params), strict=True)]


def _is_plateau(x: Any) -> bool:
  return isinstance(x, optax.contrib.ReduceLROnPlateauState)


def rate_values(opt_state: PyTree, params: PyTree | None = None) -> dict[str, jax.Array]:
  """Every rate reading of an optimizer state under the keys of this module, as float32 scalars.

  Traceable (jit it once; the loop calls it at the end of every epoch). Everything is read from
  the state: CAM-HD's state carries its blend and floor, so no optimizer setting is needed.

  Args:
    opt_state: the state of any optax transformation.
    params: the parameters; for one rate per tensor, the ``learning_rate/<stat>`` statistics
      count each rate once per element of its tensor and need them (without them only the
      per-tensor keys are reported).

  Returns:
    Key -> float32 scalar.
  """
  # Only fields holding floats are rates (inject_hyperparams keeps a schedule's int counter
  # under the same name).
  found = [(path, field) for path, field in optax.tree.get_all_with_path(opt_state, RATE)
           if _float_leaves(field)]
  values: dict[str, jax.Array] = {}
  for path, field in found:
    # Several rate fields (a switch between two methods): keep each field's path in the keys.
    name = _path(path) if len(found) > 1 else RATE
    prefix = name[:-len(RATE)]
    if isinstance(field, Mapping) and WEIGHTS in field:  # CAM-HD: levels and weights
      for level, rates in field.items():
        if level == WEIGHTS:
          for weight_name, weight in _float_leaves(rates):
            values[f"{prefix}{WEIGHTS}/{weight_name}"] = _scalar(weight)
          continue
        leaves = _float_leaves(rates)
        if all(jnp.size(x) == 1 for _, x in leaves):
          for leaf_name, x in leaves:
            values["/".join(filter(None, (name, level, leaf_name)))] = _scalar(x)
        else:
          summary = optax_lr.rate_summary([x for _, x in leaves])
          values.update({f"{name}/{level}/{k}": summary[k] for k in ("mean", "min", "max")})
      effective = optax_lr.cam_hd_effective_learning_rate(opt_state)
      summary = optax_lr.rate_summary(effective)
      values.update({f"{name}/{k}": summary[k] for k in SUMMARY})
      continue
    leaves = _float_leaves(field)
    if len(leaves) == 1 and jnp.size(leaves[0][1]) == 1:
      values[name] = _scalar(leaves[0][1])
      continue
    if all(jnp.size(x) == 1 for _, x in leaves):  # one rate per tensor
      for leaf_name, x in leaves:
        values[f"{name}/{leaf_name}"] = _scalar(x)
      elements = _per_element(params, field)
      if elements is None:  # per-element statistics need each tensor's size
        continue
      summary = optax_lr.rate_summary(elements)
    else:  # per-element rates
      summary = optax_lr.rate_summary([x for _, x in leaves])
    values.update({f"{name}/{k}": summary[k] for k in SUMMARY})
  plateaus = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(x)]
  if len(plateaus) == 1:
    # reduce_on_plateau multiplies the updates by its scale: the applied rate is rate * scale.
    scale = _scalar(plateaus[0].scale)
    values = {k: v * scale if RATE in k else v for k, v in values.items()}
    values["reduce_on_plateau/scale"] = scale
  ratio = optax_lr.largest_step_ratio(opt_state)
  if ratio is not None:
    values[STEP_RATIO] = ratio
  angles = optax.tree.get_all_with_path(opt_state, "angular_velocity")
  for i, (_, angle) in enumerate(angles):
    values["angular_velocity" if len(angles) == 1 else f"angular_velocity/{i}"] = _scalar(angle)
  return values


# --- reading rows --------------------------------------------------------------------------------

def current_rates(row: Mapping[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
  """The effective rate(s) of a metric row: ``[(name, {"value": x})]`` for a scalar rate,
  ``[(name, {"mean", "min", "max"})]`` for many rates; one entry per rate field."""
  found = []
  for key in row:
    if key.endswith(RATE):
      found.append((key, {"value": row[key]}))
    elif key.endswith(f"{RATE}/mean"):
      base = key[:-len("/mean")]
      found.append((base, {k: row.get(f"{base}/{k}") for k in ("mean", "min", "max")}))
  return found


def _number(value: float | None, spec: str = ".3g") -> str:
  return "nan" if value is None else format(value, spec)


def _metric(value: float | None) -> str:
  """A loss or accuracy: 4 decimals, or 4 significant digits once it is huge (diverging)."""
  if value is None or not math.isfinite(value):
    return "nan"
  return format(value, ".3e" if abs(value) >= 1e5 else ".4f")


def rate_text(row: Mapping[str, Any]) -> str:
  """``lr 0.0526`` or ``lr mean 1.02e-03 [min 9.8e-04, max 1.1e-03]`` (``-`` without rates)."""
  parts = []
  for name, stats in current_rates(row):
    label = "lr" if name == RATE else f"lr({name})"
    if "value" in stats:
      parts.append(f"{label} {_number(stats['value'], '.4g')}")
    else:
      parts.append(f"{label} mean {_number(stats['mean'])} [min {_number(stats['min'])}, "
                   f"max {_number(stats['max'])}]")
  return "; ".join(parts) or "lr -"


def representative_rate(row: Mapping[str, Any]) -> float | None:
  """One number for the summary table: the rate, or the mean effective rate."""
  rates = current_rates(row)
  if not rates:
    return None
  stats = rates[0][1]
  return stats.get("value", stats.get("mean"))


def is_finite(value: float | None) -> bool:
  return value is not None and math.isfinite(value)


#: An epoch whose mean training loss exceeds this many times the chance-level loss
#: ``log(num_classes)`` has diverged (see :func:`divergence_bound`).
DIVERGENCE_FACTOR = 100.0

#: The last epoch of a run diverged when its mean training loss exceeds this many times the
#: chance-level loss (see :func:`divergence`).
FINAL_DIVERGENCE_FACTOR = 3.0


def divergence_bound(num_classes: int, final: bool = False) -> float:
  """The largest mean training loss of an epoch that is not divergence:
  ``DIVERGENCE_FACTOR * log(num_classes)`` (230.3 for 10 classes), and
  ``FINAL_DIVERGENCE_FACTOR * log(num_classes)`` (6.9 for 10 classes) for the run's last epoch.

  ``log(num_classes)`` is the cross-entropy of predicting every class with equal probability,
  and about the loss of a freshly initialised classifier, so the bound is also about 100 times
  the run's starting loss. A mean loss 100 times larger means the correct class is given
  probability ``num_classes ** -100`` on average: the logits have blown up, not a slow or noisy
  run (a run that learns stays below ``log(num_classes)`` after its first epoch), and the run
  stops there. Below it a run may still recover, so a middle epoch is not judged more tightly;
  the last epoch is: a run that *ends* above 3 times the chance-level loss gives the correct
  class ``num_classes ** -3`` on average, ``num_classes ** 2`` times less than guessing, after
  all its epochs to recover (a run that learned nothing ends near ``log(num_classes)``). Without
  it a byte language model (256 classes, bound 554.5) that ends at 535 nats would pass. Both
  bounds need no state of the run, so a resumed run judges every epoch exactly as an
  uninterrupted one.
  """
  if num_classes < 2:
    raise ValueError(f"`num_classes` must be >= 2; got {num_classes}")
  return (FINAL_DIVERGENCE_FACTOR if final else DIVERGENCE_FACTOR) * math.log(num_classes)


def divergence(train_loss: float | None, num_classes: int, final: bool = False) -> str | None:
  """Why an epoch with this mean training loss diverged (``"is not finite"``, ``"is 2.662e+15,
  above 230.3 = 100 x log(10), the chance-level loss"``), or None when it did not; ``final``:
  the run's last epoch, judged by the tighter bound (:func:`divergence_bound`)."""
  if not is_finite(train_loss):
    return "is not finite"
  bound = divergence_bound(num_classes)
  if train_loss > bound:
    return (f"is {_metric(train_loss)}, above {bound:.1f} = {DIVERGENCE_FACTOR:g} x "
            f"log({num_classes}), the chance-level loss")
  final_bound = divergence_bound(num_classes, final=True)
  if final and train_loss > final_bound:
    return (f"is {_metric(train_loss)} at the last epoch, above {final_bound:.1f} = "
            f"{FINAL_DIVERGENCE_FACTOR:g} x log({num_classes}), the chance-level loss")
  return None


def blow_up(row: Mapping[str, Any]) -> str | None:
  """Why the optimizer reports a blow-up in this metric row (its ``largest_step_ratio`` above
  ``BLOW_UP_RATIO``, 10), or None."""
  ratio = row.get(STEP_RATIO)
  if ratio is None or not ratio > BLOW_UP_RATIO:
    return None
  return (f"the optimizer reports a blow-up: a step {_number(ratio)} times its first "
          f"(above {BLOW_UP_RATIO:g}, optax_lr.blown_up)")


def diverged_message(row: Mapping[str, Any], reason: str, stopping: bool) -> str:
  """The line a run prints at its first diverged epoch; ``reason`` from :func:`divergence`."""
  action = ("stopping (the state of this epoch is not checkpointed; --set "
            "stop_on_divergence=false keeps going)" if stopping else "going on "
            "(stop_on_divergence=false)")
  return (f"diverged: the training loss of epoch {row['epoch']} {reason} "
          f"({rate_text(row)} at its end); {action}. A lower learning_rate usually helps.")


def epoch_line(row: Mapping[str, Any], num_epochs: int) -> str:
  """The line printed after each epoch, for example ``epoch 3/15: train_loss 0.1543 test_loss
  0.1645 test_accuracy 0.9583 lr 0.0526 (0.1 s)``."""
  loss = lambda key: _metric(row.get(key))
  return (f"epoch {row['epoch']}/{num_epochs}: train_loss {loss('train_loss')} test_loss "
          f"{loss('test_loss')} test_accuracy {loss('test_accuracy')} {rate_text(row)} "
          f"({row['epoch_time']:.1f} s)")


def summary_table(rows: Sequence[Mapping[str, Any]], max_rows: int = 12) -> str:
  """A plain-text table of the per-epoch metrics (the last ``max_rows`` epochs, saying so when
  it is cut) and the totals."""
  scalar = any("value" in stats for row in rows[-1:] for _, stats in current_rates(row))
  rate_header = "rate" if scalar or not rows else "rate_mean"
  header = f"{'epoch':>5} {'train_loss':>10} {'test_loss':>10} {'test_acc':>8} " \
           f"{rate_header:>10} {'time_s':>7} {'img/s':>8}"
  lines = []
  if len(rows) > max_rows:
    lines.append(f"last {max_rows} of {len(rows)} epochs (every epoch is in metrics.jsonl):")
  lines += [header, "-" * len(header)]

  def cell(value, width, spec):
    if spec == "metric":  # null in metrics.jsonl is a non-finite value
      text = _metric(value)
    else:
      text = "-" if value is None else format(value, spec)
    return f"{text:>{width}}"

  for row in rows[-max_rows:]:
    lines.append(" ".join([
        cell(row["epoch"], 5, "d"), cell(row["train_loss"], 10, "metric"),
        cell(row["test_loss"], 10, "metric"), cell(row["test_accuracy"], 8, "metric"),
        cell(representative_rate(row), 10, ".3g"), cell(row["epoch_time"], 7, ".2f"),
        cell(row["images_per_second"], 8, ".0f")]) + ("  diverged" if row.get("diverged") else "")
        + ("  blown up" if row.get("blown_up") else ""))
  if rows:
    accuracies = [r for r in rows if is_finite(r["test_accuracy"])]
    total = sum(r["epoch_time"] for r in rows)
    final = _metric(rows[-1]["test_accuracy"])
    best = max(accuracies, key=lambda r: r["test_accuracy"]) if accuracies else None
    best_text = (f"best {best['test_accuracy']:.4f} at epoch {best['epoch']}" if best
                 else "no finite accuracy")
    lines.append(f"final test accuracy {final}; {best_text}; {total:.1f} s in epochs")
    if rows[-1].get("diverged"):
      lines.append(f"the run diverged at epoch {rows[-1]['epoch']}")
    if rows[-1].get("blown_up"):
      lines.append(blow_up(rows[-1]))
  return "\n".join(lines)
