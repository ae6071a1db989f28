"""The model registry: names to constructors, ``create_model`` and ``count_params``."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from models import densenet, resnet, wide_resnet
from models.simple import MLP, LeNet5, PatchCNN, SmallCNN

# name -> constructor taking ``num_classes`` and further module attributes as keywords.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "lenet5": LeNet5,
    "patch_cnn": PatchCNN,
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    "wrn16_4": wide_resnet.WRN16_4,
    "wrn16_8": wide_resnet.WRN16_8,
    "wrn22_4": wide_resnet.WRN22_4,
    "wrn28_10": wide_resnet.WRN28_10,
    "wrn40_10": wide_resnet.WRN40_10,
    "densenet_bc121": densenet.DenseNetBC121,
    "resnet18_imagenet": resnet.ResNet18ImageNet,
    "resnet50_imagenet": resnet.ResNet50ImageNet,
}


def _attributes(constructor: Callable[..., nn.Module]) -> tuple[str, ...]:
  """The module attributes a registered constructor accepts as keywords."""
  cls = constructor.func if isinstance(constructor, functools.partial) else constructor
  return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model registered as ``name``.

  Args:
    name: a key of :data:`MODELS`.
    num_classes: number of output logits, >= 1.
    **kwargs: further module attributes (``features`` for the MLP, ``axis_name`` for models with
      BatchNorm, ``dropout_rate`` for WideResNets, ``dtype``, ...).

  Returns:
    The unbound ``flax.linen.Module``.

  Raises:
    ValueError: for an unknown name or attribute (the message lists the valid ones), or an
      attribute out of its range (``num_classes`` must be an integer >= 1).
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
  valid = _attributes(MODELS[name])
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"unknown attribute(s) {', '.join(unknown)} for model {name!r}; valid: "
                     f"{', '.join(a for a in valid if a != 'num_classes')}")
  return MODELS[name](num_classes=num_classes, **kwargs)


def count_params(variables_or_params: Mapping[str, Any]) -> int:
  """Number of scalars in the ``params`` collection.

  Args:
    variables_or_params: the variables returned by ``model.init`` (only their ``params`` collection
      is counted) or a params tree itself. Leaves may be arrays or ``jax.ShapeDtypeStruct`` (from
      ``jax.eval_shape``), so big models can be counted without computing anything.

  Returns:
    The total number of parameters.
  """
  tree = variables_or_params
  if isinstance(tree, Mapping) and "params" in tree:
    tree = tree["params"]
  return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree)))


__all__ = ["MODELS", "count_params", "create_model"]
