"""Multi-host training: two processes on localhost (2 CPU devices each, gloo collectives) give the
same run as one process with 4 devices."""

import os
import socket
import subprocess
import sys

import pytest

from train import configs, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["num_epochs=2", "progress=false", "plot=false", "keep_checkpoints=1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(tmp_path):
  workdir = tmp_path / "multihost"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  sets = [arg for o in OVERRIDES for arg in ("--set", o)]
  processes = [
      subprocess.Popen(
          [sys.executable, "-m", "train", "--coordinator", f"localhost:{port}",
           "--num_processes", "2", "--process_id", str(i), "--cpu_devices", "2",
           "--workdir", str(workdir), *sets],
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
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]

  reference = train.train_and_evaluate(
      configs.get_config("default", [*OVERRIDES, "num_devices=4", "checkpoint=false"]),
      str(tmp_path / "single"), log=lambda _: None)
  for a, b in zip(rows, reference, strict=True):
    for key in ("step", "train_loss", "test_loss", "test_accuracy"):
      assert a[key] == pytest.approx(b[key], rel=1e-5), key
