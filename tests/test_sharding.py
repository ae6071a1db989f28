"""Sharding-correct by construction: every method under FSDP-style parameter sharding.

Users train with sharded parameters (a weight split over the devices on one of its axes). For each
method of the conformance registry, on 8 simulated CPU devices with the weights sharded on a
leading axis (an embedding-like 2048x64 table), on a trailing axis (a 64x128 dense kernel, a
3x3x4x32 conv kernel and its bias):

  - every state buffer of a parameter has the parameter's sharding after an eager ``init`` (what
    ``nnx.Optimizer`` does) and after a jitted, donated step, and a per-filter vector (CAM-HD's
    filter rates) is sharded as its parameter's filter axis;
  - the compiled step (update + ``optax.apply_updates``) holds no collective whose result is larger
    than a per-filter vector (the widest filter axis, 128): reductions are per-leaf or per-filter
    sums combined as scalars, and no parameter is gathered;
  - the same compiled step, donated, holds no ``copy`` of a parameter's size, whole or per device
    (the partitioned HLO holds per-device shapes) outside the window loops, but the copies
    ``tests/test_memory.py`` pins per leaf (``KNOWN_COPIES``), exactly: a sharded step updates
    its state and the parameters in place as the one-device step does;
  - the 8-device run equals the 1-device run to 1e-6 (relative to each leaf's largest value), over
    six steps, so that a window or boundary (AutoDrop's at step 5) is crossed too.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_lr
from tests.test_conformance import CASES, _value_arg
from tests.test_memory import KNOWN_COPIES, read_then_replace
from train.bench.hlo import parameter_sized_copies

_LAYOUT = {
    "embed": {"embedding": ((2048, 64), P("data", None))},
    "dense": {"kernel": ((64, 128), P(None, "data"))},
    "conv": {"kernel": ((3, 3, 4, 32), P(None, None, None, "data")), "bias": ((32,), P("data"))},
}
_WIDEST_FILTER = 128
_STEPS = 6
_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>.*?)\s+(?:all-gather|all-reduce|reduce-scatter|all-to-all|"
    r"collective-permute)(?:-start)?\(")
_ARRAY_SHAPE = re.compile(r"[a-z]+\d*\[([\d,]*)\]")


def _is_spec(x):
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], P)


def _mesh():
  devices = jax.devices()
  assert len(devices) >= 8, "the suite needs 8 simulated CPU devices (see conftest.py)"
  return jax.sharding.Mesh(np.array(devices[:8]), ("data",))


def _params():
  specs = jax.tree.leaves(_LAYOUT, is_leaf=_is_spec)
  keys = iter(jax.random.split(jax.random.key(0), len(specs)))
  return jax.tree.map(lambda s: 0.1 * jax.random.normal(next(keys), s[0]), _LAYOUT,
                      is_leaf=_is_spec)


def _shardings(mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s[1]), _LAYOUT, is_leaf=_is_spec)


def _loss(params):
  # A different curvature per leaf and a non-quadratic term, so that directions are not parallel
  # to the parameters; element-wise, so that the gradient itself needs no communication and every
  # collective of the compiled step is the optimizer's. Scaled so that ||g||^2 is about 1 over
  # the 133k parameters: the registry's settings (made for a 16-element parabola) then take
  # stable steps here too, and the two runs are compared on a trajectory, not on a blow-up.
  leaves = jax.tree.leaves(params)
  return (1 / 32) * sum((1.0 + 0.25 * i) * 0.5 * jnp.sum(jnp.square(x - 0.05))
             + 0.05 * jnp.sum(jnp.cos(3.0 * x)) for i, x in enumerate(leaves))


def _extra_args(case, grad_fn, params):
  if case is None:
    return {}
  if case.extra_args is _value_arg:
    return {"value": _loss(params)}
  return case.extra_args(grad_fn, params)


def _step_fn(case, opt):
  grad_fn = jax.grad(_loss)

  def step(params, state):
    grads = grad_fn(params)
    updates, state = opt.update(grads, state, params, **_extra_args(case, grad_fn, params))
    return optax.apply_updates(params, updates), state

  return step


def _kernels() -> list[tuple[tuple[int, ...], P]]:
  """The layout's leaves larger than the widest filter axis. A bias, whole or per device, has the
  size of a per-filter vector (the conv kernel's filter rates), so a copy of that size is not
  told apart from one of a rate vector: small leaves are left out, as ``tests/test_memory.py``
  leaves them out."""
  return [leaf for leaf in jax.tree.leaves(_LAYOUT, is_leaf=_is_spec)
          if math.prod(leaf[0]) > _WIDEST_FILTER]


def _copies(compiled, mesh, per_device: bool = True) -> list[str]:
  """The compiled step's copies of a kernel's size, whole or (``per_device``) per device: the
  partitioned HLO holds per-device shapes."""
  sizes = {math.prod(shape) for shape, _ in _kernels()}
  if per_device:
    sizes |= {math.prod(NamedSharding(mesh, spec).shard_shape(shape))
              for shape, spec in _kernels()}
  return parameter_sized_copies(compiled.as_text(), sizes)


def _dict_keys(path) -> tuple[str, ...]:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def _check_state_shardings(state, params):
  """Each state buffer of a parameter (found by the parameter's path, as optax states nest the
  parameter tree) has the parameter's sharding; a per-filter vector (the parameter's last axis)
  is sharded as that axis. Returns how many buffers were checked."""
  by_path = {_dict_keys(path): x for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  checked = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    keys = _dict_keys(path)
    matches = [p for p in by_path if len(p) <= len(keys) and keys[len(keys) - len(p):] == p]
    if not matches or not isinstance(leaf, jax.Array) or not leaf.ndim:
      continue
    param = by_path[max(matches, key=len)]
    spec = param.sharding.spec
    if leaf.shape == param.shape:
      expected = param.sharding
    elif leaf.shape == param.shape[-1:]:
      expected = NamedSharding(param.sharding.mesh, P(spec[-1] if len(spec) == param.ndim
                                                      else None))
    else:
      continue
    assert leaf.sharding.is_equivalent_to(expected, leaf.ndim), (
        jax.tree_util.keystr(path), leaf.sharding, expected)
    checked += 1
  return checked


def _large_collectives(hlo: str) -> list[str]:
  found = []
  for line in hlo.splitlines():
    match = _COLLECTIVE.search(line)
    if not match:
      continue
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
             for dims in _ARRAY_SHAPE.findall(match.group("shape"))]
    if max(sizes, default=0) > _WIDEST_FILTER:
      found.append(line.strip()[:200])
  return found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fsdp_sharding(case):
  mesh = _mesh()
  params = jax.device_put(_params(), _shardings(mesh))
  opt = case.make()

  state = opt.init(params)  # eager, as nnx.Optimizer calls it
  buffers = _check_state_shardings(state, params)

  step = jax.jit(_step_fn(case, opt), donate_argnums=(0, 1))
  compiled = step.lower(params, state).compile()
  assert _large_collectives(compiled.as_text()) == []
  copies = _copies(compiled, mesh)
  assert len(copies) == KNOWN_COPIES.get(case.name, 0) * len(_kernels()), "\n".join(copies)
  for _ in range(_STEPS):
    params, state = step(params, state)
  assert _check_state_shardings(state, params) == buffers
  for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(_shardings(mesh)),
                            strict=True):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)

  # A fresh copy: device_put may share a buffer with its input, which the donation above deleted.
  one_device = jax.device_put(_params(), jax.devices()[0])
  single_opt = case.make()
  single_step = jax.jit(_step_fn(case, single_opt), donate_argnums=(0, 1))
  single_state = single_opt.init(one_device)
  for _ in range(_STEPS):
    one_device, single_state = single_step(one_device, single_state)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(one_device), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.max(np.abs(b)))


def test_checker_sees_a_gathered_parameter():
  # The collective check itself: flattening a trailing-axis-sharded kernel to read its first
  # element all-gathers it (the pattern this file exists to keep out of the library).
  mesh = _mesh()
  params = jax.device_put(_params(), _shardings(mesh))
  gathered = jax.jit(lambda p: p["dense"]["kernel"].reshape(-1)[0] + p["embed"]["embedding"])
  assert _large_collectives(gathered.lower(params).compile().as_text())
  summed = jax.jit(lambda p: jax.tree.map(lambda x: x * jnp.sum(x), p))
  assert _large_collectives(summed.lower(params).compile().as_text()) == []


def test_copy_check_sees_a_copy():
  # The copy check itself, on test_memory's read-then-replace pattern: unordered, each kernel is
  # copied twice (the old buffer, and the new value into the output), at its per-device shape (a
  # count of whole sizes alone misses them); written through _tree.after, not at all.
  mesh = _mesh()
  for ordered, expected in ((False, 2 * len(_kernels())), (True, 0)):
    params = jax.device_put(_params(), _shardings(mesh))
    opt = read_then_replace(ordered)
    step = jax.jit(_step_fn(None, opt), donate_argnums=(0, 1))
    compiled = step.lower(params, opt.init(params)).compile()
    assert len(_copies(compiled, mesh)) == expected
    assert _copies(compiled, mesh, per_device=False) == []


def test_every_public_factory_is_covered():
  # Each public transformation factory is exercised by some registered case (directly or as the
  # building block of an alias), so the sharding check above covers the whole public API.
  covered_by = {
      "auto_adam": "auto_adam", "auto_adam_hd": "auto_adam_hd", "auto_sgd": "auto_sgd",
      "tlr_sgd": "tlr_sgd", "scale_by_tlr": "autodrop_over_tlr",
      "scale_by_tlr_fixed_meta_rate": "tlr_fixed_meta_rate", "naive_tlr": "naive_tlr",
      "scale_by_naive_tlr": "naive_tlr", "hypergradient": "sgd_hd", "sgd_hd": "sgd_hd",
      "adam_hd": "adam_hd", "autodrop_sgd": "autodrop_sgd", "scale_by_autodrop": "autodrop_adam",
      "with_autodrop": "with_autodrop_adam", "cam_hd": "cam_hd_softmax_all_levels",
      "sgd_cam_hd": "sgd_cam_hd", "adam_cam_hd": "adam_cam_hd_three_levels",
      "adasecant": "adasecant", "simple_adasecant": "simple_adasecant", "cus_adam": "cus_adam",
      "scale_by_cus_adam": "cus_adam", "switch_at": "switch_clr_sgd_to_simple_adasecant",
      "l4_adam": "l4_adam", "l4_momentum": "l4_momentum", "scale_by_l4": "l4_adam",
      "adabound": "adabound", "scale_by_adabound": "adabound",
  }
  factories = {
      name for name in optax_lr.__all__
      if callable(getattr(optax_lr, name)) and not isinstance(getattr(optax_lr, name), type)
      and "GradientTransformation" in str(getattr(getattr(optax_lr, name), "__annotations__",
                                                  {}).get("return", ""))}
  assert factories == set(covered_by), factories ^ set(covered_by)
  assert set(covered_by.values()) <= {case.name for case in CASES}
