"""What ``--set`` accepts, read from the live registries: names, option keys, types and defaults.

The registries are the one source of truth: the optimizer registry ``train.optimizers.OPTIMIZERS``
(with the keyword defaults of the optax_lr factory a ``**options`` builder forwards to), the
model registry ``models.MODELS`` (the dataclass fields of each constructor) and
``train.input_pipeline.DATASETS``. Importing them imports JAX (a couple of seconds), which is why
they are imported inside the functions: ``train.configs`` stays light to import, and a config is
checked once, by :func:`train.configs.validate`, when a run is built.
"""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from collections.abc import Mapping
from typing import Any


class _Unknown:
  """No default to take a type from (a required field, or one whose default is a function such
  as ``nn.relu`` or a dtype): any value is accepted here and the constructor checks it."""

  def __repr__(self) -> str:
    return "<no literal default>"


#: The default of an option whose type cannot be told from its default.
UNKNOWN = _Unknown()


def option_defaults(name: str) -> dict[str, Any]:
  """Option -> default of the registered optimizer ``name`` (ValueError listing the valid
  names for an unknown one)."""
  import inspect

  from train import optimizers

  return {k: UNKNOWN if v is inspect.Parameter.empty else v
          for k, v in optimizers.get_spec(name).options().items()}


def _fields(constructor: Any) -> dict[str, Any]:
  """Field -> default of a model constructor (a module class or a ``functools.partial`` of one,
  whose keywords are its defaults)."""
  keywords = {}
  while isinstance(constructor, functools.partial):
    keywords = {**constructor.keywords, **keywords}
    constructor = constructor.func
  fields = {}
  for field in dataclasses.fields(constructor):
    if field.name in ("parent", "name", "num_classes"):  # Flax's own; the dataset's
      continue
    if field.name in keywords:
      fields[field.name] = keywords[field.name]
    elif field.default is not dataclasses.MISSING:
      fields[field.name] = field.default
    else:
      fields[field.name] = UNKNOWN
  return fields


def model_attributes() -> dict[str, dict[str, Any]]:
  """Model name -> the attributes ``model_options`` may set and their defaults."""
  import models

  return {name: _fields(constructor) for name, constructor in models.MODELS.items()}


def dataset_names() -> tuple[str, ...]:
  from train import input_pipeline

  return tuple(input_pipeline.DATASETS)


# --- types ---------------------------------------------------------------------------------------

def kind(default: Any) -> str:
  """The type a value must have to replace ``default``, as shown by ``--help``."""
  if default is UNKNOWN or default is None:
    return "any"
  if isinstance(default, bool):
    return "bool"
  if isinstance(default, int | float):
    return "number"
  if isinstance(default, str):
    return "str"
  if isinstance(default, tuple | list):
    return "sequence"
  if isinstance(default, Mapping):
    return "dict"
  return "any"


def check_value(name: str, value: Any, default: Any) -> None:
  """Raises ValueError (one line) when ``value`` is not of the kind of ``default``."""
  expected = kind(default)
  ok = {
      "any": True,
      "bool": isinstance(value, bool),
      "number": isinstance(value, int | float) and not isinstance(value, bool),
      "str": isinstance(value, str),
      "sequence": isinstance(value, tuple | list),
      "dict": isinstance(value, Mapping),
  }[expected]
  if not ok:
    words = {"bool": "true or false", "number": "a number", "str": "a string",
             "sequence": "a sequence such as (1, 2)", "dict": "a dict"}[expected]
    raise ValueError(f"`{name}` must be {words} (default {default!r}); got {value!r}")


def check_names(optimizer: str, model: str, dataset: str, optimizer_options: Mapping[str, Any],
                model_options: Mapping[str, Any] | None = None) -> None:
  """The registry checks: names, and the names and types of the optimizer's options and of the
  model's attributes. (The options' ranges are the optimizer's own checks, made where the run
  builds it.)

  Raises:
    ValueError: one line naming the bad key and listing the valid choices.
  """
  from train import optimizers

  model_options = model_options or {}
  spec = optimizers.get_spec(optimizer)
  options = option_defaults(optimizer)
  if not spec.open_options:
    unknown = sorted(set(optimizer_options) - set(options))
    if unknown:
      raise ValueError(f"unknown option(s) {', '.join(unknown)} for optimizer {optimizer!r}; "
                       f"valid options: {', '.join(options) or 'none'}")
  for key, value in optimizer_options.items():
    if key in options:
      check_value(f"optimizer_options.{key}", value, options[key])
  attributes = model_attributes()
  if model not in attributes:
    raise ValueError(f"unknown model {model!r}; valid names: {', '.join(attributes)}")
  unknown = sorted(set(model_options) - set(attributes[model]))
  if unknown:
    raise ValueError(f"unknown attribute(s) {', '.join(unknown)} for model {model!r}; valid: "
                     f"{', '.join(attributes[model])}")
  for key, value in model_options.items():
    check_value(f"model_options.{key}", value, attributes[model][key])
  datasets = dataset_names()
  if dataset not in datasets:
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(datasets)}")



def _shown(value: Any) -> str:
  """``repr``, with long floats (``1 / 3``) to 6 significant digits."""
  text = repr(value)
  return format(value, ".6g") if isinstance(value, float) and len(text) > 10 else text


def _option(key: str, default: Any) -> str:
  return f"{key} (any)" if default is UNKNOWN else f"{key}={_shown(default)} ({kind(default)})"


def options_help(width: int = 100) -> str:
  """One block per optimizer: ``name: key=default (kind), ...`` wrapped to ``width``."""
  from train import optimizers

  lines = []
  for name in optimizers.OPTIMIZERS:
    options = ", ".join(_option(k, v) for k, v in option_defaults(name).items()) or "none"
    lines.extend(textwrap.wrap(f"{name}: {options}", width, initial_indent="  ",
                               subsequent_indent="      "))
  return "\n".join(lines)


def models_help(width: int = 100) -> str:
  """One block per model: the attributes ``model_options`` may set, with defaults and kinds."""
  lines = []
  for name, fields in model_attributes().items():
    shown = ", ".join(_option(k, v) for k, v in fields.items()) or "none"
    lines.extend(textwrap.wrap(f"{name}: {shown}", width, initial_indent="  ",
                               subsequent_indent="      "))
  return "\n".join(lines)
