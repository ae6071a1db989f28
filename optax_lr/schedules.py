"""Cyclical, random and decay-to-a-floor learning-rate schedules (Sasse's thesis).

Implements what optax lacks of the thesis's schedules:

- :func:`cyclical_schedule`: Smith's cyclical learning rates (CLR) with the values of PyTorch's
  ``torch.optim.lr_scheduler.CyclicLR`` for its three modes (``triangular``, ``triangular2``,
  ``exp_range``); :func:`n_cycle_schedule` is the thesis's "N-cycle" (one full min -> max -> min
  cycle every N epochs, Section 4.1). CLR-SGD is ``optax.sgd(cyclical_schedule(...))`` and
  CLR-Adam is ``optax.adam(cyclical_schedule(...))`` (thesis Section 3.2).
- :func:`random_schedule`: a fresh uniform rate in ``[min, max]`` every step (Section 4.3.3).
- :func:`exponential_decay_rate` / :func:`exponential_decay_schedule`: the per-step decay rate
  that takes ``max_lr`` to ``min_lr`` in ``n`` steps (Eq. 4.1), on ``optax.exponential_decay``.

The one-cycle policy is optax's own: ``optax.linear_onecycle_schedule`` and
``optax.cosine_onecycle_schedule``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from optax_lr import _checks

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _check_range(min_lr: float, max_lr: float) -> None:
  _checks.non_negative("min_lr", min_lr)
  _checks.positive("max_lr", max_lr)
  _checks.ordered("min_lr", min_lr, "max_lr", max_lr)


def cyclical_schedule(min_lr: float, max_lr: float, step_size_up: float,
                      step_size_down: float | None = None, mode: str = "triangular",
                      gamma: float = 1.0) -> optax.Schedule:
  """Cyclical learning rate (Smith 2017) with PyTorch ``CyclicLR``'s values.

  With ``total = step_size_up + step_size_down``, ``cycle = floor(1 + t / total)`` and
  ``x = 1 + t / total - cycle``, the rate at step ``t`` (from 0) is
  ``min_lr + (max_lr - min_lr) * s(x) * scale``, where ``s`` rises linearly from 0 to 1 over the
  first ``step_size_up`` steps of a cycle and falls back over ``step_size_down``, and ``scale``
  is 1 (``triangular``), ``1 / 2^(cycle - 1)`` (``triangular2``: the amplitude halves every
  cycle) or ``gamma^t`` (``exp_range``).

  Args:
    min_lr: lower bound ``>= 0`` (PyTorch's ``base_lr``).
    max_lr: upper bound ``>= min_lr``.
    step_size_up: steps ``> 0`` from the minimum to the maximum (may be fractional).
    step_size_down: steps ``> 0`` back down; ``None`` (default) uses ``step_size_up``.
    mode: ``"triangular"`` (default), ``"triangular2"`` or ``"exp_range"``.
    gamma: ``exp_range`` decay per step, in ``(0, 1]``.

  Returns:
    An ``optax.Schedule``: ``count -> rate`` (float32), usable inside ``jit``.

  References:
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, Section 3.1;
    Sasse's thesis, Section 2.4 and 4.1; PyTorch ``CyclicLR`` (``get_lr``).

  Example:
    >>> clr_adam = optax.adam(optax_lr.cyclical_schedule(1e-3, 0.3, step_size_up=2000))
  """
  _check_range(min_lr, max_lr)
  _checks.positive("step_size_up", step_size_up)
  if step_size_down is None:
    step_size_down = step_size_up
  _checks.positive("step_size_down", step_size_down)
  _checks.one_of("mode", mode, _CYCLIC_MODES)
  _checks.in_range("gamma", gamma, 0.0, 1.0, low_open=True)
  # No float(): the arguments may be injected arrays (optax.inject_hyperparams), traced in jit.
  up = jnp.asarray(step_size_up, jnp.float32)
  total = up + jnp.asarray(step_size_down, jnp.float32)

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    completed = jnp.floor(t / total)  # cycle - 1
    # The position inside the cycle, from the count rather than from x = t / total - ..., so
    # large counts keep their precision.
    position = t - completed * total
    rising = position <= up
    shape = jnp.where(rising, position / up, (total - position) / (total - up))
    if mode == "triangular":
      scale = 1.0
    elif mode == "triangular2":
      scale = jnp.exp2(-completed)
    else:
      scale = jnp.power(jnp.float32(gamma), t)
    low = jnp.asarray(min_lr, jnp.float32)
    return low + (jnp.asarray(max_lr, jnp.float32) - low) * jnp.clip(shape, 0.0, 1.0) * scale

  return schedule


def n_cycle_schedule(min_lr: float, max_lr: float, cycle_epochs: float, steps_per_epoch: int,
                     mode: str = "triangular", gamma: float = 1.0) -> optax.Schedule:
  """The thesis's "N-cycle": one full ``min -> max -> min`` cycle every ``cycle_epochs`` epochs.

  A symmetric :func:`cyclical_schedule` with
  ``step_size_up = step_size_down = cycle_epochs * steps_per_epoch / 2``. The thesis's best
  CIFAR-10 setting is the 25-cycle on ``[0.001, 1]`` with SGD (Table 4.2); its 100-cycle over 100
  epochs is Smith's 1-cycle without the final annihilation phase.

  Args:
    min_lr: lower bound ``>= 0``.
    max_lr: upper bound ``>= min_lr``.
    cycle_epochs: ``N > 0`` epochs per full cycle.
    steps_per_epoch: optimizer steps per epoch, an integer ``>= 1``.
    mode: as :func:`cyclical_schedule`.
    gamma: as :func:`cyclical_schedule`.

  Returns:
    An ``optax.Schedule``.

  References:
    Sasse's thesis, Section 4.1 (naming of the N-cycles) and Table 4.2.

  Example:
    >>> clr_sgd = optax.sgd(optax_lr.n_cycle_schedule(1e-3, 1.0, 25, steps_per_epoch=391),
    ...                     momentum=0.9)
  """
  _checks.positive("cycle_epochs", cycle_epochs)
  _checks.integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  half = cycle_epochs * steps_per_epoch / 2
  return cyclical_schedule(min_lr, max_lr, half, half, mode=mode, gamma=gamma)


def random_schedule(min_lr: float, max_lr: float, seed: int = 0) -> optax.Schedule:
  """A fresh uniform rate in ``[min_lr, max_lr)`` at every step (thesis Section 4.3.3).

  The rate is a pure function of the step: ``uniform(fold_in(PRNGKey(seed), count))``, so it
  needs no state, is identical under ``jit``/``scan``/restarts and differs between steps.

  Args:
    min_lr: lower bound ``>= 0``.
    max_lr: upper bound ``>= min_lr``.
    seed: integer seed ``>= 0``.

  Returns:
    An ``optax.Schedule``.

  References:
    Sasse's thesis, Section 4.3.3 (random rates in ``[0.001, 1]`` as a control of CLR).

  Example:
    >>> opt = optax.sgd(optax_lr.random_schedule(1e-3, 1.0, seed=0))
  """
  _check_range(min_lr, max_lr)
  _checks.integer_at_least("seed", seed, 0)
  key = jax.random.PRNGKey(seed)

  def schedule(count):
    sample_key = jax.random.fold_in(key, jnp.asarray(count, jnp.int32))
    return jax.random.uniform(sample_key, (), jnp.float32, minval=min_lr, maxval=max_lr)

  return schedule


def exponential_decay_rate(max_lr: float, min_lr: float, steps: float) -> float:
  """The per-step factor ``(min_lr / max_lr)^(1 / steps)`` that decays ``max_lr`` to ``min_lr``.

  Thesis Eq. 4.1: 100 epochs of 50000 / 128 steps from 1.0 to 0.001 give ``0.9998231771``.

  Args:
    max_lr: starting rate ``> 0``.
    min_lr: final rate in ``(0, max_lr]``.
    steps: number of decay steps ``> 0`` (may be fractional, as in Eq. 4.1).

  Returns:
    The decay rate, a Python float in ``(0, 1]``.

  References:
    Sasse's thesis, Section 4.3.2, Eq. 4.1.
  """
  _checks.positive("max_lr", max_lr)
  _checks.positive("min_lr", min_lr)
  _checks.positive("steps", steps)
  if min_lr > max_lr:
    raise ValueError(f"`min_lr` must be <= `max_lr`; got min_lr={min_lr!r} > max_lr={max_lr!r}.")
  return math.exp(math.log(min_lr / max_lr) / steps)


def exponential_decay_schedule(max_lr: float, min_lr: float, steps: float) -> optax.Schedule:
  """``optax.exponential_decay`` from ``max_lr`` reaching ``min_lr`` after ``steps`` steps.

  Decays every step by :func:`exponential_decay_rate` and stays at ``min_lr`` afterwards.

  Args:
    max_lr: starting rate ``> 0``.
    min_lr: final rate in ``(0, max_lr]``.
    steps: number of decay steps ``> 0``.

  Returns:
    An ``optax.Schedule``.

  References:
    Sasse's thesis, Eq. 4.1.

  Example:
    >>> opt = optax.sgd(optax_lr.exponential_decay_schedule(1.0, 1e-3, 100 * 391))
  """
  rate = exponential_decay_rate(max_lr, min_lr, steps)
  return optax.exponential_decay(init_value=max_lr, transition_steps=1, decay_rate=rate,
                                 end_value=min_lr)
