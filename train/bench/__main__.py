"""``python -m train.bench {overhead,trainstep,compare,claims,tlr-grid,input} [options]``."""

import sys

COMMANDS = ("overhead", "trainstep", "compare", "claims", "tlr-grid", "input")


def main(argv: list[str]) -> None:
  if not argv or argv[0] not in COMMANDS:
    raise SystemExit(f"usage: python -m train.bench {{{','.join(COMMANDS)}}} [options]; "
                     f"got {argv[:1] or 'nothing'}")
  command, rest = argv[0], argv[1:]
  if command == "overhead":
    from train.bench import overhead

    overhead.main(rest)
  elif command == "compare":
    from train.bench import compare

    compare.main(rest)
  elif command == "claims":
    from train.bench import claims

    claims.main(rest)
  elif command == "tlr-grid":
    from train.bench import tlr_grid

    tlr_grid.main(rest)
  elif command == "trainstep":
    from train.bench import trainstep

    trainstep.main(rest)
  elif command == "input":
    from train.bench import input as input_bench

    input_bench.main(rest)


if __name__ == "__main__":
  main(sys.argv[1:])
