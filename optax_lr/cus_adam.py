"""CUS-Adam (Cyclical Update Step Adam): Adam without the first-moment bias correction.

Implements Sasse's thesis (*Investigating the Influence of Learning Rates on the Learning Speed of
Neural Networks*, University of Stuttgart, 2021), Section 3.2: with ``m_hat = m`` instead of ``m /
(1 - b1^t)`` the first steps are damped by ``1 - b1^t`` (a warm-up that rises to 1 with time
constant ``1 / (1 - b1)`` steps), which with Adam's own step-size annealing gives a rise-and-fall of
the update size: a built-in "cycle". The second-moment correction ``v_hat = v / (1 - b2^t)`` is kept
(the documentation's thesis page states the reading).

Built from optax's Adam pieces (``optax.tree.update_moment``, ``update_moment_per_elem_norm``,
``bias_correction`` and ``optax.ScaleByAdamState``), so it checkpoints and interoperates exactly
like ``optax.scale_by_adam``. Its update equals ``optax.adam``'s times ``1 - b1^t``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_lr import _base, _checks


def scale_by_cus_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                      mu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
  """Adam's direction ``m / (sqrt(v_hat) + eps)`` with no first-moment bias correction.

  Args:
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``>= 0``, added to ``sqrt(v_hat)``.
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype. As in ``optax.scale_by_adam``, the
      direction is computed from the first moment before its cast to ``mu_dtype``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra ``update`` keyword arguments are
    ignored) whose state is ``optax.ScaleByAdamState`` (two parameter-sized buffers in the
    parameters' dtypes, the first in ``mu_dtype`` when given, as Adam).

  References:
    Sasse's thesis, Section 3.2 ("CUS-Adam"); Kingma and Ba 2015, Algorithm 1.

  Example:
    >>> opt = optax.chain(optax_lr.scale_by_cus_adam(), optax.scale_by_learning_rate(1e-3))
  """
  _base.check_adam_arguments(b1, b2, eps)
  mu_dtype = _base.check_mu_dtype(mu_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                  mu=optax.tree.zeros_like(params, dtype=mu_dtype),
                                  nu=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_int32_increment(state.count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    # The one difference from Adam: m is used as is (m_hat = m), biased towards zero early on.
    directions = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu_hat)
    return directions, optax.ScaleByAdamState(
        count=count, mu=optax.tree.cast_like(mu, state.mu), nu=optax.tree.cast_like(nu, state.nu))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def cus_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-8, mu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
  """CUS-Adam: ``optax.adam`` without the first-moment bias correction (thesis Section 3.2).

  Args:
    learning_rate: a rate ``> 0`` or an optax schedule (for example
      :func:`optax_lr.cyclical_schedule`): CUS-Adam applies the rate as given, so any schedule
      works. ``None``, bools and strings raise ``TypeError``.
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``>= 0``.
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; the update at step ``t`` (from 1) is exactly
    ``(1 - b1^t)`` times ``optax.adam``'s (with the same ``mu_dtype``). Extra ``update``
    keyword arguments are ignored.

  References:
    Sasse's thesis, Section 3.2 and Section 4.4 (evaluation).

  Example:
    >>> opt = optax_lr.cus_adam(1e-3)
    >>> opt = optax.chain(optax.add_decayed_weights(5e-4), optax_lr.cus_adam(1e-3))
  """
  _checks.schedule_or_positive("learning_rate", learning_rate)
  return optax.chain(scale_by_cus_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype),
                     optax.scale_by_learning_rate(learning_rate))
