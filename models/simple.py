"""Small models for MNIST-sized inputs: an MLP, a two-layer CNN and LeNet-5.

The MLP with one hidden layer of 1000 units is the MNIST model of the Trainable Learning Rate
paper (Section 5, after Vaswani et al., 2019). LeNet-5 is the network of the Adaptive Hierarchical
Hyper-gradient Descent paper (Section 3.4) in its common modern form (see
:class:`LeNet5`). :class:`SmallCNN` is the fast default for the bundled 8x8 digits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import _checks

Activation = Callable[[jax.Array], jax.Array]


class MLP(nn.Module):
  """A fully connected network on the flattened input.

  Attributes:
    num_classes: number of output logits (>= 1).
    features: widths of the hidden layers, in order; ``(1000,)`` is the Trainable Learning Rate
      paper's MNIST model.
    act: activation between layers.
  """

  num_classes: int
  features: Sequence[int] = (1000,)
  act: Activation = nn.relu

  def __post_init__(self) -> None:
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    if len(self.features):  # () is a linear model
      _checks.integers_at_least("features", self.features, 1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(N, num_classes)`` for any input of shape ``(N, ...)``."""
    del train  # no batch statistics, no dropout
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.features):
      x = self.act(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class SmallCNN(nn.Module):
  """Two 3x3 convolutions (32 and 64 channels, each followed by 2x2 average pooling), a dense
  layer of 128 units and the classifier; no BatchNorm. Fast on CPU for 8x8 digits and MNIST.

  Attributes:
    num_classes: number of output logits (>= 1).
    features: channels of the convolutions.
    hidden: width of the dense layer before the classifier.
    act: activation.
    conv: the 3x3 convolution, ``conv(features, name=...)`` (SAME padding, stride 1).
    pool: the 2x2 pooling after each convolution.
  """

  num_classes: int
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  act: Activation = nn.relu
  conv: Callable[..., nn.Module] = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME")
  pool: Callable[[jax.Array], jax.Array] = functools.partial(
      nn.avg_pool, window_shape=(2, 2), strides=(2, 2), padding="SAME")

  def __post_init__(self) -> None:
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    _checks.integers_at_least("features", self.features, 1)
    _checks.integer_at_least("hidden", self.hidden, 1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(N, num_classes)`` for ``x`` of shape ``(N, H, W, C)``."""
    del train
    for i, channels in enumerate(self.features):
      x = self.pool(self.act(self.conv(channels, name=f"conv_{i}")(x)))
    x = x.reshape((x.shape[0], -1))
    x = self.act(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al., 1998) in the form used by the Adaptive Hierarchical Hyper-gradient
  Descent paper (Section 3.4) and most re-implementations: conv 5x5 (6) -> max-pool 2 -> conv 5x5
  (16) -> max-pool 2 -> dense 120 -> dense 84 -> classifier, ReLU activations, valid convolutions on
  a 32x32 field.

  Inputs smaller than 32x32 are zero-padded to 32x32, as LeCun et al. centred the 28x28 MNIST digits
  in a 32x32 field, so the first dense layer always sees 5x5x16 = 400 features. With C input
  channels the parameter count is ``(150 C + 6) + 2,416 + 48,120 + 10,164 + (84 + 1) K`` for K
  classes: 62,006 for CIFAR-10 (C = 3), 61,706 for MNIST (C = 1).

  Attributes:
    num_classes: number of output logits (>= 1).
    act: activation (ReLU; the 1998 paper used scaled tanh).
  """

  num_classes: int
  act: Activation = nn.relu

  def __post_init__(self) -> None:
    _checks.integer_at_least("num_classes", self.num_classes, 1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Returns logits of shape ``(N, num_classes)`` for ``x`` of shape ``(N, H, W, C)``."""
    del train
    pad_h, pad_w = max(32 - x.shape[1], 0), max(32 - x.shape[2], 0)
    if pad_h or pad_w:  # static shapes: a trace-time decision
      x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                      (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    x = self.act(nn.Conv(6, (5, 5), padding="VALID", name="conv_0")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = self.act(nn.Conv(16, (5, 5), padding="VALID", name="conv_1")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = self.act(nn.Dense(120, name="dense_0")(x))
    x = self.act(nn.Dense(84, name="dense_1")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class _PatchConv(nn.Module):
  """A 3x3 convolution with SAME zero padding and stride 1, computed as one matrix product of the
  nine shifted copies of the input (im2col) with the kernel: the same function as
  ``nn.Conv(features, (3, 3), padding="SAME")`` with the same parameter shapes."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, channels, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    height, width = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + height, j:j + width]
                               for i in range(3) for j in range(3)], axis=-1)
    return patches @ kernel.reshape(9 * channels, self.features) + bias


#: A small CNN for 32x32 images whose 3x3 convolutions are matrix products of image patches
#: (:class:`_PatchConv`): three convolutions (16, 32 and 64 channels, each followed by 2x2 max
#: pooling), a dense layer of 64 units and the classifier. Computed as patch products because XLA
#: on CPU runs a convolution inside a loop body about 40x slower than at the top level (a 32x32
#: RGB epoch of ``small_cnn``: 96 s in a ``lax.scan`` against 2.3 s step by step), and the
#: benchmarks train whole runs in a scan. The model of the generated ``shapes`` task.
PatchCNN = functools.partial(
    SmallCNN, features=(16, 32, 64), hidden=64, conv=_PatchConv,
    pool=functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2), padding="SAME"))
