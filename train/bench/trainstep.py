"""Whole train-step overhead per method: ``python -m train.bench trainstep``.

The complete data-parallel step of ``train/train.py`` (normalisation, forward, backward, ``pmean``,
the optax update, on a batch already on the device) on ResNet-18 with CIFAR-shaped random data,
timed for each ``optax_lr`` method and for its base optimizer from the registry, interleaved in one
process (median of repeated steps). The goal is a ratio of at most 1.02: the Trainable Learning Rate
paper reports 24.27 s vs 24.26 s per epoch, i.e. a rate method should cost nothing next to the
forward/backward pass.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import jax
import numpy as np

from train import input_pipeline, io_utils
from train import train as training
from train.configs import Config

#: Each optax_lr method of the registry and the registry entry it is timed against.
BASE_OF = {
    "tlr_sgd": "sgd", "tlr_sgd_pl": "sgd", "sgd_hd": "sgd", "sgdn_hd": "sgd",
    "autodrop_sgd": "sgd", "sgd_cam_hd": "sgd", "sgdn_cam_hd": "sgd",
    "simple_adasecant": "sgd", "clr_sgd": "sgd",
    "adam_hd": "adam", "adam_cam_hd": "adam", "autodrop_adam": "adam", "cus_adam": "adam",
    "adasecant": "adam",
}

_CIFAR_SHAPED = input_pipeline.DatasetInfo(
    name="random_cifar_shaped", num_classes=10, image_shape=(32, 32, 3), augment="crop_flip",
    mean=(125.3, 123.0, 113.9), std=(63.0, 62.1, 66.7))


class _Step:
  """One compiled train step with its live state; ``sample()`` times one call."""

  def __init__(self, optimizer: str, batch_size: int, model: str, images, labels):
    config = Config(dataset="cifar10", model=model, optimizer=optimizer, learning_rate=0.01,
                    batch_size=batch_size, num_epochs=1, num_devices=1, checkpoint=False,
                    progress=False, plot=False)
    setup = training.build(config, _CIFAR_SHAPED, len(labels))
    self.runner = training.Runner(setup)
    key = jax.random.key(0)
    self.state = self.runner.to_runner(training.create_train_state(key, setup))
    self.batches = [self.runner.put_batch({"image": images[i:i + batch_size],
                                           "label": labels[i:i + batch_size]})
                    for i in range(0, len(labels) - batch_size + 1, batch_size)]
    self.needs_next = "next_grads" in setup.spec.extra_args
    self.index = 0
    start = time.perf_counter()
    self.sample()
    self.first_step_seconds = time.perf_counter() - start

  def sample(self) -> float:
    start = time.perf_counter()
    count = len(self.batches)
    following = self.batches[(self.index + 1) % count] if self.needs_next else None
    self.state, metrics = self.runner.train(self.state, self.batches[self.index % count],
                                            following)
    jax.block_until_ready((self.state, metrics))
    self.index += 1
    return time.perf_counter() - start


def run(methods: list[str], batch_size: int = 32, repeats: int = 15,
        model: str = "resnet18") -> list[dict[str, Any]]:
  rng = np.random.default_rng(0)
  count = 4 * batch_size
  images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (count,), dtype=np.int32)
  results = []
  for name in methods:
    base_name = BASE_OF[name]
    ours = _Step(name, batch_size, model, images, labels)
    base = _Step(base_name, batch_size, model, images, labels)
    ours_times, base_times = [], []
    for _ in range(repeats):
      ours_times.append(ours.sample())
      base_times.append(base.sample())
    seconds, base_seconds = statistics.median(ours_times), statistics.median(base_times)
    results.append({"method": name, "base": base_name, "model": model,
                    "batch_size": batch_size, "step_s": seconds, "base_step_s": base_seconds,
                    "ratio": seconds / base_seconds, "target_ratio": 1.02,
                    "images_per_second": batch_size / seconds, "repeats": repeats})
    del ours, base
  return results


def markdown(results: list[dict[str, Any]]) -> str:
  lines = ["| method | base | batch | step s | base step s | ratio (goal ≤ 1.02) | images/s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in results:
    lines.append(f"| {r['method']} | {r['base']} | {r['batch_size']} | {r['step_s']:.3f} | "
                 f"{r['base_step_s']:.3f} | {r['ratio']:.3f} | {r['images_per_second']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m train.bench trainstep", description=__doc__)
  parser.add_argument("--quick", action="store_true",
                      help="tlr_sgd, sgd_hd and adam_hd only, 5 repeats")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--methods", nargs="*", choices=sorted(BASE_OF))
  parser.add_argument("--out", help="write JSON here (and FILE.md as markdown)")
  args = parser.parse_args(argv)
  methods = args.methods or (["tlr_sgd", "sgd_hd", "adam_hd"] if args.quick else list(BASE_OF))
  results = run(methods, batch_size=args.batch_size, repeats=5 if args.quick else 15)
  table = markdown(results)
  print(table)
  if args.out:
    io_utils.write_atomic(args.out, json.dumps(results, indent=2))
    io_utils.write_atomic(args.out.rsplit(".", 1)[0] + ".md", table)
