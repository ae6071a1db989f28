"""Optimizer-only update overhead on a ResNet-18-sized tree: ``python -m train.bench overhead``.

For every method, first the deterministic figures of the compiled step (jitted update +
``apply_updates``, params and state donated): XLA's own ``cost_analysis()["bytes accessed"]`` per
parameter, the number of parameter-sized ``copy`` instructions outside while-loop bodies in its HLO
(:func:`train.bench.hlo.parameter_sized_copies`), and its state size in parameter-sized buffers,
each against the memory-traffic floor and the state the method needs. Then the step timed as the
median of repeated runs *interleaved* with its optax base in the same process (this machine is
shared and noisy: only ratios taken side by side mean anything), its ratio to the base, the
bandwidth it achieves against an in-place array scale measured in the same run, the memory-traffic
floor (the documentation's conventions page) for comparison, its state size in parameter-sized
buffers, and its compile time against the base's.

Methods whose rate work happens once per window (TLR with a window, AutoDrop) are timed over a
whole period of steps so that the boundary work is included in the average.

The time of a step on XLA:CPU follows its temporaries more than its bytes: the temporaries of a
compiled step are one allocation made on every call, fresh memory from the kernel whenever it is
larger than glibc's mmap threshold (32 MiB at most), so every 4 KiB page of it is page-faulted
on first touch, every step. Each row reports the temporaries' bytes per parameter (XLA's memory
analysis, deterministic) and the minor page faults per step (``getrusage`` around the timed
calls). Running with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` lets those allocations use
transparent huge pages (where the kernel offers them, ``madvise`` mode): on a layout with 52
bytes of temporaries per parameter the faults fell from 141,840 to about 450 per step. The value
in effect is recorded with the results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr
from train.bench.hlo import compiled_figures

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
    "results", "overhead.json")
"""Where ``main`` writes the results (and the markdown beside it, ``overhead.md``)."""


# CIFAR ResNet-18 (10 classes): 62 parameter leaves, 11,173,962 parameters.
def resnet18_shaped_tree() -> dict[str, jax.Array]:
  """Parameters shaped like CIFAR ResNet-18's (conv kernels HWIO, BatchNorm scale/bias, dense)."""
  shapes: dict[str, tuple[int, ...]] = {"stem/conv": (3, 3, 3, 64), "stem/bn_scale": (64,),
                                        "stem/bn_bias": (64,)}
  in_channels = 64
  for stage, channels in enumerate((64, 128, 256, 512)):
    for block in range(2):
      prefix = f"stage{stage}/block{block}"
      shapes[f"{prefix}/conv1"] = (3, 3, in_channels, channels)
      shapes[f"{prefix}/bn1_scale"] = shapes[f"{prefix}/bn1_bias"] = (channels,)
      shapes[f"{prefix}/conv2"] = (3, 3, channels, channels)
      shapes[f"{prefix}/bn2_scale"] = shapes[f"{prefix}/bn2_bias"] = (channels,)
      if in_channels != channels:
        shapes[f"{prefix}/shortcut_conv"] = (1, 1, in_channels, channels)
        shapes[f"{prefix}/shortcut_bn_scale"] = (channels,)
        shapes[f"{prefix}/shortcut_bn_bias"] = (channels,)
      in_channels = channels
  shapes["head/kernel"] = (512, 10)
  shapes["head/bias"] = (10,)
  keys = jax.random.split(jax.random.key(0), len(shapes))
  return {name: 0.01 * jax.random.normal(key, shape)
          for key, (name, shape) in zip(keys, shapes.items(), strict=True)}


@dataclasses.dataclass(frozen=True)
class Method:
  """A method to time against its base.

  Attributes:
    make: builds the transformation.
    base: name of the optax base in ``BASES``.
    floor_bytes: the memory-traffic floor per parameter (f32) for one update.
    floor_state: the parameter-sized buffers the method needs (the base's plus what cannot be
      derived: a kept Nesterov direction, per-element rates, a window accumulator, ...).
    target_bytes: the goal for XLA's bytes accessed per parameter, or None.
    period: steps per timed sample (a window or an epoch, so boundary work is averaged in).
    target: the issue's goal for the update-time ratio, or None.
    extra_args: ``grads -> dict`` of keyword arguments for ``update``.
  """

  make: Callable[[], optax.GradientTransformation]
  base: str
  floor_bytes: float
  floor_state: float
  period: int = 1
  target_bytes: float | None = None
  target: float | None = None
  extra_args: Callable[[Any], dict[str, Any]] = lambda grads: {}


BASES: dict[str, tuple[Callable[[], optax.GradientTransformation], float]] = {
    "sgd_momentum": (lambda: optax.sgd(0.1, momentum=0.9), 20.0),
    "adam": (lambda: optax.adam(1e-3), 28.0),
}

def _initialised_from_a_copy(
    transform: optax.GradientTransformationExtraArgs) -> optax.GradientTransformationExtraArgs:
  """``transform`` whose ``init`` sees a copy of the parameters (no state buffer aliases them)."""
  return optax.GradientTransformationExtraArgs(
      lambda params: transform.init(jax.tree.map(jnp.copy, params)), transform.update)


METHODS: dict[str, Method] = {
    "tlr_sgd": Method(lambda: optax_lr.tlr_sgd(0.1, momentum=0.9), "sgd_momentum", 32.0, 2,
                      target=1.5),
    "tlr_sgd_window130": Method(
        lambda: optax_lr.tlr_sgd(0.1, update_every=130, momentum=0.9), "sgd_momentum", 28.0, 3,
        period=130, target=1.5),
    "tlr_sgd_per_tensor": Method(
        lambda: optax_lr.tlr_sgd(0.1, momentum=0.9, per_tensor=True), "sgd_momentum", 32.0, 2),
    "sgd_hd": Method(lambda: optax_lr.sgd_hd(0.1, momentum=0.9), "sgd_momentum", 28.0, 1,
                     target=1.5, target_bytes=36.5),
    "sgdn_hd": Method(lambda: optax_lr.sgd_hd(0.1, momentum=0.9, nesterov=True), "sgd_momentum",
                      32.0, 2, target=1.75, target_bytes=44.0),
    "adam_hd": Method(lambda: optax_lr.adam_hd(1e-3), "adam", 40.0, 2, target=1.45,
                      target_bytes=56.0),
    # AutoDrop: an epoch of 50 steps per sample, so the boundary work is averaged in. Its floor
    # adds the averaging buffer's read to the base pass (see optax_lr/autodrop.py). State floor:
    # the base's plus 3. The angle at boundary e needs x_{e-1} (to form s_e = x_e - x_{e-1}) and
    # s_{e-1} (for <s_e, s_{e-1}>), two vectors that no scalar summary replaces; the average z
    # is live only from a trigger to its drop, but the angles are still recorded then (the
    # rule's documented behaviour), so z cannot take the slot of x_{e-1} or s_{e-1}, and a
    # state has one shape at every step. 2 plus the base without averaging.
    "autodrop_sgd": Method(lambda: optax_lr.autodrop_sgd(0.1, steps_per_epoch=50),
                           "sgd_momentum", 24.0, 4, period=50, target=1.15),
    # with_autodrop: Adam's direction recomputed in the boundary loop rather than stored for it.
    "autodrop_adam": Method(
        lambda: optax_lr.with_autodrop(optax.scale_by_adam(), 1e-3, steps_per_epoch=50),
        "adam", 32.0, 5, period=50, target=1.15),
    "adam_cam_hd_layer_global": Method(
        lambda: optax_lr.adam_cam_hd(1e-3, levels=("layer", "global")), "adam", 40.0, 2,
        target=1.5, target_bytes=56.0),
    # State floor 3: Adam's moments and the per-element rates; the previous direction is read
    # off the moments exactly (optax_lr._base.adam_previous_direction), so it needs no buffer.
    "adam_cam_hd_parameter_layer_global": Method(
        lambda: optax_lr.adam_cam_hd(1e-3, levels=("parameter", "layer", "global")), "adam",
        52.0, 3, target=2.0, target_bytes=68.0),
    "sgdn_cam_hd_filter_global": Method(
        lambda: optax_lr.sgd_cam_hd(0.1, momentum=0.9, nesterov=True,
                                    levels=("filter", "global")), "sgd_momentum", 32.0, 2),
    "simple_adasecant": Method(lambda: optax_lr.simple_adasecant(), "sgd_momentum", 28.0, 2,
                               target=1.6, target_bytes=36.0),
    "adasecant": Method(lambda: optax_lr.adasecant(), "adam", 100.0, 12, target=4.0,
                        target_bytes=160.0, extra_args=lambda grads: {"next_grads": grads}),
    "cus_adam": Method(lambda: optax_lr.cus_adam(1e-3), "adam", 28.0, 2),
    # The recommendation. Floor 60: a reduction pass reading g, m, v, x_0, x and the sum S (the
    # cosine, <g, x_0 - x> and ||S_new||_1, whose weight is known before the pass) and Adam's
    # pass with S: read g, m, v, S, x, write m, v, S, x. State: Adam's two moments, S and x_0.
    "auto_adam": Method(lambda: optax_lr.auto_adam(), "adam", 60.0, 4),
    # With the run's length: the tail, and no hypergradient decay (no cosine pass, so the
    # reduction reads g, x_0, x and S: floor 52).
    "auto_adam_tail": Method(lambda: optax_lr.auto_adam(total_steps=10**9), "adam", 52.0, 4),
    # Prodigy, its estimate without the decays, as optax.contrib writes it (for reference). Its
    # init keeps `params` itself as the initial point, which a step donating both params and
    # state refuses ("donate the same buffer twice"): initialised from a copy here.
    "prodigy_reference": Method(lambda: _initialised_from_a_copy(optax.contrib.prodigy()),
                                "adam", 60.0, 4),
}


def _step_fn(opt, extra_args):
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params, **extra_args(grads))
    return optax.apply_updates(params, updates), state

  return step


class _Timed:
  """A compiled, donated step with its live buffers; ``sample()`` times one call (per step)."""

  def __init__(self, opt, params, grads, extra_args, period):
    self.period = period
    self.params = jax.tree.map(jnp.copy, params)
    self.state = opt.init(self.params)
    self.grads = grads
    # One call per step, as a training loop makes them (a loop inside one executable would let
    # XLA alias buffers differently from the donated entry parameters of a real step).
    jitted = jax.jit(_step_fn(opt, extra_args), donate_argnums=(0, 1))
    start = time.perf_counter()
    self.compiled = jitted.lower(self.params, self.state, grads).compile()
    self.compile_seconds = time.perf_counter() - start
    self.state_buffers = (sum(x.size for x in jax.tree.leaves(self.state))
                          / sum(x.size for x in jax.tree.leaves(params)))
    self.figures = compiled_figures(self.compiled, params)
    self.faults: list[float] = []
    self.sample()  # warm up
    self.faults.clear()

  def sample(self) -> float:
    faults = _minor_faults()
    start = time.perf_counter()
    for _ in range(self.period):
      self.params, self.state = self.compiled(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, self.state))
    seconds = (time.perf_counter() - start) / self.period
    if faults is not None:
      self.faults.append((_minor_faults() - faults) / self.period)
    return seconds

  def faults_per_step(self) -> float | None:
    return statistics.median(self.faults) if self.faults else None


def _minor_faults() -> int | None:
  """This process's minor page faults so far (``getrusage``), or None where unavailable."""
  try:
    import resource
  except ImportError:  # not on POSIX
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _scale_bandwidth(params, repeats: int) -> float:
  """Bytes/s of an in-place ``x *= c`` over the tree (read + write 8 bytes per f32 element)."""
  scale = jax.jit(lambda t: jax.tree.map(lambda x: x * 0.999, t), donate_argnums=0)
  tree = jax.tree.map(jnp.copy, params)
  tree = scale(tree)
  jax.block_until_ready(tree)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    tree = scale(tree)
    jax.block_until_ready(tree)
    times.append(time.perf_counter() - start)
  size = sum(x.size for x in jax.tree.leaves(params))
  return 8.0 * size / statistics.median(times)


def _collectives(names: list[str]) -> dict[str, Any]:
  """Collectives per method in an 8-device data-parallel step (a separate process, see there)."""
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-m", "train.bench.collectives", *names], env=env,
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def run(names: list[str] | None = None, repeats: int = 15) -> list[dict[str, Any]]:
  """Times every method in ``names`` (default: all) against its base; one dict per method."""
  names = names or list(METHODS)
  collectives = _collectives(names)
  params = resnet18_shaped_tree()
  size = sum(x.size for x in jax.tree.leaves(params))
  grads = jax.tree.map(lambda x: 0.1 * x + 1e-3, params)
  bandwidth = _scale_bandwidth(params, repeats)
  results = []
  for name in names:
    method = METHODS[name]
    make_base, base_floor = BASES[method.base]
    timed = _Timed(method.make(), params, grads, method.extra_args, method.period)
    base = _Timed(make_base(), params, grads, lambda g: {}, method.period)
    method_times, base_times = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
      method_times.append(timed.sample())
      base_times.append(base.sample())
    seconds, base_seconds = statistics.median(method_times), statistics.median(base_times)
    results.append({
        "method": name,
        "base": method.base,
        "parameters": size,
        "update_ms": 1e3 * seconds,
        "base_update_ms": 1e3 * base_seconds,
        "ratio": seconds / base_seconds,
        "target_ratio": method.target,
        "floor_ratio": method.floor_bytes / base_floor,
        "floor_bytes_per_param": method.floor_bytes,
        "bytes_per_param": timed.figures["bytes_per_param"],
        "base_bytes_per_param": base.figures["bytes_per_param"],
        "target_bytes_per_param": method.target_bytes,
        "copies": timed.figures["copies"],
        "base_copies": base.figures["copies"],
        "temp_bytes_per_param": timed.figures["temp_bytes_per_param"],
        "base_temp_bytes_per_param": base.figures["temp_bytes_per_param"],
        "minor_faults_per_step": timed.faults_per_step(),
        "base_minor_faults_per_step": base.faults_per_step(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "floor_state_param_buffers": method.floor_state,
        "achieved_fraction_of_scale_bandwidth": method.floor_bytes * size / seconds / bandwidth,
        "base_achieved_fraction_of_scale_bandwidth":
            base_floor * size / base_seconds / bandwidth,
        "state_param_buffers": timed.state_buffers,
        "base_state_param_buffers": base.state_buffers,
        "compile_s": timed.compile_seconds,
        "base_compile_s": base.compile_seconds,
        "scale_bandwidth_gb_s": bandwidth / 1e9,
        "collectives": collectives[name]["collectives"],
        "base_collectives": collectives[name]["base_collectives"],
        "added_collectives": collectives[name]["added"],
        "repeats": repeats,
    })
    del timed, base
  return results


def floor_table(results: list[dict[str, Any]]) -> str:
  """The compact table of the memory figures: bytes/param, copies and state against the floor.

  One row per method: XLA's bytes accessed per parameter of the compiled, donated step against
  the memory-traffic floor (and the optax base's measured figure), the parameter-sized copies
  outside loop bodies, the temporaries XLA allocates per call (bytes per parameter, see
  :func:`train.bench.hlo.temporary_bytes`), and the state in parameter-sized buffers against the
  state the method needs. Deterministic (no timing), so it can stand in the README.
  """
  header = ("| method | bytes/param (floor; base) | copies | temporaries B/param | "
            "state buffers (floor) |\n"
            "| --- | --- | --- | --- | --- |\n")
  rows = [f"| {r['method']} | {r['bytes_per_param']:.1f} ({r['floor_bytes_per_param']:g}; "
          f"{r['base_bytes_per_param']:.0f}) | {r['copies']} | "
          f"{r.get('temp_bytes_per_param', math.nan):.1f} | "
          f"{r['state_param_buffers']:.2f} ({r['floor_state_param_buffers']:g}) |"
          for r in results]
  return header + "\n".join(rows) + "\n"


def markdown(results: list[dict[str, Any]]) -> str:
  """The compact memory table (:func:`floor_table`), then the full table with the timings."""
  return floor_table(results) + "\n" + full_table(results)


def _count(value: float | None) -> str:
  return "-" if value is None else f"{value:.0f}"


def full_table(results: list[dict[str, Any]]) -> str:
  header = ("| method | base | bytes/param (base) | target | floor | copies | state buffers "
            "(base) | state floor | update ms | base ms | ratio | target | floor ratio | "
            "% of scale bandwidth (base) | page faults/step (base) | compile s (base) | "
            "added collectives |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
            "--- | --- | --- | --- |\n")
  rows = []
  for r in results:
    target = "-" if r["target_ratio"] is None else f"≤ {r['target_ratio']:.2f}"
    target_bytes = ("-" if r["target_bytes_per_param"] is None
                    else f"≤ {r['target_bytes_per_param']:g}")
    rows.append(
        f"| {r['method']} | {r['base']} | {r['bytes_per_param']:.1f} "
        f"({r['base_bytes_per_param']:.1f}) | {target_bytes} | {r['floor_bytes_per_param']:g} | "
        f"{r['copies']} | {r['state_param_buffers']:.2f} ({r['base_state_param_buffers']:.2f}) | "
        f"{r['floor_state_param_buffers']:g} | "
        f"{r['update_ms']:.1f} | {r['base_update_ms']:.1f} | "
        f"{r['ratio']:.2f} | {target} | {r['floor_ratio']:.2f} | "
        f"{100 * r['achieved_fraction_of_scale_bandwidth']:.0f}% "
        f"({100 * r['base_achieved_fraction_of_scale_bandwidth']:.0f}%) | "
        f"{_count(r.get('minor_faults_per_step'))} "
        f"({_count(r.get('base_minor_faults_per_step'))}) | "
        f"{r['compile_s']:.2f} ({r['base_compile_s']:.2f}) | {r['added_collectives']} |")
  return header + "\n".join(rows) + "\n"


def main(argv: list[str]) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m train.bench overhead", description=__doc__)
  parser.add_argument("--quick", action="store_true", help="5 repeats instead of 15")
  parser.add_argument("--out", default=DEFAULT_OUT,
                      help=f"JSON output (default {DEFAULT_OUT}, quick runs too: the bytes and "
                      "copies are exact, only the timings have fewer repeats); the markdown "
                      "goes beside it (FILE.md)")
  parser.add_argument("--methods", nargs="*", choices=sorted(METHODS), help="default: all")
  args = parser.parse_args(argv)
  results = run(args.methods, repeats=5 if args.quick else 15)
  table = markdown(results)
  print(f"devices: {jax.devices()[0].platform} x{jax.device_count()}; "
        f"{np.round(results[0]['scale_bandwidth_gb_s'], 2)} GB/s in-place scale; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}\n")
  print(table)
  from train import io_utils

  md_path = os.path.splitext(args.out)[0] + ".md"
  io_utils.write_atomic(args.out, json.dumps(results, indent=2))
  io_utils.write_atomic(md_path, table)
  print(f"wrote {args.out}, {md_path}")
