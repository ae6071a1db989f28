"""Data (train/input_pipeline.py): digits split, TFDS through mock data, batches made on device."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from train import input_pipeline


def test_digits_split_is_deterministic_and_stratified():
  a = input_pipeline.load("digits")
  b = input_pipeline.load("digits")
  assert a.train_images.shape == (1437, 8, 8, 1) and a.test_images.shape == (360, 8, 8, 1)
  assert a.train_images.dtype == np.uint8 and a.train_labels.dtype == np.int32
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  # 1797 digits, 20% held out per class (stratified): every class has 35-37 test examples.
  counts = np.bincount(a.test_labels, minlength=10)
  assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
  info = a.info
  assert (info.num_classes, info.image_shape, info.augment) == (10, (8, 8, 1), False)
  pixels = a.train_images.astype(np.float64)
  assert info.mean == pytest.approx((pixels.mean(),)) and info.std == pytest.approx((pixels.std(),))


@pytest.mark.parametrize("name,shape,classes,augment", [
    ("cifar10", (32, 32, 3), 10, True), ("mnist", (28, 28, 1), 10, False),
    ("cifar100", (32, 32, 3), 100, True), ("svhn_cropped", (32, 32, 3), 10, True)])
def test_tfds_through_mock_data(name, shape, classes, augment):
  with tfds.testing.mock_data(num_examples=12):
    data = input_pipeline.load(name)
  assert data.train_images.shape == (12, *shape) and data.test_images.shape == (12, *shape)
  assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
  assert np.all((data.train_labels >= 0) & (data.train_labels < classes))
  assert (data.info.num_classes, data.info.augment, data.info.image_shape) == (
      classes, augment, shape)
  np.testing.assert_allclose(
      data.info.mean, data.train_images.reshape(-1, shape[-1]).mean(axis=0), rtol=1e-6)


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match=r"(?s)not prepared.*tfds build cifar10 --file_format=array_record "
                           f"--data_dir {tmp_path}"):
    input_pipeline.load("cifar10", data_dir=str(tmp_path))
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match=r"(?s)ILSVRC2012_img_train.tar.*downloads/manual.*tfds build "
                           "imagenet2012"):
    input_pipeline.load("imagenet2012", data_dir=str(tmp_path))


def test_unknown_dataset_lists_choices():
  with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid choices: digits, mnist, "
                                       "cifar10, cifar100, svhn_cropped, imagenet2012"):
    input_pipeline.load("cifar")


def test_epoch_permutation():
  key = jax.random.PRNGKey(3)
  first = np.asarray(input_pipeline.epoch_permutation(key, 1, 103, 5, 20))
  again = np.asarray(input_pipeline.epoch_permutation(key, 1, 103, 5, 20))
  second = np.asarray(input_pipeline.epoch_permutation(key, 2, 103, 5, 20))
  assert first.shape == (5, 20) and first.dtype == np.int32
  assert len(np.unique(first)) == 100 and first.min() >= 0 and first.max() < 103
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, second)


def _is_crop_or_flip(out, padded, size):
  for dy, dx in itertools.product(range(9), range(9)):
    crop = padded[dy:dy + size, dx:dx + size]
    if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
      return True
  return False


def test_augment_is_pad_crop_flip_and_independent_of_the_device_split():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, size=(16, 6, 6, 3), dtype=np.uint8)
  key = jax.random.PRNGKey(0)
  out = np.asarray(input_pipeline.augment(jnp.asarray(images), key))
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  assert out.dtype == np.uint8
  for i in range(16):
    assert _is_crop_or_flip(out[i], padded[i], 6)
  # Several crops and flips occur over 16 images (not the identity).
  assert sum(np.array_equal(out[i], images[i]) for i in range(16)) < 16
  assert np.any(out == 0)  # some crops reach into the zero padding
  # Shards of the global batch, each with its offset, give the same images as one device.
  halves = [np.asarray(input_pipeline.augment(jnp.asarray(images[o:o + 8]), key, offset=o,
                                              global_batch=16)) for o in (0, 8)]
  np.testing.assert_array_equal(np.concatenate(halves), out)


def test_preprocess_normalizes_per_channel():
  info = input_pipeline.DatasetInfo("x", 10, (2, 2, 2), augment=True, mean=(10.0, 20.0),
                                    std=(2.0, 4.0))
  images = jnp.full((1, 2, 2, 2), 30, jnp.uint8)
  out = np.asarray(input_pipeline.preprocess(images, info))  # no key: no augmentation
  assert out.dtype == np.float32
  np.testing.assert_allclose(out[..., 0], 10.0)
  np.testing.assert_allclose(out[..., 1], 2.5)
