"""The command line (train/__main__.py) and the config checks of a run (train/configs,
train/config_schema.py), made once before anything is written."""

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import models
import optax_lr
from train import __main__ as cli
from train import config_schema, configs, input_pipeline, optimizers, plotting, reporting, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (arguments, a fragment of the one-line message); every case fails before anything is written.
BAD_ARGUMENTS = [
    (["--set", "optimizer_options.momentum=abc"],
     "`optimizer_options.momentum` must be a number (default 0.8); got 'abc'"),
    (["--set", "optimizer_options.nesterov=1"], "`optimizer_options.nesterov` must be true or"),
    (["--set", "optimizer_options.momentun=0.9"],
     "unknown option(s) momentun for optimizer 'tlr_sgd'; valid options: momentum, nesterov"),
    (["--set", "optimizer=adasecant", "--set", "optimizer_options.max_rate=big"],
     "`optimizer_options.max_rate` must be a number (default 25.0)"),
    # adasecant's builder forwards **options to optax_lr.adasecant: its keywords are the options.
    (["--set", "optimizer=adasecant", "--set", "optimizer_options.max_rat=30"],
     "unknown option(s) max_rat for optimizer 'adasecant'; valid options: rate_rule, gamma_clip"),
    (["--config", "adam_cam_hd_lenet5_cifar10", "--set", "optimizer_options.levels=global"],
     "`optimizer_options.levels` must be a sequence"),
    (["--set", "model_options.features=wide"],
     "`model_options.features` must be a sequence such as (1, 2) (default (1000,)); got 'wide'"),
    (["--set", "model_options.width=3"],
     "unknown attribute(s) width for model 'mlp'; valid: features, act"),
    (["--set", "model_options.num_classes=3"], "unknown attribute(s) num_classes for model"),
    (["--set", "learning_rate=abc"], "`learning_rate` must be a number or none; got 'abc'"),
    (["--set", "learning_rate=-1"], "`learning_rate` must be a finite number > 0 for 'tlr_sgd'"),
    (["--set", "weight_decay=-1"], "`weight_decay` must be a finite number >= 0"),
    (["--set", "batch_size=1.5"], "`batch_size` must be an integer; got 1.5"),
    (["--set", "num_epochs=0"], "`num_epochs` must be an integer >= 1; got 0"),
    (["--set", "plot=maybe"], "`plot` must be true or false; got 'maybe'"),
    (["--set", "mapping=vmap"], "`mapping` must be one of shard_map, pmap"),
    (["--set", "optimiser=sgd"], "unknown config key 'optimiser'; valid keys: dataset, "),
    (["--set", "optimizer=sgdd"], "unknown optimizer 'sgdd'; valid choices: tlr_sgd, "),
    (["--set", "model=resnet7"], "unknown model 'resnet7'; valid names: mlp, "),
    (["--set", "dataset=imagenet"], "unknown dataset 'imagenet'; valid choices: digits, "),
    (["--config", "nope"], "unknown config 'nope'; valid choices: adam_cam_hd_lenet5_cifar10, "),
    (["--set", "learning_rate"], "an override must read key=value"),
    (["--cpu_devices", "0"], "--cpu_devices must be >= 1"),
    (["--workdir", "{file}"], "--workdir {file} exists and is not a directory"),
    (["--workdir", "{file}/run"], "--workdir {file}/run cannot be created: {file} is not a dir"),
]

_CHILD = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from train import __main__ as cli
    results = []
    for args in json.loads(sys.argv[1]):
      err = io.StringIO()
      start = time.perf_counter()
      with contextlib.redirect_stderr(err):
        status = cli.main(args)
      results.append({"status": status, "err": err.getvalue(),
                      "seconds": time.perf_counter() - start})
    print(json.dumps(results))
""")


def _run_child(tmp_path, argument_lists):
  """Runs ``cli.main`` on each argument list in a fresh interpreter whose temporary folder is
  ``tmp_path / "tmp"``; returns (results, that folder)."""
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  env = dict(os.environ, TMPDIR=str(temporary), PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argument_lists)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
  assert child.returncode == 0, child.stderr[-3000:]
  return json.loads(child.stdout.strip().splitlines()[-1]), temporary


def test_every_bad_argument_fails_in_one_line_and_writes_nothing(tmp_path):
  file = tmp_path / "a_file"
  file.write_text("not a folder")
  cases = [([a.format(file=file) for a in args], message.format(file=file))
           for args, message in BAD_ARGUMENTS]
  workdir = tmp_path / "run"
  argument_lists = [args if "--workdir" in args else [*args, "--workdir", str(workdir)]
                    for args, _ in cases]
  # The same arguments without --workdir: the run would have made a temporary folder.
  argument_lists += [args for args, _ in cases if "--workdir" not in args]
  results, temporary = _run_child(tmp_path, argument_lists)
  messages = [m for _, m in cases] + [m for args, m in cases if "--workdir" not in args]
  for args, message, result in zip(argument_lists, messages, results, strict=True):
    assert result["status"] == 2, (args, result)
    assert result["err"].startswith("error: ") and result["err"].count("\n") == 1, result
    assert message in result["err"], (message, result["err"])
  assert not workdir.exists()
  assert os.listdir(temporary) == []  # no empty optax_lr_* folder
  assert file.read_text() == "not a folder"


def test_a_bad_argument_fails_within_seconds_from_a_fresh_start(tmp_path):
  # What a user sees: a fresh `python -m train` pays the JAX, Flax and data-library imports (about
  # 2.5 s on a 2-core machine) and then fails at validation, before the data is opened or
  # anything is written. Bound loosely: the machine is shared.
  (tmp_path / "tmp").mkdir()
  env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  workdir = tmp_path / "run"
  for args, message in [
      (["--set", "optimizer_options.momentum=abc"],
       "error: `optimizer_options.momentum` must be a number (default 0.8); got 'abc'\n"),
      (["--set", "optimizer_options.momentum=1.5"],
       "error: `momentum` must be in [0.0, 1.0); got 1.5.\n")]:
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "train", *args, "--workdir", str(workdir)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert (child.returncode, child.stderr, child.stdout) == (2, message, "")
    assert seconds < 20.0, seconds
  assert not workdir.exists() and os.listdir(tmp_path / "tmp") == []


def test_a_workdir_holding_another_run_is_refused_before_anything_is_written(tmp_path):
  other, broken = tmp_path / "other", tmp_path / "broken"
  for folder, text in ((other, configs.get_config("default", ["learning_rate=0.5"]).to_json()),
                       (broken, "{not json")):
    folder.mkdir()
    (folder / "config.json").write_text(text)
  results, _ = _run_child(tmp_path, [["--workdir", str(other)], ["--workdir", str(broken)],
                                     ["--workdir", str(other), "--set", "learning_rate=0.5",
                                      "--set", "num_epochs=0"]])
  assert [r["status"] for r in results] == [2, 2, 2]
  assert results[0]["err"] == (f"error: {other} holds a run with a different config "
                               "(learning_rate differ); resume with the same config or use a "
                               "new --workdir\n")
  assert results[1]["err"].startswith(f"error: {broken / 'config.json'} cannot be read (")
  # The config is validated before the workdir is looked at.
  assert "`num_epochs` must be an integer >= 1" in results[2]["err"]
  assert all(r["err"].count("\n") == 1 for r in results)
  assert os.listdir(other) == ["config.json"] and os.listdir(broken) == ["config.json"]


def test_an_option_out_of_range_fails_where_the_optimizer_is_built_once(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  results, temporary = _run_child(tmp_path, [
      ["--set", "optimizer_options.momentum=1.5", "--workdir", str(workdir)],
      ["--set", "optimizer=autodrop_sgd", "--set", "optimizer_options.drop_factor=2"]])
  assert [r["err"] for r in results] == [
      "error: `momentum` must be in [0.0, 1.0); got 1.5.\n",
      "error: `drop_factor` must be in (0.0, 1.0); got 2.\n"]
  assert [r["status"] for r in results] == [2, 2]
  # The optimizer's own check, where the run builds it with the real step counts (after the
  # data and model libraries load: seconds, not minutes; bound loosely on a shared machine).
  assert max(r["seconds"] for r in results) < 30.0
  assert not workdir.exists() and os.listdir(temporary) == []
  # Built once: one construction, with the dataset's step counts (1437 // 64 = 22 per epoch).
  # Validated once too.
  built, validated = [], []
  create, validate = optimizers.create_optimizer, configs.validate
  monkeypatch.setattr(optimizers, "create_optimizer", lambda *args, **kwargs: built.append(
      args[2:4]) or create(*args, **kwargs))
  monkeypatch.setattr(train, "validate", lambda c: validated.append(c.optimizer) or validate(c))
  assert cli.main(["--workdir", str(tmp_path / "once"), "--set", "num_epochs=1", "--set",
                   "progress=false", "--set", "plot=false"]) == 0
  assert built == [(22, 22)] and validated == ["tlr_sgd"]


def test_a_check_that_needs_the_devices_leaves_no_temporary_folder(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
  assert cli.main(["--set", "num_devices=3", "--set", "progress=false"]) == 2
  assert "`batch_size` 64 is not divisible by the number of devices 3" in capsys.readouterr().err
  assert os.listdir(tmp_path) == []


def test_help_lists_every_set_key_with_its_type_and_default():
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-m", "train", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60, check=True).stdout
  lines = [line for line in out.splitlines() if line.startswith("  ") and line[2] != " "]
  config = configs.get_config("default")
  for name in configs.Config.field_names():
    shown = f"{name}.KEY" if name.endswith("_options") else name
    (line,) = [line for line in lines if line.split()[:1] == [shown]]
    kind = " | ".join(configs.field_types()[name])
    assert kind in line, line
    if not name.endswith("_options"):
      assert line.rstrip().endswith(repr(getattr(config, name))), line
  joined = " ".join(out.split())
  for name, spec in optimizers.OPTIMIZERS.items():
    assert f"{name}:" in joined
    for option, default in spec.options().items():
      assert f"{option}={config_schema._shown(default)} ({config_schema.kind(default)})" \
          in joined, (name, option)
  assert "stop_on_divergence" in joined and "Exit status" in joined
  assert f"{reporting.DIVERGENCE_FACTOR:g} x the chance-level loss" in joined


def test_help_shows_the_chosen_presets_values(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--config", "adam_cam_hd_lenet5_cifar10", "--help"])
  out = capsys.readouterr().out
  (line,) = [line for line in out.splitlines() if line.split()[:1] == ["dataset"]]
  assert line.rstrip().endswith("'cifar10'")


def test_the_schema_reads_the_live_registries():
  # A **options builder's options are the keywords of the optax_lr factory it forwards to.
  assert config_schema.option_defaults("adasecant") == {
      p.name: p.default for p in inspect.signature(optax_lr.adasecant).parameters.values()}
  assert config_schema.option_defaults("tlr_sgd") == optimizers.get_spec("tlr_sgd").options()
  attributes = config_schema.model_attributes()
  assert list(attributes) == list(models.MODELS)
  for name, constructor in models.MODELS.items():
    live = set(models.registry._attributes(constructor)) - {"num_classes"}
    assert set(attributes[name]) == live, name
  assert attributes["mlp"]["features"] == (1000,)  # a literal default gives the type
  assert config_schema.dataset_names() == tuple(input_pipeline.DATASETS)
  # An entry registered at run time with a **options builder and no named factory (a benchmark's
  # own) takes any option name; its builder is the check.
  spec = optimizers.OptimizerSpec("open", lambda lr, steps, total, **options: None, "test")
  assert spec.open_options and not optimizers.get_spec("adasecant").open_options


def test_parsing_does_not_validate():
  # get_config only parses: the range check comes from validate, which the run calls once (the
  # main-job test above counts it).
  config = configs.get_config("default", ["num_epochs=0"])
  with pytest.raises(ValueError, match="`num_epochs` must be an integer >= 1; got 0"):
    configs.validate(config)


def test_overrides_take_the_declared_types():
  config = configs.get_config("default", ["learning_rate=1", "num_devices=none", "seed=3",
                                          "data_dir=/data", "plot_every_seconds=2"])
  assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
  assert (config.num_devices, config.seed, config.data_dir) == (None, 3, "/data")
  assert config.plot_every_seconds == 2.0
  with pytest.raises(ValueError, match="`seed` must be an integer; got 'x'"):
    configs.get_config("default", ["seed=x"])


def _diverged_run(tmp_path, capsys, *settings, run="run"):
  """Runs the main job in ``tmp_path / run`` with ``--set`` ``settings`` and no progress bar,
  expects exit status 3 (diverged), and returns its metric rows and captured output."""
  workdir = tmp_path / run
  args = ["--workdir", str(workdir), "--set", "progress=false"]
  for setting in settings:
    args += ["--set", setting]
  assert cli.main(args) == cli.EXIT_DIVERGED
  return train.read_metrics(str(workdir)), capsys.readouterr()


def test_a_diverging_run_stops_with_status_3_and_says_so(tmp_path, capsys):
  rows, captured = _diverged_run(tmp_path, capsys, "learning_rate=1e6", "num_epochs=4",
                                 "checkpoint=false")
  assert rows[-1]["diverged"] is True and rows[-1]["train_loss"] is None
  assert all(r["diverged"] is False for r in rows[:-1]) and len(rows) < 4
  assert f"diverged: the training loss of epoch {rows[-1]['epoch']} is not finite" \
      in captured.out
  assert captured.err.startswith("error: training diverged at epoch") and \
      captured.err.count("\n") == 1
  assert "final test accuracy" in captured.out  # the summary still comes
  # The option keeps going: every epoch runs and the exit status still reports the divergence.
  rows, _ = _diverged_run(tmp_path, capsys, "learning_rate=1e6", "num_epochs=4",
                          "checkpoint=false", "stop_on_divergence=false", run="on")
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_an_exploding_finite_loss_is_divergence_too(tmp_path, capsys):
  # Rate 100 on the main job: the training loss is finite but enormous (about 2.7e15 in epoch 1,
  # 2.3e31 by epoch 3, test accuracy 10%, chance); it is far above the bound 100 x log(10) =
  # 230.3 from the first epoch on, so the run stops there with status 3.
  rows, captured = _diverged_run(tmp_path, capsys, "learning_rate=100", "num_epochs=3",
                                 "plot=false")
  assert [r["epoch"] for r in rows] == [1] and rows[0]["diverged"] is True
  assert rows[0]["train_loss"] > 1e3 * reporting.divergence_bound(10)
  assert rows[0]["test_accuracy"] == pytest.approx(0.1, abs=0.02)
  assert "diverged: the training loss of epoch 1 is " in captured.out
  assert "above 230.3 = 100 x log(10), the chance-level loss" in captured.out
  assert captured.err.startswith("error: training diverged at epoch 1 (the training loss is ")
  assert "above 100 x the chance-level loss" in captured.err and captured.err.count("\n") == 1
  checkpoints = tmp_path / "run" / "checkpoints"
  assert not os.path.exists(checkpoints) or not os.listdir(checkpoints)
  # Going on: all three epochs diverge, and the exit status still says so.
  rows, _ = _diverged_run(tmp_path, capsys, "learning_rate=100", "num_epochs=3", "plot=false",
                          "stop_on_divergence=false", run="on")
  assert [r["diverged"] for r in rows] == [True, True, True]
  assert rows[-1]["train_loss"] > 1e25


def test_curves_are_drawn_once_at_the_end_of_a_short_run(tmp_path, monkeypatch):
  drawn = []
  render = plotting.render_curves
  monkeypatch.setattr(plotting, "render_curves", lambda rows, title="": drawn.append(
      len(rows)) or render(rows, title))
  base = ["--set", "num_epochs=3", "--set", "progress=false", "--set", "checkpoint=false"]
  assert cli.main(["--workdir", str(tmp_path / "a"), *base]) == 0
  assert drawn == [3]  # default plot_every_seconds: a short run draws only at its end
  drawn.clear()
  assert cli.main(["--workdir", str(tmp_path / "b"), *base,
                   "--set", "plot_every_seconds=0"]) == 0
  assert drawn == [1, 2, 3]  # 0 s: after every epoch, and nothing more at the end
  assert (tmp_path / "b" / "curves.png").exists()


def test_the_last_epoch_is_judged_by_the_tighter_bound(tmp_path, capsys, monkeypatch):
  # The wiring of the last-epoch rule: with its factor lowered below any loss (1e-6 x log(10)),
  # a healthy 2-epoch run of the main job passes epoch 1 and diverges at epoch 2, its last
  # (status 3); the real factor 3 passes the same run (its loss ends near 0.3, below 6.9).
  monkeypatch.setattr(reporting, "FINAL_DIVERGENCE_FACTOR", 1e-6)
  rows, captured = _diverged_run(tmp_path, capsys, "num_epochs=2", "plot=false",
                                 "optimizer=simple_adasecant")
  assert [r["diverged"] for r in rows] == [False, True]
  assert "at the last epoch, above 0.0 = 1e-06 x log(10)" in captured.out
  assert "1e-06 x at the last epoch" in captured.err and captured.err.count("\n") == 1
  # The optimizer's own test is read into every row.
  assert all(r["blown_up"] is False and r["largest_step_ratio"] >= 1.0 for r in rows)
  monkeypatch.setattr(reporting, "FINAL_DIVERGENCE_FACTOR", 3.0)
  assert cli.main(["--workdir", str(tmp_path / "real"), "--set", "progress=false", "--set",
                   "num_epochs=2", "--set", "plot=false", "--set",
                   "optimizer=simple_adasecant"]) == 0
