"""The one optimizer registry of the training side: name -> builder and what the method needs.

Every entry builds an ``optax`` transformation from the same four things the training loop knows,
``builder(learning_rate, steps_per_epoch, total_steps, **options)``, and declares in its
:class:`OptimizerSpec` which extra ``update`` arguments it needs (``next_grads``, ``grad_fn``,
``value``, ``value_fn``), whether it takes an initial learning rate at all, and, for
schedule-free methods, how to get the parameters to evaluate. The loop passes an extra argument
only to an optimizer that declares it, so every method receives what it asks for and nothing
else.

Entries cover every ``optax_lr`` method (resolved as ``optax_lr.<name>`` when the builder runs), the
baselines the papers compare with (SGD with the papers' multistep schedules, Adam, CLR) and the
baselines of the papers' comparison tables (SLS and SPS for Trainable Learning Rate; L4 over Adam
and momentum and AdaBound for Adaptive Hierarchical Hyper-gradient Descent), the
peers a user would pick instead (RAdam, one-cycle, ``optax.contrib``'s prodigy, D-Adaptation,
DoG, Mechanic, COCOB, schedule-free, reduce-on-plateau). Baselines with a fixed or scheduled rate
are wrapped in ``optax.inject_hyperparams`` so that the applied rate is a ``learning_rate`` state
field, which ``optax_lr.learning_rates`` logs like the rate of any ``optax_lr`` method.

Example:
  >>> tx = create_optimizer("tlr_sgd", 0.1, steps_per_epoch=11, total_steps=110)
  >>> get_spec("adasecant").extra_args
  ('next_grads',)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_lr
from optax_lr import _checks

PyTree = Any
Builder = Callable[..., optax.GradientTransformation]

#: The extra ``update`` arguments the training step knows how to supply.
EXTRA_ARGS = ("next_grads", "grad_fn", "value", "value_fn")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """A registry entry.

  Attributes:
    name: the registry key.
    builder: ``builder(learning_rate, steps_per_epoch, total_steps, **options)`` -> transformation.
    description: one line for ``--help`` and error messages.
    extra_args: the extra ``update`` keywords the method needs, a subset of :data:`EXTRA_ARGS`:
      ``value`` is the objective at ``params`` whose gradient the optimizer receives (the batch
      loss plus ``weight_decay/2 ||w||^2``), ``value_fn`` that objective as a function of the
      parameters (same batch), ``grad_fn`` its gradient function, ``next_grads`` the gradient of
      the next batch at ``params``.
    takes_learning_rate: False for methods that set their own rate (``learning_rate`` is ignored).
    eval_params: ``eval_params(opt_state, params)`` -> the parameters to evaluate, for methods
      whose iterate is not the point to evaluate (schedule-free); None means ``params``.
    family: ``"optax_lr"`` for the library's methods, ``"peer"`` for baselines and peers.
    forwards_to: for a builder taking ``**options``, the ``optax_lr`` factory it forwards them
      to; its keyword parameters are then the entry's options (one list, not a second copy).
  """

  name: str
  builder: Builder
  description: str
  extra_args: tuple[str, ...] = ()
  takes_learning_rate: bool = True
  eval_params: Callable[[Any, PyTree], PyTree] | None = None
  family: str = "optax_lr"
  forwards_to: str | None = None

  def options(self) -> dict[str, Any]:
    """The builder's keyword options and their defaults (with those of the factory that a
    ``**options`` builder forwards to; :data:`inspect.Parameter.empty` marks a required one)."""
    parameters = list(inspect.signature(self.builder).parameters.values())[3:]
    if self.forwards_to is not None:
      parameters += list(inspect.signature(_optax_lr(self.forwards_to)).parameters.values())
    return {p.name: p.default for p in parameters
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}

  @property
  def open_options(self) -> bool:
    """True for a ``**options`` builder that names no factory (an entry registered at run time
    by a benchmark or test): its options are then not known ahead and any name is passed on."""
    return self.forwards_to is None and any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(self.builder).parameters.values())


def _optax_lr(name: str) -> Callable[..., Any]:
  """``optax_lr.<name>``, looked up when a builder runs (methods land in parallel)."""
  try:
    return getattr(optax_lr, name)
  except AttributeError:
    raise ValueError(f"`optax_lr.{name}` does not exist in this checkout; the registry entry "
                     "that needs it cannot be built.") from None


def _logged_rate(factory: Callable[[Any], optax.GradientTransformation],
                 learning_rate: Any) -> optax.GradientTransformation:
  """``factory(learning_rate)`` under ``optax.inject_hyperparams``: the applied rate (a float or a
  schedule's value at each step) becomes a ``learning_rate`` state field that the loop logs."""
  return optax.inject_hyperparams(lambda learning_rate: factory(learning_rate))(
      learning_rate=learning_rate)


def _steps(epochs: float, steps_per_epoch: int) -> int:
  return max(1, round(epochs * steps_per_epoch))


# --- optax_lr methods ---------------------------------------------------------------------------

def _tlr_sgd(learning_rate, steps_per_epoch, total_steps, momentum=0.8, nesterov=False,
             window_fraction=1 / 3, bound=0.25, window_sum="gradient"):
  del total_steps
  return optax_lr.tlr_sgd(
      learning_rate, optax_lr.update_every_from_fraction(steps_per_epoch, window_fraction),
      momentum=momentum or None, nesterov=nesterov, bound=bound, window_sum=window_sum)


def _tlr_sgd_auto(learning_rate, steps_per_epoch, total_steps, momentum=0.8, nesterov=False,
                  window_fraction=1 / 3, bound=0.25, backtrack_factor=0.5, loss_tolerance=1.0):
  # TLR with the window loss backtrack (reads the training loss as value=).
  del total_steps
  return optax_lr.tlr_sgd(
      learning_rate, optax_lr.update_every_from_fraction(steps_per_epoch, window_fraction),
      momentum=momentum or None, nesterov=nesterov, bound=bound,
      backtrack=optax_lr.WindowBacktrack(factor=backtrack_factor, tolerance=loss_tolerance))


def _tlr_sgd_pl(learning_rate, steps_per_epoch, total_steps, momentum=0.8, nesterov=False,
                window_fraction=1 / 3, bound=0.25, window_sum="gradient"):
  del total_steps
  return optax_lr.tlr_sgd(
      learning_rate, optax_lr.update_every_from_fraction(steps_per_epoch, window_fraction),
      momentum=momentum or None, nesterov=nesterov, bound=bound, per_tensor=True,
      window_sum=window_sum)


def _tlr_fixed_meta_rate(learning_rate, steps_per_epoch, total_steps, meta_learning_rate=1e-3,
                         momentum=0.8, window_fraction=1 / 3, window_sum="gradient"):
  del total_steps
  return optax_lr.scale_by_tlr_fixed_meta_rate(
      learning_rate, meta_learning_rate,
      optax_lr.update_every_from_fraction(steps_per_epoch, window_fraction),
      window_sum=window_sum, inner=optax.trace(momentum) if momentum else None)


def _naive_tlr(learning_rate, steps_per_epoch, total_steps, meta_learning_rate=1e-3):
  del steps_per_epoch, total_steps
  return optax_lr.naive_tlr(learning_rate, meta_learning_rate)


def _sgd_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-3, momentum=0.0):
  del steps_per_epoch, total_steps
  # A configured momentum of 0 is plain SGD: no trace (the library's momentum=None).
  return optax_lr.sgd_hd(learning_rate, hypergrad_lr, momentum=momentum or None)


def _sgdn_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-3, momentum=0.9):
  del steps_per_epoch, total_steps
  return optax_lr.sgd_hd(learning_rate, hypergrad_lr, momentum=momentum, nesterov=True)


def _adam_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-8, b1=0.9, b2=0.999):
  del steps_per_epoch, total_steps
  return optax_lr.adam_hd(learning_rate, hypergrad_lr, b1=b1, b2=b2)


# "auto" entries: the library's recommendation optax_lr.auto_adam (entry `auto_adam`, which sets
# its own rate); the hypergradient presets optax_lr.auto_adam_hd / optax_lr.auto_sgd (the
# scale-free multiplicative rule with the rate search and the loss backtrack on; their defaults
# are the settings), and CAM-HD with the same rule and safeguards. The flat options below turn a
# safeguard off or change it, for the ablations of the comparison benchmark; their defaults are
# the library's (optax_lr.auto).
_SEARCH = optax_lr.auto.AUTO_SEARCH
_BACKTRACK = optax_lr.auto.AUTO_BACKTRACK


def _auto_safeguards(safeguard, backtrack_factor, loss_tolerance, loss_decay, rate_search,
                     search_start, search_stop_ratio):
  """The ``search`` and ``backtrack`` options of an auto entry from its flat config keys."""
  _checks.one_of("safeguard", safeguard, ("none", "backtrack"))
  _checks.flag("rate_search", rate_search)
  backtrack = (optax_lr.LossBacktrack(factor=backtrack_factor, tolerance=loss_tolerance,
                                      decay=loss_decay) if safeguard == "backtrack" else None)
  search = (optax_lr.RateSearch(factor=_SEARCH.factor, start=search_start,
                                stop_ratio=search_stop_ratio) if rate_search else None)
  return dict(search=search, backtrack=backtrack)


def _sgdn_hd_auto(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=0.03,
                  momentum=0.9, safeguard="backtrack", backtrack_factor=_BACKTRACK.factor,
                  loss_tolerance=_BACKTRACK.tolerance, loss_decay=_BACKTRACK.decay,
                  rate_search=True, search_start=_SEARCH.start,
                  search_stop_ratio=_SEARCH.stop_ratio):
  del steps_per_epoch, total_steps
  return optax_lr.auto_sgd(learning_rate, hypergrad_lr, momentum=momentum,
                           **_auto_safeguards(safeguard, backtrack_factor, loss_tolerance,
                                              loss_decay, rate_search, search_start,
                                              search_stop_ratio))


def _adam_hd_auto(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=0.1, b1=0.9,
                  b2=0.999, safeguard="backtrack", backtrack_factor=_BACKTRACK.factor,
                  loss_tolerance=_BACKTRACK.tolerance, loss_decay=_BACKTRACK.decay,
                  rate_search=True, search_start=_SEARCH.start,
                  search_stop_ratio=_SEARCH.stop_ratio):
  del steps_per_epoch, total_steps
  return optax_lr.auto_adam_hd(learning_rate, hypergrad_lr, b1=b1, b2=b2,
                            **_auto_safeguards(safeguard, backtrack_factor, loss_tolerance,
                                               loss_decay, rate_search, search_start,
                                               search_stop_ratio))


def _auto_adam(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=None,
               initial_rate=1e-6, min_scale=1e-3, tail_fraction=optax_lr.auto.TAIL_FRACTION,
               known_length=True):
  """``optax_lr.auto_adam``, told the run's length (``known_length``) as the tuned schedules are."""
  del learning_rate, steps_per_epoch
  _checks.flag("known_length", known_length)
  return optax_lr.auto_adam(hypergrad_lr=hypergrad_lr, initial_rate=initial_rate,
                            min_scale=min_scale, tail_fraction=tail_fraction,
                            total_steps=total_steps if known_length else None)


def _auto_adam_no_tail(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=None,
                       initial_rate=1e-6, min_scale=1e-3):
  """``optax_lr.auto_adam()`` not told the run's length: the hypergradient decay, no tail."""
  return _auto_adam(learning_rate, steps_per_epoch, total_steps, hypergrad_lr, initial_rate,
                    min_scale, known_length=False)


def _adam_cam_hd_auto(learning_rate, steps_per_epoch, total_steps,
                      hypergrad_lr=0.1, combination_lr=0.0, b1=0.9, b2=0.999,
                      levels=("layer", "global"), weights=(0.5, 0.5), safeguard="backtrack",
                      backtrack_factor=_BACKTRACK.factor, loss_tolerance=_BACKTRACK.tolerance,
                      loss_decay=_BACKTRACK.decay, rate_search=True,
                      search_start=_SEARCH.start, search_stop_ratio=_SEARCH.stop_ratio):
  del steps_per_epoch, total_steps
  return _optax_lr("adam_cam_hd")(
      learning_rate, hypergrad_lr=hypergrad_lr, b1=b1, b2=b2, levels=tuple(levels),
      combination=_cam_hd_combination(weights, combination_lr),
      rule=optax_lr.RateRule("multiplicative", **_auto_safeguards(
          safeguard, backtrack_factor, loss_tolerance, loss_decay, rate_search, search_start,
                                              search_stop_ratio)))


def _drop_trigger(threshold, max_threshold, threshold_rule, relative_threshold):
  """The flat config keys of AutoDrop's trigger as its option object."""
  return optax_lr.DropTrigger(threshold=threshold, max_threshold=max_threshold,
                              threshold_rule=threshold_rule,
                              relative_threshold=relative_threshold)


def _autodrop_sgd(learning_rate, steps_per_epoch, total_steps, momentum=0.9, nesterov=False,
                  drop_factor=0.2, min_learning_rate=1e-4, threshold=0.01, max_threshold=1.0,
                  drop_delay=20, average=True, threshold_rule="fixed", relative_threshold=0.2):
  del total_steps
  return _optax_lr("autodrop_sgd")(
      learning_rate, steps_per_epoch, momentum=momentum, nesterov=nesterov,
      drop_factor=drop_factor, min_learning_rate=min_learning_rate, drop_delay=drop_delay,
      average=average,
      trigger=_drop_trigger(threshold, max_threshold, threshold_rule, relative_threshold))


def _autodrop_sgd_auto(learning_rate, steps_per_epoch, total_steps, momentum=0.9,
                       relative_threshold=0.2, drop_delay=20):
  # The threshold relative to the angle's own fluctuation (threshold_rule="relative").
  return _autodrop_sgd(learning_rate, steps_per_epoch, total_steps, momentum=momentum,
                       drop_delay=drop_delay, threshold_rule="relative",
                       relative_threshold=relative_threshold)


def _autodrop_adam(learning_rate, steps_per_epoch, total_steps, b1=0.9, b2=0.999,
                   drop_factor=0.2, min_learning_rate=1e-5, threshold=0.01, max_threshold=1.0,
                   drop_delay=20, average=True, threshold_rule="fixed", relative_threshold=0.2):
  del total_steps
  return _optax_lr("with_autodrop")(
      optax.scale_by_adam(b1=b1, b2=b2), learning_rate, steps_per_epoch,
      drop_factor=drop_factor, min_learning_rate=min_learning_rate, drop_delay=drop_delay,
      average=average,
      trigger=_drop_trigger(threshold, max_threshold, threshold_rule, relative_threshold))


# CAM-HD: the paper's Table 1 values per base ("Adaptive Hierarchical Hyper-gradient Descent").
# SGD/SGDN: hypergradient rate 1e-6 and CAM-HD rate 1e-3 (the ResNet rows; the paper runs SGDN only
# on ResNets; on LeNet-5 the claims benchmark uses 1e-6 too, labelled as not from the paper), two
# levels filter + global with weights (0.2, 0.8) (Section 3.5: "the same setting as the second
# experiment"). Adam: 1e-7 and 1e-2 (the MLP rows: the registry's default model is the MLP),
# layer + global with weights (0.5, 0.5) (Section 3.3); 1e-8 and 3e-2 on LeNet-5 and the ResNets.
def _cam_hd_combination(weights, combination_lr):
  """The flat config keys ``weights`` and ``combination_lr`` as CAM-HD's option object."""
  return optax_lr.CombinationWeights(None if weights is None else tuple(weights), combination_lr)


def _cam_hd_blending(decay_rate, final_learning_rate=None):
  """The flat config key ``decay_rate`` (0: off) as CAM-HD's option object."""
  return optax_lr.Blending(decay_rate, final_learning_rate) if decay_rate else None


def _cam_hd_rule(min_learning_rate):
  """The flat config key ``min_learning_rate`` (None: no floor) as CAM-HD's option object."""
  return optax_lr.RateRule(min_learning_rate=min_learning_rate)


def _sgd_cam_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-6,
                combination_lr=1e-3, momentum=0.0, levels=("filter", "global"),
                weights=(0.2, 0.8), decay_rate=0.0, nesterov=False, min_learning_rate=None):
  del steps_per_epoch, total_steps
  return _optax_lr("sgd_cam_hd")(
      learning_rate, hypergrad_lr=hypergrad_lr, momentum=momentum or None, nesterov=nesterov,
      levels=tuple(levels), combination=_cam_hd_combination(weights, combination_lr),
      blending=_cam_hd_blending(decay_rate), rule=_cam_hd_rule(min_learning_rate))


def _sgdn_cam_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-6,
                 combination_lr=1e-3, momentum=0.9, levels=("filter", "global"),
                 weights=(0.2, 0.8), decay_rate=0.0, min_learning_rate=None):
  return _sgd_cam_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr, combination_lr,
                     momentum, levels, weights, decay_rate, nesterov=True,
                     min_learning_rate=min_learning_rate)


def _adam_cam_hd(learning_rate, steps_per_epoch, total_steps, hypergrad_lr=1e-7,
                 combination_lr=1e-2, b1=0.9, b2=0.999, levels=("layer", "global"),
                 weights=(0.5, 0.5), decay_rate=0.0, min_learning_rate=None):
  del steps_per_epoch, total_steps
  return _optax_lr("adam_cam_hd")(
      learning_rate, hypergrad_lr=hypergrad_lr, b1=b1, b2=b2, levels=tuple(levels),
      combination=_cam_hd_combination(weights, combination_lr),
      blending=_cam_hd_blending(decay_rate), rule=_cam_hd_rule(min_learning_rate))


def _adasecant(learning_rate, steps_per_epoch, total_steps, **options):
  del learning_rate, steps_per_epoch, total_steps
  return _optax_lr("adasecant")(**options)


def _simple_adasecant(learning_rate, steps_per_epoch, total_steps, threshold=10.0, mode="zero",
                      step_growth=math.inf):
  del learning_rate, steps_per_epoch, total_steps
  return _optax_lr("simple_adasecant")(threshold=threshold, mode=mode, step_growth=step_growth)


def _cus_adam(learning_rate, steps_per_epoch, total_steps, b1=0.9, b2=0.999, eps=1e-8):
  del steps_per_epoch, total_steps
  return _logged_rate(lambda lr: _optax_lr("cus_adam")(lr, b1=b1, b2=b2, eps=eps), learning_rate)


def _cycle_floor(min_learning_rate, learning_rate):
  """The cycle's lower rate: ``min_learning_rate``, or a decade below the peak when the peak is
  under ten times it (a peak of 1e-4 with the default floor 1e-3 would be no cycle at all)."""
  if isinstance(learning_rate, jax.core.Tracer):  # the comparison grid vmaps over the rates
    return jnp.minimum(min_learning_rate, learning_rate / 10)
  return min(min_learning_rate, learning_rate / 10)


def _clr_schedule(learning_rate, steps_per_epoch, total_steps, min_learning_rate, cycle_epochs):
  """``cyclical_schedule(min, max = learning_rate, step_size_up)``; one cycle over the whole run
  when ``cycle_epochs`` is None."""
  if cycle_epochs is None:
    step_size_up = max(1, total_steps // 2)
  else:
    step_size_up = max(1, round(cycle_epochs * steps_per_epoch / 2))
  return _optax_lr("cyclical_schedule")(_cycle_floor(min_learning_rate, learning_rate),
                                        learning_rate, step_size_up)


def _clr_sgd(learning_rate, steps_per_epoch, total_steps, min_learning_rate=1e-3,
             cycle_epochs=None, momentum=0.9):
  schedule = _clr_schedule(learning_rate, steps_per_epoch, total_steps, min_learning_rate,
                           cycle_epochs)
  return _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None), schedule)


def _clr_adam(learning_rate, steps_per_epoch, total_steps, min_learning_rate=1e-5,
              cycle_epochs=None, b1=0.9, b2=0.999):
  schedule = _clr_schedule(learning_rate, steps_per_epoch, total_steps, min_learning_rate,
                           cycle_epochs)
  return _logged_rate(lambda lr: optax.adam(lr, b1=b1, b2=b2), schedule)


def _n_cycle_sgd(learning_rate, steps_per_epoch, total_steps, min_learning_rate=1e-3,
                 cycle_epochs=25, momentum=0.9):
  del total_steps
  schedule = _optax_lr("n_cycle_schedule")(_cycle_floor(min_learning_rate, learning_rate),
                                           learning_rate, cycle_epochs, steps_per_epoch)
  return _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None), schedule)


def _clr_simple_adasecant(learning_rate, steps_per_epoch, total_steps, min_learning_rate=1e-3,
                          cycle_epochs=25, switch_epoch=13, momentum=0.9, threshold=10.0):
  """Thesis §4.5.2: the first ``switch_epoch`` epochs of an N-cycle CLR-SGD, then Simple
  AdaSecant."""
  del total_steps
  schedule = _optax_lr("n_cycle_schedule")(_cycle_floor(min_learning_rate, learning_rate),
                                           learning_rate, cycle_epochs, steps_per_epoch)
  first = _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None), schedule)
  second = _optax_lr("simple_adasecant")(threshold=threshold)
  return _optax_lr("switch_at")(_steps(switch_epoch, steps_per_epoch), first, second)


# --- baselines and peers ------------------------------------------------------------------------

def _sgd(learning_rate, steps_per_epoch, total_steps, momentum=0.9, nesterov=False):
  del steps_per_epoch, total_steps
  return _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None, nesterov=nesterov),
                      learning_rate)


def _sgd_multistep(learning_rate, steps_per_epoch, total_steps, momentum=0.9,
                   milestones=(0.3, 0.6, 0.8), drop_factor=0.2):
  """SGD with the papers' multistep decay: ``drop_factor`` at the given fractions of the run (the
  defaults are epochs 60/120/160 of 200 with factor 0.2, the CIFAR baseline of seeds 001, 002)."""
  del steps_per_epoch
  for fraction in milestones:
    _checks.in_range("milestones", fraction, 0.0, 1.0, low_open=True, high_open=True)
  _checks.in_range("drop_factor", drop_factor, 0.0, 1.0, low_open=True)
  boundaries = {max(1, round(f * total_steps)): drop_factor for f in milestones}
  schedule = optax.piecewise_constant_schedule(learning_rate, boundaries)
  return _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None), schedule)


def _adam(learning_rate, steps_per_epoch, total_steps, b1=0.9, b2=0.999, eps=1e-8):
  del steps_per_epoch, total_steps
  return _logged_rate(lambda lr: optax.adam(lr, b1=b1, b2=b2, eps=eps), learning_rate)


def _radam(learning_rate, steps_per_epoch, total_steps, b1=0.9, b2=0.999, eps=1e-8):
  del steps_per_epoch, total_steps
  return _logged_rate(lambda lr: optax.radam(lr, b1=b1, b2=b2, eps=eps), learning_rate)


def _one_cycle(learning_rate, steps_per_epoch, total_steps, momentum=0.9, pct_start=0.3,
               div_factor=25.0, final_div_factor=1e4):
  del steps_per_epoch
  schedule = optax.cosine_onecycle_schedule(total_steps, learning_rate, pct_start, div_factor,
                                            final_div_factor)
  return _logged_rate(lambda lr: optax.sgd(lr, momentum=momentum or None), schedule)


def _adamw_cosine(learning_rate, steps_per_epoch, total_steps, warmup_fraction=0.05, b1=0.9,
                  b2=0.999, eps=1e-8, weight_decay=1e-4):
  """AdamW with a linear warm-up from 0 over ``warmup_fraction`` of the run to ``learning_rate``,
  then a cosine decay to 0 at ``total_steps``: the tuned baseline (run over a grid of peak rates
  and reported at the best). ``weight_decay`` is AdamW's decoupled decay (optax's default), on
  top of the training step's coupled decay."""
  del steps_per_epoch
  _checks.in_range("warmup_fraction", warmup_fraction, 0.0, 1.0, high_open=True)
  warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction else 0
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup,
                                                max(total_steps, warmup + 1), end_value=0.0)
  return _logged_rate(lambda lr: optax.adamw(lr, b1=b1, b2=b2, eps=eps,
                                             weight_decay=weight_decay), schedule)


def _prodigy(learning_rate, steps_per_epoch, total_steps, scale=1.0):
  del learning_rate, steps_per_epoch, total_steps
  return optax.contrib.prodigy(learning_rate=scale)


def _dadapt_adamw(learning_rate, steps_per_epoch, total_steps, scale=1.0):
  del learning_rate, steps_per_epoch, total_steps
  return optax.contrib.dadapt_adamw(learning_rate=scale)


def _dog(learning_rate, steps_per_epoch, total_steps, scale=1.0, reps_rel=1e-6):
  del learning_rate, steps_per_epoch, total_steps
  return optax.contrib.dog(learning_rate=scale, init_step=("heuristic", reps_rel))


def _mechanize_sgd(learning_rate, steps_per_epoch, total_steps, base_learning_rate=1.0,
                   momentum=0.9):
  del learning_rate, steps_per_epoch, total_steps
  return optax.contrib.mechanize(optax.sgd(base_learning_rate, momentum=momentum or None))


def _cocob(learning_rate, steps_per_epoch, total_steps, alpha=100.0):
  del learning_rate, steps_per_epoch, total_steps
  return optax.contrib.cocob(alpha=alpha)


def _schedule_free_sgd(learning_rate, steps_per_epoch, total_steps, b1=0.9, warmup_epochs=0.0):
  del total_steps
  warmup = _steps(warmup_epochs, steps_per_epoch) if warmup_epochs else None
  return optax.contrib.schedule_free_sgd(learning_rate, warmup_steps=warmup, b1=b1)


def _schedule_free_adamw(learning_rate, steps_per_epoch, total_steps, b1=0.9, b2=0.999,
                         warmup_epochs=0.0):
  del total_steps
  warmup = _steps(warmup_epochs, steps_per_epoch) if warmup_epochs else None
  return optax.contrib.schedule_free_adamw(learning_rate, warmup_steps=warmup, b1=b1, b2=b2)


def _schedule_free_eval(opt_state, params):
  """The evaluation point of a schedule-free state found anywhere in ``opt_state``."""
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.contrib.ScheduleFreeState))
           if isinstance(s, optax.contrib.ScheduleFreeState)]
  if len(found) != 1:
    raise ValueError(f"expected one ScheduleFreeState in the optimizer state; found {len(found)}")
  return optax.contrib.schedule_free_eval_params(found[0], params)


def _reduce_on_plateau(learning_rate, steps_per_epoch, total_steps, momentum=0.9, factor=0.1,
                       patience_epochs=5.0, cooldown_epochs=0.0):
  """SGD chained with ``reduce_on_plateau``, fed the training objective (``value``: the batch loss
  plus the decay term) of every step and judging a plateau on its mean over an epoch."""
  del total_steps
  return optax.chain(
      _sgd(learning_rate, steps_per_epoch, None, momentum=momentum),
      optax.contrib.reduce_on_plateau(
          factor=factor, patience=max(1, round(patience_epochs)),
          cooldown=round(cooldown_epochs), accumulation_size=steps_per_epoch))


def _with_grad_argument(tx: optax.GradientTransformationExtraArgs
                        ) -> optax.GradientTransformationExtraArgs:
  """``tx`` with its ``grad`` keyword filled from the incoming updates: the gradient the chain
  receives (coupled weight decay included) is the gradient of ``value`` at ``params``."""

  def update_fn(updates, state, params=None, **extra_args):
    return tx.update(updates, state, params, grad=updates, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def _sls_sgd(learning_rate, steps_per_epoch, total_steps, armijo_constant=0.1,
             decrease_factor=0.9, reset_factor=2.0, max_learning_rate=10.0,
             max_backtracking_steps=100):
  """SGD with the stochastic Armijo line search (SLS), Vaswani, Mishkin, Laradji, Schmidt, Gidel,
  Lacoste-Julien, *Painless Stochastic Gradient: Interpolation, Line-Search, and Convergence
  Rates*, NeurIPS 2019 (Algorithms 1 and 2): optax's backtracking line search on the SGD
  direction, the paper's constants c = 0.1, beta = 0.9 and its reset rule: each step starts from
  the previous rate times ``reset_factor ** (batch / n) = 2 ** (1 / steps_per_epoch)``, first
  trial 1 (the paper's initial step size), capped at ``max_learning_rate`` (the authors'
  ``eta_max``). Sets its own rate (``learning_rate`` is ignored)."""
  del learning_rate, total_steps
  _checks.in_range("armijo_constant", armijo_constant, 0.0, 1.0, low_open=True, high_open=True)
  _checks.in_range("decrease_factor", decrease_factor, 0.0, 1.0, low_open=True, high_open=True)
  _checks.in_range("reset_factor", reset_factor, 1.0, math.inf)
  _checks.positive("max_learning_rate", max_learning_rate)
  _checks.integer_at_least("max_backtracking_steps", max_backtracking_steps, 1)
  return _with_grad_argument(optax.chain(
      optax.sgd(1.0),
      optax.scale_by_backtracking_linesearch(
          max_backtracking_steps=max_backtracking_steps, slope_rtol=armijo_constant,
          decrease_factor=decrease_factor,
          increase_factor=reset_factor ** (1.0 / steps_per_epoch),
          max_learning_rate=max_learning_rate)))


def _sps(learning_rate, steps_per_epoch, total_steps, c=0.2, max_learning_rate=1.0, f_min=0.0):
  """SGD with the stochastic Polyak step SPS_max, Loizou, Vaswani, Laradji, Lacoste-Julien,
  *Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast Convergence*,
  AISTATS 2021 (Eq. 7): ``rate = min((f_i - f_min) / (c ||g_i||^2), max_learning_rate)``, with
  the paper's deep-learning c = 0.2 and f_min = 0. ``optax.polyak_sgd`` computes
  ``min(gap / ||s g||^2, M) * s g``, so ``scaling = c`` and ``M = max_learning_rate / c`` give
  exactly that rate. The bound is a constant (optax has no smoothing of it; the paper smooths
  it over steps as SLS does). Sets its own rate (``learning_rate`` is ignored)."""
  del learning_rate, steps_per_epoch, total_steps
  _checks.positive("c", c)
  _checks.positive("max_learning_rate", max_learning_rate)
  return optax.polyak_sgd(max_learning_rate=max_learning_rate / c, scaling=c, f_min=f_min)


def _l4_adam(learning_rate, steps_per_epoch, total_steps, fraction=0.15, b1=0.9, b2=0.999,
             eps=1e-4, min_loss_factor=0.9, initial_min_loss_factor=0.75,
             min_loss_forget_time=1000.0):
  del learning_rate, steps_per_epoch, total_steps
  return _optax_lr("l4_adam")(fraction, b1=b1, b2=b2, eps=eps, min_loss_factor=min_loss_factor,
                              initial_min_loss_factor=initial_min_loss_factor,
                              min_loss_forget_time=min_loss_forget_time)


def _l4_momentum(learning_rate, steps_per_epoch, total_steps, fraction=0.15, momentum=0.9,
                 min_loss_factor=0.9, initial_min_loss_factor=0.75,
                 min_loss_forget_time=1000.0):
  del learning_rate, steps_per_epoch, total_steps
  return _optax_lr("l4_momentum")(fraction, momentum=momentum, min_loss_factor=min_loss_factor,
                                  initial_min_loss_factor=initial_min_loss_factor,
                                  min_loss_forget_time=min_loss_forget_time)


def _adabound(learning_rate, steps_per_epoch, total_steps, final_learning_rate=0.1, b1=0.9,
              b2=0.999, gamma=1e-3, eps=1e-8, amsbound=False):
  del steps_per_epoch, total_steps
  return _optax_lr("adabound")(learning_rate, final_learning_rate, b1=b1, b2=b2, gamma=gamma,
                               eps=eps, amsbound=amsbound)


def _peer(*args: Any, **kwargs: Any) -> OptimizerSpec:
  """A registry entry for a baseline or peer (not an ``optax_lr`` method)."""
  return OptimizerSpec(*args, family="peer", **kwargs)


_SPECS = [
    # optax_lr
    OptimizerSpec("tlr_sgd", _tlr_sgd, "SGD with a trainable rate (TLR, sgd_tlr)"),
    OptimizerSpec("tlr_sgd_auto", _tlr_sgd_auto,
                  "TLR with a backtrack when the training loss rises", extra_args=("value",)),
    OptimizerSpec("tlr_sgd_pl", _tlr_sgd_pl, "TLR with one rate per tensor (sgd_tlr_pl)"),
    OptimizerSpec("tlr_fixed_meta_rate", _tlr_fixed_meta_rate,
                  "TLR with a fixed meta rate (TLR App. D.4)"),
    OptimizerSpec("naive_tlr", _naive_tlr, "naive GD-TLR with a look-ahead gradient (TLR "
                  "Alg. 1)", extra_args=("grad_fn",)),
    OptimizerSpec("sgd_hd", _sgd_hd, "SGD with hypergradient descent (Baydin et al.)"),
    OptimizerSpec("sgdn_hd", _sgdn_hd, "Nesterov SGD with hypergradient descent"),
    OptimizerSpec("adam_hd", _adam_hd, "Adam with hypergradient descent"),
    OptimizerSpec("sgdn_hd_auto", _sgdn_hd_auto,
                  "Nesterov SGD-HD, scale-free multiplicative rule with rate search and backtrack",
                  extra_args=("value",)),
    OptimizerSpec("auto_adam", _auto_adam,
                  "optax_lr.auto_adam(total_steps=...): Adam at a distance-estimated rate, a "
                  "linear tail over the last 20% (the recommendation)", takes_learning_rate=False),
    OptimizerSpec("auto_adam_no_tail", _auto_adam_no_tail,
                  "optax_lr.auto_adam(): the run's length unknown, a hypergradient decay",
                  takes_learning_rate=False),
    OptimizerSpec("adam_hd_auto", _adam_hd_auto,
                  "Adam-HD, scale-free multiplicative rule with rate search and loss backtrack",
                  extra_args=("value",)),
    OptimizerSpec("adam_cam_hd_auto", _adam_cam_hd_auto,
                  "Adam-CAM-HD (layer + global), multiplicative rule, rate search, backtrack",
                  extra_args=("value",)),
    OptimizerSpec("autodrop_sgd", _autodrop_sgd, "AutoDrop over SGD with momentum"),
    OptimizerSpec("autodrop_adam", _autodrop_adam, "AutoDrop over Adam"),
    OptimizerSpec("autodrop_sgd_auto", _autodrop_sgd_auto,
                  "AutoDrop over SGD with momentum, threshold relative to the angle's fluctuation"),
    OptimizerSpec("sgd_cam_hd", _sgd_cam_hd,
                  "SGD with CAM-HD multi-level rates (Table 1 SGD values)"),
    OptimizerSpec("sgdn_cam_hd", _sgdn_cam_hd,
                  "Nesterov SGD with CAM-HD rates (Table 1 SGDN values)"),
    OptimizerSpec("adam_cam_hd", _adam_cam_hd, "Adam with CAM-HD rates (Table 1 Adam MLP values)"),
    OptimizerSpec("adasecant", _adasecant, "AdaSecant, per-element secant rates (Sasse's thesis)",
                  extra_args=("next_grads",), takes_learning_rate=False, forwards_to="adasecant"),
    OptimizerSpec("simple_adasecant", _simple_adasecant,
                  "Simple AdaSecant (Sasse's thesis, Eq. 3.1)", takes_learning_rate=False),
    OptimizerSpec("cus_adam", _cus_adam,
                  "Adam without first-moment bias correction (Sasse's thesis)"),
    OptimizerSpec("clr_sgd", _clr_sgd, "SGD with a triangular cyclical rate (Smith 2017)"),
    OptimizerSpec("clr_adam", _clr_adam, "Adam with a triangular cyclical rate (Smith, WACV 2017)"),
    OptimizerSpec("n_cycle_sgd", _n_cycle_sgd, "SGD with the N-cycle rate of Sasse's thesis"),
    OptimizerSpec("clr_simple_adasecant", _clr_simple_adasecant,
                  "CLR-SGD, then Simple AdaSecant (the hybrid of Sasse's thesis, §4.5.2)"),
    # baselines and peers
    _peer("sgd", _sgd, "SGD with momentum and a constant rate"),
    _peer("sgd_multistep", _sgd_multistep, "SGD with the papers' multistep decay"),
    _peer("adam", _adam, "Adam"),
    _peer("radam", _radam, "Rectified Adam"),
    _peer("one_cycle", _one_cycle, "SGD with optax's cosine one-cycle schedule"),
    _peer("adamw_cosine", _adamw_cosine,
          "AdamW with linear warm-up and cosine decay (the tuned baseline)"),
    _peer("prodigy", _prodigy, "optax.contrib.prodigy", takes_learning_rate=False),
    _peer("dadapt_adamw", _dadapt_adamw, "optax.contrib.dadapt_adamw",
                  takes_learning_rate=False),
    _peer("dog", _dog, "optax.contrib.dog", takes_learning_rate=False),
    _peer("mechanize_sgd", _mechanize_sgd, "optax.contrib.mechanize over SGD",
                  takes_learning_rate=False),
    _peer("cocob", _cocob, "optax.contrib.cocob", takes_learning_rate=False),
    _peer("schedule_free_sgd", _schedule_free_sgd, "optax.contrib.schedule_free_sgd",
                  eval_params=_schedule_free_eval),
    _peer("schedule_free_adamw", _schedule_free_adamw,
                  "optax.contrib.schedule_free_adamw", eval_params=_schedule_free_eval),
    _peer("reduce_on_plateau", _reduce_on_plateau,
                  "SGD with optax.contrib.reduce_on_plateau on the training loss",
                  extra_args=("value",)),
    # the papers' own baselines: Trainable Learning Rate's Figure 3 (SLS, SPS, sgd_multistep),
    # Adaptive Hierarchical Hyper-gradient Descent's Table 2 (L4, AdaBound)
    _peer("sls_sgd", _sls_sgd, "SGD with the stochastic Armijo line search (Vaswani et al. 2019)",
          extra_args=("value", "value_fn"), takes_learning_rate=False),
    _peer("sps", _sps, "SGD with the stochastic Polyak step SPS_max (Loizou et al. 2021)",
          extra_args=("value",), takes_learning_rate=False),
    _peer("l4_adam", _l4_adam, "L4 step size over Adam (Rolinek and Martius 2018)",
          extra_args=("value",), takes_learning_rate=False),
    _peer("l4_momentum", _l4_momentum, "L4 step size over momentum SGD (Rolinek and Martius "
          "2018)", extra_args=("value",), takes_learning_rate=False),
    _peer("adabound", _adabound, "AdaBound: Adam clipped into bounds closing on SGD's (Luo et "
          "al. 2019)"),
]

#: Every registered optimizer by name.
OPTIMIZERS: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> OptimizerSpec:
  """The registry entry ``name``; ValueError listing the valid names otherwise."""
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
  return OPTIMIZERS[name]


def create_optimizer(name: str, learning_rate: float | None, steps_per_epoch: int,
                     total_steps: int, options: dict[str, Any] | None = None
                     ) -> optax.GradientTransformation:
  """Builds the registered optimizer ``name``, without weight decay: the training step adds the
  coupled decay ``wd/2 ||w||^2`` to the objective (``train.train.train_step``), so that the
  gradient and the extra arguments (``value``, ``grad_fn``...) see the same objective. Outside
  the loop, ``optax.chain(optax.add_decayed_weights(wd), tx)`` is the same method.

  Args:
    name: a key of :data:`OPTIMIZERS`.
    learning_rate: the initial (or peak, for schedules) rate ``> 0``; ignored, and may be None, for
      methods with ``takes_learning_rate=False``.
    steps_per_epoch: optimizer steps per epoch, ``>= 1`` (windows, boundaries, schedules).
    total_steps: steps of the whole run, ``>= 1`` (schedules over the run).
    options: the method's own keyword options (see :meth:`OptimizerSpec.options`).

  Returns:
    An ``optax`` transformation; ``GradientTransformationExtraArgs`` when the method takes extra
    arguments.

  Raises:
    ValueError: unknown name or option (the message lists the valid ones), or a bad value.
  """
  spec = get_spec(name)
  _checks.integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  _checks.integer_at_least("total_steps", total_steps, 1)
  if spec.takes_learning_rate:
    if learning_rate is None or (isinstance(learning_rate, float) and math.isnan(learning_rate)):
      raise ValueError(f"`learning_rate` must be a finite number > 0 for {name!r}; got "
                       f"{learning_rate!r}.")
    _checks.positive("learning_rate", learning_rate)
  options = dict(options or {})
  valid = spec.options()
  unknown = [] if spec.open_options else sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {', '.join(unknown)} for optimizer {name!r}; valid "
                     f"options: {', '.join(o for o in valid) or 'none'}")
  try:
    tx = spec.builder(learning_rate, steps_per_epoch, total_steps, **options)
  except TypeError as error:  # an option the forwarded-to constructor does not take
    raise ValueError(f"bad options for optimizer {name!r}: {error}") from error
  return tx


def names(takes_learning_rate: bool | None = None,
          extra_args: Sequence[str] | None = None) -> list[str]:
  """Registered names, optionally filtered by metadata."""
  return [n for n, s in OPTIMIZERS.items()
          if (takes_learning_rate is None or s.takes_learning_rate == takes_learning_rate)
          and (extra_args is None or set(s.extra_args) == set(extra_args))]
