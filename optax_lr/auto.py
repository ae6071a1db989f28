"""Ready-made automatic rates: the library's recommendation when the rate is unknown.

:func:`auto_adam` and :func:`auto_sgd` are hypergradient descent (Baydin et al., "Online Learning
Rate Adaptation with Hypergradient Descent", ICLR 2018) with the scale-free multiplicative rule and
both safeguards on, with the settings the documentation recommends as their defaults, so that
``optax_lr.auto_adam()`` is the whole recommendation:

- the multiplicative rule ``lr <- lr (1 + beta cos(g_t, d_{t-1}))``: the rate moves by at most a
  factor ``1 +- beta`` per step, whatever the scale of the gradients or of the rate, and settles
  where consecutive directions decorrelate (``E cos = 0``);
- the rate search (:class:`optax_lr.RateSearch`) starting a thousand times below
  ``learning_rate`` and doubling the rate while consecutive directions agree, so the initial rate
  is an upper guess that is never applied when too large;
- the loss backtrack (:class:`optax_lr.LossBacktrack`): a step whose training loss rises above
  1.5 times its running average cuts the rate at once. It reads the loss: ``update`` needs
  ``value=loss``.

One ``beta`` per direction for every model and initial rate, chosen on the digits tasks over
initial rates 1e-4 to 1e-1: 0.1 for Adam's direction, 0.03 for the Nesterov direction, whose
noisier cosine drives a larger ``beta`` to a rate too low. The measurements, and where these
defaults trail the learning-rate-free peers, are on the documentation's "which method" page.
"""

from __future__ import annotations

from typing import Any

import optax

from optax_lr import _checks
from optax_lr.hypergradient import adam_hd, sgd_hd
from optax_lr.safeguards import LossBacktrack, RateSearch

#: The recommended safeguards: a search from 1e-3 x the given rate, and a backtrack at a loss
#: 1.5x its running average.
AUTO_SEARCH = RateSearch(factor=2.0, start=1e-3)
AUTO_BACKTRACK = LossBacktrack(factor=0.5, tolerance=0.5, decay=0.9)


def _needs_loss(transform: optax.GradientTransformationExtraArgs,
                name: str) -> optax.GradientTransformationExtraArgs:
  """``transform`` whose ``update`` names ``name`` in the error for a missing ``value=``."""

  def update_fn(updates, state, params=None, **extra_args):
    _checks.training_loss(extra_args.get("value"), name)
    return transform.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(transform.init, update_fn)


def auto_adam(learning_rate: float = 1e-3, hypergrad_lr: float = 0.1, b1: float = 0.9,
              b2: float = 0.999, eps: float = 1e-8, weight_decay: float | None = None,
              mu_dtype: Any = None, *, search: RateSearch | None = AUTO_SEARCH,
              backtrack: LossBacktrack | None = AUTO_BACKTRACK,
              ) -> optax.GradientTransformationExtraArgs:
  """Adam with a learned rate: the library's recommendation when the rate is unknown.

  :func:`optax_lr.adam_hd` with the multiplicative rule, the rate search and the loss backtrack
  at their recommended settings (module docstring). The state is Adam's plus the rate, a search
  flag and the loss average; the previous direction is read off Adam's moments.

  Args:
    learning_rate: an upper guess ``> 0`` of the rate (default 1e-3): the run starts at
      ``search.start * learning_rate`` and the search raises it while consecutive directions
      agree.
    hypergrad_lr: ``beta`` in ``[0, 1)``, the rule's largest relative change per step
      (default 0.1).
    b1, b2, eps: Adam's (``optax.adam``'s defaults).
    weight_decay: coupled L2 decay ``>= 0`` added to the gradient; ``None`` (default): none.
    mu_dtype: the first moment's dtype (``None``: the parameters').
    search: the rate search (default :data:`AUTO_SEARCH`; ``None`` turns it off).
    backtrack: the loss backtrack (default :data:`AUTO_BACKTRACK`; ``None`` turns it off).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the training loss as
    ``value=`` when ``backtrack`` is on (a missing one raises a ``ValueError`` saying how to pass
    it from an optax loop, ``flax.nnx.Optimizer`` or a Flax ``TrainState``).

  References:
    Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
    Hypergradient Descent", ICLR 2018 (Adam-HD, and the multiplicative rule of Section 4).

  Example:
    >>> opt = optax_lr.auto_adam()
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, value=loss(params, batch))
  """
  transform = adam_hd(learning_rate, hypergrad_lr, b1=b1, b2=b2, eps=eps,
                      weight_decay=weight_decay, mu_dtype=mu_dtype, rate_rule="multiplicative",
                      search=search, backtrack=backtrack)
  return _needs_loss(transform, "optax_lr.auto_adam") if backtrack is not None else transform


def auto_sgd(learning_rate: float = 0.1, hypergrad_lr: float = 0.03, momentum: float = 0.9,
             weight_decay: float | None = None, *, search: RateSearch | None = AUTO_SEARCH,
             backtrack: LossBacktrack | None = AUTO_BACKTRACK,
             ) -> optax.GradientTransformationExtraArgs:
  """Nesterov SGD with a learned rate, set up as :func:`auto_adam`.

  :func:`optax_lr.sgd_hd` with Nesterov momentum, the multiplicative rule, the rate search and
  the loss backtrack at their recommended settings (module docstring).

  Args:
    learning_rate: an upper guess ``> 0`` of the rate (default 0.1; the run starts at
      ``search.start * learning_rate``).
    hypergrad_lr: ``beta`` in ``[0, 1)`` (default 0.03).
    momentum: Nesterov momentum in ``[0, 1)`` (default 0.9).
    weight_decay: coupled L2 decay ``>= 0``; ``None`` (default): none.
    search: the rate search (default :data:`AUTO_SEARCH`; ``None`` turns it off).
    backtrack: the loss backtrack (default :data:`AUTO_BACKTRACK`; ``None`` turns it off).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` takes ``value=loss`` when
    ``backtrack`` is on.

  References:
    Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018
    (SGDN-HD, and the multiplicative rule of Section 4).

  Example:
    >>> opt = optax_lr.auto_sgd()
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, value=loss(params, batch))
  """
  transform = sgd_hd(learning_rate, hypergrad_lr, momentum=momentum, nesterov=True,
                     weight_decay=weight_decay, rate_rule="multiplicative", search=search,
                     backtrack=backtrack)
  return _needs_loss(transform, "optax_lr.auto_sgd") if backtrack is not None else transform
