"""The training loop (train/train.py), presets and the command line (train/__main__.py)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import __main__ as cli
from train import configs, input_pipeline, optimizers, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["progress=false", "plot=false", "checkpoint=false"]
TIMING_KEYS = ("epoch_time", "images_per_second")


def _config(*overrides):
  return configs.get_config("default", [*QUIET, *overrides])


def _run(config, workdir):
  return train.train_and_evaluate(config, str(workdir), log=lambda _: None)


def _rate_key(row):
  """The key of TLR's rate (its path depends on how the chain is built)."""
  (key,) = [k for k in row if k.endswith("learning_rate")]
  return key


def _without_timing(row):
  return {k: v for k, v in row.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def digits():
  return input_pipeline.load("digits")


@pytest.fixture(scope="module")
def mapped_runs(tmp_path_factory):
  """Two epochs of the main job three ways: shard_map and pmap on 4 devices, shard_map on 1."""
  runs = {}
  for mapping, devices in (("shard_map", 4), ("pmap", 4), ("shard_map", 1)):
    config = _config("num_epochs=2", f"mapping={mapping}", f"num_devices={devices}")
    runs[mapping, devices] = _run(config, tmp_path_factory.mktemp(f"{mapping}{devices}"))
  return runs


def test_shard_map_and_pmap_identical_on_4_devices(mapped_runs):
  shard_map, pmap = mapped_runs["shard_map", 4], mapped_runs["pmap", 4]
  assert [_without_timing(r) for r in shard_map] == [_without_timing(r) for r in pmap]
  assert shard_map[-1]["step"] == 2 * (1437 // 64)


def test_one_and_four_devices_same_loss(mapped_runs):
  one, four = mapped_runs["shard_map", 1], mapped_runs["shard_map", 4]
  rate_key = _rate_key(one[0])
  for a, b in zip(one, four, strict=True):
    for key in ("train_loss", "test_loss", "test_accuracy", rate_key):
      assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
  # The main job learns: after two epochs the test loss is far below log(10) = 2.30.
  assert one[-1]["test_loss"] < 0.5


class _Recorded(NamedTuple):
  value: jax.Array
  grad_fn_gap: jax.Array
  next_grads: dict


def _recording_optimizer():
  """SGD(0.1) that stores the extra arguments it receives, to check what the step passes."""

  def init(params):
    return _Recorded(jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params, *, value, grad_fn, next_grads):
    del state
    look_ahead = grad_fn(params)
    gap = sum(jnp.sum((a - b) ** 2) for a, b in
              zip(jax.tree.leaves(look_ahead), jax.tree.leaves(grads), strict=True))
    return jax.tree.map(lambda g: -0.1 * g, grads), _Recorded(value, gap, next_grads)

  return optax.GradientTransformationExtraArgs(init, update)


def test_extra_args_reach_the_optimizer(digits):
  config = _config("num_devices=2", "batch_size=32")
  setup = train.build(config, digits.info, len(digits.train_labels))
  spec = optimizers.OptimizerSpec("recording", lambda *a: None, "test",
                                  extra_args=("value", "grad_fn", "next_grads"))
  setup = dataclasses.replace(setup, spec=spec, tx=_recording_optimizer())
  runner = train.Runner(setup)
  state = train.create_train_state(jax.random.PRNGKey(0), setup)
  params0 = jax.tree.map(np.array, state.params)
  images, labels = runner.put_data(digits.train_images), runner.put_data(digits.train_labels)
  key = jax.random.PRNGKey(7)
  indices = runner.epoch_indices(key, 1, len(labels))
  state, metrics = runner.train(runner.to_runner(state), images, labels, indices, 0)
  recorded = runner.to_canonical(state).opt_state

  def loss(params, rows):
    x = input_pipeline.preprocess(jnp.asarray(digits.train_images[rows]), digits.info)
    logits = setup.model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, digits.train_labels[rows]).mean()

  order = np.asarray(input_pipeline.epoch_permutation(key, 1, len(labels), setup.steps_per_epoch,
                                                      32))
  # value: the loss of this step's global batch (averaged over the devices).
  assert float(recorded.value) == pytest.approx(float(loss(params0, order[0])), rel=1e-5)
  assert float(recorded.value) == pytest.approx(float(metrics["loss"]), rel=1e-6)
  # grad_fn: the gradient of the same batch plus the coupled decay that create_optimizer
  # chains in front (the objective the direction follows), so at the same params it differs
  # from the raw gradient by exactly wd * params.
  wd = config.weight_decay
  assert wd == 5e-4
  squared_norm = sum(float(np.sum(p.astype(np.float64) ** 2)) for p in jax.tree.leaves(params0))
  assert float(recorded.grad_fn_gap) == pytest.approx(wd ** 2 * squared_norm, rel=1e-3)
  # next_grads: that objective's gradient on the next batch of the epoch at the same
  # (pre-update) params.
  expected = jax.tree.map(lambda g, p: g + wd * p, jax.grad(loss)(params0, order[1]), params0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               recorded.next_grads, expected)


class _TinyBatchNormNet(nn.Module):
  num_classes: int = 10
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, momentum=0.5)(x)
    return nn.Dense(self.num_classes)(nn.relu(x))


def _batch_norm_step(digits, devices, axis_name):
  setup = train.build(_config(f"num_devices={devices}", "batch_size=32"), digits.info,
                      len(digits.train_labels))
  setup = dataclasses.replace(setup, model=_TinyBatchNormNet(axis_name=axis_name))
  runner = train.Runner(setup)
  state = runner.to_runner(train.create_train_state(jax.random.PRNGKey(0), setup))
  images, labels = runner.put_data(digits.train_images), runner.put_data(digits.train_labels)
  indices = runner.epoch_indices(jax.random.PRNGKey(1), 1, len(labels))
  for index in range(2):
    state, _ = runner.train(state, images, labels, indices, index)
  return runner.to_canonical(state)


def test_batch_norm_statistics_synchronised_across_devices(digits):
  one = _batch_norm_step(digits, 1, train.AXIS)
  four = _batch_norm_step(digits, 4, train.AXIS)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, one.batch_stats, four.batch_stats)
  jax.tree.map(close, one.params, four.params)
  # Without the axis name each device normalises by its own statistics: the variances differ.
  unsynced = _batch_norm_step(digits, 4, None)
  variance = lambda s: np.asarray(s.batch_stats["BatchNorm_0"]["var"])
  assert np.max(np.abs(variance(unsynced) - variance(one))) > 1e-3


_KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    from train import configs, train

    def log(line):
      if line.startswith("epoch 2:"):  # printed after the epoch-2 checkpoint is written
        os.kill(os.getpid(), signal.SIGKILL)

    config = configs.get_config("default", sys.argv[2:])
    train.train_and_evaluate(config, sys.argv[1], log=log)
    sys.exit(3)  # not reached: the run is killed during epoch 3
""")


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  overrides = ["num_epochs=4", "num_devices=2", "progress=false", "plot=false",
               "optimizer=clr_sgd", "learning_rate=0.05"]
  config = configs.get_config("default", overrides)
  reference = _run(config, tmp_path / "reference")

  workdir = tmp_path / "killed"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(workdir), *overrides],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert child.returncode == -9, child.stderr[-2000:]
  assert [r["epoch"] for r in train.read_metrics(str(workdir))] == [1, 2]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]

  resumed = _run(config, workdir)
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in reference]
  assert [r["epoch"] for r in train.read_metrics(str(workdir))] == [1, 2, 3, 4]


def test_main_job_through_the_cli(tmp_path, capsys):
  workdir = tmp_path / "main"
  assert cli.main(["--workdir", str(workdir)]) == 0
  out = capsys.readouterr().out
  assert "final test accuracy" in out and "epoch train_loss" in out  # the summary table
  rows = train.read_metrics(str(workdir))
  assert [r["epoch"] for r in rows] == list(range(1, 16))
  assert rows[-1]["test_accuracy"] >= 0.95
  required = {"epoch", "step", "train_loss", "test_loss", "test_accuracy", "epoch_time",
              "images_per_second"}
  assert required <= set(rows[0]) and 0 < rows[0][_rate_key(rows[0])] < 1
  with open(workdir / "config.json") as f:
    assert json.load(f) == json.loads(configs.get_config("default").to_json())
  with open(workdir / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(workdir / "checkpoints")) == ["14", "15"]
  assert not [name for name in os.listdir(workdir) if name.startswith(".tmp-")]
  # Re-running the finished run resumes after the last epoch and changes nothing.
  assert cli.main(["--workdir", str(workdir)]) == 0
  assert "resumed from" in capsys.readouterr().out
  assert train.read_metrics(str(workdir)) == rows


def test_autodrop_logs_its_angular_velocity(tmp_path):
  config = _config("optimizer=autodrop_sgd", "num_epochs=3", "plot=true", "batch_size=128")
  rows = _run(config, tmp_path)
  # The first angle needs two window displacements (boundaries 1 and 2); AutoDrop processes a
  # boundary in the update whose step ends the window, so the angle is in the state from the
  # end of epoch 2 on and NaN after epoch 1.
  assert np.isnan(rows[0]["angular_velocity"])
  assert all(0.0 < row["angular_velocity"] < 180.0 for row in rows[1:])
  assert any("learning_rate" in key for key in rows[-1])
  assert os.path.exists(tmp_path / "curves.png")


def test_optimizer_metrics_summarise_rate_arrays():
  class State(NamedTuple):
    learning_rate: jax.Array
    angular_velocity: jax.Array

  metrics = train.optimizer_metrics(State(jnp.asarray([1.0, 3.0]), jnp.asarray(42.0)))
  assert metrics == {"learning_rate/mean": 2.0, "learning_rate/min": 1.0,
                     "learning_rate/max": 3.0, "learning_rate/norm": pytest.approx(10 ** 0.5),
                     "angular_velocity": 42.0}


@pytest.mark.parametrize("name", configs.presets())
def test_every_preset_builds(name):
  config = configs.get_config(name)
  shapes = {"digits": ((8, 8, 1), 10), "mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10),
            "cifar100": ((32, 32, 3), 100)}
  shape, classes = shapes[config.dataset]
  info = input_pipeline.DatasetInfo(config.dataset, classes, shape, True, (0.0,) * shape[-1],
                                    (1.0,) * shape[-1])
  setup = train.build(config, info, num_train=50_000)
  assert setup.steps_per_epoch == 50_000 // config.batch_size
  assert setup.total_steps == setup.steps_per_epoch * config.num_epochs
  params = jax.eval_shape(lambda: setup.model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, *shape)), train=False))["params"]
  jax.eval_shape(setup.tx.init, params)


@pytest.mark.parametrize("args,message", [
    (["--config", "nope"], "unknown config 'nope'; valid choices: adam_cam_hd_lenet5_cifar10, "),
    (["--set", "optimiser=sgd"], "unknown config key 'optimiser'; valid keys: dataset, "),
    (["--set", "optimizer=sgdd"], "unknown optimizer 'sgdd'; valid choices: tlr_sgd, "),
    (["--set", "model=resnet7"], "unknown model 'resnet7'; valid names: "),
    (["--set", "dataset=imagenet"], "unknown dataset 'imagenet'; valid choices: digits, "),
    (["--set", "num_devices=3"], "`batch_size` 64 is not divisible by the number of devices 3"),
    (["--set", "mapping=vmap"], "`mapping` must be one of shard_map, pmap"),
    (["--set", "batch_size=1.5"], "`batch_size` must be an integer"),
    (["--set", "optimizer_options.momentun=0.9"], r"unknown option\(s\) momentun"),
    (["--set", "learning_rate"], "an override must read key=value"),
])
def test_cli_errors_list_choices_and_write_nothing(tmp_path, capsys, args, message):
  workdir = tmp_path / "run"
  assert cli.main([*args, "--workdir", str(workdir)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ")
  assert __import__("re").search(message, err), err
  assert not workdir.exists()


def test_resuming_with_another_config_is_refused(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert cli.main(["--workdir", str(workdir), "--set", "num_epochs=1", "--set", "plot=false"]) == 0
  before = sorted(os.listdir(workdir))
  assert cli.main(["--workdir", str(workdir), "--set", "num_epochs=1",
                   "--set", "learning_rate=0.5"]) == 2
  assert "different config (learning_rate differ)" in capsys.readouterr().err
  assert sorted(os.listdir(workdir)) == before


def test_list(capsys):
  assert cli.main(["--list"]) == 0
  out = capsys.readouterr().out
  assert "tlr_sgd" in out and "[needs next_grads]" in out and "default" in out


def test_overrides():
  config = configs.get_config("autodrop_resnet18_cifar10", [
      "optimizer_options.drop_delay=5", "batch_size=32", "learning_rate=1", "data_dir=/data"])
  assert config.optimizer_options["drop_delay"] == 5
  assert config.optimizer_options["drop_factor"] == 0.2  # the rest of the preset's options stay
  assert (config.batch_size, config.learning_rate, config.data_dir) == (32, 1.0, "/data")
  # Options belong to their optimizer: a new optimizer keeps only the options given with it.
  assert configs.get_config("autodrop_resnet18_cifar10",
                            ["optimizer=sgd"]).optimizer_options == {}
  assert configs.get_config("autodrop_resnet18_cifar10", [
      "optimizer_options.momentum=0.5", "optimizer=sgd"]).optimizer_options == {"momentum": 0.5}
  assert configs.get_config("default", ["model_options.features=(32, 16)"]).model_options == {
      "features": (32, 16)}
