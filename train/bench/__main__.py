"""``python -m train.bench {overhead,compare} [options]``."""

import sys

COMMANDS = ("overhead",)


def main(argv: list[str]) -> None:
  if not argv or argv[0] not in COMMANDS:
    raise SystemExit(f"usage: python -m train.bench {{{','.join(COMMANDS)}}} [options]; "
                     f"got {argv[:1] or 'nothing'}")
  command, rest = argv[0], argv[1:]
  if command == "overhead":
    from train.bench import overhead

    overhead.main(rest)


if __name__ == "__main__":
  main(sys.argv[1:])
