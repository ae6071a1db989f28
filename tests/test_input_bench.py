"""The input benchmark (train/bench/input.py): its ImageNet-shaped source and one measurement."""

import numpy as np

from train.bench import input as input_bench


def test_jpeg_source_decodes_imagenet_sized_records_cyclically():
  source = input_bench.JpegSource(num_records=input_bench.IMAGENET_TRAIN)
  assert len(source) == 1_281_167 and len(source.files) == 32
  first, again = source[3], source[3 + 32]
  assert first["image"].shape == (375, 500, 3) and first["image"].dtype == np.uint8
  np.testing.assert_array_equal(first["image"], again["image"])
  assert (first["label"], again["label"]) == (3, 35)
  # JPEG files of a photograph-like size: tens of kilobytes, not the 562,500 raw bytes.
  assert all(10_000 < len(f) < 300_000 for f in source.files)


def test_measure_counts_the_images_it_times():
  result = input_bench.measure("imagenet", workers=0, records=64, batches=2, batch_size=4)
  assert (result["batches"], result["batch_size"], result["worker_processes"]) == (2, 4, 0)
  assert result["images_per_second"] == 8 / result["seconds"]
  assert result["peak_main_mib"] > 50 and result["peak_workers_mib"] == 0
