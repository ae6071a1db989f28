"""The training loop (train/train.py), presets and the command line (train/__main__.py)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

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
  value_fn_at_params: jax.Array
  value_fn_at_zero: jax.Array


def _recording_optimizer():
  """SGD(0.1) that stores the extra arguments it receives, to check what the step passes."""

  def init(params):
    return _Recorded(jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params),
                     jnp.zeros(()), jnp.zeros(()))

  def update(grads, state, params, *, value, grad_fn, next_grads, value_fn):
    del state
    look_ahead = grad_fn(params)
    gap = sum(jnp.sum((a - b) ** 2) for a, b in
              zip(jax.tree.leaves(look_ahead), jax.tree.leaves(grads), strict=True))
    zeros = jax.tree.map(jnp.zeros_like, params)
    return jax.tree.map(lambda g: -0.1 * g, grads), _Recorded(
        value, gap, next_grads, value_fn(params), value_fn(zeros))

  return optax.GradientTransformationExtraArgs(init, update)


def _first_batches(digits, batch_size, n=2):
  iterator = iter(input_pipeline.train_batches(digits, batch_size, seed=7))
  return [next(iterator) for _ in range(n)]


def test_extra_args_reach_the_optimizer(digits):
  config = _config("num_devices=2", "batch_size=32")
  setup = train.build(config, digits.info)
  spec = optimizers.OptimizerSpec("recording", lambda *a: None, "test",
                                  extra_args=("value", "grad_fn", "next_grads", "value_fn"))
  setup = dataclasses.replace(setup, spec=spec, tx=_recording_optimizer())
  runner = train.Runner(setup)
  state = train.create_train_state(jax.random.PRNGKey(0), setup)
  params0 = jax.tree.map(np.array, state.params)
  first, second = _first_batches(digits, 32)
  state, metrics = runner.train(runner.to_runner(state), runner.put_batch(first),
                                runner.put_batch(second))
  recorded = runner.to_canonical(state).opt_state

  def loss(params, batch):
    x = input_pipeline.normalize(jnp.asarray(batch["image"]), digits.info)
    logits = setup.model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  # value: the objective whose gradient the optimizer gets: the loss of this step's global batch
  # (averaged over the devices) plus the coupled decay wd/2 ||w||^2, whose gradient wd * w the
  # step adds to the data gradient.
  wd = config.weight_decay
  assert wd == 5e-4
  squared_norm = sum(float(np.sum(p.astype(np.float64) ** 2)) for p in jax.tree.leaves(params0))
  objective = float(loss(params0, first)) + 0.5 * wd * squared_norm
  assert float(recorded.value) == pytest.approx(objective, rel=1e-5)
  assert float(recorded.value) == pytest.approx(float(metrics["loss"]) + 0.5 * wd * squared_norm,
                                                rel=1e-6)
  # value_fn: the same objective as a function of the parameters (same batch): at params it is
  # value, at zero parameters the network outputs zero logits, a loss of log(10) and no decay.
  assert float(recorded.value_fn_at_params) == pytest.approx(float(recorded.value), rel=1e-6)
  assert float(recorded.value_fn_at_zero) == pytest.approx(np.log(10.0), rel=1e-6)
  # grad_fn: the gradient of the same objective, so at the same params it is the gradient the
  # optimizer received (the data gradient plus wd * params; without the decay the gap would be
  # wd^2 ||w||^2).
  assert float(recorded.grad_fn_gap) < 1e-6 * wd ** 2 * squared_norm
  # The recording optimizer is SGD(0.1): its step is -0.1 (g + wd w), by hand.
  stepped = jax.tree.map(lambda p, g: p - 0.1 * (g + wd * p), params0,
                         jax.grad(loss)(params0, first))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               runner.to_canonical(state).params, stepped)
  # next_grads: that objective's gradient on the next batch of the stream at the same
  # (pre-update) params.
  expected = jax.tree.map(lambda g, p: g + wd * p, jax.grad(loss)(params0, second), params0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               recorded.next_grads, expected)


def test_weight_decay_enters_the_objective_once(digits):
  # Three steps of the run (TLR-SGD, momentum 0.8, weight_decay 5e-4) equal a hand-built
  # optax.chain with one add_decayed_weights(wd) in front of the same method, fed the raw data
  # gradients; the chain with the decay twice (what adding it in both the optimizer and the
  # objective did) is measurably elsewhere.
  config = _config("num_devices=1")
  wd = config.weight_decay
  assert (config.optimizer, wd) == ("tlr_sgd", 5e-4)
  setup = train.build(config, digits.info)
  assert setup.spec.extra_args == ()
  runner = train.Runner(setup)
  state = train.create_train_state(jax.random.PRNGKey(0), setup)
  params0 = jax.tree.map(np.array, state.params)
  batches = _first_batches(digits, config.batch_size, n=3)
  state = runner.to_runner(state)
  for batch in batches:
    state, _ = runner.train(state, runner.put_batch(batch))
  trained = runner.to_canonical(state).params

  def loss(params, batch):
    x = input_pipeline.normalize(jnp.asarray(batch["image"]), digits.info)
    logits = setup.model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  def by_hand(*stages):
    method = optimizers.create_optimizer(config.optimizer, config.learning_rate,
                                         setup.steps_per_epoch, setup.total_steps,
                                         config.optimizer_options)
    tx = optax.chain(*stages, method)
    params, opt_state = params0, tx.init(params0)
    for batch in batches:
      updates, opt_state = tx.update(jax.grad(loss)(params, batch), opt_state, params)
      params = optax.apply_updates(params, updates)
    return params

  def largest_gap(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

  once = by_hand(optax.add_decayed_weights(wd))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), trained,
               once)
  twice = by_hand(optax.add_decayed_weights(wd), optax.add_decayed_weights(wd))
  assert largest_gap(trained, twice) > 100 * max(largest_gap(trained, once), 1e-9)


class _TinyBatchNormNet(nn.Module):
  num_classes: int = 10
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, momentum=0.5)(x)
    return nn.Dense(self.num_classes)(nn.relu(x))


def _batch_norm_step(digits, devices, axis_name):
  setup = train.build(_config(f"num_devices={devices}", "batch_size=32"), digits.info)
  setup = dataclasses.replace(setup, model=_TinyBatchNormNet(axis_name=axis_name))
  runner = train.Runner(setup)
  state = runner.to_runner(train.create_train_state(jax.random.PRNGKey(0), setup))
  for batch in _first_batches(digits, 32):
    state, _ = runner.train(state, runner.put_batch(batch))
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


# A child run that signals itself once it has taken ``argv[2]`` optimizer steps (the signal is
# ``argv[3]``): SIGKILL is a crash at an arbitrary step, SIGTERM a preemption notice.
_SIGNALLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    from train import __main__ as cli
    from train import train

    at, signum = int(sys.argv[2]), getattr(signal, sys.argv[3])
    original, calls = train.Runner.train, []

    def counting(self, *args, **kwargs):
      result = original(self, *args, **kwargs)
      calls.append(1)
      if len(calls) == at:
        os.kill(os.getpid(), signum)
      return result

    train.Runner.train = counting
    overrides = [arg for o in sys.argv[4:] for arg in ("--set", o)]
    sys.exit(cli.main(["--workdir", sys.argv[1], *overrides]))
""")

# clr_sgd: a rate schedule, so a resumed run that lost its step count would show it.
RESUME = ["num_epochs=3", "num_devices=2", "progress=false", "plot=false", "optimizer=clr_sgd",
          "learning_rate=0.05", "checkpoint_every_steps=10"]


def _signalled(workdir, at, signum, overrides=RESUME):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-c", _SIGNALLED_CHILD, str(workdir), str(at), signum,
                         *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=240)


@pytest.fixture(scope="module")
def resume_reference(tmp_path_factory):
  config = configs.get_config("default", RESUME)
  return _run(config, tmp_path_factory.mktemp("reference"))


def _steps(workdir):
  return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(tmp_path, resume_reference):
  # 22 steps per epoch; checkpoints every 10 steps; killed after step 35 (epoch 2, batch 13):
  # the run resumes from step 30 (epoch 2, batch 8), in the middle of an epoch.
  workdir = tmp_path / "killed"
  child = _signalled(workdir, 35, "SIGKILL")
  assert child.returncode == -9, child.stderr[-2000:]
  assert [r["epoch"] for r in train.read_metrics(str(workdir))] == [1]
  assert _steps(workdir) == [20, 30]  # every 10 steps; the 2 newest kept
  lines = []
  resumed = train.train_and_evaluate(configs.get_config("default", RESUME), str(workdir),
                                     log=lines.append)
  assert f"resumed from {workdir} at step 30 (epoch 2, batch 8)" in lines
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in resume_reference]
  assert [r["epoch"] for r in train.read_metrics(str(workdir))] == [1, 2, 3]


def test_sigterm_saves_at_the_next_step_and_exits_0(tmp_path, resume_reference):
  workdir = tmp_path / "preempted"
  # No periodic checkpoint before the signal: the one saved is the SIGTERM one.
  overrides = [*RESUME[:-1], "checkpoint_every_steps=1000"]
  child = _signalled(workdir, 27, "SIGTERM", overrides)
  assert child.returncode == 0, child.stderr[-2000:]
  assert ("received SIGTERM: checkpoint saved at step 27; run the same command again to "
          "resume") in child.stdout
  assert _steps(workdir) == [27]
  resumed = _run(configs.get_config("default", overrides), workdir)
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in resume_reference]


def _flip_bytes(path, count=64):
  data = bytearray(path.read_bytes())
  for i in range(min(count, len(data))):
    data[(len(data) // 2 + i) % len(data)] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"),
             key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_manifest"])
def test_damaged_latest_checkpoint_is_skipped(tmp_path, resume_reference, damage):
  workdir = tmp_path / "run"
  config = configs.get_config("default", RESUME)
  rows = _run(config, workdir)
  assert _steps(workdir) == [60, 66]
  latest = workdir / "checkpoints" / "66"
  if damage == "flip":
    _flip_bytes(_largest_file(latest))
  elif damage == "truncate":
    target = _largest_file(latest)
    target.write_bytes(target.read_bytes()[:-100])
  else:
    (latest / "manifest.json").unlink()
  lines = []
  resumed = train.train_and_evaluate(config, str(workdir), log=lines.append)
  reports = [line for line in lines if line.startswith("checkpoint step 66 is damaged")]
  assert len(reports) == 1 and "using step 60" in reports[0], lines
  assert ("incomplete" if damage == "no_manifest" else "differs" if damage == "flip"
          else "bytes") in reports[0]
  assert any(line.startswith(f"resumed from {workdir} at step 60 (epoch 3, batch 16)")
             for line in lines)
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in rows]
  assert [_without_timing(r) for r in rows] == [_without_timing(r) for r in resume_reference]
  assert os.listdir(workdir / "damaged_checkpoints")[0].startswith("66-")


def test_no_intact_checkpoint_is_a_clear_error_and_changes_nothing(tmp_path, capsys):
  workdir = tmp_path / "run"
  overrides = ["--set", "num_epochs=1", "--set", "plot=false", "--set", "progress=false"]
  assert cli.main(["--workdir", str(workdir), *overrides]) == 0
  (step,) = _steps(workdir)
  _flip_bytes(_largest_file(workdir / "checkpoints" / str(step)))
  capsys.readouterr()
  before = sorted(p.name for p in workdir.rglob("*"))
  assert cli.main(["--workdir", str(workdir), *overrides]) != 0
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"error: no intact checkpoint in {workdir}/checkpoints: step {step} ")
  assert len(err.splitlines()) == 1
  assert sorted(p.name for p in workdir.rglob("*")) == before


_LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from train import workdir
    with workdir.lock(sys.argv[1]):
      print("locked", flush=True)
      time.sleep(120)
""")


def test_a_second_run_on_a_locked_workdir_fails_at_once_and_changes_nothing(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert cli.main(["--workdir", str(workdir), "--set", "num_epochs=1", "--set", "plot=false",
                   "--set", "progress=false"]) == 0
  env = dict(os.environ, PYTHONPATH=ROOT)
  holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(workdir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    capsys.readouterr()
    started = time.perf_counter()
    assert cli.main(["--workdir", str(workdir), "--set", "num_epochs=2", "--set",
                     "progress=false"]) != 0
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert f"workdir {workdir} is in use by process {holder.pid} on " in err, err
    assert elapsed < 10
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before
  finally:
    holder.kill()
    holder.wait()
  # The kernel drops the lock with its holder: the next run goes ahead.
  assert cli.main(["--workdir", str(workdir), "--set", "num_epochs=2", "--set", "plot=false",
                   "--set", "progress=false"]) == 0


def test_leftover_temporary_files_are_removed(tmp_path):
  workdir = tmp_path / "run"
  config = _config("num_epochs=1", "checkpoint=true")
  _run(config, workdir)
  (workdir / ".tmp-abc-metrics.jsonl").write_text("half")
  (workdir / "checkpoints" / "44.orbax-checkpoint-tmp-1700000000").mkdir()
  lines = []
  train.train_and_evaluate(dataclasses.replace(config, num_epochs=2), str(workdir),
                           log=lines.append)
  assert not list(workdir.glob(".tmp-*"))
  assert _steps(workdir) == [22, 44]
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  assert sum(line.startswith("removed ") for line in lines) == 2


def test_more_epochs_extend_a_finished_run(tmp_path):
  extended = _config("num_epochs=2", "checkpoint=true")
  _run(extended, tmp_path / "short")
  lines = []
  rows = train.train_and_evaluate(dataclasses.replace(extended, num_epochs=3),
                                  str(tmp_path / "short"), log=lines.append)
  assert f"resumed from {tmp_path / 'short'} after epoch 2" in lines
  straight = _run(_config("num_epochs=3"), tmp_path / "straight")
  assert [_without_timing(r) for r in rows] == [_without_timing(r) for r in straight]
  with open(tmp_path / "short" / "config.json") as f:
    assert json.load(f)["num_epochs"] == 3
  with pytest.raises(ValueError, match="trained for 3 epochs; `num_epochs` 2 cannot shorten it"):
    _run(extended, tmp_path / "short")


def test_main_job_through_the_cli(tmp_path, capsys):
  workdir = tmp_path / "main"
  assert cli.main(["--workdir", str(workdir)]) == 0
  out = capsys.readouterr().out
  assert "final test accuracy" in out and "epoch train_loss" in out  # the summary table
  rows = train.read_metrics(str(workdir))
  assert [r["epoch"] for r in rows] == list(range(1, 16))
  assert rows[-1]["test_accuracy"] >= 0.95
  # A run that learns is not diverged: every epoch's loss is below log(10) = 2.30, the chance
  # level, far below the divergence bound 230.3.
  assert [r["diverged"] for r in rows] == [False] * 15
  assert max(r["train_loss"] for r in rows) < np.log(10.0)
  required = {"epoch", "step", "train_loss", "test_loss", "test_accuracy", "epoch_time",
              "images_per_second"}
  assert required <= set(rows[0]) and 0 < rows[0][_rate_key(rows[0])] < 1
  with open(workdir / "config.json") as f:
    assert json.load(f) == json.loads(configs.get_config("default").to_json())
  with open(workdir / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["308", "330"]  # 22 steps/epoch
  assert not [name for name in os.listdir(workdir) if name.startswith(".tmp-")]
  # Re-running the finished run resumes after the last epoch and changes nothing.
  assert cli.main(["--workdir", str(workdir)]) == 0
  assert "resumed from" in capsys.readouterr().out
  assert train.read_metrics(str(workdir)) == rows


def test_autodrop_logs_its_angular_velocity(tmp_path):
  config = _config("optimizer=autodrop_sgd", "num_epochs=3", "plot=true", "batch_size=128")
  rows = _run(config, tmp_path)
  # The first angle needs two window displacements (boundaries 1 and 2). AutoDrop processes a
  # boundary in the update whose step ends the window, so the angle is in the state logged at
  # the end of epoch 2, and NaN after epoch 1.
  assert np.isnan(rows[0]["angular_velocity"])
  assert 0.0 < rows[1]["angular_velocity"] < 180.0
  assert 0.0 < rows[2]["angular_velocity"] < 180.0
  assert rows[1]["angular_velocity"] != rows[2]["angular_velocity"]  # a new angle each epoch
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
            "cifar100": ((32, 32, 3), 100), "imagenet2012": ((224, 224, 3), 1000)}
  shape, classes = shapes[config.dataset]
  info = input_pipeline.DatasetInfo(config.dataset, classes, shape, "crop_flip",
                                    (0.0,) * shape[-1], (1.0,) * shape[-1])
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


@pytest.mark.parametrize("preset", ["autodrop_resnet50_imagenet", "multistep_resnet50_imagenet"])
def test_imagenet_presets_run_on_mock_data(tmp_path, preset):
  # The preset as given, on TFDS's mock imagenet2012 (random-size images, decoded by the data
  # source, random-resized-cropped to 224 in a grain worker), shrunk to two steps: 4-filter stem
  # (the ResNet-50 layout at 1/256 of the FLOPs) and a rate the 4-image batches survive.
  overrides = ["num_devices=2", "batch_size=4", "eval_batch_size=4", "num_epochs=1",
               "data_workers=1", "progress=false", "plot=false", "checkpoint_every_steps=1",
               "model_options.num_filters=4", "learning_rate=0.01"]
  with tfds.testing.mock_data(num_examples=8):
    config = configs.get_config(preset, overrides)
    lines = []
    rows = train.train_and_evaluate(config, str(tmp_path), log=lines.append)
  assert config.model == "resnet50_imagenet" and config.optimizer_options["drop_factor"] == 0.1
  assert lines[0].startswith("imagenet2012: 8 train / 8 test; model resnet50_imagenet")
  assert [(r["epoch"], r["step"]) for r in rows] == [(1, 2)]
  # Two steps from a random start on 1000 classes: the loss is near log(1000) = 6.9.
  assert 5.0 < rows[0]["train_loss"] < 10.0
  assert 0.0 <= rows[0]["test_accuracy"] <= 1.0
  assert _steps(tmp_path) == [1, 2]
  with open(tmp_path / "checkpoints" / "2" / "data" / "metadata") as f:
    position = json.load(f)
  assert position["step"] == 2 and "iterators_in_use_states" in json.dumps(position["iterator"])


_KILLED_BEFORE_MANIFEST = textwrap.dedent("""
    import os, signal, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    from train import checkpointing, configs, train

    original, calls = checkpointing.write_manifest, []

    def write_manifest(folder):
      calls.append(folder)
      if len(calls) == 3:  # step 30 has committed; its manifest is never written
        os.kill(os.getpid(), signal.SIGKILL)
      original(folder)

    checkpointing.write_manifest = write_manifest
    train.train_and_evaluate(configs.get_config("default", sys.argv[2:]), sys.argv[1])
""")


def test_killed_between_commit_and_manifest_resumes_from_the_previous_one(tmp_path,
                                                                          resume_reference):
  # keep_checkpoints=1: the older checkpoint is deleted only once the newer has its manifest.
  overrides = [*RESUME, "keep_checkpoints=1"]
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  child = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_MANIFEST, str(workdir),
                          *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
  assert child.returncode == -9, child.stderr[-2000:]
  assert _steps(workdir) == [20, 30]
  lines = []
  resumed = train.train_and_evaluate(configs.get_config("default", overrides), str(workdir),
                                     log=lines.append)
  assert any(line.startswith("checkpoint step 30 is damaged: incomplete (no manifest") and
             line.endswith("using step 20") for line in lines), lines
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in resume_reference]
  assert _steps(workdir) == [66]
