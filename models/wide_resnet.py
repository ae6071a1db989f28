"""Wide residual networks (Zagoruyko & Komodakis, 2016, "Wide Residual Networks", Section 2).

WRN-d-k for 32x32 inputs: a 3x3 convolution to 16 channels, three groups of ``n = (d - 4) / 6``
pre-activation basic blocks (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3) with ``16k``, ``32k`` and
``64k`` channels and strides 1, 2, 2, a 1x1 projection shortcut (on the pre-activated input) where
the width or stride changes, then BN-ReLU, global average pooling and the classifier. Convolutions
have no bias. Dropout between the two convolutions of a block (Section 2.4) is off by default.

Used by the Trainable Learning Rate paper (WRN-16-4, 16-8, 22-4, 22-8 on CIFAR-10/100, Section 5 and
App. D). Parameter counts for 10 classes: WRN-16-4 2,748,890; WRN-28-10 36,479,194 (the standard
implementation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import _checks
from models.resnet import conv_and_batch_norm

ModuleDef = Any
Activation = Callable[[jax.Array], jax.Array]


class WideResNetBlock(nn.Module):
  """Pre-activation basic block of a WideResNet.

  Attributes:
    filters: output channels.
    conv: convolution constructor.
    norm: BatchNorm constructor.
    act: activation.
    strides: stride of the first convolution and of the shortcut.
    dropout_rate: dropout probability between the two convolutions, in [0, 1).
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Activation
  strides: tuple[int, int] = (1, 1)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    pre = self.act(self.norm()(x))
    needs_projection = x.shape[-1] != self.filters or self.strides != (1, 1)
    residual = (self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(pre)
                if needs_projection else x)
    y = self.conv(self.filters, (3, 3), self.strides)(pre)
    y = self.act(self.norm()(y))
    if self.dropout_rate > 0.0:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = self.conv(self.filters, (3, 3))(y)
    return residual + y


class WideResNet(nn.Module):
  """WRN-depth-widen_factor for CIFAR-sized inputs.

  Attributes:
    depth: total depth d, with (d - 4) divisible by 6 (16, 22, 28, 40, ...).
    widen_factor: k >= 1; group widths are 16k, 32k, 64k.
    num_classes: number of output logits (>= 1).
    dropout_rate: dropout inside each block, in [0, 1); 0 (off) by default. When > 0, training
      needs an rng named ``"dropout"``.
    axis_name: mapped axis over which BatchNorm averages its batch statistics; None for none.
    dtype: computation dtype (parameters stay float32).
    act: activation.
    conv: convolution constructor.
  """

  depth: int
  widen_factor: int
  num_classes: int
  dropout_rate: float = 0.0
  axis_name: str | None = None
  dtype: Any = jnp.float32
  act: Activation = nn.relu
  conv: ModuleDef = nn.Conv

  def __post_init__(self) -> None:
    _checks.integer_at_least("depth", self.depth, 10)
    if (self.depth - 4) % 6:
      raise ValueError(f"`depth` must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...); "
                       f"got {self.depth!r}.")
    _checks.integer_at_least("widen_factor", self.widen_factor, 1)
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    _checks.in_range("dropout_rate", self.dropout_rate, 0.0, 1.0, high_open=True)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits ``(N, num_classes)``; ``train=True`` uses and updates ``batch_stats``."""
    conv, norm = conv_and_batch_norm(self.conv, self.dtype, self.axis_name, train)
    blocks_per_group = (self.depth - 4) // 6
    x = conv(16, (3, 3), name="conv_init")(x)
    for i, width in enumerate((16, 32, 64)):
      for j in range(blocks_per_group):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = WideResNetBlock(width * self.widen_factor, conv=conv, norm=norm, act=self.act,
                            strides=strides, dropout_rate=self.dropout_rate)(x, train=train)
    x = self.act(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)


WRN16_4 = functools.partial(WideResNet, depth=16, widen_factor=4)
WRN16_8 = functools.partial(WideResNet, depth=16, widen_factor=8)
WRN22_4 = functools.partial(WideResNet, depth=22, widen_factor=4)
WRN28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
WRN40_10 = functools.partial(WideResNet, depth=40, widen_factor=10)
