"""Reading a compiled step: its parameter-sized copies, bytes accessed and temporaries.

The one place that reads XLA's compiled HLO text and analyses, shared by the overhead benchmark
(:mod:`train.bench.overhead`, which reports the figures) and the tests that pin "no
parameter-sized copy" (``tests/test_memory.py``); it imports neither.
"""

from __future__ import annotations

import math
import re

import jax


def _computations(hlo: str) -> dict[str, list[str]]:
  """An HLO module's text split into its computations (name -> instruction lines)."""
  out: dict[str, list[str]] = {}
  name = None
  for line in hlo.splitlines():
    match = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
    if match and line.rstrip().endswith("{"):
      name = match.group(1)
      out[name] = []
    elif name is not None:
      out[name].append(line)
  return out


def parameter_sized_copies(hlo: str, sizes: set[int], loops: bool = False) -> list[str]:
  """The ``copy`` instructions of ``hlo`` whose element count is in ``sizes``, outside loops.

  Loop bodies and conditions are left out unless ``loops``: the window and boundary work of
  ``optax_lr._tree.run_once_if`` runs there, once per window, not on every step (but
  ``optax_lr.switch_at`` runs one of its two loops on every step).
  """
  computations = _computations(hlo)
  in_loops = {m.group(1) for lines in computations.values() for line in lines
              for m in re.finditer(r"(?:body|condition)=%?([\w.\-]+)", line)}
  copies = []
  for name, lines in computations.items():
    if name in in_loops and not loops:
      continue
    for line in lines:
      match = re.search(r"= \w+\[([\d,]*)\]\S* copy\(", line)
      if match and math.prod(int(x) for x in match.group(1).split(",") if x) in sizes:
        copies.append(line.strip())
  return copies


def compiled_figures(compiled, params, min_size: int = 64) -> dict[str, float]:
  """A compiled step's figures: XLA's bytes accessed and temporaries per parameter, and its copies.

  ``min_size`` leaves out small leaves (a bias has the size of its kernel's per-filter rates).
  """
  size = sum(x.size for x in jax.tree.leaves(params))
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  sizes = {x.size for x in jax.tree.leaves(params) if x.size >= min_size}
  return {"bytes_per_param": float(analysis["bytes accessed"]) / size,
          "copies": len(parameter_sized_copies(compiled.as_text(), sizes)),
          "temp_bytes_per_param": temporary_bytes(compiled) / size}


def temporary_bytes(compiled) -> float:
  """The bytes of the temporaries XLA's buffer assignment gives a compiled step (0 if unknown).

  On XLA:CPU these are one allocation made on every call; above glibc's mmap threshold it is
  fresh memory each time, and its first touch costs a page fault per 4 KiB page (see
  its page-fault column): a parameter-sized temporary costs time far beyond its bytes.
  """
  analysis = compiled.memory_analysis()
  return float(getattr(analysis, "temp_size_in_bytes", 0) or 0)
