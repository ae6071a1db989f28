"""ResNets (He et al., 2016, "Deep Residual Learning for Image Recognition", Section 3-4).

Two stems over the same stages: the CIFAR stem (one 3x3 convolution, stride 1, no max-pool, as in
He et al. Section 4.2's treatment of 32x32 inputs and the common 64-512-wide CIFAR variants used by
seeds 001, 003 and 004) and the ImageNet stem (7x7 stride-2 convolution and 3x3 stride-2 max-pool,
Table 1). Basic blocks (ResNet-18/34) and bottleneck blocks with expansion 4 (ResNet-50), the
stride on the 3x3 convolution ("ResNet v1.5", as torchvision and the Flax imagenet example), a
projection shortcut (1x1 convolution + BatchNorm) where the shape changes. Convolutions have no
bias.

Parameter counts (10 classes, CIFAR): ResNet-18 11,173,962, ResNet-34 21,282,122, ResNet-50
23,520,842. ImageNet (1000 classes): ResNet-18 11,689,512, ResNet-50 25,557,032 (torchvision).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import _checks

ModuleDef = Any
Activation = Callable[[jax.Array], jax.Array]

# He et al.'s initialisation (fan-out, normal), as torchvision's ResNet.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_and_batch_norm(conv: ModuleDef, dtype: Any, axis_name: str | None,
                        train: bool) -> tuple[ModuleDef, ModuleDef]:
  """The convolution and BatchNorm constructors every CNN here builds its blocks from.

  Convolutions have no bias (BatchNorm follows) and He fan-out initialisation; BatchNorm uses
  PyTorch's momentum 0.9 / epsilon 1e-5 and averages its statistics over ``axis_name``.
  """
  return (functools.partial(conv, use_bias=False, dtype=dtype, kernel_init=conv_kernel_init),
          functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                            epsilon=1e-5, dtype=dtype, axis_name=axis_name))


class ResNetBlock(nn.Module):
  """Basic block: two 3x3 convolutions with BatchNorm, identity or projection shortcut.

  Attributes:
    filters: output channels.
    conv: convolution constructor (bias-free, He-initialised).
    norm: BatchNorm constructor (``use_running_average`` bound).
    act: activation.
    strides: spatial stride of the first convolution and of the shortcut.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Activation
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm()(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck block: 1x1 -> 3x3 (strided) -> 1x1 with 4x expansion, BatchNorm after each.

  Attributes:
    filters: channels of the inner convolutions; the block outputs ``4 * filters``.
    conv: convolution constructor.
    norm: BatchNorm constructor.
    act: activation.
    strides: spatial stride of the 3x3 convolution and of the shortcut.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Activation
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = self.conv(self.filters, (1, 1))(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm()(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return self.act(residual + y)


class ResNet(nn.Module):
  """ResNet with a CIFAR (3x3, no max-pool) or ImageNet (7x7 stride 2 + max-pool) stem.

  Attributes:
    stage_sizes: blocks per stage; stage ``i`` has ``num_filters * 2**i`` filters and stride 2
      from the second stage on.
    block_cls: :class:`ResNetBlock` or :class:`BottleneckResNetBlock`.
    num_classes: number of output logits (>= 1).
    num_filters: filters of the stem and of the first stage (64).
    stem: ``"cifar"`` or ``"imagenet"``.
    axis_name: mapped axis (shard_map / pmap) over which BatchNorm averages its batch statistics;
      None for per-device statistics.
    dtype: computation dtype (parameters stay float32).
    act: activation.
    conv: convolution constructor.
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  num_filters: int = 64
  stem: str = "cifar"
  axis_name: str | None = None
  dtype: Any = jnp.float32
  act: Activation = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    _checks.integers_at_least("stage_sizes", self.stage_sizes, 1)
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    _checks.integer_at_least("num_filters", self.num_filters, 1)
    _checks.one_of("stem", self.stem, ("cifar", "imagenet"))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(N, num_classes)``; ``train=True`` uses and updates ``batch_stats``."""
    conv, norm = conv_and_batch_norm(self.conv, self.dtype, self.axis_name, train)
    if self.stem == "cifar":
      x = conv(self.num_filters, (3, 3), name="conv_init")(x)
      x = self.act(norm(name="bn_init")(x))
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
      x = self.act(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2**i, strides=strides, conv=conv, norm=norm,
                           act=self.act)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=ResNetBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock)
ResNet18ImageNet = functools.partial(ResNet18, stem="imagenet")
ResNet50ImageNet = functools.partial(ResNet50, stem="imagenet")
