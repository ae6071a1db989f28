"""What ``--set`` accepts, read without importing JAX: names, option keys, types and defaults.

The command line checks a whole config before the heavy imports (jax, flax, tfds take seconds) and
before anything is written, so a typo fails at once. The registries themselves stay the one source
of truth: this module reads them from their source files with :mod:`ast` (the optimizer registry
``train/optimizers.py`` and the optax_lr factories its builders forward to, the model registry
``models/registry.py``, the dataset names of ``train/input_pipeline.py``) instead of keeping a
second copy. Whatever cannot be read statically (a default that is not a literal, a registry
written another way) is left to the full check that runs when the run is built, which also comes
before any write; ``tests/test_cli.py`` checks that the static reading equals the live registries.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import operator
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

_ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Unknown:
  """A default that is not a literal (``nn.relu``, ``jnp.float32``): any value is accepted."""

  def __repr__(self) -> str:
    return "<not a literal>"


#: The default of an option whose value cannot be read without importing its module.
UNKNOWN = _Unknown()

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.Pow: operator.pow}


def _literal(node: ast.AST) -> Any:
  """A literal default (``0.8``, ``1 / 3``, ``("layer", "global")``, ``-1e-3``) or UNKNOWN."""
  try:
    return ast.literal_eval(node)
  except ValueError:
    pass
  if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
    left, right = _literal(node.left), _literal(node.right)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
    if numbers:
      return _OPERATORS[type(node.op)](left, right)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    value = _literal(node.operand)
    if isinstance(value, int | float) and not isinstance(value, bool):
      return -value
  return UNKNOWN


@functools.cache
def _module(relative: str) -> ast.Module | None:
  path = _ROOT / relative
  try:
    return ast.parse(path.read_text(), filename=str(path))
  except (OSError, SyntaxError):
    return None


def _assigned(tree: ast.Module, name: str) -> ast.AST | None:
  """The value of the module-level assignment ``name = ...`` (or ``name: T = ...``)."""
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in node.targets):
      return node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
        and node.target.id == name and node.value is not None:
      return node.value
  return None


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
  return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _keyword_defaults(function: ast.FunctionDef, skip: int,
                      module: ast.Module | None = None) -> dict[str, Any]:
  """Parameter name -> default for the parameters after the first ``skip`` positional ones.

  A default that names a module-level constant of ``module`` (``hypergrad_lr=AUTO_RATE``) is
  read from that constant's literal value.
  """
  def default_value(node):
    if node is None:
      return UNKNOWN
    if isinstance(node, ast.Name) and module is not None:
      assigned = _assigned(module, node.id)
      if assigned is not None:
        return _literal(assigned)
    return _literal(node)

  positional = function.args.posonlyargs + function.args.args
  defaults = [None] * (len(positional) - len(function.args.defaults)) + function.args.defaults
  options = {arg.arg: default_value(default)
             for arg, default in list(zip(positional, defaults, strict=True))[skip:]}
  for arg, default in zip(function.args.kwonlyargs, function.args.kw_defaults, strict=True):
    options[arg.arg] = default_value(default)
  return options


# --- the optimizer registry ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
  """A registry entry as read from ``train/optimizers.py``.

  Attributes:
    name: the registry key.
    description: its one-line description.
    options: option name -> default (:data:`UNKNOWN` when not a literal).
    takes_learning_rate: False for methods that set their own rate.
    extra_args: the extra ``update`` arguments the method needs.
    complete: False when the options could not all be read; unknown option names are then left
      to the builder.
  """

  name: str
  description: str
  options: dict[str, Any]
  takes_learning_rate: bool = True
  extra_args: tuple[str, ...] = ()
  complete: bool = True


def _forwarded_factory(function: ast.FunctionDef) -> str | None:
  """For a builder taking ``**options``: the optax_lr factory it forwards them to."""
  for node in ast.walk(function):
    if isinstance(node, ast.Call) and any(k.arg is None for k in node.keywords):
      target = node.func
      if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) \
          and target.func.id == "_optax_lr" and target.args:
        value = _literal(target.args[0])
        return value if isinstance(value, str) else None
      if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
          and target.value.id == "optax_lr":
        return target.attr
  return None


def _optax_lr_signature(name: str) -> dict[str, Any] | None:
  """Keyword defaults of the public factory ``optax_lr.<name>``, read from its module."""
  folder = _ROOT / "optax_lr"
  for path in sorted(folder.glob("*.py")):
    tree = _module(f"optax_lr/{path.name}")
    if tree is not None and name in _functions(tree):
      return _keyword_defaults(_functions(tree)[name], skip=0)
  return None


@functools.cache
def optimizer_registry() -> dict[str, OptimizerEntry] | None:
  """Every optimizer of ``train.optimizers.OPTIMIZERS`` with its options, or None when the
  registry cannot be read statically (the full check then does the work)."""
  tree = _module("train/optimizers.py")
  specs = None if tree is None else _assigned(tree, "_SPECS")
  if not isinstance(specs, ast.List | ast.Tuple):
    return None
  functions = _functions(tree)
  entries = {}
  for call in specs.elts:
    if not (isinstance(call, ast.Call) and len(call.args) >= 3
            and isinstance(call.args[1], ast.Name)):
      return None
    name, description = _literal(call.args[0]), _literal(call.args[2])
    builder = functions.get(call.args[1].id)
    if not isinstance(name, str) or builder is None:
      return None
    keywords = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
    options, complete = _keyword_defaults(builder, skip=3, module=tree), True
    if builder.args.kwarg is not None:
      factory = _forwarded_factory(builder)
      forwarded = _optax_lr_signature(factory) if factory else None
      if forwarded is None:
        complete = False
      else:
        options.update(forwarded)
    extra = keywords.get("extra_args", ())
    entries[name] = OptimizerEntry(
        name, description if isinstance(description, str) else "", options,
        takes_learning_rate=keywords.get("takes_learning_rate", True) is not False,
        extra_args=tuple(extra) if isinstance(extra, tuple) else (), complete=complete)
  return entries


# --- models and datasets -------------------------------------------------------------------------

def _string_keys(node: ast.AST | None, tree: ast.Module) -> tuple[str, ...] | None:
  """The names a registry literal lists: a dict's keys or a tuple's strings (``*OTHER`` expands
  another module-level registry)."""
  if isinstance(node, ast.Dict):
    keys = [_literal(k) if k is not None else UNKNOWN for k in node.keys]
  elif isinstance(node, ast.Tuple | ast.List):
    keys = []
    for element in node.elts:
      if isinstance(element, ast.Starred) and isinstance(element.value, ast.Name):
        inner = _string_keys(_assigned(tree, element.value.id), tree)
        if inner is None:
          return None
        keys.extend(inner)
      else:
        keys.append(_literal(element))
  else:
    return None
  return tuple(keys) if all(isinstance(k, str) for k in keys) else None


@functools.cache
def model_names() -> tuple[str, ...] | None:
  """The keys of ``models.MODELS`` (None when they cannot be read statically)."""
  tree = _module("models/registry.py")
  return None if tree is None else _string_keys(_assigned(tree, "MODELS"), tree)


def _resolve(node: ast.AST, module: str) -> tuple[str, ast.AST] | None:
  """Follows a registry value (``MLP``, ``resnet.ResNet18``) to its definition: ``(module,
  node)`` for a class definition or a ``functools.partial(...)`` call."""
  tree = _module(module)
  if tree is None:
    return None
  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
    return _resolve(ast.Name(node.attr), f"models/{node.value.id}.py")
  if not isinstance(node, ast.Name):
    return None
  for statement in tree.body:
    if isinstance(statement, ast.ClassDef) and statement.name == node.id:
      return module, statement
    if isinstance(statement, ast.ImportFrom) and statement.module and any(
        alias.name == node.id and alias.asname is None for alias in statement.names):
      return _resolve(node, statement.module.replace(".", "/") + ".py")
  value = _assigned(tree, node.id)
  if isinstance(value, ast.Call):
    return module, value
  return None


def _class_fields(found: tuple[str, ast.AST] | None) -> dict[str, Any] | None:
  """Field -> default (UNKNOWN when none or not a literal) of a module class, through
  ``functools.partial`` variants (whose keywords become the defaults)."""
  if found is None:
    return None
  module, node = found
  if isinstance(node, ast.ClassDef):
    if any(not (isinstance(b, ast.Attribute) and b.attr == "Module") for b in node.bases):
      return None  # a subclass of another model: its fields are not all here
    return {s.target.id: UNKNOWN if s.value is None else _literal(s.value) for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            and "ClassVar" not in ast.unparse(s.annotation)}
  if isinstance(node, ast.Call) and ast.unparse(node.func) in ("functools.partial", "partial") \
      and node.args:
    fields = _class_fields(_resolve(node.args[0], module))
    if fields is None:
      return None
    return {**fields, **{k.arg: _literal(k.value) for k in node.keywords if k.arg in fields}}
  return None


@functools.cache
def model_attributes() -> dict[str, dict[str, Any]] | None:
  """Model name -> the attributes ``model_options`` may set and their defaults (None when the
  registry cannot be read statically). ``num_classes`` is left out: the dataset sets it."""
  tree = _module("models/registry.py")
  registry = None if tree is None else _assigned(tree, "MODELS")
  if not isinstance(registry, ast.Dict):
    return None
  attributes = {}
  for key, value in zip(registry.keys, registry.values, strict=True):
    fields = _class_fields(_resolve(value, "models/registry.py"))
    name = _literal(key) if key is not None else None
    if fields is None or not isinstance(name, str):
      return None
    attributes[name] = {k: v for k, v in fields.items() if k != "num_classes"}
  return attributes


@functools.cache
def dataset_names() -> tuple[str, ...] | None:
  """``train.input_pipeline.DATASETS`` (None when it cannot be read statically)."""
  tree = _module("train/input_pipeline.py")
  return None if tree is None else _string_keys(_assigned(tree, "DATASETS"), tree)


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
  """The registry checks that need no JAX: names, and the names and types of the optimizer's
  options and of the model's attributes.

  Raises:
    ValueError: one line naming the bad key and listing the valid choices (the same messages as
      the registries' own checks).
  """
  model_options = model_options or {}
  registry = optimizer_registry()
  live = sys.modules.get("train.optimizers")
  if registry is not None and live is not None and optimizer in live.OPTIMIZERS:
    # Registered at run time (a benchmark's or a test's own entry): the static reading of the
    # source cannot know it, and the live registry checks its options when it builds it.
    registry = None
  if registry is not None:
    if optimizer not in registry:
      raise ValueError(f"unknown optimizer {optimizer!r}; valid choices: {', '.join(registry)}")
    entry = registry[optimizer]
    if entry.complete:
      unknown = sorted(set(optimizer_options) - set(entry.options))
      if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for optimizer {optimizer!r}; "
                         f"valid options: {', '.join(entry.options) or 'none'}")
    for key, value in optimizer_options.items():
      if key in entry.options:
        check_value(f"optimizer_options.{key}", value, entry.options[key])
  models = model_names()
  if models is not None and model not in models:
    raise ValueError(f"unknown model {model!r}; valid names: {', '.join(models)}")
  attributes = (model_attributes() or {}).get(model)
  if attributes is not None:
    unknown = sorted(set(model_options) - set(attributes))
    if unknown:
      raise ValueError(f"unknown attribute(s) {', '.join(unknown)} for model {model!r}; valid: "
                       f"{', '.join(attributes)}")
    for key, value in model_options.items():
      check_value(f"model_options.{key}", value, attributes[key])
  datasets = dataset_names()
  if datasets is not None and dataset not in datasets:
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(datasets)}")


def _shown(value: Any) -> str:
  """``repr``, with long floats (``1 / 3``) to 6 significant digits."""
  text = repr(value)
  return format(value, ".6g") if isinstance(value, float) and len(text) > 10 else text


def options_help(width: int = 100) -> str:
  """One block per optimizer: ``name: key=default (kind), ...`` wrapped to ``width``."""
  import textwrap

  registry = optimizer_registry()
  if registry is None:
    return "  (see python -m train --list)"
  lines = []
  for entry in registry.values():
    options = ", ".join(f"{k}={_shown(v)} ({kind(v)})" for k, v in entry.options.items()) or "none"
    if not entry.complete:
      options += ", ..."
    lines.extend(textwrap.wrap(f"{entry.name}: {options}", width, initial_indent="  ",
                               subsequent_indent="      "))
  return "\n".join(lines)


def models_help(width: int = 100) -> str:
  """One block per model: the attributes ``model_options`` may set, with defaults and kinds."""
  import textwrap

  attributes = model_attributes()
  if attributes is None:
    return "  (see the model constructors in models/)"
  lines = []
  for name, fields in attributes.items():
    shown = ", ".join(f"{k}={_shown(v)} ({kind(v)})" if v is not UNKNOWN else f"{k} (any)"
                      for k, v in fields.items()) or "none"
    lines.extend(textwrap.wrap(f"{name}: {shown}", width, initial_indent="  ",
                               subsequent_indent="      "))
  return "\n".join(lines)
