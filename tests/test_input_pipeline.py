"""The input pipeline (train/input_pipeline.py): sources, the grain streams, augmentation."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from train import input_pipeline


@pytest.fixture(scope="module")
def digits():
  return input_pipeline.load("digits")


def _indices(dataset, images, labels):
  """The training-record index of every example of a batch (digits images are not all distinct,
  so (image, label) is matched to the first record that has it)."""
  lookup = {}
  for i in range(len(dataset.train)):
    record = dataset.train[i]
    lookup.setdefault((record["image"].tobytes(), int(record["label"])), i)
  return [lookup[(x.tobytes(), int(y))] for x, y in zip(images, labels, strict=True)]


def _take(stream, n):
  iterator = iter(stream)
  batches = [next(iterator) for _ in range(n)]
  if hasattr(iterator, "close"):
    iterator.close()
  return batches


def test_digits_split_is_deterministic_and_stratified(digits):
  again = input_pipeline.load("digits")
  train, test = digits.train, digits.test
  assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  np.testing.assert_array_equal(train.images, again.train.images)
  np.testing.assert_array_equal(test.labels, again.test.labels)
  # 1797 digits, 20% held out per class (stratified): every class has 35-37 test examples.
  counts = np.bincount(test.labels, minlength=10)
  assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
  info = digits.info
  assert (info.num_classes, info.image_shape, info.augment) == (10, (8, 8, 1), "none")
  assert (info.num_train, info.num_test) == (1437, 360)
  pixels = train.images.astype(np.float64)
  assert info.mean == pytest.approx((pixels.mean(),)) and info.std == pytest.approx((pixels.std(),))


def test_warped_digits_are_deterministic_copies_of_each_split(digits):
  warped = input_pipeline.load("digits_warped")
  copies = input_pipeline.WARPED_COPIES
  assert warped.train.images.shape == (1437 * copies, 8, 8, 1)
  assert warped.test.images.shape == (360 * copies, 8, 8, 1)
  assert warped.train.images.dtype == np.uint8 and warped.train.images.max() <= 16
  # Copy k of image i is row i * copies + k, labelled as its source digit of the same split.
  np.testing.assert_array_equal(warped.train.labels, np.repeat(digits.train.labels, copies))
  np.testing.assert_array_equal(warped.test.labels, np.repeat(digits.test.labels, copies))
  np.testing.assert_array_equal(warped.train.images,
                                input_pipeline.load("digits_warped").train.images)
  # Each copy is a warp of its own source: nearer to it than to the mean of the other digits of
  # its class (rotation +-25 degrees and noise of 2 keep the shape recognisable).
  source = np.repeat(digits.train.images, copies, axis=0).reshape(len(warped.train.labels), -1)
  flat = warped.train.images.reshape(len(source), -1).astype(np.float64)
  own = np.linalg.norm(flat - source, axis=1)
  shuffled = np.linalg.norm(flat - np.roll(source, 7 * copies, axis=0), axis=1)
  assert np.mean(own < shuffled) > 0.8
  assert (warped.info.num_train, warped.info.num_test) == (11496, 2880)


def test_epochs_are_seeded_permutations_without_the_last_partial_batch(digits):
  # 1437 records, global batch 100: 14 steps per epoch use 1400 distinct records.
  batches = _take(input_pipeline.train_batches(digits, 100, seed=3), 28)
  epochs = [sum((_indices(digits, b["image"], b["label"]) for b in batches[e * 14:(e + 1) * 14]),
                []) for e in range(2)]
  for order in epochs:
    assert len(order) == 1400 and len(set(order)) == 1400
  assert epochs[0] != epochs[1]  # reshuffled every epoch
  again = _take(input_pipeline.train_batches(digits, 100, seed=3), 1)[0]
  other = _take(input_pipeline.train_batches(digits, 100, seed=4), 1)[0]
  np.testing.assert_array_equal(again["label"], batches[0]["label"])
  assert not np.array_equal(other["image"], batches[0]["image"])
  assert batches[0]["image"].dtype == np.uint8 and batches[0]["label"].dtype == np.int32


def test_process_shards_are_disjoint_and_rebuild_the_global_batches(digits):
  whole = _take(input_pipeline.train_batches(digits, 64, seed=0), 23)
  shards = [_take(input_pipeline.train_batches(digits, 64, seed=0, shard=(p, 2)), 23)
            for p in range(2)]
  for step in range(23):
    parts = [shards[p][step] for p in range(2)]
    assert all(part["label"].shape == (32,) for part in parts)
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]),
                                    whole[step][key])
  # Over one epoch (22 steps) the two shards are disjoint and together are the epoch.
  seen = [set(sum((_indices(digits, b["image"], b["label"]) for b in shards[p][:22]), []))
          for p in range(2)]
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 22 * 64
  with pytest.raises(ValueError, match="`batch_size` 63 is not divisible by the number of "
                                       "processes 2"):
    input_pipeline.train_batches(digits, 63, seed=0, shard=(0, 2))


def test_iterator_state_resumes_the_stream_exactly(digits):
  iterator = iter(input_pipeline.train_batches(digits, 64, seed=1))
  for _ in range(30):  # into the second epoch
    next(iterator)
  position = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  resumed = iter(input_pipeline.train_batches(digits, 64, seed=1))
  resumed.set_state(position)
  for batch in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], batch["image"])
    np.testing.assert_array_equal(got["label"], batch["label"])


def test_eval_stream_pads_with_masked_repeats(digits):
  batches = list(input_pipeline.eval_batches(digits, 128, shard=(0, 1)))
  assert len(batches) == 3  # 360 -> 384 rows
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
  np.testing.assert_array_equal(labels[:360], digits.test.labels)
  np.testing.assert_array_equal(labels[360:], digits.test.labels[:24])


@pytest.mark.parametrize("name,shape,classes,augment", [
    ("cifar10", (32, 32, 3), 10, "crop_flip"), ("mnist", (28, 28, 1), 10, "none"),
    ("cifar100", (32, 32, 3), 100, "crop_flip"), ("svhn_cropped", (32, 32, 3), 10, "crop_flip")])
def test_tfds_through_mock_data(name, shape, classes, augment):
  with tfds.testing.mock_data(num_examples=12):
    data = input_pipeline.load(name)
    batch = _take(input_pipeline.train_batches(data, 4, seed=0), 1)[0]
    images = np.stack([np.asarray(data.train[i]["image"]).reshape(shape) for i in range(12)])
  assert (data.info.num_train, data.info.num_test) == (12, 12)
  assert batch["image"].shape == (4, *shape) and batch["image"].dtype == np.uint8
  assert np.all((batch["label"] >= 0) & (batch["label"] < classes))
  assert (data.info.num_classes, data.info.augment, data.info.image_shape) == (
      classes, augment, shape)
  np.testing.assert_allclose(data.info.mean, images.reshape(-1, shape[-1]).mean(axis=0),
                             rtol=1e-6)


def test_imagenet_through_mock_data_with_workers():
  with tfds.testing.mock_data(num_examples=8):
    data = input_pipeline.load("imagenet2012")
    train = _take(input_pipeline.train_batches(data, 4, seed=0, num_workers=1), 2)
    test = list(input_pipeline.eval_batches(data, 8, shard=(0, 1)))
    serial = _take(input_pipeline.train_batches(data, 4, seed=0, num_workers=0), 2)
  assert data.info.image_shape == (224, 224, 3) and data.info.augment == "inception"
  assert data.info.mean == pytest.approx((123.675, 116.28, 103.53))
  assert train[0]["image"].shape == (4, 224, 224, 3) and train[0]["image"].dtype == np.uint8
  assert test[0]["image"].shape == (8, 224, 224, 3) and test[0]["mask"].sum() == 8
  # Augmentation is seeded per record: a worker process draws the crops this process would.
  for a, b in zip(train, serial, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match=r"(?s)not prepared.*tfds build cifar10 --file_format=array_record "
                           f"--data_dir {tmp_path}"):
    input_pipeline.load("cifar10", data_dir=str(tmp_path))
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match=r"(?s)ILSVRC2012_img_train.tar.*downloads/manual.*tfds build "
                           "imagenet2012"):
    input_pipeline.load("imagenet2012", data_dir=str(tmp_path))


def test_unreadable_record_names_its_file():
  class Broken:
    def __len__(self):
      return 30

    def __getitem__(self, index):
      if index == 17:
        raise OSError("Corruption: bad block checksum\nmore detail")
      return {"image": np.zeros((2, 2, 1), np.uint8), "label": 0}

  source = input_pipeline.CheckedSource(Broken(), [("/d/x.array_record-00000", 10),
                                                   ("/d/x.array_record-00001", 20)])
  assert source[16]["label"] == 0
  with pytest.raises(input_pipeline.DatasetDamagedError) as error:
    source[17]  # noqa: B018 - the read is the test
  assert str(error.value) == ("damaged dataset file /d/x.array_record-00001 (record 17): "
                              "Corruption: bad block checksum; prepare the dataset again")


def test_unknown_dataset_lists_choices():
  with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid choices: digits, "
                                       "digits_warped, shapes, mnist, "
                                       "cifar10, cifar100, svhn_cropped, "
                                       "imagenet2012"):
    input_pipeline.load("cifar")


def _is_crop_or_flip(out, padded, size):
  for dy, dx in itertools.product(range(9), range(9)):
    crop = padded[dy:dy + size, dx:dx + size]
    if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
      return True
  return False


def test_crop_flip_is_a_padded_crop_or_its_mirror():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, size=(32, 6, 6, 3), dtype=np.uint8)
  draws = np.random.default_rng(1)
  outs = [input_pipeline.crop_flip(image, draws) for image in images]
  for image, out in zip(images, outs, strict=True):
    assert out.dtype == np.uint8 and out.shape == (6, 6, 3)
    assert _is_crop_or_flip(out, np.pad(image, ((4, 4), (4, 4), (0, 0))), 6)
  assert sum(np.array_equal(o, i) for o, i in zip(outs, images, strict=True)) < 32
  assert any(np.any(o == 0) for o in outs)  # some crops reach into the zero padding


def test_center_crop_keeps_the_central_224_of_256():
  image = np.random.default_rng(0).integers(0, 256, size=(256, 320, 3), dtype=np.uint8)
  # 224/256 of the shorter side is 224: the crop is the central 224 x 224 block, not resized.
  np.testing.assert_array_equal(input_pipeline.center_crop(image), image[16:240, 48:272])


def test_random_resized_crop_shape_and_flip():
  image = np.zeros((300, 200, 3), np.uint8)
  image[:, :100] = 255  # left half white
  rng = np.random.default_rng(0)
  outs = [input_pipeline.random_resized_crop(image, rng) for _ in range(20)]
  assert all(o.shape == (224, 224, 3) and o.dtype == np.uint8 for o in outs)
  # Crops of the left half are white, of the right half black; flips mirror the split.
  assert {int(o.mean() > 127) for o in outs} == {0, 1}


def test_normalize_per_channel():
  info = input_pipeline.DatasetInfo("x", 10, (2, 2, 2), "none", mean=(10.0, 20.0), std=(2.0, 4.0))
  out = np.asarray(input_pipeline.normalize(np.full((1, 2, 2, 2), 30, np.uint8), info))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out[..., 0], 10.0)
  np.testing.assert_allclose(out[..., 1], 2.5)


class OptaxLrTinyRecords(tfds.core.GeneratorBasedBuilder):
  """A real (tiny) array_record dataset, prepared without TensorFlow (Tensor features)."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # no checksums file to look up next to this module

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(), "test": self._generate_examples()}

  def _generate_examples(self):
    for i in range(200):
      yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 2}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_prepared_dataset_is_one_line_naming_the_file(tmp_path, damage):
  OptaxLrTinyRecords(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  (path,) = tmp_path.glob("optax_lr_tiny_records/1.0.0/*-train.array_record-*")
  intact = input_pipeline._open_tfds("optax_lr_tiny_records", "train", str(tmp_path))
  assert intact.files == ((str(path), 200),)
  data = bytearray(path.read_bytes())
  if damage == "flip":
    for i in range(100, 164):  # inside the first chunk's header
      data[i] ^= 0xFF
  else:
    data = data[:3000]
  path.write_bytes(bytes(data))
  # A fresh process would open the damaged file; here a new data source does (readers are
  # cached per source).
  source = input_pipeline._open_tfds("optax_lr_tiny_records", "train", str(tmp_path))
  with pytest.raises(input_pipeline.DatasetDamagedError) as error:
    for i in range(len(source)):
      source[i]  # noqa: B018 - the read is the test
  message = str(error.value)
  assert message.startswith(f"damaged dataset file {path} (record 0): ")
  assert message.endswith("; prepare the dataset again") and "\n" not in message
