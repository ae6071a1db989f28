"""Image classification data held in memory as uint8 and turned into batches on device.

Datasets come from TFDS through ``tfds.data_source`` (the array_record format: random access, no
TensorFlow needed to read) or, for the embedded default ``digits``, from scikit-learn's bundled 8x8
digits, which need no download. Every split is read once into host ``uint8`` arrays; the training
loop places them on the devices once and makes each batch there: a per-epoch permutation from a
seeded key (:func:`epoch_permutation`), then for CIFAR-style data random crops after 4-pixel
zero padding and horizontal flips, and per-channel normalisation (:func:`preprocess`), all in JAX.

Preparing TFDS data (once, on a machine with TensorFlow and network access)::

  pip install tensorflow tensorflow-datasets
  tfds build cifar10 --file_format=array_record [--data_dir DIR]

ImageNet (``imagenet2012``) is TFDS's manual-download dataset: place ``ILSVRC2012_img_train.tar``
and ``ILSVRC2012_img_val.tar`` (from image-net.org, after registering) in
``DIR/downloads/manual/``, then
``tfds build imagenet2012 --file_format=array_record --data_dir DIR``.
It is too large to hold in memory as this pipeline does; :func:`load` checks that it is prepared
and says so, and a streaming pipeline is future work.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: Pixels of zero padding before the random crop of CIFAR-style augmentation.
CROP_PADDING = 4


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the batch maker need to know about a dataset (static, hashable).

  Attributes:
    name: the dataset name.
    num_classes: number of labels.
    image_shape: ``(H, W, C)``.
    augment: whether training batches get random crops and flips (CIFAR, SVHN).
    mean: per-channel mean of the training images, on the uint8 scale.
    std: per-channel standard deviation of the training images, on the uint8 scale.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  augment: bool
  mean: tuple[float, ...]
  std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset in host memory: uint8 images ``(N, H, W, C)`` and int32 labels ``(N,)``."""

  info: DatasetInfo
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Source:
  num_classes: int
  augment: bool
  train_split: str = "train"
  test_split: str = "test"
  manual: bool = False


_TFDS: dict[str, _Source] = {
    "mnist": _Source(10, augment=False),
    "cifar10": _Source(10, augment=True),
    "cifar100": _Source(100, augment=True),
    "svhn_cropped": _Source(10, augment=True),
    "imagenet2012": _Source(1000, augment=True, test_split="validation", manual=True),
}

#: Every dataset :func:`load` knows; ``digits`` is the embedded default.
DATASETS = ("digits", *_TFDS)

#: Fraction of the digits kept for testing (a fixed, stratified split).
DIGITS_TEST_FRACTION = 0.2


class DatasetNotPreparedError(ValueError):
  """A TFDS dataset is not prepared in the array_record format; the message says how to."""


def _preparation_help(name: str, data_dir: str | None) -> str:
  where = f" --data_dir {data_dir}" if data_dir else ""
  lines = [f"TFDS dataset {name!r} is not prepared in the array_record format"
           f"{' under ' + data_dir if data_dir else ''}. Prepare it once (needs TensorFlow and "
           "network access):", "  pip install tensorflow tensorflow-datasets"]
  if _TFDS[name].manual:
    manual = os.path.join(data_dir or "~/tensorflow_datasets", "downloads", "manual")
    lines.append(f"  # download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
                 f"https://image-net.org into {manual}")
  lines.append(f"  tfds build {name} --file_format=array_record{where}")
  lines.append("then pass the same directory as --set data_dir=DIR "
               "(default ~/tensorflow_datasets).")
  return "\n".join(lines)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
  std = np.maximum(pixels.std(axis=0), 1e-3)
  return tuple(float(m) for m in pixels.mean(axis=0)), tuple(float(s) for s in std)


def _digits() -> tuple[np.ndarray, ...]:
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  images = digits.images.astype(np.uint8)[..., None]  # values 0..16
  labels = digits.target.astype(np.int32)
  return tuple(train_test_split(images, labels, test_size=DIGITS_TEST_FRACTION, random_state=0,
                                stratify=labels))  # x_train, x_test, y_train, y_test


def _read_split(source: Any) -> tuple[np.ndarray, np.ndarray]:
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


def _tfds(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
  import tensorflow_datasets as tfds

  source = _TFDS[name]
  try:
    train = tfds.data_source(name, split=source.train_split, data_dir=data_dir, download=False)
    test = tfds.data_source(name, split=source.test_split, data_dir=data_dir, download=False)
  except Exception as error:  # noqa: BLE001 - TFDS raises several types for "not there"
    raise DatasetNotPreparedError(_preparation_help(name, data_dir)) from error
  if source.manual:
    raise ValueError(
        f"{name!r} is prepared, but it does not fit in memory as this pipeline holds data "
        f"({len(train)} training images); a streaming pipeline is not implemented yet.")
  x_train, y_train = _read_split(train)
  x_test, y_test = _read_split(test)
  return x_train, x_test, y_train, y_test


def load(name: str, data_dir: str | None = None) -> Dataset:
  """Reads a dataset into host memory as uint8.

  Args:
    name: one of :data:`DATASETS`.
    data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``); unused for digits.

  Returns:
    The :class:`Dataset`, with per-channel statistics of its training images.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
    DatasetNotPreparedError: the TFDS dataset is not prepared; the message says how to prepare it.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
  if name == "digits":
    x_train, x_test, y_train, y_test = _digits()
    num_classes, augment = 10, False
  else:
    x_train, x_test, y_train, y_test = _tfds(name, data_dir)
    num_classes, augment = _TFDS[name].num_classes, _TFDS[name].augment
  mean, std = _channel_stats(x_train)
  info = DatasetInfo(name=name, num_classes=num_classes, image_shape=tuple(x_train.shape[1:]),
                     augment=augment, mean=mean, std=std)
  return Dataset(info, x_train, y_train, x_test, y_test)


def epoch_permutation(key: jax.Array, epoch: jax.Array | int, num_examples: int,
                      steps_per_epoch: int, batch_size: int) -> jax.Array:
  """The example indices of every batch of one epoch, ``(steps_per_epoch, batch_size)`` int32.

  A fresh permutation per epoch from ``fold_in(key, epoch)``; the last partial batch is dropped.
  """
  order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size).astype(
      jnp.int32)


def augment(images: jax.Array, key: jax.Array, offset: jax.Array | int = 0,
            global_batch: int | None = None) -> jax.Array:
  """CIFAR augmentation on a uint8 batch: zero-pad 4, random crop back to size, random h-flip.

  The random draws are made for a batch of ``global_batch`` examples and this call takes rows
  ``offset : offset + len(images)``, so a device that augments its shard of a global batch applies
  exactly what one device would apply to the whole batch: results do not depend on the device count.
  """
  n, h, w, c = images.shape
  total = n if global_batch is None else global_batch
  crop_key, flip_key = jax.random.split(key)
  corners = jax.random.randint(crop_key, (total, 2), 0, 2 * CROP_PADDING + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (total,))
  corners = jax.lax.dynamic_slice_in_dim(corners, offset, n)
  flips = jax.lax.dynamic_slice_in_dim(flips, offset, n)
  pad = CROP_PADDING
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def crop(image, corner):
    return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (h, w, c))

  cropped = jax.vmap(crop)(padded, corners)
  return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1, :], cropped)


def normalize(images: jax.Array, info: DatasetInfo) -> jax.Array:
  """uint8 -> float32, per channel ``(x - mean) / std`` with the training set's statistics."""
  mean = jnp.asarray(info.mean, jnp.float32)
  std = jnp.asarray(info.std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def preprocess(images: jax.Array, info: DatasetInfo, key: jax.Array | None = None,
               offset: jax.Array | int = 0, global_batch: int | None = None) -> jax.Array:
  """A float32 model input from uint8 images: :func:`augment` when ``key`` is given and the
  dataset augments, then :func:`normalize`."""
  if key is not None and info.augment:
    images = augment(images, key, offset, global_batch)
  return normalize(images, info)
