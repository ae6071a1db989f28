"""Collectives each method adds to a data-parallel step (compiled HLO on 8 simulated devices).

``python -m train.bench.collectives METHOD ...`` prints one JSON object: for each method, the
collective operations (all-reduce, all-gather, reduce-scatter, collective-permute, all-to-all) in
the compiled HLO of a ``shard_map`` data-parallel step with that optimizer, and the same count for
its optax base. The goal is none beyond the gradient all-reduce: gradients are averaged with
``lax.pmean`` before the optimizer, so every reduction an optimizer makes is device-local.

Run as its own process because the 8 simulated devices must be configured before JAX starts
(``train.bench.overhead`` calls it that way).
"""

from __future__ import annotations

import collections
import json
import re
import sys

_COLLECTIVE = re.compile(
    r"=\s*[^=]*?\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)"
    r"(?:-start)?\(")


def count_collectives(hlo_text: str) -> dict[str, int]:
  """Counts collective instructions by kind in an HLO module's text."""
  counts = collections.Counter(match.group(1) for match in _COLLECTIVE.finditer(hlo_text))
  return dict(counts)


def _step_hlo(opt, params, mesh, extra_args) -> str:
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import PartitionSpec as P

  def loss(params, batch):
    return jnp.mean(batch) * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(params))

  def per_device_step(params, state, batch):
    grads = jax.lax.pmean(jax.grad(loss)(params, batch), "data")
    updates, state = opt.update(grads, state, params, **extra_args(grads))
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  step = jax.jit(jax.shard_map(per_device_step, mesh=mesh, in_specs=(P(), P(), P("data")),
                               out_specs=(P(), P()), check_vma=False),
                 donate_argnums=(0, 1))
  batch = jnp.ones((8 * 4,))
  return step.lower(params, state, batch).compile().as_text()


def main(names: list[str]) -> None:
  import jax

  jax.config.update("jax_num_cpu_devices", 8)
  import numpy as np

  from train.bench import overhead

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  # A small tree of ResNet-18's structure (62 leaves): counts depend on leaves, not on sizes.
  params = jax.tree.map(lambda x: x[..., :4] if x.ndim else x, overhead.resnet18_shaped_tree())
  report = {}
  for name in names:
    method = overhead.METHODS[name]
    make_base, _ = overhead.BASES[method.base]
    ours = count_collectives(_step_hlo(method.make(), params, mesh, method.extra_args))
    base = count_collectives(_step_hlo(make_base(), params, mesh, lambda grads: {}))
    report[name] = {"collectives": ours, "base_collectives": base,
                    "added": sum(ours.values()) - sum(base.values())}
  print(json.dumps(report))


if __name__ == "__main__":
  main(sys.argv[1:])
