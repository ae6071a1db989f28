"""Multi-host training: two processes on localhost (2 CPU devices each, gloo collectives) read
disjoint shards of every epoch and give the same run as one process with 4 devices."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from train import configs, input_pipeline, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["num_epochs=2", "progress=false", "plot=false", "keep_checkpoints=1"]

# ``python -m train`` with every training batch this process hands to the devices recorded
# (in order; evaluation batches carry a mask and are left out) and saved at exit.
_RECORDING_CHILD = textwrap.dedent("""
    import atexit, sys
    import numpy as np
    from train import __main__ as cli
    from train import train

    recorded, original = [], train.Runner.put_batch

    def put_batch(self, local):
      if "mask" not in local:
        recorded.append((np.array(local["image"]), np.array(local["label"])))
      return original(self, local)

    def save():
      import jax
      np.savez(f"{sys.argv[1]}/batches_{jax.process_index()}.npz",
               images=np.stack([r[0] for r in recorded]), labels=np.stack([r[1] for r in recorded]))

    train.Runner.put_batch = put_batch
    atexit.register(save)
    sys.exit(cli.main(sys.argv[2:]))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _record_indices(dataset, images, labels):
  lookup = {}
  for i in range(len(dataset.train)):
    record = dataset.train[i]
    lookup.setdefault((record["image"].tobytes(), int(record["label"])), i)
  return [lookup[(x.tobytes(), int(y))] for x, y in zip(images, labels, strict=True)]


def test_two_processes_read_disjoint_shards_and_match_one_process(tmp_path):
  workdir = tmp_path / "multihost"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  sets = [arg for o in OVERRIDES for arg in ("--set", o)]
  processes = [
      subprocess.Popen(
          [sys.executable, "-c", _RECORDING_CHILD, str(tmp_path), "--coordinator",
           f"localhost:{port}", "--num_processes", "2", "--process_id", str(i),
           "--cpu_devices", "2", "--workdir", str(workdir), *sets],
          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240)[0] for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, out in zip(processes, outputs, strict=True):
    assert p.returncode == 0, out[-3000:]
  assert "4 device(s)" in outputs[0]  # the mesh spans both processes
  rows = train.read_metrics(str(workdir))
  assert [r["epoch"] for r in rows] == [1, 2]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["44"]  # 22 steps per epoch

  # Each process read 32 of the 64 examples of every step; over epoch 1 (22 steps) the two
  # shards are disjoint and their union is the epoch: the 1-process stream's first 22 batches.
  digits = input_pipeline.load("digits")
  config = configs.get_config("default", OVERRIDES)
  shards = []
  for i in range(2):
    recorded = np.load(tmp_path / f"batches_{i}.npz")
    assert recorded["labels"].shape[1:] == (32,)
    shards.append([_record_indices(digits, x, y) for x, y in
                   zip(recorded["images"][:22], recorded["labels"][:22], strict=True)])
  epoch = [sum(shards[p], []) for p in range(2)]
  assert not set(epoch[0]) & set(epoch[1])
  _, data_seed = train.run_keys(config.seed)
  single = iter(input_pipeline.train_batches(digits, 64, data_seed, shard=(0, 1)))
  for step in range(22):
    batch = next(single)
    assert shards[0][step] + shards[1][step] == _record_indices(digits, batch["image"],
                                                                batch["label"])

  reference = train.train_and_evaluate(
      configs.get_config("default", [*OVERRIDES, "num_devices=4", "checkpoint=false"]),
      str(tmp_path / "single"), log=lambda _: None)
  for a, b in zip(rows, reference, strict=True):
    for key in ("step", "train_loss", "test_loss", "test_accuracy"):
      assert a[key] == pytest.approx(b[key], rel=1e-5), key
