"""optax's ``mu_dtype`` in every Adam-based alias: a bfloat16 first moment, values near float32.

With ``mu_dtype=jnp.bfloat16`` the first moment is stored in bfloat16 (8 significant bits, relative
rounding at most 2^-8 per store), the second moment and the parameters keep float32, and each
update uses the float32 first moment before its cast, as ``optax.scale_by_adam`` does. So the
trajectory follows the float32 one to about the moment's rounding, and where a method is a known
multiple of ``optax.adam`` the identity holds with the same ``mu_dtype``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.3, -0.7, 0.1, 2.0])}


def _loss(p):
  return jnp.sum(jnp.cos(p["w"]) * p["w"]) + jnp.sum(p["b"] ** 4) + jnp.sum(p["w"] @ p["b"])


def _run(opt, steps=20, value=False):
  params, state = PARAMS, opt.init(PARAMS)
  update = jax.jit(opt.update)
  for _ in range(steps):
    loss, grads = jax.value_and_grad(_loss)(params)
    extra = {"value": loss} if value else {}
    updates, state = update(grads, state, params, **extra)
    params = optax.apply_updates(params, updates)
  return params, state


_MOMENT_STATES = (optax.ScaleByAdamState, optax_lr.ScaleByAdaBoundState)


def _adam_states(state):
  return [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _MOMENT_STATES))
          if isinstance(x, _MOMENT_STATES)]


ALIASES = {
    "adam_hd": (lambda **kw: optax_lr.adam_hd(0.01, hypergrad_lr=1e-4, **kw), False),
    "adam_cam_hd": (lambda **kw: optax_lr.adam_cam_hd(
        0.01, hypergrad_lr=1e-4, levels=("parameter", "layer", "global"), **kw), False),
    "cus_adam": (lambda **kw: optax_lr.cus_adam(0.01, **kw), False),
    "adabound": (lambda **kw: optax_lr.adabound(0.01, **kw), False),
    "l4_adam": (lambda **kw: optax_lr.l4_adam(0.05, **kw), True),
}


@pytest.mark.parametrize("name", list(ALIASES))
def test_bfloat16_first_moment_close_to_float32(name):
  make, value = ALIASES[name]
  ours, state = _run(make(mu_dtype=jnp.bfloat16), value=value)
  reference, reference_state = _run(make(), value=value)
  (adam,), (reference_adam,) = _adam_states(state), _adam_states(reference_state)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(adam.mu))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(adam.nu))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(ours))
  # The state holds the same buffers, the first moment at half the bytes.
  assert [x.shape for x in jax.tree.leaves(state)] == [
      x.shape for x in jax.tree.leaves(reference_state)]
  # 20 steps from the same start: the parameters moved by O(0.1) and agree to 3e-2 of that (a
  # 2^-8 rounding per step, carried through 20 steps of the dynamics).
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(reference), jax.tree.leaves(PARAMS), strict=True))
  assert moved > 0.05
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
    np.testing.assert_allclose(a, b, atol=3e-2 * moved)
  for a, b in zip(jax.tree.leaves(adam.mu), jax.tree.leaves(reference_adam.mu), strict=True):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=3e-2 * float(jnp.max(jnp.abs(b))))


def test_cus_adam_bfloat16_is_adam_times_one_minus_b1_power():
  # The identity of CUS-Adam holds with the same mu_dtype: the updates are (1 - b1^t) times
  # optax.adam's, both computed from the float32 first moment before its bfloat16 cast.
  b1 = 0.8
  cus = optax_lr.cus_adam(0.05, b1=b1, mu_dtype=jnp.bfloat16)
  adam = optax.adam(0.05, b1=b1, mu_dtype=jnp.bfloat16)
  cus_state, adam_state = cus.init(PARAMS), adam.init(PARAMS)
  for t in range(1, 8):
    grads = jax.tree.map(lambda x, t=t: jnp.sin(t * (x + 1.0)), PARAMS)
    cus_updates, cus_state = cus.update(grads, cus_state)
    adam_updates, adam_state = adam.update(grads, adam_state)
    for c, a in zip(jax.tree.leaves(cus_updates), jax.tree.leaves(adam_updates), strict=True):
      np.testing.assert_allclose(c, (1 - b1 ** t) * a, rtol=1e-5, atol=1e-8)
  jax.tree.map(np.testing.assert_array_equal, cus_state[0].mu, adam_state[0].mu)


@pytest.mark.parametrize("name", ["adam_cam_hd", "cus_adam", "adabound", "l4_adam"])
def test_bad_mu_dtype(name):
  make, _ = ALIASES[name]
  with pytest.raises(TypeError, match="mu_dtype"):
    make(mu_dtype="not a dtype")
  with pytest.raises(ValueError, match="mu_dtype"):
    make(mu_dtype=jnp.int32)
