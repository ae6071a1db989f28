"""Factories a newcomer can read: at most 12 parameters each, options grouped in objects.

The grouped options (AutoDrop's :class:`optax_lr.DropTrigger`, CAM-HD's :class:`optax_lr.RateRule`)
replaced flat arguments without changing a single update: the expected updates below were
recorded, as exact float32 values, from the flat calls of the release before the grouping
(``autodrop_sgd(..., threshold=90.0, max_threshold=120.0, threshold_rule="relative",
relative_threshold=0.3, smoothing=2, eps=1e-6)`` and ``adam_cam_hd(..., min_learning_rate=1e-3,
rate_rule="multiplicative", search=RateSearch(start=0.25), backtrack=LossBacktrack(),
store_previous_direction=True)``), on CPU. The runs cover a drop with its landing on the average
(AutoDrop, step 10) and the rate search doubling every level's rates before the multiplicative
rule takes over (CAM-HD, from step 11).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

MAX_PARAMETERS = 12

_AUTODROP_UPDATES = [
    "-0x1.851eb8p-5 0x1.53c542p-3 -0x1.3696c4p-6 "
    "0x1.239a7ap-1 -0x1.9fb0a4p-2 -0x1.811fc8p+0",
    "-0x1.6fbf38p-4 0x1.778bb6p-3 -0x1.9fbe6ep-8 "
    "0x1.774288p-1 -0x1.84426ap-2 -0x1.96f4d6p+0",
    "-0x1.10ffb4p-3 0x1.489b34p-3 -0x1.a47420p-9 "
    "0x1.926d7ep-1 -0x1.f4c7bap-3 -0x1.4fa33ep+0",
    "-0x1.619162p-3 0x1.ac76e0p-4 -0x1.1194ecp-6 "
    "0x1.7921fap-1 -0x1.a551a0p-5 -0x1.9f7820p-1",
    "-0x1.9f17c6p-3 0x1.b320bep-6 -0x1.94c2dep-5 "
    "0x1.3509b0p-1 0x1.319958p-3 -0x1.ed247ep-3",
    "-0x1.c0bcb0p-3 -0x1.f5119ap-5 -0x1.973362p-4 "
    "0x1.a68bbep-2 0x1.41de2ep-2 0x1.1973a8p-2",
    "-0x1.c0323ap-3 -0x1.2a7f1ep-3 -0x1.4999b6p-3 "
    "0x1.893074p-3 0x1.a872a4p-2 0x1.4d6a56p-1",
    "-0x1.9a5626p-3 -0x1.b95510p-3 -0x1.cdd5cep-3 "
    "-0x1.fe7aa6p-6 0x1.bee4c0p-2 0x1.b387b4p-1",
    "-0x1.4f89e0p-3 -0x1.0b4112p-2 -0x1.222adcp-2 "
    "-0x1.dde346p-3 0x1.8733ecp-2 0x1.c0eda6p-1",
    "-0x1.3fbcc0p-6 -0x1.8d4d98p-4 -0x1.f48800p-4 "
    "-0x1.7e4870p-3 0x1.96c540p-5 0x1.badfccp-3",
    "-0x1.bf8110p-6 -0x1.23f56ap-3 -0x1.8a0340p-3 "
    "-0x1.217dcep-2 0x1.6da924p-4 0x1.8784dep-2",
    "0x1.aa173ap-8 -0x1.0e9876p-3 -0x1.b03ecap-3 "
    "-0x1.69dfd0p-2 0x1.603286p-6 0x1.5896fap-2",
]
_CAM_HD_UPDATES = [
    "-0x1.47ad86p-9 0x1.47ad84p-9 -0x1.47ad82p-9 "
    "0x1.47ad84p-9 -0x1.47ad84p-9 -0x1.47ad84p-9",
    "-0x1.43dac4p-8 0x1.44a796p-8 -0x1.e0fc6ep-9 "
    "0x1.481d2ep-8 -0x1.44a7c0p-8 -0x1.47c172p-8",
    "-0x1.42fcf4p-7 0x1.3c0536p-7 -0x1.82651cp-8 "
    "0x1.48db60p-7 -0x1.3cbb6ap-7 -0x1.47a802p-7",
    "-0x1.442e00p-6 0x1.28ba9ap-6 -0x1.e676c0p-7 "
    "0x1.49d1a0p-6 -0x1.2c5708p-6 -0x1.472526p-6",
    "-0x1.4697e6p-5 0x1.039fecp-5 -0x1.0063c6p-5 "
    "0x1.4ad55cp-5 -0x1.0ee686p-5 -0x1.45f520p-5",
    "-0x1.496538p-4 0x1.8cd770p-5 -0x1.05b060p-4 "
    "0x1.4b9b02p-4 -0x1.c09b12p-5 -0x1.43c2dep-4",
    "-0x1.4b68a4p-3 0x1.cef298p-5 -0x1.0fcdcep-3 "
    "0x1.4ba256p-3 -0x1.40becap-4 -0x1.401a20p-3",
    "-0x1.4a2240p-2 0x1.b7aa78p-6 -0x1.1cc32ap-2 "
    "0x1.49fb32p-2 -0x1.586070p-4 -0x1.3a3d36p-2",
    "-0x1.3e61e6p-1 -0x1.7fd3b2p-4 -0x1.2ae890p-1 "
    "0x1.448c4ep-1 -0x1.bbf99cp-6 -0x1.30aa2ep-1",
    "-0x1.11a56ep+0 -0x1.9102b6p-2 -0x1.2e6afap+0 "
    "0x1.35e41ep+0 0x1.6096c0p-3 -0x1.1fe208p+0",
    "-0x1.2e537cp-1 -0x1.d67d1ap-2 -0x1.702986p-1 "
    "0x1.087ac8p+0 0x1.2ec300p-2 -0x1.f273ccp-1",
    "-0x1.b2fdb6p-4 -0x1.7388eap-2 -0x1.198ed2p-3 "
    "0x1.85ea94p-1 0x1.2cb304p-2 -0x1.8a4392p-1",
]


def _public_factories():
  for name in optax_lr.__all__:
    value = getattr(optax_lr, name)
    if callable(value) and not isinstance(value, type):
      yield name, value


def test_every_public_factory_takes_at_most_twelve_parameters():
  counts = {name: len(inspect.signature(f).parameters) for name, f in _public_factories()}
  assert len(counts) > 30  # the functions of __all__, not only a few
  too_many = {name: n for name, n in counts.items() if n > MAX_PARAMETERS}
  assert not too_many, f"factories above {MAX_PARAMETERS} parameters: {too_many}"


def _run(opt, steps=12):
  """Updates of ``steps`` jitted steps on a small weighted quadratic whose centre moves."""
  params = {"b": jnp.array([0.5, -0.25], jnp.float32),
            "w": jnp.array([[1.0, -2.0], [0.5, 3.0]], jnp.float32)}
  centres = jnp.sin(jnp.arange(steps * 6, dtype=jnp.float32)).reshape(steps, 6)

  def loss(p, centre):
    x = jnp.concatenate([p["b"], p["w"].ravel()])
    return 0.5 * jnp.sum(jnp.linspace(0.5, 2.0, 6) * (x - centre) ** 2)

  state = opt.init(params)
  step = jax.jit(lambda p, s, c: opt.update(jax.grad(loss)(p, c), s, p, value=loss(p, c)))
  updates = []
  for t in range(steps):
    u, state = step(params, state, centres[t])
    params = optax.apply_updates(params, u)
    updates.append(np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(u)]))
  return np.stack(updates), state


def _expected(rows):
  return np.array([[float.fromhex(v) for v in row.split()] for row in rows], np.float32)


@pytest.mark.parametrize("trigger", [
    optax_lr.DropTrigger(threshold=90.0, max_threshold=120.0, threshold_rule="relative",
                         relative_threshold=0.3, smoothing=2, eps=1e-6)])
def test_autodrop_grouped_trigger_gives_the_flat_calls_updates_bit_for_bit(trigger):
  opt = optax_lr.autodrop_sgd(0.1, 2, momentum=0.9, nesterov=True, drop_factor=0.5,
                              drop_delay=2, trigger=trigger)
  updates, state = _run(opt)
  assert int(state.autodrop.num_drops) == 1
  np.testing.assert_array_equal(updates, _expected(_AUTODROP_UPDATES))


def test_cam_hd_grouped_rule_gives_the_flat_calls_updates_bit_for_bit():
  rule = optax_lr.RateRule("multiplicative", search=optax_lr.RateSearch(start=0.25),
                           backtrack=optax_lr.LossBacktrack(), min_learning_rate=1e-3,
                           store_previous_direction=True)
  opt = optax_lr.adam_cam_hd(1e-2, 0.1, levels=("parameter", "layer", "global"), rule=rule)
  updates, state = _run(opt)
  assert not isinstance(state.previous_direction, optax.EmptyState)  # the kept d_{t-1}
  np.testing.assert_array_equal(updates, _expected(_CAM_HD_UPDATES))


def test_default_option_objects_equal_none():
  # trigger=None and rule=None are the default objects, bit for bit.
  np.testing.assert_array_equal(
      _run(optax_lr.autodrop_sgd(0.1, 2, drop_delay=2))[0],
      _run(optax_lr.autodrop_sgd(0.1, 2, drop_delay=2, trigger=optax_lr.DropTrigger()))[0])
  np.testing.assert_array_equal(
      _run(optax_lr.adam_cam_hd(1e-2, 1e-3))[0],
      _run(optax_lr.adam_cam_hd(1e-2, 1e-3, rule=optax_lr.RateRule()))[0])
