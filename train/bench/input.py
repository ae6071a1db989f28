"""Input pipeline throughput and memory: ``python -m train.bench input [--quick] [--out FILE]``.

Times the training stream of ``train.input_pipeline.train_batches`` alone (no model), each
configuration in a fresh process so that its peak memory is its own, and, next to it, the images/s
of the model's train step on this machine (``train.train.Runner`` on one device), so one can read
whether the devices would wait for data.

Data:

- CIFAR-shaped: TFDS's mock ``cifar10`` (``tfds.testing.mock_data``: 32x32x3 uint8 records
  generated on read), with the pad-crop-flip augmentation.
- ImageNet-shaped: an in-memory source of 32 JPEG files of 500x375 pixels (ImageNet's typical
  size; TFDS's mock images are 5-50 pixels) cycled to any number of records, decoded with PIL on
  read (what ``tfds.data_source`` does for ``imagenet2012`` without TensorFlow or OpenCV), then
  the random-resized crop to 224 and the flip.

Peak memory is the high-water resident set (``VmHWM``) of the main process and of the grain worker
processes, read from ``/proc`` just before the stream is closed. The ImageNet-shaped stream is also
run with 1,281,167 records (ImageNet's training set) to show that the memory is set by the
prefetch depth, not the dataset size.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from train import input_pipeline, io_utils

#: ImageNet-shaped source: distinct JPEG files and their size (width, height).
_JPEGS, _JPEG_SIZE = 32, (500, 375)

#: ImageNet's training-set size.
IMAGENET_TRAIN = 1_281_167


class JpegSource:
  """``num_records`` records cycling over :data:`_JPEGS` JPEG files, decoded with PIL on read."""

  def __init__(self, num_records: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    self.num_records = num_records
    self.files = []
    width, height = _JPEG_SIZE
    for _ in range(_JPEGS):
      # Smooth colour fields with some noise compress like photographs, unlike white noise.
      coarse = rng.integers(0, 256, (height // 25, width // 25, 3), dtype=np.uint8)
      image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
      pixels = np.asarray(image, np.int16) + rng.integers(-12, 13, (height, width, 3))
      buffer = io.BytesIO()
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
      self.files.append(buffer.getvalue())

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict[str, Any]:
    from PIL import Image

    image = Image.open(io.BytesIO(self.files[index % _JPEGS])).convert("RGB")
    return {"image": np.asarray(image), "label": index % 1000}


def _peak_mib() -> tuple[float, float, int]:
  """VmHWM of this process and the sum over its child processes (MiB), and the child count."""
  def hwm(pid):
    try:
      with open(f"/proc/{pid}/status") as f:
        for line in f:
          if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    except OSError:
      pass
    return 0.0

  children = []
  for task in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{task}/children") as f:
        children += [int(pid) for pid in f.read().split()]
    except OSError:
      pass
  return hwm("self"), sum(hwm(pid) for pid in children), len(children)


def measure(shape: str, workers: int, records: int, batches: int, batch_size: int,
            prefetch: int = 4) -> dict[str, Any]:
  """Images/s of one training stream after a warm-up, and its peak memory."""
  if shape == "cifar":
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=records):
      dataset = input_pipeline.load("cifar10")
  else:
    source = JpegSource(records)
    info = input_pipeline.DatasetInfo(
        "imagenet_shaped", 1000, (224, 224, 3), "inception", input_pipeline.IMAGENET_MEAN,
        input_pipeline.IMAGENET_STD, num_train=records, num_test=records)
    dataset = input_pipeline.Dataset(info, source, source)
  iterator = iter(input_pipeline.train_batches(dataset, batch_size, seed=0, num_workers=workers,
                                               prefetch=prefetch, shard=(0, 1)))
  warm = time.perf_counter()
  for _ in range(3):  # worker start-up and the first reads
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  main_mib, workers_mib, children = _peak_mib()
  if hasattr(iterator, "close"):
    iterator.close()
  assert batch["image"].shape == (batch_size, *dataset.info.image_shape)
  return {"data": shape, "workers": workers, "records": records, "batch_size": batch_size,
          "prefetch": prefetch, "batches": batches, "seconds": seconds,
          "images_per_second": batches * batch_size / seconds,
          "startup_s": start - warm, "peak_main_mib": main_mib,
          "peak_workers_mib": workers_mib, "worker_processes": children}


def model_step(shape: str, batch_size: int, repeats: int) -> dict[str, Any]:
  """Images/s of the train step (ResNet-18 on CIFAR shapes, ResNet-50 at 224 for ImageNet) on
  one device, from placed random batches (median of ``repeats`` steps after the compile)."""
  import statistics

  import jax

  from train import train as training
  from train.configs import Config

  if shape == "cifar":
    info = input_pipeline.DatasetInfo("cifar_shaped", 10, (32, 32, 3), "crop_flip",
                                      (125.3, 123.0, 113.9), (63.0, 62.1, 66.7))
    config = Config(dataset="cifar10", model="resnet18", optimizer="sgd", learning_rate=0.01,
                    batch_size=batch_size, num_devices=1)
  else:
    info = input_pipeline.DatasetInfo("imagenet_shaped", 1000, (224, 224, 3), "inception",
                                      input_pipeline.IMAGENET_MEAN, input_pipeline.IMAGENET_STD)
    config = Config(dataset="imagenet2012", model="resnet50_imagenet", optimizer="sgd",
                    learning_rate=0.01, batch_size=batch_size, num_devices=1)
  setup = training.build(config, info, num_train=10 * batch_size)
  runner = training.Runner(setup)
  state = runner.to_runner(training.create_train_state(jax.random.PRNGKey(0), setup))
  rng = np.random.default_rng(0)
  batch = runner.put_batch({
      "image": rng.integers(0, 256, (batch_size, *info.image_shape), dtype=np.uint8),
      "label": rng.integers(0, info.num_classes, (batch_size,), dtype=np.int32)})
  start = time.perf_counter()
  state, metrics = runner.train(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = runner.train(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {"data": shape, "model": config.model, "batch_size": batch_size, "step_s": seconds,
          "first_step_s": compile_s, "images_per_second": batch_size / seconds,
          "device": str(jax.devices()[0].platform), "repeats": repeats}


def _in_subprocess(args: list[str]) -> dict[str, Any]:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-m", "train.bench", "input", "--_one", *args],
                       cwd=root, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"input bench {args} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
  cifar_batches, imagenet_batches = (20, 8) if quick else (100, 24)
  pipelines = []
  for workers in (0, 1, 2):
    pipelines.append(_in_subprocess(["cifar", str(workers), "50000", str(cifar_batches), "128"]))
  for workers in (1, 2):
    pipelines.append(_in_subprocess(["imagenet", str(workers), "50000", str(imagenet_batches),
                                     "32"]))
  pipelines.append(_in_subprocess(["imagenet", "2", str(IMAGENET_TRAIN), str(imagenet_batches),
                                   "32"]))
  steps = [_in_subprocess(["step", "cifar", "32", "2" if quick else "5"]),
           _in_subprocess(["step", "imagenet", "8", "2" if quick else "3"])]
  return {"benchmark": "input", "quick": quick, "cpus": os.cpu_count(), "pipelines": pipelines,
          "model_steps": steps}


def markdown(document: dict[str, Any]) -> str:
  lines = ["| data | workers | records | batch | images/s | start-up s | peak main MiB | "
           "peak workers MiB |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in document["pipelines"]:
    lines.append(f"| {r['data']} | {r['workers']} | {r['records']:,} | {r['batch_size']} | "
                 f"{r['images_per_second']:.0f} | {r['startup_s']:.1f} | "
                 f"{r['peak_main_mib']:.0f} | {r['peak_workers_mib']:.0f} |")
  lines += ["", "| model step | batch | device | step s | images/s |",
            "| --- | --- | --- | --- | --- |"]
  for r in document["model_steps"]:
    lines.append(f"| {r['model']} ({r['data']}) | {r['batch_size']} | {r['device']} | "
                 f"{r['step_s']:.3f} | {r['images_per_second']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  import argparse

  if argv[:1] == ["--_one"]:  # one measurement, in its own process (see _in_subprocess)
    args = argv[1:]
    if args[0] == "step":
      print(json.dumps(model_step(args[1], int(args[2]), int(args[3]))))
    else:
      print(json.dumps(measure(args[0], int(args[1]), int(args[2]), int(args[3]),
                               int(args[4]))))
    return
  parser = argparse.ArgumentParser(prog="python -m train.bench input", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="fewer batches and steps")
  parser.add_argument("--out", help="write JSON here (and FILE.md as markdown)")
  args = parser.parse_args(argv)
  document = run(args.quick)
  table = markdown(document)
  print(table)
  if args.out:
    io_utils.write_atomic(args.out, json.dumps(document, indent=2))
    io_utils.write_atomic(args.out.rsplit(".", 1)[0] + ".md", table)
