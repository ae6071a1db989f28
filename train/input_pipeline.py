"""The input pipeline: grain over random-access sources, sharded by process, batched per process.

Every dataset is a random-access source of ``{"image": uint8 (H, W, C), "label": int}`` records:
TFDS datasets through ``tfds.data_source`` (the array_record format: random access, no TensorFlow
needed to read), the embedded default ``digits`` (scikit-learn's bundled 8x8 digits, no download)
from memory. :func:`train_batches` builds the training stream with grain's ``MapDataset``, as
MaxText and the newer Flax examples do:

1. a global shuffle of the training split, reseeded every epoch (``shuffle`` then ``repeat``), the
   last partial global batch of each epoch dropped;
2. augmentation as a ``random_map`` whose generator is seeded by the run's seed and the record's
   position in the stream, so a record gets the same crop wherever and whenever it is read
   (resuming, another process count, another worker count);
3. the stream cut into local batches of ``global_batch / process_count`` records, and process
   ``p`` keeping local batch ``p`` of every global batch (``[p::process_count]``): the processes
   read disjoint shards whose union is the epoch, and the global batch of a step is the same
   whatever the number of processes;
4. decode and augmentation in ``num_workers`` worker processes (``mp_prefetch``) and a bounded
   prefetch buffer, so host memory is set by the prefetch depth, not the dataset size.

Augmentations (NumPy, in the workers): CIFAR-style data (CIFAR, SVHN) gets a random crop after
4-pixel zero padding and a horizontal flip; ImageNet gets a random-resized crop (Inception-style:
8%-100% of the area, aspect ratio 3/4-4/3) resized to 224 and a flip for training, and the central
crop (224/256 of the shorter side) resized to 224 for evaluation. Normalisation by the per-channel
statistics happens on the device (:func:`normalize`), so uint8 crosses the host-device link.

The per-process local batches become global ``jax.Array`` s with
``jax.make_array_from_process_local_data`` in the training loop (``train.Runner``).

Preparing TFDS data (once, on a machine with TensorFlow and network access)::

  pip install tensorflow tensorflow-datasets
  tfds build cifar10 --file_format=array_record [--data_dir DIR]

ImageNet (``imagenet2012``) is TFDS's manual-download dataset: place ``ILSVRC2012_img_train.tar``
and ``ILSVRC2012_img_val.tar`` (from image-net.org, after registering) in
``DIR/downloads/manual/``, then
``tfds build imagenet2012 --file_format=array_record --data_dir DIR``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax.numpy as jnp
import numpy as np

#: Pixels of zero padding before the random crop of CIFAR-style augmentation.
CROP_PADDING = 4

#: ImageNet's training and evaluation image side.
IMAGENET_SIZE = 224

#: ImageNet evaluation: the central crop keeps ``224 / 256`` of the shorter side.
CENTER_CROP_FRACTION = IMAGENET_SIZE / 256

#: ImageNet per-channel mean and standard deviation on the uint8 scale (the values the Flax
#: ImageNet example and torchvision use).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

#: Augmentation kinds: none, pad-crop-flip (CIFAR, SVHN), random-resized crop (ImageNet).
AUGMENTATIONS = ("none", "crop_flip", "inception")

#: Training images read to measure per-channel statistics of a TFDS dataset (evenly spaced).
STATS_SAMPLE = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the batch maker need to know about a dataset (static, hashable).

  Attributes:
    name: the dataset name.
    num_classes: number of labels.
    image_shape: ``(H, W, C)`` of the model input.
    augment: one of :data:`AUGMENTATIONS`.
    mean: per-channel mean of the training images, on the uint8 scale.
    std: per-channel standard deviation of the training images, on the uint8 scale.
    num_train: training examples.
    num_test: test examples.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  augment: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_train: int = 0
  num_test: int = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset as two random-access sources of ``{"image", "label"}`` records."""

  info: DatasetInfo
  train: Sequence[dict[str, Any]]
  test: Sequence[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class _Source:
  num_classes: int
  augment: str
  train_split: str = "train"
  test_split: str = "test"
  manual: bool = False


_TFDS: dict[str, _Source] = {
    "mnist": _Source(10, augment="none"),
    "cifar10": _Source(10, augment="crop_flip"),
    "cifar100": _Source(100, augment="crop_flip"),
    "svhn_cropped": _Source(10, augment="crop_flip"),
    "imagenet2012": _Source(1000, augment="inception", test_split="validation", manual=True),
}

#: The embedded datasets (no download): scikit-learn's bundled digits, and the same digits under
#: random affine warps and pixel noise (:func:`_warped_digits`), a harder task for comparisons,
#: and ``shapes``, generated 32x32 RGB images of ten shape classes on cluttered backgrounds
#: (:func:`_shapes`), a task for a convolutional network.
EMBEDDED = ("digits", "digits_warped", "shapes")
#: Every dataset :func:`load` knows; ``digits`` is the embedded default.
DATASETS = (*EMBEDDED, *_TFDS)

#: Fraction of the digits kept for testing (a fixed, stratified split).
DIGITS_TEST_FRACTION = 0.2
#: Warped copies of each digit in ``digits_warped`` (train and test alike).
WARPED_COPIES = 8


class DatasetNotPreparedError(ValueError):
  """A TFDS dataset is not prepared in the array_record format; the message says how to."""


class DatasetDamagedError(ValueError):
  """A file of a prepared dataset cannot be read; the message names the file."""


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


# --- sources -------------------------------------------------------------------------------------

class ArraySource:
  """An in-memory source over uint8 images ``(N, H, W, C)`` and int labels ``(N,)``."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images = images
    self.labels = labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": self.labels[index]}


class CheckedSource:
  """A TFDS data source whose read errors name the array_record file that holds the record."""

  def __init__(self, source: Any, files: Sequence[tuple[str, int]]):
    self.source = source
    self.files = tuple(files)  # (path, number of records), in record order

  def __len__(self) -> int:
    return len(self.source)

  def file_of(self, index: int) -> str:
    for path, count in self.files:
      if index < count:
        return path
      index -= count
    return self.files[-1][0] if self.files else "?"

  def __getitem__(self, index: int) -> dict[str, Any]:
    try:
      record = self.source[index]
      return {"image": record["image"], "label": record["label"]}
    except Exception as error:  # noqa: BLE001 - array_record and the decoders raise many types
      message = str(error).splitlines()[0] if str(error) else type(error).__name__
      raise DatasetDamagedError(
          f"damaged dataset file {self.file_of(index)} (record {index}): {message}; prepare "
          "the dataset again") from None


def _digits() -> tuple[np.ndarray, ...]:
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  images = digits.images.astype(np.uint8)[..., None]  # values 0..16
  labels = digits.target.astype(np.int32)
  return tuple(train_test_split(images, labels, test_size=DIGITS_TEST_FRACTION, random_state=0,
                                stratify=labels))  # x_train, x_test, y_train, y_test


def _warp(images: np.ndarray, copies: int, seed: int) -> np.ndarray:
  """``copies`` random affine warps of each 8x8 image (values 0..16), plus pixel noise.

  Per copy: rotation uniform in +-25 degrees, shear in +-0.3, a scale per axis in [0.8, 1.2] and a
  shift in +-1 pixel about the centre, bilinear interpolation, then Gaussian noise of standard
  deviation 2 (an eighth of the range), rounded and clipped to 0..16. Image ``i``'s copies are
  rows ``i * copies ... (i + 1) * copies - 1``.
  """
  from scipy import ndimage

  rng = np.random.default_rng(seed)
  centre = np.full(2, (images.shape[1] - 1) / 2)
  out = np.empty((len(images) * copies, *images.shape[1:3]), np.uint8)
  for i, image in enumerate(images[..., 0].astype(np.float64)):
    for k in range(copies):
      angle = np.deg2rad(rng.uniform(-25, 25))
      rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
      forward = rotation @ np.array([[1, rng.uniform(-0.3, 0.3)], [0, 1]]) @ np.diag(
          rng.uniform(0.8, 1.2, size=2))
      inverse = np.linalg.inv(forward)  # affine_transform maps output coordinates to input ones
      offset = centre - inverse @ (centre + rng.uniform(-1, 1, size=2))
      warped = ndimage.affine_transform(image, inverse, offset=offset, order=1, mode="constant")
      warped = warped + rng.normal(0.0, 2.0, warped.shape)
      out[i * copies + k] = np.clip(np.rint(warped), 0, 16).astype(np.uint8)
  return out[..., None]


def _warped_digits() -> tuple[np.ndarray, ...]:
  """``digits_warped``: :data:`WARPED_COPIES` warped copies of every digit of each split of
  ``digits`` (the same stratified split, so no source image is in both), 11,496 training and
  2,880 test images of 8x8x1. Deterministic (fixed seeds), built in well under a second.

  Harder than the digits (scikit-learn's logistic regression reaches about 53% on it, a 256-unit
  MLP about 82% in 50 epochs, against 96% and 98% on the digits), so the optimizer and its rate
  decide more of the result.
  """
  x_train, x_test, y_train, y_test = _digits()
  return (_warp(x_train, WARPED_COPIES, seed=0), _warp(x_test, WARPED_COPIES, seed=1),
          np.repeat(y_train, WARPED_COPIES), np.repeat(y_test, WARPED_COPIES))


#: The classes of ``shapes``, in label order.
SHAPE_CLASSES = ("circle", "ring", "square", "frame", "triangle", "plus", "star", "half_disc",
                 "ell", "ellipse")
#: Side of a ``shapes`` image in pixels.
SHAPES_SIZE = 32
#: Training and test images of ``shapes``.
SHAPES_TRAIN, SHAPES_TEST = 5000, 1000
_SUPERSAMPLE = 2


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether the points ``(u, v)`` (shape coordinates: centred, rotated, in units of the
  circumradius) are inside the shape of class ``label``."""
  r = np.hypot(u, v)
  theta = np.arctan2(v, u)
  au, av = np.abs(u), np.abs(v)
  if label == 0:
    return r <= 1.0
  if label == 1:
    return (r <= 1.0) & (r >= 0.55)
  if label == 2:
    return np.maximum(au, av) <= 0.75
  if label == 3:
    m = np.maximum(au, av)
    return (m <= 0.85) & (m >= 0.5)
  if label == 4:
    sector = 2 * np.pi / 3
    return r <= np.cos(np.pi / 3) / np.cos(np.mod(theta, sector) - np.pi / 3)
  if label == 5:
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
  if label == 6:
    tips = np.abs(np.mod(theta, 2 * np.pi / 5) / (2 * np.pi / 5) - 0.5) * 2
    return r <= 0.4 + 0.6 * tips
  if label == 7:
    return (r <= 1.0) & (v >= -0.1)
  if label == 8:
    return (au <= 0.85) & (av <= 0.85) & ((u <= -0.25) | (v >= 0.35))
  return u ** 2 + (v / 0.45) ** 2 <= 1.0


def _shapes(count: int, seed: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """``count`` procedurally generated 32x32 RGB images of :data:`SHAPE_CLASSES` (balanced labels).

  Each image: a background gradient between two random colours in a random direction, four random
  line segments and two small discs of random colours (clutter), then one shape of the label's
  class at a random centre (10..22 px), circumradius (5..10 px) and rotation, in a random colour
  at least 0.6 (L1, colours in [0, 1]) from the background's mean colour, rendered at 2x and
  averaged down (anti-aliasing), plus Gaussian pixel noise of standard deviation 0.06. A
  deterministic function of ``(count, seed)``.
  """
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(count) % len(SHAPE_CLASSES)).astype(np.int32)
  n = SHAPES_SIZE * _SUPERSAMPLE
  coords = ((np.arange(n) + 0.5) / _SUPERSAMPLE).astype(np.float32)
  gy, gx = np.meshgrid(coords, coords, indexing="ij")
  gx, gy = gx[None], gy[None]
  out = np.empty((count, SHAPES_SIZE, SHAPES_SIZE, 3), np.uint8)

  def uniform(low, high, shape):
    return rng.uniform(low, high, shape).astype(np.float32)

  def column(values):  # (m, ...) -> (m, 1, 1, ...) to broadcast over the pixel grid
    return values[:, None, None]

  def paint(image, hit):  # a random colour per image where `hit`
    return np.where(hit[..., None], uniform(0, 1, (len(image), 1, 1, 3)), image)

  for start in range(0, count, chunk):
    lab = labels[start:start + chunk]
    m = len(lab)
    # Background: a linear gradient between two random colours in a random direction.
    c0, c1 = uniform(0, 1, (m, 3)), uniform(0, 1, (m, 3))
    phi = uniform(0, 2 * np.pi, m)
    t = ((gx - 16) * column(np.cos(phi)) + (gy - 16) * column(np.sin(phi))) / 45 + 0.5
    img = column(c0) + column(c1 - c0) * t[..., None]
    # Clutter: three line segments (half-width 0.3..0.7 px) and two discs (radius 1..2 px).
    for _ in range(3):
      p = uniform(0, 32, (m, 2))
      d = uniform(-12, 12, (m, 2))
      px, py = gx - column(p[:, 0]), gy - column(p[:, 1])
      along = (px * column(d[:, 0]) + py * column(d[:, 1])) / column(
          np.maximum((d ** 2).sum(1), 1e-6))
      along = np.clip(along, 0, 1)
      dist = np.hypot(px - along * column(d[:, 0]), py - along * column(d[:, 1]))
      img = paint(img, dist <= column(uniform(0.3, 0.7, m)))
    for _ in range(2):
      p = uniform(0, 32, (m, 2))
      dist = np.hypot(gx - column(p[:, 0]), gy - column(p[:, 1]))
      img = paint(img, dist <= column(uniform(1, 2, m)))
    # The shape, in coordinates centred on it, rotated and in units of its circumradius.
    centre, scale, angle = uniform(11, 21, (m, 2)), uniform(6, 11, m), uniform(0, 2 * np.pi, m)
    dx, dy = gx - column(centre[:, 0]), gy - column(centre[:, 1])
    ca, sa = column(np.cos(angle)), column(np.sin(angle))
    u = (ca * dx + sa * dy) / column(scale)
    v = (-sa * dx + ca * dy) / column(scale)
    mask = np.zeros((m, n, n), bool)
    for k in range(len(SHAPE_CLASSES)):
      sel = lab == k
      if sel.any():
        mask[sel] = _shape_mask(k, u[sel], v[sel])
    background = (c0 + c1) / 2
    colour = uniform(0, 1, (m, 3))
    for _ in range(20):  # redraw colours too close to the background's mean
      close = np.abs(colour - background).sum(1) < 0.6
      if not close.any():
        break
      colour[close] = uniform(0, 1, (int(close.sum()), 3))
    img = np.where(mask[..., None], column(colour), img)
    img = img.reshape(m, SHAPES_SIZE, _SUPERSAMPLE, SHAPES_SIZE, _SUPERSAMPLE, 3).mean((2, 4))
    img = img + rng.normal(0, 0.05, img.shape).astype(np.float32)
    out[start:start + m] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
  return out, labels


@functools.lru_cache(maxsize=1)
def _shapes_dataset() -> tuple[np.ndarray, ...]:
  """``shapes``: :data:`SHAPES_TRAIN` training and :data:`SHAPES_TEST` test images of
  :func:`_shapes` (seeds 0 and 1), ``x_train, x_test, y_train, y_test``."""
  x_train, y_train = _shapes(SHAPES_TRAIN, seed=0)
  x_test, y_test = _shapes(SHAPES_TEST, seed=1)
  arrays = (x_train, x_test, y_train, y_test)
  for a in arrays:  # cached: nobody may change them
    a.flags.writeable = False
  return arrays


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
  std = np.maximum(pixels.std(axis=0), 1e-3)
  return tuple(float(m) for m in pixels.mean(axis=0)), tuple(float(s) for s in std)


def _sample_stats(source: Sequence[dict[str, Any]]) -> tuple[tuple[float, ...], ...]:
  """Per-channel statistics of up to :data:`STATS_SAMPLE` evenly spaced training images."""
  indices = np.unique(np.linspace(0, len(source) - 1, min(len(source), STATS_SAMPLE)).astype(int))
  images = np.stack([_as_hwc(source[int(i)]["image"]) for i in indices])
  return _channel_stats(images)


def _split_files(source: Any) -> list[tuple[str, int]]:
  try:
    from tensorflow_datasets.core.data_sources import base

    return [(os.fspath(f.filename), int(f.take)) for f in
            base.file_instructions(source.dataset_info, source.split)]
  except Exception:  # noqa: BLE001 - mocked sources have no files
    return []


def _open_tfds(name: str, split: str, data_dir: str | None) -> CheckedSource:
  import tensorflow_datasets as tfds

  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as error:  # noqa: BLE001 - TFDS raises several types for "not there"
    raise DatasetNotPreparedError(_preparation_help(name, data_dir)) from error
  return CheckedSource(source, _split_files(source))


def _as_hwc(image: Any) -> np.ndarray:
  image = np.asarray(image, np.uint8)
  return image[..., None] if image.ndim == 2 else image


def load(name: str, data_dir: str | None = None) -> Dataset:
  """Opens a dataset's training and test sources (nothing is read whole).

  Args:
    name: one of :data:`DATASETS`.
    data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``); unused for the
      embedded datasets.

  Returns:
    The :class:`Dataset`; its info holds per-channel statistics (of the whole training set for
    digits, of :data:`STATS_SAMPLE` evenly spaced training images for TFDS data, the published
    values for ImageNet).

  Raises:
    ValueError: unknown name (the message lists the valid ones).
    DatasetNotPreparedError: the TFDS dataset is not prepared; the message says how to prepare it.
    DatasetDamagedError: a file of the prepared dataset cannot be read; the message names it.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
  if name in EMBEDDED:
    x_train, x_test, y_train, y_test = {"digits": _digits, "digits_warped": _warped_digits,
                                        "shapes": _shapes_dataset}[name]()
    train, test = ArraySource(x_train, y_train), ArraySource(x_test, y_test)
    mean, std = _channel_stats(x_train)
    num_classes, augment, shape = 10, "none", tuple(x_train.shape[1:])
  else:
    spec = _TFDS[name]
    train = _open_tfds(name, spec.train_split, data_dir)
    test = _open_tfds(name, spec.test_split, data_dir)
    num_classes, augment = spec.num_classes, spec.augment
    if augment == "inception":
      mean, std = IMAGENET_MEAN, IMAGENET_STD
      shape = (IMAGENET_SIZE, IMAGENET_SIZE, 3)
    else:
      mean, std = _sample_stats(train)
      shape = _as_hwc(train[0]["image"]).shape
  info = DatasetInfo(name=name, num_classes=num_classes, image_shape=tuple(shape),
                     augment=augment, mean=tuple(mean), std=tuple(std), num_train=len(train),
                     num_test=len(test))
  return Dataset(info, train, test)


def read_all(source: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
  """A whole split as uint8 images ``(N, H, W, C)`` and int32 labels, for the in-memory grid
  benchmarks (``train.bench.compare``); training streams instead."""
  if isinstance(source, ArraySource):
    return source.images, source.labels.astype(np.int32)
  records = [source[i] for i in range(len(source))]
  return (np.stack([_as_hwc(r["image"]) for r in records]),
          np.asarray([r["label"] for r in records], np.int32))


# --- augmentation (NumPy, in the grain workers) --------------------------------------------------

def crop_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """CIFAR augmentation: zero-pad :data:`CROP_PADDING`, random crop back to size, random h-flip."""
  h, w, _ = image.shape
  pad = CROP_PADDING
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  dy, dx = rng.integers(0, 2 * pad + 1, size=2)
  out = padded[dy:dy + h, dx:dx + w]
  return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image

  resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
  return np.asarray(resized, np.uint8)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator,
                        size: int = IMAGENET_SIZE, area: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        attempts: int = 10) -> np.ndarray:
  """Inception-style crop: a random box of ``area`` of the image and aspect ratio in ``ratio``
  (log-uniform), resized to ``size`` x ``size``, then a random h-flip. After ``attempts`` boxes
  that do not fit, the central crop (as for evaluation) is used."""
  h, w, _ = image.shape
  for _ in range(attempts):
    target = h * w * rng.uniform(*area)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw = int(round(np.sqrt(target * aspect)))
    ch = int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      y = int(rng.integers(0, h - ch + 1))
      x = int(rng.integers(0, w - cw + 1))
      out = _resize(np.ascontiguousarray(image[y:y + ch, x:x + cw]), size)
      break
  else:
    out = center_crop(image, size)
  return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def center_crop(image: np.ndarray, size: int = IMAGENET_SIZE) -> np.ndarray:
  """The central square of :data:`CENTER_CROP_FRACTION` of the shorter side, resized to ``size``."""
  h, w, _ = image.shape
  side = max(1, int(round(CENTER_CROP_FRACTION * min(h, w))))
  y, x = (h - side) // 2, (w - side) // 2
  return _resize(np.ascontiguousarray(image[y:y + side, x:x + side]), size)


class _Train(grain.transforms.RandomMap):
  """Decoded record -> ``{"image": uint8 (H, W, C), "label": int32}`` with augmentation."""

  def __init__(self, augment: str):
    self.augment = augment

  def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    image = _as_hwc(record["image"])
    if self.augment == "crop_flip":
      image = crop_flip(image, rng)
    elif self.augment == "inception":
      image = random_resized_crop(image, rng)
    return {"image": image, "label": np.int32(record["label"])}


class _Eval(grain.transforms.Map):
  """Padded position ``k`` -> record ``k mod N`` (center-cropped for ImageNet) and its mask."""

  def __init__(self, source: Sequence[dict[str, Any]], augment: str):
    self.source = source
    self.augment = augment

  def map(self, position: int) -> dict[str, Any]:
    record = self.source[position % len(self.source)]
    image = _as_hwc(record["image"])
    if self.augment == "inception":
      image = center_crop(image)
    return {"image": image, "label": np.int32(record["label"]),
            "mask": np.float32(position < len(self.source))}


# --- the streams ---------------------------------------------------------------------------------

def process_shard() -> tuple[int, int]:
  """``(process index, process count)`` from grain's ``ShardByJaxProcess``."""
  shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return shard.shard_index, shard.shard_count


def _ignore_sigterm(worker_index: int, worker_count: int) -> None:
  """Grain workers leave SIGTERM (a preemption notice sent to the whole process group) to the
  main process, which saves a checkpoint at the next step and then closes them."""
  del worker_index, worker_count
  import signal

  signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _local_batches(records: grain.MapDataset, global_batch: int, shard: tuple[int, int],
                   num_workers: int, prefetch: int) -> grain.IterDataset:
  index, count = shard
  if global_batch % count:
    raise ValueError(f"`batch_size` {global_batch} is not divisible by the number of processes "
                     f"{count}")
  local = records.batch(global_batch // count, drop_remainder=True)[index::count]
  # One local batch is one element: threads and workers each make whole batches.
  stream = local.to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(prefetch, 4)),
                                                   prefetch_buffer_size=prefetch))
  if num_workers > 0:
    from absl import flags

    # grain's workers read absl flags; a program that does not parse them (this one) marks
    # them parsed so that the defaults apply.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(1, prefetch // num_workers)),
        worker_init_fn=_ignore_sigterm)
  return stream


def steps_per_epoch(info: DatasetInfo, global_batch: int) -> int:
  """Full global batches per epoch (the last partial batch is dropped)."""
  return info.num_train // global_batch


def _order(num_records: int, per_epoch: int, seed: int) -> grain.MapDataset:
  """Record indices of the endless stream: a global shuffle reseeded every epoch (grain folds the
  epoch into the seed of a shuffle before ``repeat``), the first ``per_epoch`` kept."""
  return grain.MapDataset.range(num_records).shuffle(seed=seed)[:per_epoch].repeat()


class _Read(grain.transforms.Map):
  """Record index -> record (in the worker that reads it)."""

  def __init__(self, source: Sequence[dict[str, Any]]):
    self.source = source

  def map(self, index: int) -> dict[str, Any]:
    return self.source[int(index)]


def epoch_orders(num_records: int, global_batch: int, seed: int, num_epochs: int) -> np.ndarray:
  """The record indices of :func:`train_batches`' global batches, ``(num_epochs, steps,
  global_batch)`` int32: for consumers that gather batches themselves (the in-memory grids of
  ``train.bench.compare``)."""
  steps = num_records // global_batch
  order = _order(num_records, steps * global_batch, seed)
  flat = np.asarray([order[i] for i in range(num_epochs * steps * global_batch)], np.int32)
  return flat.reshape(num_epochs, steps, global_batch)


def train_batches(dataset: Dataset, global_batch: int, seed: int, *,
                  shard: tuple[int, int] | None = None, num_workers: int = 0,
                  prefetch: int = 2) -> grain.IterDataset:
  """The endless training stream of this process's local batches.

  Args:
    dataset: from :func:`load`.
    global_batch: examples per optimizer step over all processes (>= 1, divisible by the
      process count).
    seed: seeds the per-epoch shuffle and the augmentation (any int in ``[0, 2**32)``).
    shard: ``(process index, process count)``; default :func:`process_shard`.
    num_workers: worker processes for decode and augmentation (0: in this process).
    prefetch: local batches read ahead (>= 1); bounds the host memory of the stream.

  Returns:
    A grain ``IterDataset`` of ``{"image": uint8 (L, H, W, C), "label": int32 (L,)}`` with
    ``L = global_batch / process count``; element ``t`` is this process's part of step ``t``'s
    global batch (epoch ``t // steps_per_epoch``). Its iterator's ``get_state`` /
    ``set_state`` is the data position a checkpoint stores.
  """
  n = dataset.info.num_train
  per_epoch = (n // global_batch) * global_batch
  if per_epoch < 1:
    raise ValueError(f"`batch_size` {global_batch} exceeds the {n} training examples")
  records = (_order(n, per_epoch, seed).map(_Read(dataset.train))
             .random_map(_Train(dataset.info.augment), seed=seed))
  return _local_batches(records, global_batch, shard or process_shard(), num_workers, prefetch)


def eval_batches(dataset: Dataset, global_batch: int, *, shard: tuple[int, int] | None = None,
                 num_workers: int = 0, prefetch: int = 2) -> grain.IterDataset:
  """The test split in order, padded to whole global batches, as this process's local batches.

  Returns:
    A finite grain ``IterDataset`` of ``{"image", "label", "mask"}`` local batches; padded rows
    repeat real records and have mask 0.
  """
  n = dataset.info.num_test
  padded = -(-n // global_batch) * global_batch
  records = grain.MapDataset.range(padded).map(_Eval(dataset.test, dataset.info.augment))
  return _local_batches(records, global_batch, shard or process_shard(), num_workers, prefetch)


def normalize(images: jnp.ndarray, info: DatasetInfo) -> jnp.ndarray:
  """uint8 -> float32, per channel ``(x - mean) / std`` with the training set's statistics."""
  mean = jnp.asarray(info.mean, jnp.float32)
  std = jnp.asarray(info.std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std
