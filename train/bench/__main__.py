"""``python -m train.bench {overhead,trainstep,compare,claims,tlr-grid,input,lm,rate-range}``.

- ``compare [--quick]``: every registry entry (the library's methods, the papers' baselines SLS,
  SPS, L4, AdaBound and multistep SGD, and the peers) side by side on one task;
- ``claims [--quick] [--paper autodrop|tlr|cam-hd|thesis]``: each paper's headline claim, with
  the baselines the paper compares against;
- ``overhead``, ``trainstep``: the cost of an update and of a training step;
- ``tlr-grid``: the Trainable Learning Rate digits grid (initial rate x batch x seed, both
  window readings);
- ``input``: the input pipeline's images/s and peak host memory;
- ``lm``: a small transformer language model on standard-library sources (losses, rates);
- ``rate-range``: the hypergradient's signal ``cos(g_t, d_{t-1})`` over a range of Adam rates,
  on the comparison's language model and shapes CNN.

``python -m train.bench COMMAND --help`` lists each command's options.
"""

import sys

COMMANDS = ("overhead", "trainstep", "compare", "claims", "tlr-grid", "input", "lm", "rate-range")


def main(argv: list[str]) -> None:
  if not argv or argv[0] not in COMMANDS:
    raise SystemExit(f"usage: python -m train.bench {{{','.join(COMMANDS)}}} [options] (claims "
                     "takes --paper autodrop|tlr|cam-hd|thesis); got "
                     f"{argv[:1] or 'nothing'}")
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
  elif command == "lm":
    from train.bench import lm

    lm.main(rest)
  elif command == "rate-range":
    from train.bench import rate_range

    rate_range.main(rest)


if __name__ == "__main__":
  main(sys.argv[1:])
