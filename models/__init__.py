"""Flax Linen models for the training side of optax_lr (issue 6).

Every model is called as ``model.init(rngs, x, train=False)`` and
``model.apply(variables, x, train=bool, mutable=[...])`` with ``x`` of shape ``(N, H, W, C)``
(the MLP flattens any input) and returns float32 logits ``(N, num_classes)``. Models with BatchNorm
(ResNets, WideResNets, DenseNet) keep statistics in the ``batch_stats`` collection and take
``axis_name`` so the statistics are averaged over that mapped axis (shard_map / pmap); WideResNets
with ``dropout_rate > 0`` take a ``dropout`` rng when ``train=True``.

Layout after the Flax imagenet example: blocks with ``conv``, ``norm``, ``act`` fields, named
variants as ``functools.partial``, one registry (:data:`MODELS`, :func:`create_model`) of the image
classifiers. The byte-level language model :class:`TransformerLM` maps int tokens ``(N, L)`` to
logits ``(N, L, vocab_size)`` and is not in the classifier registry.
"""

from models.densenet import DenseLayer, DenseNet, DenseNetBC121, Transition
from models.registry import MODELS, count_params, create_model
from models.resnet import (
    BottleneckResNetBlock,
    ResNet,
    ResNet18,
    ResNet18ImageNet,
    ResNet34,
    ResNet50,
    ResNet50ImageNet,
    ResNetBlock,
)
from models.simple import MLP, LeNet5, SmallCNN
from models.transformer import (
    CausalSelfAttention,
    TransformerBlock,
    TransformerLM,
    TransformerLMSmall,
)
from models.wide_resnet import (
    WRN16_4,
    WRN16_8,
    WRN22_4,
    WRN28_10,
    WRN40_10,
    WideResNet,
    WideResNetBlock,
)

__all__ = [
    "MLP",
    "MODELS",
    "WRN16_4",
    "WRN16_8",
    "WRN22_4",
    "WRN28_10",
    "WRN40_10",
    "BottleneckResNetBlock",
    "CausalSelfAttention",
    "DenseLayer",
    "DenseNet",
    "DenseNetBC121",
    "LeNet5",
    "ResNet",
    "ResNet18",
    "ResNet18ImageNet",
    "ResNet34",
    "ResNet50",
    "ResNet50ImageNet",
    "ResNetBlock",
    "SmallCNN",
    "Transition",
    "TransformerBlock",
    "TransformerLM",
    "TransformerLMSmall",
    "WideResNet",
    "WideResNetBlock",
    "count_params",
    "create_model",
]
