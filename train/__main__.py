"""Command line: ``python -m train [--config NAME] [--set KEY=VALUE ...] [--workdir DIR]``.

Without arguments it runs the main job (preset ``default``: a small CNN on scikit-learn's digits
with a trainable learning rate) in a fresh temporary workdir. With ``--workdir`` an interrupted run
resumes from its latest checkpoint. ``--list`` prints presets, optimizers, models and datasets.

Multi-host: start one process per host with the same ``--coordinator HOST:PORT`` and
``--num_processes N`` and its own ``--process_id``; ``jax.distributed.initialize`` runs before
anything else touches JAX (on CPU hosts, with the gloo collectives).
"""

from __future__ import annotations

import argparse
import sys
import tempfile


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="default", help="preset name (see --list)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="override a config field; DICT.KEY=VALUE sets one entry of "
                           "model_options / optimizer_options (repeatable)")
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
  import models
  from train import configs, input_pipeline, optimizers

  lines = ["presets:    " + ", ".join(configs.presets()),
           "models:     " + ", ".join(models.MODELS),
           "datasets:   " + ", ".join(input_pipeline.DATASETS),
           "optimizers:"]
  for name, spec in optimizers.OPTIMIZERS.items():
    extra = f" [needs {', '.join(spec.extra_args)}]" if spec.extra_args else ""
    rate = "" if spec.takes_learning_rate else " [sets its own rate]"
    lines.append(f"  {name:22s} {spec.description}{extra}{rate}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  initialize_jax(args.cpu_devices, args.coordinator, args.num_processes, args.process_id)
  if args.list:
    print(_listing())
    return 0
  from train import configs, train

  try:
    config = configs.get_config(args.config, args.overrides)
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"optax_lr_{args.config}_")
    print(f"workdir: {workdir}")
    train.train_and_evaluate(config, workdir)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
