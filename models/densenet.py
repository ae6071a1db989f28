"""DenseNet-BC (Huang et al., 2017, "Densely Connected Convolutional Networks", Section 3).

Dense blocks of bottleneck layers (BN-ReLU-conv1x1 to ``4 * growth_rate`` channels, BN-ReLU-conv3x3
to ``growth_rate`` channels, the output concatenated to the input), separated by transition layers
(BN-ReLU-conv1x1 with compression 0.5, 2x2 average pooling), then BN-ReLU, global average pooling
and the classifier. Convolutions have no bias.

``densenet_bc121`` is the modified DenseNet-121 of the Trainable Learning Rate paper (App. D, Figure
16): blocks of (6, 12, 24, 16) layers, growth rate 12, and the 7x7 stride-2 stem replaced by a 3x3
stride-1 convolution for 32x32 inputs. The paper does not state the stem's width or whether the
max-pool stays; we take the common CIFAR form of this network (``densenet_cifar`` of
kuangliu/pytorch-cifar): stem to ``2 * growth_rate`` = 24 channels, no max-pool. 1,000,618
parameters for 10 classes (derived layer by layer in ``tests/test_models.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import _checks
from models.resnet import conv_and_batch_norm

ModuleDef = Any
Activation = Callable[[jax.Array], jax.Array]


class DenseLayer(nn.Module):
  """Bottleneck layer of a dense block; returns its input with ``growth_rate`` channels appended.

  Attributes:
    growth_rate: channels added by this layer.
    conv: convolution constructor.
    norm: BatchNorm constructor.
    act: activation.
    bottleneck_factor: the 1x1 convolution outputs ``bottleneck_factor * growth_rate`` channels.
  """

  growth_rate: int
  conv: ModuleDef
  norm: ModuleDef
  act: Activation
  bottleneck_factor: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.bottleneck_factor * self.growth_rate, (1, 1))(self.act(self.norm()(x)))
    y = self.conv(self.growth_rate, (3, 3))(self.act(self.norm()(y)))
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  """BN-ReLU-conv1x1 to ``features`` channels, then 2x2 average pooling.

  Attributes:
    features: output channels.
    conv: convolution constructor.
    norm: BatchNorm constructor.
    act: activation.
  """

  features: int
  conv: ModuleDef
  norm: ModuleDef
  act: Activation

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, (1, 1))(self.act(self.norm()(x)))
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """DenseNet-BC with a 3x3 stride-1 stem for CIFAR-sized inputs.

  Attributes:
    block_sizes: layers per dense block.
    num_classes: number of output logits (>= 1).
    growth_rate: channels added per layer (12).
    compression: transition layers keep ``floor(compression * channels)`` channels, in (0, 1].
    num_init_features: stem channels; None means ``2 * growth_rate``.
    axis_name: mapped axis over which BatchNorm averages its batch statistics; None for none.
    dtype: computation dtype (parameters stay float32).
    act: activation.
    conv: convolution constructor.
  """

  block_sizes: Sequence[int]
  num_classes: int
  growth_rate: int = 12
  compression: float = 0.5
  num_init_features: int | None = None
  axis_name: str | None = None
  dtype: Any = jnp.float32
  act: Activation = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    _checks.integers_at_least("block_sizes", self.block_sizes, 1)
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    _checks.integer_at_least("growth_rate", self.growth_rate, 1)
    _checks.in_range("compression", self.compression, 0.0, 1.0, low_open=True)
    if self.num_init_features is not None:
      _checks.integer_at_least("num_init_features", self.num_init_features, 1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(N, num_classes)``; ``train=True`` uses and updates ``batch_stats``."""
    conv, norm = conv_and_batch_norm(self.conv, self.dtype, self.axis_name, train)
    stem = self.num_init_features or 2 * self.growth_rate
    x = conv(stem, (3, 3), name="conv_init")(x)
    for i, size in enumerate(self.block_sizes):
      for _ in range(size):
        x = DenseLayer(self.growth_rate, conv=conv, norm=norm, act=self.act)(x)
      if i < len(self.block_sizes) - 1:
        x = Transition(int(self.compression * x.shape[-1]), conv=conv, norm=norm, act=self.act)(x)
    x = self.act(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)


DenseNetBC121 = functools.partial(DenseNet, block_sizes=(6, 12, 24, 16), growth_rate=12)
