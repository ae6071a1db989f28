"""The noisy quadratic model of the AutoDrop paper (Teng, Wang, Choromanska; Definition 2),
Theorem 1, and Figures 1 and 3.

``L(x) = 1/2 (x - c)^T A (x - c)`` with ``c ~ N(0, Sigma)`` drawn afresh at every step,
``A = diag(0.1, 0.2, ..., 20)``, ``Sigma = A`` and ``x`` in ``R^200`` (the model of Zhang et al.
2019 that the AutoDrop paper uses). Gradient descent ``x <- x - lr A (x - c_t)`` on it reaches a
stationary distribution; Theorem 1 predicts the mean cosine between consecutive steps there::

  C* ~= -(lr / 2) sum_i a_i^3 s_i / (2 - lr a_i) / sum_i a_i^2 s_i / (2 - lr a_i)   (Eq. 6, 23)

(``s_i`` the noise variances), so the angle saturates between 90 and 120 degrees. Everything here
is pure JAX (``lax.scan`` under ``jit``, chains by ``vmap``). Run as::

  python -m train.nqm --out docs/figures [--quick]

to write the Theorem 1 table (``nqm_theorem1.md``, ``nqm_theorem1.json``), the Figure 1 curves
(``nqm_figure1.png``: loss and averaged angle for constant rates), the Figure 3 run
(``nqm_figure3.png``: AutoDrop halving the rate from 0.06 to a floor of 0.001) and the numbers
behind both figures (``nqm_runs.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_lr
from train import io_utils

DIMENSION = 200
LEARNING_RATES = (0.06, 0.03, 0.01, 0.001)
ANGLE_WINDOW = 20  # iterations the figures average the angle over (Figures 1 and 3)


def curvatures(dimension: int = DIMENSION) -> np.ndarray:
  """The diagonal of ``A``: ``(1, 2, ..., dimension) / 10``."""
  return np.arange(1, dimension + 1, dtype=np.float64) / 10.0


def noise_variances(dimension: int = DIMENSION) -> np.ndarray:
  """The diagonal of ``Sigma``, equal to that of ``A`` (Definition 2's setting)."""
  return curvatures(dimension)


def excess_loss(x: jax.Array, a: jax.Array) -> jax.Array:
  """``E_c L(x) - E_c L(0) = 1/2 sum_i a_i x_i^2``: the expected loss above the noise floor."""
  return 0.5 * jnp.sum(a * jnp.square(x), axis=-1)


def stationary_variance(learning_rate: float, a: np.ndarray, variances: np.ndarray) -> np.ndarray:
  """``lim Var[x_i] = lr a_i s_i / (2 - lr a_i)`` for gradient descent (Appendix A, Eq. 13)."""
  return learning_rate * a * variances / (2.0 - learning_rate * a)


def stationary_excess_loss(learning_rate: float, dimension: int = DIMENSION) -> float:
  """The limit of :func:`excess_loss` under gradient descent with a constant rate."""
  a, variances = curvatures(dimension), noise_variances(dimension)
  return float(0.5 * np.sum(a * stationary_variance(learning_rate, a, variances)))


def theorem1_inner_product(learning_rate: float, dimension: int = DIMENSION) -> float:
  """``I* = lim E<s_t, s_{t+1}> = -lr^3 sum_i a_i^3 s_i / (2 - lr a_i)`` (Theorem 1, Eq. 5)."""
  a, variances = curvatures(dimension), noise_variances(dimension)
  return float(-learning_rate**3 * np.sum(a**3 * variances / (2.0 - learning_rate * a)))


def theorem1_cosine(learning_rate: float, dimension: int = DIMENSION) -> float:
  """``C*``, the predicted limit of the mean cosine between consecutive steps (Eq. 6, 23)."""
  a, variances = curvatures(dimension), noise_variances(dimension)
  weights = a**2 * variances / (2.0 - learning_rate * a)
  return float(-learning_rate / 2.0 * np.sum(a * weights) / np.sum(weights))


def cosine_lower_bound(learning_rate: float, dimension: int = DIMENSION) -> float:
  """``-lr max_i a_i / 2``, Theorem 1's bound on ``C*``."""
  return float(-learning_rate * curvatures(dimension).max() / 2.0)


def _cosine(u: jax.Array, v: jax.Array) -> jax.Array:
  return jnp.sum(u * v, axis=-1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1))


def simulate_stationary_cosines(learning_rate: float, steps: int, chains: int, key: jax.Array,
                                dimension: int = DIMENSION) -> jax.Array:
  """Cosines between consecutive gradient-descent steps at stationarity, ``[steps, chains]``.

  Each chain starts from the exact stationary distribution (independent Gaussian coordinates with
  :func:`stationary_variance`), so no burn-in is needed and every step is a sample of the limit
  that Theorem 1 describes.
  """
  return _stationary_cosines(jnp.float32(learning_rate), int(steps), int(chains), key,
                             int(dimension))


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _stationary_cosines(learning_rate, steps, chains, key, dimension):
  a = jnp.asarray(curvatures(dimension), jnp.float32)
  variances = jnp.asarray(noise_variances(dimension), jnp.float32)
  start_key, first_key, run_key = jax.random.split(key, 3)
  spread = jnp.sqrt(learning_rate * a * variances / (2.0 - learning_rate * a))  # Eq. 13
  x = jax.random.normal(start_key, (chains, dimension)) * spread

  def step(x, key):
    c = jax.random.normal(key, x.shape) * jnp.sqrt(variances)
    s = -learning_rate * a * (x - c)
    return x + s, s

  x, previous = step(x, first_key)

  def body(carry, key):
    x, previous = carry
    x, s = step(x, key)
    return (x, s), _cosine(s, previous)

  _, cosines = jax.lax.scan(body, (x, previous), jax.random.split(run_key, steps))
  return cosines


def theorem1_table(learning_rates: Sequence[float] = LEARNING_RATES, steps: int = 2000,
                   chains: int = 128, seed: int = 0,
                   dimension: int = DIMENSION) -> list[dict[str, float]]:
  """Simulated mean cosine of consecutive steps against Theorem 1, one row per rate.

  Returns:
    Rows with the rate, ``C*`` (Theorem 1), the simulated mean cosine and its standard error
    (over chains), their relative difference, the saturation angle ``arccos(C*)``, the simulated
    mean angle, ``I*`` and the bound ``-lr max a / 2``.
  """
  rows = []
  for index, rate in enumerate(learning_rates):
    cosines = np.asarray(simulate_stationary_cosines(
        rate, steps, chains, jax.random.fold_in(jax.random.key(seed), index), dimension),
        np.float64)
    predicted = theorem1_cosine(rate, dimension)
    simulated = float(cosines.mean())
    rows.append({
        "learning_rate": float(rate),
        "theorem1_cosine": predicted,
        "simulated_cosine": simulated,
        "simulated_cosine_stderr": float(cosines.mean(axis=0).std(ddof=1) / math.sqrt(chains)),
        "relative_difference": (simulated - predicted) / abs(predicted),
        "theorem1_angle_degrees": math.degrees(math.acos(predicted)),
        "simulated_angle_degrees": float(np.degrees(np.arccos(np.clip(cosines, -1, 1))).mean()),
        "theorem1_inner_product": theorem1_inner_product(rate, dimension),
        "cosine_lower_bound": cosine_lower_bound(rate, dimension),
        "steps": steps,
        "chains": chains,
    })
  return rows


def theorem1_markdown(rows: Sequence[dict[str, float]]) -> str:
  """The table of :func:`theorem1_table` in markdown."""
  lines = [
      "| rate | C* (Theorem 1) | simulated mean cosine | rel. diff. | arccos C* | "
      "simulated mean angle | bound -rate max a / 2 |",
      "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for row in rows:
    lines.append(
        f"| {row['learning_rate']:g} | {row['theorem1_cosine']:.4f} | "
        f"{row['simulated_cosine']:.4f} ± {row['simulated_cosine_stderr']:.4f} | "
        f"{100 * row['relative_difference']:+.2f}% | {row['theorem1_angle_degrees']:.2f}° | "
        f"{row['simulated_angle_degrees']:.2f}° | {row['cosine_lower_bound']:.2f} |")
  return "\n".join(lines) + "\n"


def initial_point(dimension: int = DIMENSION) -> np.ndarray:
  """The start of the Figure 1 and 3 runs: every coordinate at 10 (excess loss about 1e5)."""
  return np.full((dimension,), 10.0, np.float32)


def run(optimizer: optax.GradientTransformation, steps: int, key: jax.Array,
        x0: np.ndarray | None = None, dimension: int = DIMENSION) -> dict[str, jax.Array]:
  """Runs ``optimizer`` on the noisy quadratic model from ``x0``; per-step traces.

  The stochastic gradient at step t is ``A (x_t - c_t)`` with a fresh ``c_t ~ N(0, Sigma)``.

  Returns:
    ``loss``: :func:`excess_loss` after each step; ``angle``: the angle in degrees between this
    step and the previous one (NaN at the first step); ``learning_rate``: the first rate found
    in the optimizer state after each step (NaN when it holds none).
  """
  x0 = initial_point(dimension) if x0 is None else np.asarray(x0, np.float32)
  return _run(optimizer, int(steps), key, jnp.asarray(x0))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(optimizer, steps, key, x0):
  dimension = x0.shape[-1]
  a = jnp.asarray(curvatures(dimension), jnp.float32)
  noise_scale = jnp.sqrt(jnp.asarray(noise_variances(dimension), jnp.float32))

  def first_rate(state: Any) -> jax.Array:
    rates = optax_lr.learning_rates(state)
    if not rates:
      return jnp.full((), jnp.nan, jnp.float32)
    return jnp.asarray(next(iter(rates.values())), jnp.float32)

  def body(carry, key):
    x, state, previous = carry
    c = jax.random.normal(key, x.shape) * noise_scale
    updates, state = optimizer.update(a * (x - c), state, x)
    new_x = optax.apply_updates(x, updates)
    step = new_x - x
    angle = jnp.degrees(jnp.arccos(jnp.clip(_cosine(step, previous), -1.0, 1.0)))
    return (new_x, state, step), {"loss": excess_loss(new_x, a), "angle": angle,
                                  "learning_rate": first_rate(state)}

  carry = (x0, optimizer.init(x0), jnp.full_like(x0, jnp.nan))
  _, trace = jax.lax.scan(body, carry, jax.random.split(key, steps))
  return trace


def moving_average(values: np.ndarray, window: int = ANGLE_WINDOW) -> np.ndarray:
  """Trailing mean over ``window`` values (NaN until ``window`` finite values exist)."""
  values = np.asarray(values, np.float64)
  out = np.full(values.shape, np.nan)
  finite = np.nan_to_num(values)
  sums = np.cumsum(np.concatenate([[0.0], finite]))
  counts = np.cumsum(np.concatenate([[0], np.isfinite(values).astype(int)]))
  for end in range(window, len(values) + 1):
    if counts[end] - counts[end - window] == window:
      out[end - 1] = (sums[end] - sums[end - window]) / window
  return out


def figure3_optimizer(initial_rate: float = 0.06,
                      min_learning_rate: float = 0.001) -> optax.GradientTransformation:
  """Section 3's AutoDrop on the noisy quadratic model, as :func:`optax_lr.scale_by_autodrop`.

  Gradient descent whose rate halves when the change of the angle averaged over 20 iterations
  falls below 0.01 degree between consecutive iterations, from 0.06 down to 0.001: the angle is
  taken every iteration (``steps_per_epoch = 1``), ``smoothing = 20``, ``drop_factor = 0.5``.
  The paper's simple algorithm drops at once with a fixed threshold, hence ``drop_delay = 1`` (no
  averaging) and ``max_threshold = threshold``.
  """
  return optax_lr.scale_by_autodrop(
      initial_rate, steps_per_epoch=1, drop_factor=0.5, min_learning_rate=min_learning_rate,
      drop_delay=1,
      trigger=optax_lr.DropTrigger(threshold=0.01, max_threshold=0.01, smoothing=ANGLE_WINDOW))


def figure1(out: pathlib.Path, steps: int, seed: int = 0) -> dict[str, Any]:
  """Loss and averaged angle for gradient descent at each constant rate (Figure 1)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  traces = {rate: run(optax.sgd(rate), steps, jax.random.key(seed)) for rate in LEARNING_RATES}
  figure, (loss_axis, angle_axis) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
  for rate, trace in traces.items():
    loss_axis.plot(np.asarray(trace["loss"]), lw=1, label=f"lr = {rate:g}")
    angle_axis.plot(moving_average(np.asarray(trace["angle"])), lw=1, label=f"lr = {rate:g}")
  loss_axis.set(xscale="log", yscale="log", xlabel="iteration", ylabel="excess loss  ½ xᵀAx",
                title="Noisy quadratic model: loss")
  angle_axis.set(xscale="log", xlabel="iteration", ylabel="angle between steps (°), mean of 20",
                 title="Angular velocity (dashed: Theorem 1)")
  angle_axis.axhline(90, color="gray", lw=0.5, ls=":")
  for rate in LEARNING_RATES:
    angle_axis.axhline(math.degrees(math.acos(theorem1_cosine(rate))), color="gray", lw=0.5,
                       ls="--")
  loss_axis.legend(fontsize=8)
  figure.tight_layout()
  io_utils.write_atomic(out / "nqm_figure1.png", io_utils.figure_png(figure, dpi=90))
  plt.close(figure)
  return {f"{rate:g}": {"final_loss": float(np.mean(np.asarray(t["loss"])[-steps // 10:])),
                        "final_angle": float(np.nanmean(np.asarray(t["angle"])[-steps // 10:]))}
          for rate, t in traces.items()}


def figure3(out: pathlib.Path, steps: int, seed: int = 0) -> dict[str, Any]:
  """AutoDrop on the noisy quadratic model against the constant extremes (Figure 3)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  key = jax.random.key(seed)
  autodrop = run(figure3_optimizer(), steps, key)
  constant = {rate: run(optax.sgd(rate), steps, key) for rate in (0.06, 0.001)}
  figure, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=90)
  axes[0].plot(np.asarray(constant[0.06]["loss"]), lw=1, color="tab:blue", label="lr = 0.06")
  axes[0].plot(np.asarray(constant[0.001]["loss"]), lw=1, color="tab:red", label="lr = 0.001")
  axes[0].plot(np.asarray(autodrop["loss"]), lw=1, color="black", label="AutoDrop")
  axes[0].set(xscale="log", yscale="log", xlabel="iteration", ylabel="excess loss",
              title="Loss")
  axes[0].legend(fontsize=8)
  axes[1].plot(moving_average(np.asarray(autodrop["angle"])), lw=1, color="black")
  axes[1].set(xscale="log", xlabel="iteration", ylabel="angle (°), mean of 20",
              title="Angular velocity (AutoDrop)")
  axes[2].plot(np.asarray(autodrop["learning_rate"]), lw=1, color="black")
  axes[2].set(xscale="log", yscale="log", xlabel="iteration", ylabel="learning rate",
              title="AutoDrop rate")
  figure.tight_layout()
  io_utils.write_atomic(out / "nqm_figure3.png", io_utils.figure_png(figure, dpi=90))
  plt.close(figure)
  rates = np.asarray(autodrop["learning_rate"])
  tail = slice(-steps // 10, None)
  return {
      "autodrop_final_loss": float(np.mean(np.asarray(autodrop["loss"])[tail])),
      "constant_0.06_final_loss": float(np.mean(np.asarray(constant[0.06]["loss"])[tail])),
      "constant_0.001_final_loss": float(np.mean(np.asarray(constant[0.001]["loss"])[tail])),
      "drop_iterations": [int(i) + 1 for i in np.flatnonzero(np.diff(rates) < 0)],
      "final_learning_rate": float(rates[-1]),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/figures"))
  parser.add_argument("--quick", action="store_true", help="fewer steps and chains (a smoke run)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  table_steps, chains, run_steps = (500, 16, 3000) if args.quick else (4000, 256, 20000)
  rows = theorem1_table(steps=table_steps, chains=chains, seed=args.seed)
  io_utils.write_atomic(args.out / "nqm_theorem1.md", theorem1_markdown(rows))
  io_utils.write_atomic(args.out / "nqm_theorem1.json", json.dumps(rows, indent=2) + "\n")
  runs = {"steps": run_steps, "seed": args.seed,
          "figure1": figure1(args.out, run_steps, args.seed),
          "figure3": figure3(args.out, run_steps, args.seed)}
  io_utils.write_atomic(args.out / "nqm_runs.json", json.dumps(runs, indent=2) + "\n")
  print(theorem1_markdown(rows))
  print(json.dumps(runs, indent=2))


if __name__ == "__main__":
  main()
