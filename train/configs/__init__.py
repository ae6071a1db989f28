"""Run configurations: the :class:`Config` fields, one small module per preset, ``--set`` overrides.

A preset is a module of this package with ``get_config() -> Config`` (as in Flax's examples);
``default`` is the main job on the embedded digits. :func:`get_config` loads a preset and applies
``key=value`` overrides; unknown presets and keys fail with the valid choices listed.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import math
import os
import pkgutil
from collections.abc import Sequence
from typing import Any

from train import config_schema


@dataclasses.dataclass
class Config:
  """Everything a run depends on. Saved as ``config.json`` in the workdir.

  Attributes:
    dataset: a name of ``train.input_pipeline.DATASETS``.
    data_dir: TFDS data directory (None: TFDS's default).
    model: a name of ``models.MODELS``.
    model_options: extra keyword arguments of the model constructor.
    optimizer: a name of ``train.optimizers.OPTIMIZERS``.
    learning_rate: initial (or peak) rate; ignored by methods that set their own.
    weight_decay: coupled L2 decay added to the gradient.
    optimizer_options: the optimizer's own options (``train.optimizers.OptimizerSpec.options``).
    batch_size: global training batch, divisible by the number of devices.
    eval_batch_size: global evaluation batch (rounded up to a multiple of the devices).
    num_epochs: epochs to train.
    seed: seeds the initialisation, the data order, augmentation and dropout.
    mapping: ``"shard_map"`` (``jax.shard_map`` under ``jax.jit``) or ``"pmap"``.
    num_devices: use the first N local devices (None: every device of every process).
    checkpoint: save orbax checkpoints (every ``checkpoint_every_steps``, at the end and on
      SIGTERM) and resume from the newest intact one.
    checkpoint_every_steps: optimizer steps between checkpoints (None: once per epoch).
    data_workers: grain worker processes for decode and augmentation (0: in the main process).
    prefetch_batches: local batches the input pipeline reads ahead (bounds its host memory).
    keep_checkpoints: how many checkpoints to keep.
    progress: show a tqdm progress bar per epoch.
    plot: write ``curves.png`` (at most every ``plot_every_seconds`` and at the end).
    plot_every_seconds: the least time between two ``curves.png`` writes during a run.
    stop_on_divergence: stop at the first diverged epoch, one whose training loss is not finite or
      above 100 times the chance-level loss (``train.reporting.divergence_bound``; exit status 3).
  """

  dataset: str = "digits"
  data_dir: str | None = None
  model: str = "small_cnn"
  model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  optimizer: str = "tlr_sgd"
  learning_rate: float | None = 0.1
  weight_decay: float = 0.0
  optimizer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int = 64
  eval_batch_size: int = 512
  num_epochs: int = 10
  seed: int = 0
  mapping: str = "shard_map"
  num_devices: int | None = None
  checkpoint: bool = True
  checkpoint_every_steps: int | None = None
  data_workers: int = 0
  prefetch_batches: int = 2
  keep_checkpoints: int = 2
  progress: bool = True
  plot: bool = True
  plot_every_seconds: float = 10.0
  stop_on_divergence: bool = True

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Config:
    return cls(**{k: v for k, v in values.items() if k in cls.field_names()})

  @classmethod
  def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


#: Fields that change how a run is shown, not what it computes (a resumed run may change them).
COSMETIC_FIELDS = ("progress", "plot", "keep_checkpoints", "plot_every_seconds",
                   "stop_on_divergence", "checkpoint_every_steps", "data_workers",
                   "prefetch_batches")

#: Fields a resumed run may change besides the cosmetic ones: ``num_epochs`` extends (or, below
#: the epochs already trained, is refused).
EXTENSIBLE_FIELDS = ("num_epochs",)

_MAPPINGS = ("shard_map", "pmap")


def presets() -> list[str]:
  """The names of the preset modules."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _parse_value(text: str) -> Any:
  """A Python literal when the text is one (numbers, booleans, None, tuples, dicts), else the
  string itself (``optimizer=sgd``)."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def field_types() -> dict[str, tuple[str, ...]]:
  """Each field's declared type as the names it allows (``"float | None"`` -> ``("float",
  "None")``), read from the annotations (``from __future__ import annotations`` keeps them
  strings)."""
  return {f.name: tuple(part.strip().split("[")[0] for part in str(f.type).split("|"))
          for f in dataclasses.fields(Config)}


def field_docs() -> dict[str, str]:
  """Each field's one-line description from the ``Attributes:`` section of :class:`Config`."""
  docs: dict[str, str] = {}
  name = None
  for line in (Config.__doc__ or "").split("Attributes:", 1)[-1].splitlines():
    stripped = line.strip()
    head, sep, rest = stripped.partition(": ")
    if sep and head in Config.field_names():
      name, docs[head] = head, rest
    elif name and stripped:
      docs[name] += " " + stripped
  return docs


def _coerce(name: str, value: Any, allowed: tuple[str, ...]) -> Any:
  """The override value in the field's declared type (int fields refuse 1.5, float fields take
  1 and store 1.0); a one-line ValueError naming the field otherwise."""
  if value is None and "None" in allowed:
    return None
  if "bool" in allowed:
    if isinstance(value, bool):
      return value
    expected = "true or false"
  elif "int" in allowed:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    expected = "an integer"
  elif "float" in allowed:
    if isinstance(value, int | float) and not isinstance(value, bool):
      return float(value)
    expected = "a number"
  elif "dict" in allowed:
    if isinstance(value, dict):
      return value
    expected = f"a dict (or use {name}.KEY=VALUE)"
  elif "str" in allowed:
    if isinstance(value, str):
      return value
    expected = "a string"
  else:
    return value
  if "None" in allowed:
    expected += " or none"
  raise ValueError(f"`{name}` must be {expected}; got {value!r}")


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
  """``config`` with ``key=value`` overrides applied; ``dict_field.key=value`` sets one entry.

  Options belong to their optimizer: overriding ``optimizer`` drops the preset's
  ``optimizer_options`` and keeps only those given on the command line.

  Raises:
    ValueError: a malformed override or an unknown key (the message lists the valid keys).
  """
  config = dataclasses.replace(config, model_options=dict(config.model_options),
                               optimizer_options=dict(config.optimizer_options))
  types = field_types()
  preset_optimizer = config.optimizer
  given_options: dict[str, Any] | None = None
  for override in overrides:
    if "=" not in override:
      raise ValueError(f"an override must read key=value; got {override!r}")
    key, text = override.split("=", 1)
    key = key.strip()
    value = _parse_value(text)
    field, _, sub_key = key.partition(".")
    if field not in Config.field_names():
      raise ValueError(f"unknown config key {field!r}; valid keys: "
                       f"{', '.join(Config.field_names())}")
    current = getattr(config, field)
    if sub_key:
      if not isinstance(current, dict):
        raise ValueError(f"`{field}` is not a dict; `{key}` cannot be set")
      current[sub_key] = value
      if field == "optimizer_options":
        given_options = {**(given_options or {}), sub_key: value}
      continue
    value = _coerce(field, value, types[field])
    setattr(config, field, value)
    if field == "optimizer_options":
      given_options = dict(value or {})
  if config.optimizer != preset_optimizer:
    config.optimizer_options = given_options or {}
  return config


def _number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: Config) -> None:
  """Checks everything that needs no data or devices: field types and ranges, the optimizer,
  model and dataset names and the optimizer options' names and types (from the live registries,
  :mod:`train.config_schema`; importing them imports JAX). Each failure is a one-line ValueError
  naming the key. A run calls it once (``train.train.build`` / ``train_and_evaluate``); the
  options' ranges are checked there too, where the optimizer is built with the real step counts.
  """
  types = field_types()
  for name in Config.field_names():
    _coerce(name, getattr(config, name), types[name])  # a preset written with a wrong type
  if config.mapping not in _MAPPINGS:
    raise ValueError(f"`mapping` must be one of {', '.join(_MAPPINGS)}; got {config.mapping!r}")
  for name in ("batch_size", "eval_batch_size", "num_epochs", "keep_checkpoints"):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"`{name}` must be an integer >= 1; got {value!r}")
  if config.num_devices is not None and (not isinstance(config.num_devices, int)
                                         or config.num_devices < 1):
    raise ValueError(f"`num_devices` must be None or an integer >= 1; got {config.num_devices!r}")
  if config.checkpoint_every_steps is not None and (
      isinstance(config.checkpoint_every_steps, bool)
      or not isinstance(config.checkpoint_every_steps, int) or config.checkpoint_every_steps < 1):
    raise ValueError("`checkpoint_every_steps` must be None (once per epoch) or an integer >= 1; "
                     f"got {config.checkpoint_every_steps!r}")
  for name, least in (("data_workers", 0), ("prefetch_batches", 1)):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f"`{name}` must be an integer >= {least}; got {value!r}")
  for name in ("weight_decay", "plot_every_seconds"):
    value = getattr(config, name)
    if not _number(value) or value < 0:
      raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}")
  config_schema.check_names(config.optimizer, config.model, config.dataset,
                            config.optimizer_options, config.model_options)
  from train import optimizers  # JAX: a second or two, once per run

  if optimizers.get_spec(config.optimizer).takes_learning_rate and not (
      _number(config.learning_rate) and config.learning_rate > 0):
    raise ValueError(f"`learning_rate` must be a finite number > 0 for {config.optimizer!r}; "
                     f"got {config.learning_rate!r}")


def check_resumable(workdir: str, config: Config) -> None:
  """A one-line ValueError when ``workdir`` holds a run (``config.json``) with another config.

  Fields in :data:`COSMETIC_FIELDS` and :data:`EXTENSIBLE_FIELDS` may differ. Reads one small
  file, so the command line checks it before importing JAX.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f"{path} cannot be read ({error}); use a new --workdir") from None
  current = json.loads(config.to_json())
  different = sorted(k for k in current if k not in COSMETIC_FIELDS
                     and k not in EXTENSIBLE_FIELDS and saved.get(k) != current[k])
  if different:
    raise ValueError(f"{workdir} holds a run with a different config ({', '.join(different)} "
                     "differ); resume with the same config or use a new --workdir")


def get_config(name: str = "default", overrides: Sequence[str] = ()) -> Config:
  """The preset ``name`` with ``overrides`` applied (parsed, not yet validated: the run checks
  the whole config once, with :func:`validate`, before it writes anything).

  Raises:
    ValueError: unknown preset or key (the message lists the valid choices), or a value that
      does not parse as the field's type.
  """
  if name not in presets():
    raise ValueError(f"unknown config {name!r}; valid choices: {', '.join(presets())}")
  module = importlib.import_module(f"{__name__}.{name}")
  return apply_overrides(module.get_config(), overrides)
