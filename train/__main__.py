"""Command line: ``python -m train [--config NAME] [--set KEY=VALUE ...] [--workdir DIR]``.

Without arguments it runs the main job (preset ``default``: an MLP on scikit-learn's digits with a
trainable learning rate) in a fresh temporary workdir. With ``--workdir`` an interrupted run
resumes from its latest checkpoint. ``--list`` prints presets, optimizers (with their options),
models and datasets; ``--help`` lists every ``--set`` key with its type and the preset's value.

Every argument is checked once, before anything is written: the command line parses the options
and the config's values, and the run validates the config (``train.configs.validate``, against the
live registries), then builds the optimizer once with the dataset's real step counts (its option
ranges) and checks the devices, the data and the workdir. A bad argument fails within a few
seconds (the JAX imports) with a one-line ``error: ...`` and exit status 2. A run whose
training loss stops being finite or goes above 100 times the chance-level loss, or whose last
epoch ends above 3 times it (``train.reporting.divergence_bound``), ends with exit status 3
(``--set stop_on_divergence=false`` keeps it going).

Multi-host: start one process per host with the same ``--coordinator HOST:PORT`` and
``--num_processes N`` and its own ``--process_id``; ``jax.distributed.initialize`` runs before
anything else touches JAX (on CPU hosts, with the gloo collectives).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

from train import config_schema, configs

#: Exit status of a diverged run (training loss not finite or above the divergence bound).
EXIT_DIVERGED = 3


def _set_keys_help(preset: str) -> str:
  """The ``--help`` epilog: every ``--set`` key with its type and the preset's value."""
  try:
    config = configs.get_config(preset)
  except ValueError:  # a broken preset: main reports it; the help shows the field defaults
    config = configs.Config()
  types, docs = configs.field_types(), configs.field_docs()
  lines = ["--set keys (values are Python literals, true/false, none, or bare strings; the values "
           f"shown are those of preset {preset!r}, see --config NAME --help):"]
  for name in configs.Config.field_names():
    value = getattr(config, name)
    if name == "optimizer_options":
      name, value = "optimizer_options.KEY", "(below)" if not value else value
    elif name == "model_options":
      name = "model_options.KEY"
    kind = " | ".join(types[name.split(".")[0]])
    lines.append(f"  {name:22s} {kind:12s} {value!r}")
    lines.append(f"      {docs.get(name.split('.')[0], '')}")
  lines.append("optimizer_options.KEY, per optimizer (KEY=default (type); unknown keys and wrong "
               "types are refused):")
  lines.append(config_schema.options_help())
  lines.append("model_options.KEY, per model (attributes of its constructor; num_classes "
               "comes from the dataset):")
  lines.append(config_schema.models_help())
  lines.append(f"Exit status: 0 done, 2 bad arguments (nothing written), {EXIT_DIVERGED} the "
               "run diverged (an epoch's training loss not finite, or above "
               "train.reporting.divergence_bound: 100 x the chance-level loss, 3 x at the last "
               "epoch).")
  return "\n".join(lines)


def _parser(preset: str = "default", full_help: bool = True) -> argparse.ArgumentParser:
  """The argument parser; ``full_help`` adds the epilog listing every key and option (it reads
  the registries, so only ``--help`` pays for it)."""
  if preset not in configs.presets():
    preset = "default"
  parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0],
                                   epilog=_set_keys_help(preset) if full_help else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="default", help="preset name (see --list)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="override a config field; DICT.KEY=VALUE sets one entry of "
                           "model_options / optimizer_options (repeatable; keys below)")
  parser.add_argument("--workdir", default=None,
                      help="output directory; an existing run there is resumed (default: a new "
                           "temporary directory)")
  parser.add_argument("--list", action="store_true",
                      help="list presets, optimizers, models and datasets, then exit")
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="simulate this many CPU devices (for trying data parallelism)")
  multihost = parser.add_argument_group("multi-host (jax.distributed.initialize)")
  multihost.add_argument("--coordinator", default=None, metavar="HOST:PORT")
  multihost.add_argument("--num_processes", type=int, default=None)
  multihost.add_argument("--process_id", type=int, default=None)
  return parser


def initialize_jax(cpu_devices: int | None = None, coordinator: str | None = None,
                   num_processes: int | None = None, process_id: int | None = None) -> None:
  """Device and distributed set-up; must run before any other JAX call."""
  import jax

  if cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  if coordinator is not None:
    # CPU processes need a collectives implementation to all-reduce across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _listing() -> str:
  from train import input_pipeline, optimizers

  lines = ["presets:    " + ", ".join(configs.presets()),
           "models:     " + ", ".join(config_schema.model_attributes()),
           "datasets:   " + ", ".join(input_pipeline.DATASETS),
           "optimizers:"]
  for name, spec in optimizers.OPTIMIZERS.items():
    extra = f" [needs {', '.join(spec.extra_args)}]" if spec.extra_args else ""
    rate = "" if spec.takes_learning_rate else " [sets its own rate]"
    lines.append(f"  {name:22s} {spec.description}{extra}{rate}")
    options = ", ".join(f"{k}={v!r}" for k, v in config_schema.option_defaults(name).items())
    if options:
      lines.append(f"  {'':22s}   options: {options}")
  return "\n".join(lines)


def check_workdir(path: str) -> None:
  """A one-line ValueError unless ``path`` is, or can be created as, a writable folder."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--workdir {path} exists and is not a directory")
  folder = os.path.abspath(path)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"--workdir {path} cannot be created: {folder} is not a directory")
  if not os.access(folder, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {path}: {folder} is not writable")


def _check_args(args: argparse.Namespace) -> None:
  if args.cpu_devices is not None and args.cpu_devices < 1:
    raise ValueError(f"--cpu_devices must be >= 1; got {args.cpu_devices}")
  multihost = (args.coordinator, args.num_processes, args.process_id)
  if any(v is not None for v in multihost) and any(v is None for v in multihost):
    raise ValueError("--coordinator, --num_processes and --process_id go together")
  if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
    raise ValueError(f"--process_id must be in [0, {args.num_processes}); got {args.process_id}")


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  # The --help epilog shows the chosen preset's values, so --config is read first.
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--config", default="default")
  known, _ = pre.parse_known_args(argv)
  wants_help = any(a in ("-h", "--help") for a in argv)
  args = _parser(known.config, full_help=wants_help).parse_args(argv)
  try:
    _check_args(args)
    if args.list:
      print(_listing())
      return 0
    # Parsed here; validated once, by the run, before it writes anything.
    config = configs.get_config(args.config, args.overrides)
    if args.workdir is not None:
      check_workdir(args.workdir)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2

  initialize_jax(args.cpu_devices, args.coordinator, args.num_processes, args.process_id)
  from train import train

  created = None
  try:
    if args.workdir is None:
      created = tempfile.mkdtemp(prefix=f"optax_lr_{args.config}_")
    workdir = args.workdir or created
    announced = []

    def log(line: str) -> None:
      # The workdir is named with the run's first line, after every check has passed: a bad
      # argument's output is the error line alone, not a folder that was never written.
      if not announced:
        print(f"workdir: {workdir}")
        announced.append(True)
      print(line)

    rows = train.train_and_evaluate(config, workdir, log=log)
  except ValueError as error:
    # The config's validation, the optimizer's own ranges (built once with the real step counts),
    # the batch against the devices, or a workdir holding another run: all fail before anything
    # is written (the temporary folder made above is still empty).
    if created is not None and not os.listdir(created):
      os.rmdir(created)
    print(f"error: {error}", file=sys.stderr)
    return 2
  from train import reporting

  if rows and rows[-1].get("diverged"):
    how = ("; stopped there (--set stop_on_divergence=false keeps going)"
           if config.stop_on_divergence else " and did not recover by the last epoch")
    first = next(r for r in rows if r.get("diverged"))
    loss = first["train_loss"]
    reason = (f"is {loss:.3e}, above {reporting.DIVERGENCE_FACTOR:g} x the chance-level loss, or "
              f"{reporting.FINAL_DIVERGENCE_FACTOR:g} x at the last epoch"
              if loss is not None and math.isfinite(loss) else "is not finite")
    print(f"error: training diverged at epoch {first['epoch']} (the training loss {reason}){how}",
          file=sys.stderr)
    return EXIT_DIVERGED
  return 0


if __name__ == "__main__":
  sys.exit(main())
