"""L4 (Rolínek and Martius, NeurIPS 2018): hand-derived steps from Eq. 3 and Algorithm 1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lr


def _step(opt, state, grads, value, params=None):
  params = params if params is not None else jax.tree.map(jnp.zeros_like, grads)
  return opt.update(grads, state, params, value=jnp.float32(value))


def test_l4_momentum_three_hand_derived_steps():
  # L4Mom: v = g_hat, the bias-corrected moving average (decay 0.9) of the gradients, so
  # eta = alpha (L - gamma L_min) / ||g_hat||^2; alpha 0.15, gamma 0.9, gamma0 0.75, tau 1e3.
  opt = optax_lr.l4_momentum()
  state = opt.init({"w": jnp.zeros(2)})

  # Step 0: L_min = 0.75 * 2 = 1.5; g_hat = g0 = (3, 4), ||g_hat||^2 = 25;
  # eta = 0.15 (2 - 0.9 * 1.5) / 25 = 0.15 * 0.65 / 25 = 0.0039; then L_min = 1.5 * 1.001.
  updates, state = _step(opt, state, {"w": jnp.array([3.0, 4.0])}, 2.0)
  assert float(state.learning_rate) == pytest.approx(0.0039, rel=1e-6)
  np.testing.assert_allclose(updates["w"], [-0.0039 * 3, -0.0039 * 4], rtol=1e-6)
  assert float(state.min_loss) == pytest.approx(1.5015, rel=1e-6)

  # Step 1, loss 1.0 below L_min: L_min = 1.0. Average 0.9 * (0.3, 0.4) + 0.1 * (0, 5) =
  # (0.27, 0.86), bias correction 1 - 0.81 = 0.19: g_hat = (0.27, 0.86) / 0.19.
  # eta = 0.15 (1 - 0.9) / ||g_hat||^2 = 0.015 * 0.0361 / (0.0729 + 0.7396).
  updates, state = _step(opt, state, {"w": jnp.array([0.0, 5.0])}, 1.0)
  g_hat = np.array([0.27, 0.86]) / 0.19
  eta = 0.015 * 0.0361 / 0.8125
  assert float(state.learning_rate) == pytest.approx(eta, rel=1e-5)
  np.testing.assert_allclose(updates["w"], -eta * g_hat, rtol=1e-5)
  assert float(state.min_loss) == pytest.approx(1.001, rel=1e-6)

  # Step 2, loss 1.2 above L_min = 1.001 (kept): eta = 0.15 (1.2 - 0.9 * 1.001) / ||g_hat||^2,
  # average 0.9 * (0.27, 0.86) + 0.1 * (1, 1) = (0.343, 0.874), correction 1 - 0.729 = 0.271.
  updates, state = _step(opt, state, {"w": jnp.array([1.0, 1.0])}, 1.2)
  g_hat = np.array([0.343, 0.874]) / 0.271
  eta = 0.15 * (1.2 - 0.9 * 1.001) / float(g_hat @ g_hat)
  assert float(state.learning_rate) == pytest.approx(eta, rel=1e-5)
  np.testing.assert_allclose(updates["w"], -eta * g_hat, rtol=1e-5)
  assert float(state.min_loss) == pytest.approx(1.001 * 1.001, rel=1e-6)
  assert int(state.count) == 3


def test_l4_adam_first_step_and_direction():
  # L4Adam: v = Adam's m_hat / (sqrt(v_hat) + 1e-4); at step 0 m_hat = g, sqrt(v_hat) = |g|, and
  # the gradient estimate is g: <g, v> = sum g^2 / (|g| + 1e-4). Loss 2: eta = 0.15 * 0.65 / <g, v>.
  opt = optax_lr.l4_adam()
  grads = {"w": jnp.array([1.0, -2.0, 3.0])}
  updates, state = _step(opt, opt.init(grads), grads, 2.0)
  g = np.array([1.0, -2.0, 3.0])
  v = g / (np.abs(g) + 1e-4)
  eta = 0.15 * 0.65 / float(g @ v)
  assert float(state.learning_rate) == pytest.approx(eta, rel=1e-5)
  np.testing.assert_allclose(updates["w"], -eta * v, rtol=1e-5)
  # A second step is eta from the new statistics; compare with Adam's own direction.
  adam = optax.scale_by_adam(eps=1e-4)
  adam_state = adam.init(grads)
  _, adam_state = adam.update(grads, adam_state)
  second = {"w": jnp.array([0.5, 0.5, -1.0])}
  direction, _ = adam.update(second, adam_state)
  updates, state = _step(opt, state, second, 1.0)
  g_hat = (0.9 * 0.1 * g + 0.1 * np.array([0.5, 0.5, -1.0])) / 0.19
  eta = 0.15 * (1.0 - 0.9 * 1.0) / float(g_hat @ np.asarray(direction["w"]))
  assert float(state.learning_rate) == pytest.approx(eta, rel=1e-5)
  np.testing.assert_allclose(updates["w"], -eta * np.asarray(direction["w"]), rtol=1e-5)


@pytest.mark.parametrize("make", [optax_lr.l4_adam, optax_lr.l4_momentum], ids=["adam", "mom"])
def test_invariant_to_the_scale_of_the_loss(make):
  # Section 2.2: scaling the loss by k scales L, L_min and the gradients by k; the update of both
  # L4Adam (Adam's direction is scale-free) and L4Mom (g_hat / ||g_hat||^2 * k) is unchanged.
  rng = np.random.default_rng(0)
  grads = [{"w": jnp.asarray(rng.normal(size=5), jnp.float32)} for _ in range(4)]
  losses = [3.0, 2.5, 2.7, 1.9]

  def run(scale):
    opt = make()
    state = opt.init(grads[0])
    out = []
    for g, value in zip(grads, losses, strict=True):
      updates, state = _step(opt, state, jax.tree.map(lambda x: scale * x, g), scale * value)
      out.append(np.asarray(updates["w"]))
    return np.stack(out)

  np.testing.assert_allclose(run(1000.0), run(1.0), rtol=2e-3)


def test_non_finite_loss_keeps_min_loss_and_gives_rate_zero():
  opt = optax_lr.l4_momentum()
  grads = {"w": jnp.array([1.0, 2.0])}
  _, state = _step(opt, opt.init(grads), grads, 2.0)
  before = float(state.min_loss)
  updates, state = _step(opt, state, grads, float("nan"))
  assert float(state.min_loss) == pytest.approx(before * 1.001)
  assert float(state.learning_rate) == 0.0
  np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
  _, state = _step(opt, state, grads, 1.0)
  assert np.isfinite(float(state.learning_rate)) and float(state.learning_rate) > 0


def test_needs_value_and_forwards_extra_args():
  opt = optax_lr.l4_adam()
  grads = {"w": jnp.ones(2)}
  # The loss is missing: the error names L4 and the keyword, and says how to pass it.
  with pytest.raises(ValueError, match=r"^L4 needs the training loss, as the keyword `value`") as e:
    opt.update(grads, opt.init(grads), grads)
  assert "value=loss" in str(e.value)
  assert "TrainState" in str(e.value) and "nnx.Optimizer" in str(e.value)
  with pytest.raises(ValueError, match="`value`"):
    jax.jit(lambda g, s: opt.update(g, s, g))(grads, opt.init(grads))
  # Unused extra keywords are accepted (optax's contract).
  opt.update(grads, opt.init(grads), grads, value=1.0, next_grads=grads)


def test_value_and_extra_args_reach_the_inner_transform():
  # An inner transform that keeps the `value` it receives in its state: L4 passes the loss on
  # (and the unknown keyword with it), as optax.chain gives every member all keywords.
  def init_fn(params):
    del params
    return jnp.zeros(())

  def update_fn(updates, state, params=None, *, value, seen=0.0, **extra_args):
    del state, params, extra_args
    return updates, jnp.asarray(value + seen, jnp.float32)

  opt = optax_lr.scale_by_l4(optax.GradientTransformationExtraArgs(init_fn, update_fn))
  grads = {"w": jnp.array([1.0, -2.0])}
  state = opt.init(grads)
  # Direction g, estimate g: eta = 0.15 (2.5 - 0.9 * 0.75 * 2.5) / ||g||^2 = 0.15 * 0.8125 / 5.
  updates, state = opt.update(grads, state, grads, value=jnp.float32(2.5), seen=0.5, unused=1)
  assert float(state.inner_state) == 3.0
  np.testing.assert_allclose(updates["w"], -0.15 * 0.8125 / 5.0 * np.array([1.0, -2.0]),
                             rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    ({"fraction": 0.0}, "fraction"), ({"min_loss_factor": 1.5}, "min_loss_factor"),
    ({"initial_min_loss_factor": 0.0}, "initial_min_loss_factor"),
    ({"min_loss_forget_time": -1.0}, "min_loss_forget_time"), ({"eps": -1.0}, "eps")])
def test_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optax_lr.scale_by_l4(**kwargs)
  with pytest.raises(ValueError, match="momentum"):
    optax_lr.l4_momentum(momentum=1.0)


def test_linearised_progress_on_least_squares():
  # A consistent linear system (L_min = 0 attainable). Once L_min tracks the falling loss
  # (L_min = L), each step removes alpha (L - gamma L_min) = alpha (1 - gamma) L of the linearised
  # loss, so over 300 steps the loss falls by about (1 - 0.15 * 0.1)^300 = 0.011; measured within
  # a factor of 2 of that for both variants.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
  y = x @ jnp.array([1.0, -2.0, 0.5, 3.0])

  def loss(p):
    return 0.5 * jnp.mean((x @ p - y) ** 2)

  predicted = (1 - 0.15 * 0.1) ** 300
  for make in (optax_lr.l4_adam, optax_lr.l4_momentum):
    opt = make()
    params = jnp.zeros(4)
    state = opt.init(params)
    step = jax.jit(lambda p, s, opt=opt: opt.update(jax.grad(loss)(p), s, p, value=loss(p)))
    losses = []
    for _ in range(600):
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
      losses.append(float(loss(params)))
    assert 0.5 * predicted < losses[-1] / losses[299] < 2.0 * predicted
    assert losses[-1] < 1e-3 * float(loss(jnp.zeros(4)))
