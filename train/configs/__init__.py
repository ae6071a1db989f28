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
import pkgutil
from collections.abc import Sequence
from typing import Any


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
    checkpoint: save an orbax checkpoint after every epoch (and resume from the latest).
    keep_checkpoints: how many checkpoints to keep.
    progress: show a tqdm progress bar per epoch.
    plot: write ``curves.png`` after every epoch.
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
  keep_checkpoints: int = 2
  progress: bool = True
  plot: bool = True

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Config:
    return cls(**{k: v for k, v in values.items() if k in cls.field_names()})

  @classmethod
  def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


#: Fields that change how a run is shown, not what it computes (a resumed run may change them).
COSMETIC_FIELDS = ("progress", "plot", "keep_checkpoints")

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


def _coerce(name: str, value: Any, default: Any) -> Any:
  """The override value in the field's type (int fields refuse 1.5, float fields take 1)."""
  if isinstance(default, bool):
    if not isinstance(value, bool):
      raise ValueError(f"`{name}` must be true or false; got {value!r}")
    return value
  if isinstance(default, int) and not isinstance(default, bool):
    if isinstance(value, bool) or not isinstance(value, int):
      raise ValueError(f"`{name}` must be an integer; got {value!r}")
    return value
  if isinstance(default, float):
    if isinstance(value, bool) or not isinstance(value, int | float):
      raise ValueError(f"`{name}` must be a number; got {value!r}")
    return float(value)
  if isinstance(default, dict) and not isinstance(value, dict):
    raise ValueError(f"`{name}` must be a dict (or use {name}.KEY=VALUE); got {value!r}")
  return value


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
  """``config`` with ``key=value`` overrides applied; ``dict_field.key=value`` sets one entry.

  Options belong to their optimizer: overriding ``optimizer`` drops the preset's
  ``optimizer_options`` and keeps only those given on the command line.

  Raises:
    ValueError: a malformed override or an unknown key (the message lists the valid keys).
  """
  config = dataclasses.replace(config, model_options=dict(config.model_options),
                               optimizer_options=dict(config.optimizer_options))
  defaults = Config()
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
    default = getattr(defaults, field)
    if value is not None or default is not None:
      value = _coerce(field, value, default if default is not None else current)
    setattr(config, field, value)
    if field == "optimizer_options":
      given_options = dict(value or {})
  if config.optimizer != preset_optimizer:
    config.optimizer_options = given_options or {}
  return config


def validate(config: Config) -> None:
  """Checks the fields that need no data or models (the rest is checked where it is used)."""
  if config.mapping not in _MAPPINGS:
    raise ValueError(f"`mapping` must be one of {', '.join(_MAPPINGS)}; got {config.mapping!r}")
  for name in ("batch_size", "eval_batch_size", "num_epochs", "keep_checkpoints"):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"`{name}` must be an integer >= 1; got {value!r}")
  if config.num_devices is not None and (not isinstance(config.num_devices, int)
                                         or config.num_devices < 1):
    raise ValueError(f"`num_devices` must be None or an integer >= 1; got {config.num_devices!r}")


def get_config(name: str = "default", overrides: Sequence[str] = ()) -> Config:
  """The preset ``name`` with ``overrides`` applied.

  Raises:
    ValueError: unknown preset or key (the message lists the valid choices), or a bad value.
  """
  if name not in presets():
    raise ValueError(f"unknown config {name!r}; valid choices: {', '.join(presets())}")
  module = importlib.import_module(f"{__name__}.{name}")
  config = apply_overrides(module.get_config(), overrides)
  validate(config)
  return config
