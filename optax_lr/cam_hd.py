"""Combined adaptive multi-level hypergradient descent (CAM-HD).

Implements "Adaptive Hierarchical Hyper-gradient Descent" (anonymous authors, under review at ICLR
2021): Algorithm 1, Eq. 6-8, the combination of Section 2.3 and the convergence blending of
Section 2.4. Learning rates live at several levels, finest to coarsest:

- ``parameter``: one rate per element;
- ``filter``: one rate per index of a leaf's last axis (the output channels of a conv or dense
  kernel; a 0-d leaf has one); by default a bias joins its kernel's groups, group ``j`` being
  ``kernel[..., j]`` with ``bias[j]`` (:class:`LevelGroups`);
- ``layer``: one rate per leaf, or per group of leaves sharing a label (a conv kernel and its bias);
- ``global``: one rate.

With ``g_t`` the incoming gradient, ``d_t`` the inner direction, ``e_p = g_{t,p} d_{t-1,p}``,
``N`` the number of parameters and ``n_j`` the size of group ``j``, step ``t`` (``t`` earlier
updates, ``tau = exp(-r t)``) is, in Algorithm 1's order::

  h_j        = (N / n_j) sum_{p in j} e_p                        (Eq. 8, "same scale")
  a^l_j     += beta * gamma_l * tau * h_j                        (every level l)
  gamma_l   += delta * tau * sum_p e_p a^l_old(p)  -> clip at 0, renormalise (or softmax)
  a*_p       = sum_l gamma_l_old a^l(p)                          (new rates, previous gamma)
  kappa_p    = tau a*_p + (1 - tau) a_inf                        (Section 2.4)
  update     = -kappa * d_t

The normalisation ``N / n_j`` makes the global level Baydin's hypergradient descent exactly:
``levels=("global",)`` with fixed weights and no blending reproduces
:func:`optax_lr.hypergradient` bit for bit.

Every level's hypergradient comes from the per-leaf partial sums of ``e`` (per-leaf totals, and
per-last-axis sums for the filter level) in one reduction pass over ``(g, d_prev)``; the
element-wise pass then runs the inner transform, the per-element rates and the scaling together.
An optional floor (:class:`RateRule`'s ``min_learning_rate``) bounds ``kappa`` (the applied rate),
as ``hypergradient``'s does.

Hypergradient rates are per base optimizer (the paper's Table 1): Adam 1e-7 on the MLPs and 1e-8
on LeNet-5 and the ResNets; SGD/SGDN 1e-6 on the ResNets and 1e-3 on LeNet-5. The ``"mean"``
scaling at ``beta`` equals ``"same_scale"`` at ``beta / N``, so a rate far too large for a base
shows as a divergence of either, and of plain HD with the same base as well (measurements: the
documentation's CAM-HD page).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lr import _base, _checks, _rate_rule, _tree, telemetry
from optax_lr.safeguards import LossBacktrack, RateSearch, check_option

LEVELS = ("parameter", "filter", "layer", "global")
"""The levels CAM-HD knows, finest to coarsest."""

COMBINATION_WEIGHTS = "combination_weights"
"""Key of the combination weights inside :attr:`CamHDState.learning_rate`."""

_SCALAR_LEVELS = ("global", "layer")  # combined first: one scalar per leaf
_ARRAY_LEVELS = ("filter", "parameter")

LayerLabels = Any  # a pytree of hashable labels matching params, or ``f(key_path) -> label``


@dataclasses.dataclass(frozen=True)
class Blending:
  """The convergence blending of CAM-HD (Section 2.4): ``kappa = tau a* + (1 - tau) a_inf``.

  The combined rate ``a*`` is blended towards a fixed rate ``a_inf`` by ``tau(t) = exp(-r t)``,
  ``t`` the number of earlier updates, so the applied rate converges to ``a_inf`` (and the
  hypergradient steps, scaled by ``tau`` too, die out). A factory's ``blending=None`` (the
  default) turns it off: ``kappa = a*``.

  Attributes:
    decay_rate: ``r > 0`` of ``tau(t) = exp(-r t)``. Paper: 0.002 (LeNet), 0.001 (ResNet).
    final_learning_rate: ``a_inf >= 0`` the rate is blended towards; ``None`` (default): the
      factory's ``learning_rate``.

  Example:
    >>> opt = optax_lr.sgd_cam_hd(0.1, 1e-3, blending=optax_lr.Blending(0.001))
  """

  decay_rate: float
  final_learning_rate: float | None = None

  def __post_init__(self):
    _checks.in_range("Blending.decay_rate", self.decay_rate, 0.0, math.inf, low_open=True,
                     high_open=True)
    if self.final_learning_rate is not None:
      _checks.non_negative("Blending.final_learning_rate", self.final_learning_rate)


@dataclasses.dataclass(frozen=True)
class CombinationWeights:
  """The combination weights ``gamma`` of CAM-HD's levels (Section 2.3, Algorithm 1 step 3).

  The applied rate is ``sum_l gamma_l a^l`` with ``gamma`` on the simplex. The weights are
  learned by a step ``delta`` along ``-dL/dgamma`` when ``learning_rate > 0`` and there is more
  than one level. A factory's ``combination=None`` (the default) is ``CombinationWeights()``:
  equal, fixed weights.

  The step ``delta`` is grouped here with the weights it moves, so ``optax.inject_hyperparams``
  does not reach it (the object is passed through as it is): the paper keeps ``delta`` constant,
  and a schedule on it has no use the rates' own schedule (``hypergrad_lr``, injectable) does not
  cover, while the three options only mean something together.

  Attributes:
    initial: initial weights, one ``>= 0`` per level (in the order of ``levels``) with a positive
      sum, normalised to sum 1; ``None`` (default): equal weights. Paper: ``(0.2, 0.8)``,
      ``(0.5, 0.5)`` for two levels, ``(0.3, 0.3, 0.4)`` for three. Checked against ``levels``
      by the factory.
    learning_rate: ``delta >= 0``, the step on the weights (paper: 1e-3 to 3e-2); 0 (default)
      keeps ``initial`` fixed exactly.
    parametrization: ``"clip"`` (default): step on ``gamma``, clip at 0, renormalise
      (Algorithm 1); ``"softmax"``: step on the logits of ``gamma = softmax(logits)`` (the
      paper's alternative; a weight that starts at 0 then stays 0).

  Example:
    >>> opt = optax_lr.adam_cam_hd(1e-3, 1e-8, levels=("filter", "global"),
    ...     combination=optax_lr.CombinationWeights((0.2, 0.8), learning_rate=0.01))
  """

  initial: Sequence[float] | None = None
  learning_rate: float = 0.0
  parametrization: str = "clip"

  def __post_init__(self):
    if self.initial is not None:
      try:
        values = tuple(float(w) for w in self.initial)
      except (TypeError, ValueError):
        _checks._fail("CombinationWeights.initial", self.initial,
                      "None or a sequence of numbers >= 0")
      for value in values:
        _checks.non_negative("CombinationWeights.initial", value)
      if not sum(values) > 0:
        _checks._fail("CombinationWeights.initial", self.initial, "weights with a positive sum")
      # A tuple keeps the frozen object immutable whatever sequence was given.
      object.__setattr__(self, "initial", values)
    _checks.non_negative("CombinationWeights.learning_rate", self.learning_rate)
    _checks.one_of("CombinationWeights.parametrization", self.parametrization,
                   ("clip", "softmax"))


@dataclasses.dataclass(frozen=True)
class LevelGroups:
  """How CAM-HD's ``layer`` and ``filter`` levels group the parameters, and how groups step.

  Attributes:
    layer_labels: how the ``layer`` level groups leaves: ``None`` (default: one rate per leaf),
      a pytree of hashable labels with the structure of the params, or a function of a leaf's key
      path returning its label (e.g. :func:`parent_module_label`). Leaves with equal labels share
      one rate. A label tree that does not match the params raises ``ValueError`` at ``init``.
    filter_labels: which leaves share the ``filter`` level's groups, in the form of
      ``layer_labels``: leaves with equal labels and the same last-axis size ``C`` form ``C``
      groups, group ``j`` holding every such leaf's ``[..., j]`` entries. ``"module"`` (default)
      labels each leaf by its parent module (:func:`parent_module_label`), which puts a bias
      ``(C,)`` into its kernel's groups (``kernel[..., j]`` with ``bias[j]``), so no filter group
      is a lone bias element (whose rate would follow a single product ``g_j d_j`` scaled by
      ``N``); ``None`` gives every leaf its own groups (a bias then has one rate per element).
      Only the filter level reads it.
    scaling: ``"same_scale"`` (default): ``h_j = (N / n_j) sum_{p in j} e_p`` (Eq. 8), so every
      level moves on the scale of the global level and the global level is Baydin's HD;
      ``"mean"``: the paper's alternative ``h_j = (1 / n_j) sum_{p in j} e_p`` (plain group
      averages), the same as ``"same_scale"`` at ``hypergrad_lr / N``. No effect with
      ``RateRule(kind="multiplicative")``.

  Example:
    >>> opt = optax_lr.sgd_cam_hd(0.1, 1e-3, levels=("layer", "global"),
    ...     groups=optax_lr.LevelGroups(layer_labels=optax_lr.parent_module_label))
  """

  layer_labels: LayerLabels = None
  filter_labels: LayerLabels = "module"
  scaling: str = "same_scale"

  def __post_init__(self):
    for name in ("layer_labels", "filter_labels"):
      labels = getattr(self, name)
      if labels is not None and not callable(labels) and not isinstance(labels, str):
        # Structure is checked against the params at init; here only that it is a tree at all.
        try:
          jax.tree.structure(labels)
        except Exception:  # noqa: BLE001 - any failure means "not a pytree"
          _checks._fail(f"LevelGroups.{name}", labels,
                        "None, a pytree of labels or a function of the key path")
    _checks.one_of("LevelGroups.scaling", self.scaling, ("same_scale", "mean"))


@dataclasses.dataclass(frozen=True)
class RateRule:
  """How CAM-HD steps its level rates beyond Algorithm 1: the rule, its safeguards, the floor.

  The options the CAM-HD factories share with the hypergradient family (:func:`optax_lr.adam_hd`'s
  ``rate_rule``, ``search``, ``backtrack`` and ``store_previous_direction``,
  :func:`optax_lr.hypergradient`'s ``min_learning_rate``), grouped in one object: none is in the
  paper, and each sets the state's structure or only means something with the others (the search
  needs the multiplicative rule). A factory's ``rule=None`` (the default) is ``RateRule()``:
  Algorithm 1's additive step, no safeguard, no floor.

  Attributes:
    kind: ``"additive"`` (default, Algorithm 1) or ``"multiplicative"``: each level's rate of
      group ``j`` becomes ``a^l_j (1 + beta gamma_l tau cos_j)``, ``cos_j`` the cosine of ``g_t``
      and ``d_{t-1}`` restricted to the group (the whole tree for ``global``, the layer group, the
      filter group, and for ``parameter`` the sign of ``g_p d_{t-1,p}``), Baydin et al.'s
      normalised multiplicative rule applied per group (:doc:`/methods/hypergradient`):
      independent of the gradients' and the rate's scale, so ``LevelGroups.scaling`` has no
      effect; ``hypergrad_lr`` in ``[0, 1)`` (1e-2 is a good untuned value). The level weight
      ``gamma_l`` (and ``tau``) scales the step as in the additive rule, so that
      ``levels=("global",)`` is :func:`optax_lr.hypergradient` with the same rule; the
      combination weights keep their additive step.
    search: ``None`` (default: off) or a :class:`~optax_lr.RateSearch` (needs
      ``kind="multiplicative"``), the rate search of :func:`optax_lr.hypergradient`
      (``search.start`` scales the initial rate of every level).
    backtrack: ``None`` (default: off) or a :class:`~optax_lr.LossBacktrack`, the loss backtrack
      of :func:`optax_lr.hypergradient` (needs ``update(..., value=loss)``). The search and the
      backtrack act on every level's rates at once (the search reads the global
      ``<g_t, d_{t-1}>``; a cut scales every level rate, so the combined rate ``kappa`` by the
      same factor without blending), with one scalar of state each, so ``levels=("global",)``
      stays :func:`optax_lr.hypergradient` with the same options; the combination weights are
      not touched.
    min_learning_rate: optional floor ``>= 0`` on the effective per-element rate ``kappa``
      (applied to the update; the level rates themselves are not clipped, as in the paper);
      ``None`` (default) leaves it unbounded.
    store_previous_direction: keep ``d_{t-1}`` as a parameter-sized state buffer. By default
      (False) :func:`sgd_cam_hd` reads it off the heavy-ball trace and :func:`adam_cam_hd`
      computes it from Adam's moments (:func:`optax_lr.adam_previous_direction`), the same
      values bit for bit at every level; with a bfloat16 ``mu_dtype`` the two differ by the
      rounding of the stored first moment (``2^-8`` relative per element). :func:`cam_hd` keeps
      the buffer whenever its ``previous_direction_fn`` is None, and refuses both.

  Example:
    >>> opt = optax_lr.adam_cam_hd(1e-3, 0.1, rule=optax_lr.RateRule(
    ...     "multiplicative", search=optax_lr.RateSearch(start=1e-3),
    ...     backtrack=optax_lr.LossBacktrack(tolerance=0.5)))
  """

  kind: str = "additive"
  search: RateSearch | None = None
  backtrack: LossBacktrack | None = None
  min_learning_rate: float | None = None
  store_previous_direction: bool = False

  def __post_init__(self):
    _checks.one_of("RateRule.kind", self.kind, _rate_rule.RATE_RULES)
    if (check_option("RateRule.search", self.search, RateSearch)
        and self.kind != "multiplicative"):
      raise ValueError("`RateRule.search` needs kind='multiplicative' (the search ends where the "
                       f"cosine of the multiplicative rule turns non-positive); got "
                       f"kind={self.kind!r}.")
    check_option("RateRule.backtrack", self.backtrack, LossBacktrack)
    if self.min_learning_rate is not None:
      _checks.non_negative("RateRule.min_learning_rate", self.min_learning_rate)
    _checks.flag("RateRule.store_previous_direction", self.store_previous_direction)


class CamHDState(NamedTuple):
  """State of :func:`cam_hd`.

  Attributes:
    count: int32, the number of updates taken so far (``t`` of ``tau = exp(-r t)``).
    learning_rate: a dict with one entry per level in ``levels`` and the combination weights, all
      float32:

      - ``"parameter"``: a tree shaped like params (one rate per element);
      - ``"filter"``: a tree with one ``(last_dim,)`` vector per leaf (a scalar for 0-d leaves);
        leaves sharing filter groups (a kernel and its bias) hold the same vector, the groups'
        rates, each in its own buffer;
      - ``"layer"``: a tree with one scalar per leaf; leaves grouped by ``groups.layer_labels``
        hold the same value (the group's rate), so a leaf's rate is read off directly;
      - ``"global"``: a scalar;
      - ``"combination_weights"``: ``{level: gamma_level}``, scalars summing to 1.

      :func:`optax_lr.learning_rates` reports every entry (keys such as
      ``"learning_rate/layer/Dense_0/kernel"`` and ``"learning_rate/combination_weights/global"``).
    previous_direction: ``d_{t-1}`` in each leaf's dtype (zeros at first).
    inner_state: the state of the wrapped direction transform.
    backtrack: the loss backtrack's state, a ``NamedTuple`` holding ``loss_average`` (the
      exponential average of the training losses, a scalar), with a
      :class:`~optax_lr.LossBacktrack`, else empty.
    searching: bool scalar, the rate search is on (with a :class:`~optax_lr.RateSearch`), else
      empty.
    search_peak: the largest global ``cos(g_t, d_{t-1})`` seen while the search was on (a
      scalar, 0 at first), with a :class:`~optax_lr.RateSearch`, else empty.
    tau: scalar, the blend ``tau(count) = exp(-r count)`` the next update applies (1 without
      :class:`Blending`).
    final_learning_rate: scalar, ``a_inf`` of the blending (0 without :class:`Blending`, where
      ``1 - tau = 0`` leaves it out).
    min_learning_rate: scalar, the floor on ``kappa`` (``-inf`` without a floor, the rule's
      ``min_learning_rate``).

    The last three are always present, in the rates' dtype (float32 unless the params are
    float64), so the state's structure does not depend on the options and
    :func:`cam_hd_effective_learning_rate` needs nothing but the state:
    ``kappa = max(tau sum_l gamma_l a^l + (1 - tau) final_learning_rate, min_learning_rate)``.
  """

  count: jax.Array
  learning_rate: dict[str, Any]
  previous_direction: Any
  inner_state: Any
  backtrack: Any = optax.EmptyState()
  searching: Any = optax.EmptyState()
  search_peak: Any = optax.EmptyState()
  tau: Any = None
  final_learning_rate: Any = None
  min_learning_rate: Any = None


def parent_module_label(path: Sequence[Any]) -> str:
  """A ``layer_labels`` function grouping every leaf with its siblings (kernel with bias).

  Args:
    path: a leaf's key path (as from ``jax.tree_util.tree_flatten_with_path``).

  Returns:
    The ``/``-joined path without its last key: ``params/Conv_0`` for
    ``params/Conv_0/kernel`` and ``params/Conv_0/bias``.
  """
  return telemetry._path_name(tuple(path)[:-1])


def _check_levels(levels: Any) -> tuple[str, ...]:
  if isinstance(levels, str):
    levels = (levels,)
  try:
    levels = tuple(levels)
  except TypeError:
    _checks._fail("levels", levels, "a non-empty sequence of distinct levels from " + str(LEVELS))
  if not levels:
    _checks._fail("levels", levels, "a non-empty sequence of distinct levels from " + str(LEVELS))
  for level in levels:
    _checks.one_of("levels", level, LEVELS)
  if len(set(levels)) != len(levels):
    _checks._fail("levels", levels, "distinct levels (no duplicates)")
  return levels


def _check_weights(weights: tuple[float, ...] | None,
                   levels: tuple[str, ...]) -> dict[str, float]:
  # CombinationWeights checked the values; only their number depends on ``levels``.
  if weights is None:
    return {level: 1.0 / len(levels) for level in levels}
  if len(weights) != len(levels):
    _checks._fail("CombinationWeights.initial", weights,
                  f"one weight per level ({len(levels)} for {levels})")
  total = sum(weights)
  return {level: value / total for level, value in zip(levels, weights, strict=True)}


class _Layout(NamedTuple):
  """Static facts about the parameter tree, computed while tracing."""

  total_size: int  # N
  sizes: tuple[int, ...]  # elements of each leaf
  groups: tuple[tuple[int, ...], ...]  # leaf indices of each layer group
  filter_groups: tuple[tuple[int, ...], ...]  # leaf indices sharing filter groups (same j)
  filter_sizes: tuple[int, ...]  # n_j of one filter of each leaf


def _layer_groups(params: Any, layer_labels: LayerLabels,
                  name: str = "layer_labels") -> tuple[tuple[int, ...], ...]:
  """Leaf indices grouped by label (one group per leaf without labels), in leaf order."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  if layer_labels is None:
    return tuple((i,) for i in range(len(with_path)))
  if callable(layer_labels):
    labels = [layer_labels(path) for path, _ in with_path]
  else:
    label_leaves, label_def = jax.tree.flatten(layer_labels)
    if label_def != treedef:
      raise ValueError(
          f"`{name}` must be a pytree of labels with the structure of the params (or a "
          f"function of the leaf path); got labels {label_def} for params {treedef}.")
    labels = label_leaves
  groups: dict[Hashable, list[int]] = {}
  for index, label in enumerate(labels):
    try:
      groups.setdefault(label, []).append(index)
    except TypeError:
      _checks._fail(name, label, "hashable labels (strings, say)")
  return tuple(tuple(indices) for indices in groups.values())


def _filter_groups(params: Any, filter_labels: LayerLabels) -> tuple[tuple[int, ...], ...]:
  """Leaves whose filter ``j`` forms one group: equal label and equal last-axis size.

  ``filter_labels="module"`` labels each leaf with :func:`parent_module_label`.

  A kernel ``(..., C)`` and its bias ``(C,)`` under one label give ``C`` groups
  ``kernel[..., j] + bias[j]``; 0-d leaves and leaves without a partner keep their own groups.
  """
  if isinstance(filter_labels, str) and filter_labels == "module":
    filter_labels = parent_module_label
  shapes = [jnp.shape(x) for x in jax.tree.leaves(params)]
  groups: list[tuple[int, ...]] = []
  for labelled in _layer_groups(params, filter_labels, "filter_labels"):
    by_width: dict[Any, list[int]] = {}
    for i in labelled:
      # A 0-d leaf has one filter of its own: never merged.
      key = shapes[i][-1] if shapes[i] else ("scalar", i)
      by_width.setdefault(key, []).append(i)
    groups.extend(tuple(indices) for indices in by_width.values())
  return tuple(sorted(groups))


def _layout(params: Any, layer_labels: LayerLabels, filter_labels: LayerLabels = None) -> _Layout:
  shapes = [jnp.shape(x) for x in jax.tree.leaves(params)]
  sizes = tuple(int(np.prod(s, dtype=np.int64)) for s in shapes)
  return _Layout(
      total_size=sum(sizes),
      sizes=sizes,
      groups=_layer_groups(params, layer_labels),
      filter_groups=_filter_groups(params, filter_labels),
      filter_sizes=tuple(int(np.prod(s[:-1], dtype=np.int64)) for s in shapes),
  )


def _rate_arrays(level: str, leaves: list[Any], learning_rate: Any,
                 dtype: Any) -> list[jax.Array]:
  # Built from each parameter, so that a sharded parameter's rates are sharded alike.
  if level == "parameter":
    return [jnp.full_like(x, learning_rate, dtype=dtype) for x in leaves]
  if level == "filter":
    return [_tree.per_filter_like(x, learning_rate, dtype) for x in leaves]
  return [_tree.full_rate(learning_rate, dtype) for _ in leaves]


def _combined_rates(rates: dict[str, Any], gammas: dict[str, jax.Array], treedef: Any,
                    tau: jax.Array | None, final_learning_rate: Any) -> list[jax.Array]:
  """Per leaf ``kappa = tau * sum_l gamma_l a^l + (1 - tau) a_inf`` (``a*`` when ``tau`` is None).

  Scalar levels are summed first, so a leaf's rate is one scalar unless a filter or parameter level
  is present; the order is fixed (finest levels last) whatever the order of ``levels``.
  """
  num_leaves = treedef.num_leaves
  combined: list[Any] = [None] * num_leaves
  for level in _SCALAR_LEVELS + _ARRAY_LEVELS:
    if level not in rates:
      continue
    gamma = gammas[level]
    if level == "global":
      level_leaves = [rates[level]] * num_leaves
    else:
      level_leaves = treedef.flatten_up_to(rates[level])
    for i, rate in enumerate(level_leaves):
      term = gamma * rate
      combined[i] = term if combined[i] is None else combined[i] + term
  if tau is not None:
    combined = [tau * rate + (1.0 - tau) * final_learning_rate for rate in combined]
  return combined


def _filter_sum(x: jax.Array) -> jax.Array:
  """Sum over every axis but the last (the identity for a 0-d leaf)."""
  return jnp.sum(x, axis=tuple(range(x.ndim - 1))) if x.ndim else x


def _new_combination_weights(gammas: dict[str, jax.Array], gradients: dict[str, jax.Array],
                             step: Any, softmax: bool) -> dict[str, jax.Array]:
  """One ascent step of ``step`` on gamma along ``-dL/dgamma``, kept on the simplex."""
  levels = tuple(gammas)
  gamma = jnp.stack([gammas[level] for level in levels])
  gradient = jnp.stack([gradients[level] for level in levels])
  if softmax:
    # gamma = softmax(logits) with logits = log(gamma) up to a constant; the chain rule gives
    # dL/dlogit_k = gamma_k (dL/dgamma_k - sum_l gamma_l dL/dgamma_l).
    logits = jnp.log(gamma) + step * gamma * (gradient - jnp.sum(gamma * gradient))
    new = jax.nn.softmax(logits)
  else:
    clipped = jnp.maximum(gamma + step * gradient, 0.0)
    total = jnp.sum(clipped)
    # All weights clipped to 0 would leave no rate: keep the previous weights then.
    new = jnp.where(total > 0, clipped / jnp.where(total > 0, total, 1.0), gamma)
  # A non-finite step (an inf or NaN hypergradient) keeps the weights as they were, jointly:
  # they only make sense together, on the simplex.
  new = _tree.where_finite(new, gamma, jointly=True)
  return {level: new[i] for i, level in enumerate(levels)}


class _Rule(NamedTuple):
  """Static choices of a CAM-HD level step."""

  multiplicative: bool  # rate_rule="multiplicative"
  same_scale: bool  # LevelGroups.scaling == "same_scale"
  learn_weights: bool  # the combination weights move: each level returns its -dL/dgamma term

  def level_factor(self, group_size: int, total_size: int) -> float:
    """Eq. 8's normalisation of a group of ``group_size``: ``N / n_j`` (or ``1 / n_j``)."""
    if group_size == 0:
      return 0.0
    return (total_size if self.same_scale else 1) / group_size


class _Sums(NamedTuple):
  """The reduction pass over ``(g_t, d_{t-1})``: every level's hypergradient comes from these."""

  products: list[jax.Array]  # e = g * d_prev, per leaf (float32)
  leaf_sums: list[jax.Array]  # sum of e per leaf
  filter_sums: list[jax.Array] | None  # sum of e per last-axis index (filter level only)
  global_sum: jax.Array  # <g_t, d_{t-1}>
  squares: list[tuple[jax.Array, jax.Array]] | None  # (g^2, d_prev^2) per leaf (cosine only)
  leaf_squares: list[tuple[jax.Array, jax.Array]] | None  # their per-leaf sums
  filter_squares: list[tuple[jax.Array, jax.Array]] | None  # their per-filter sums


def _reduction_pass(grads: list[Any], previous: list[Any], filters: bool,
                    multiplicative: bool) -> _Sums:
  """Per-leaf (and per-filter) partial sums of ``e = g_t * d_{t-1}`` and, for the cosine, of the
  squares: one pass over this step's gradient and the previous direction, which does not wait on
  the inner transform."""
  products = [_tree._as_float32(g) * _tree._as_float32(d)
              for g, d in zip(grads, previous, strict=True)]
  filter_sums = None
  if filters:
    filter_sums = [_filter_sum(e) for e in products]
    leaf_sums = [jnp.sum(f) for f in filter_sums]
  else:
    leaf_sums = [jnp.sum(e) for e in products]
  global_sum = sum(leaf_sums, jnp.zeros((), _tree.RATE_DTYPE))
  squares = leaf_squares = filter_squares = None
  if multiplicative:
    # The cosine's squared norms per group, ||g||^2 and ||d_prev||^2, as per-leaf (and
    # per-filter) sums of the same inputs as the products above.
    squares = [(_tree._as_float32(g) ** 2, _tree._as_float32(d) ** 2)
               for g, d in zip(grads, previous, strict=True)]
    if filters:
      filter_squares = [(_filter_sum(a), _filter_sum(b)) for a, b in squares]
      leaf_squares = [(jnp.sum(a), jnp.sum(b)) for a, b in filter_squares]
    else:
      leaf_squares = [(jnp.sum(a), jnp.sum(b)) for a, b in squares]
  return _Sums(products, leaf_sums, filter_sums, global_sum, squares, leaf_squares,
               filter_squares)


def _group_squares(per_leaf: list[tuple[Any, Any]], group: Sequence[int]) -> tuple[Any, Any]:
  """``(||g||^2, ||d_prev||^2)`` of a group of leaves, from their per-leaf (or per-filter) sums."""
  return tuple(sum((per_leaf[i][k] for i in group[1:]), per_leaf[group[0]][k]) for k in range(2))


def _all_leaves(sums: _Sums) -> range:
  return range(len(sums.leaf_sums))


# The levels, one function each: ``(new rates, sum_p e_p a^l_old(p))``, the second being
# ``-dL/dgamma_l / tau``, the level's term in the combination weights' step (None when the weights
# are fixed). ``step`` is ``beta gamma_l tau``.

def _global_level(rate: jax.Array, step: Any, sums: _Sums, rule: _Rule, layout: _Layout,
                  treedef: Any) -> tuple[Any, Any]:
  """``a_global += step * h``, ``h = <g_t, d_{t-1}>`` (Eq. 6-8 with ``n_j = N``: Baydin's HD)."""
  del treedef
  if rule.multiplicative:
    new = _rate_rule.multiplicative(rate, step, sums.global_sum,
                                    *_group_squares(sums.leaf_squares, _all_leaves(sums)))
  else:
    factor = rule.level_factor(layout.total_size, layout.total_size)
    hypergradient = sums.global_sum if factor == 1 else factor * sums.global_sum
    new = rate + step * hypergradient
  return new, (rate * sums.global_sum if rule.learn_weights else None)


def _layer_level(rates: Any, step: Any, sums: _Sums, rule: _Rule, layout: _Layout,
                 treedef: Any) -> tuple[Any, Any]:
  """``a_j += step * (N / n_j) sum_{p in j} e_p`` for every layer group ``j`` (Eq. 6-8)."""
  old_leaves = treedef.flatten_up_to(rates)
  new_leaves: list[Any] = [None] * len(old_leaves)
  terms = []
  for group in layout.groups:
    group_sum = sum((sums.leaf_sums[i] for i in group[1:]), sums.leaf_sums[group[0]])
    size = sum(layout.sizes[i] for i in group)
    rate = old_leaves[group[0]]
    if rule.multiplicative:
      updated = _rate_rule.multiplicative(rate, step, group_sum,
                                          *_group_squares(sums.leaf_squares, group))
    else:
      updated = rate + step * (rule.level_factor(size, layout.total_size) * group_sum)
    # One value per group, but a fresh buffer per leaf: a state holding one array twice cannot
    # be donated (the eager path would otherwise return the same array object).
    for n, i in enumerate(group):
      new_leaves[i] = updated if n == 0 else jnp.copy(updated)
    terms.append(rate * group_sum)
  descent = sum(terms, jnp.zeros((), _tree.RATE_DTYPE)) if rule.learn_weights else None
  return treedef.unflatten(new_leaves), descent


def _filter_level(rates: Any, step: Any, sums: _Sums, rule: _Rule, layout: _Layout,
                  treedef: Any) -> tuple[Any, Any]:
  """``a_j += step * (N / n_j) sum_{p in j} e_p`` for every filter ``j`` (Eq. 6-8): filter ``j``
  of a group is the ``j``-th last-axis slice of every leaf in it (a kernel and its bias)."""
  old_leaves = treedef.flatten_up_to(rates)
  new_leaves: list[Any] = [None] * len(old_leaves)
  for group in layout.filter_groups:
    group_sums = sum((sums.filter_sums[i] for i in group[1:]), sums.filter_sums[group[0]])
    size = sum(layout.filter_sizes[i] for i in group)
    # Every leaf of the group holds the group's rates, each updated from its own buffer (the same
    # values and operations, so the same result).
    for i in group:
      if rule.multiplicative:
        new_leaves[i] = _rate_rule.multiplicative(old_leaves[i], step, group_sums,
                                                  *_group_squares(sums.filter_squares, group))
      else:
        new_leaves[i] = (old_leaves[i]
                         + (step * rule.level_factor(size, layout.total_size)) * group_sums)
  descent = None
  if rule.learn_weights:
    descent = sum((jnp.sum(rate * s) for rate, s in zip(old_leaves, sums.filter_sums, strict=True)),
                  jnp.zeros((), _tree.RATE_DTYPE))
  return treedef.unflatten(new_leaves), descent


def _parameter_level(rates: Any, step: Any, sums: _Sums, rule: _Rule, layout: _Layout,
                     treedef: Any) -> tuple[Any, Any]:
  """``a_p += step * N e_p`` for every element ``p`` (Eq. 6-8 with ``n_j = 1``)."""
  old_leaves = treedef.flatten_up_to(rates)
  descent = None
  if rule.learn_weights:
    weighted_sums = [jnp.sum(rate * e) for rate, e in zip(old_leaves, sums.products, strict=True)]
    descent = sum(weighted_sums, jnp.zeros((), _tree.RATE_DTYPE))
    # The new rates overwrite the old ones after the weights' reduction has read them.
    old_leaves = _tree.after(old_leaves, _tree.finite_or_zero(descent))
  if rule.multiplicative:
    # One element's cosine is the sign of g_p d_prev_p (0 where either is 0).
    new = [_rate_rule.multiplicative(rate, step, e, *sq)
           for rate, e, sq in zip(old_leaves, sums.products, sums.squares, strict=True)]
  else:
    new = [rate + (step * rule.level_factor(1, layout.total_size)) * e
           for rate, e in zip(old_leaves, sums.products, strict=True)]
  return treedef.unflatten(new), descent


_LEVEL_STEPS = {"global": _global_level, "layer": _layer_level, "filter": _filter_level,
                "parameter": _parameter_level}


def _safeguards(new: dict[str, Any], old: dict[str, Any], sums: _Sums,
                search: RateSearch | None, backtrack: LossBacktrack | None, searching: Any,
                search_peak: Any, backtrack_state: Any, value: Any,
                ) -> tuple[dict[str, Any], Any, Any, Any]:
  """The rate search and the loss backtrack, on every level's rates at once.

  The search reads the global ``<g_t, d_{t-1}>`` and multiplies every level's old rates by
  ``search.factor`` while its cosine stays above ``search.stop_ratio`` times the search's largest
  (:func:`optax_lr._rate_rule.search_decision`); a rise of the loss cuts every level's old rates (so
  ``kappa`` by the same factor without blending) and ends the search. One scalar of state
  each (two for the search), so that ``levels=("global",)`` is :func:`optax_lr.hypergradient`
  with the same options.

  Returns:
    ``(new, searching, search_peak, backtrack_state)``.
  """
  if search is not None:
    grows, searching, search_peak = _rate_rule.search_decision(
        searching, search_peak, sums.global_sum,
        *_group_squares(sums.leaf_squares, _all_leaves(sums)), stop_ratio=search.stop_ratio)
    new = {level: _rate_rule.scaled_where(grows, search.factor, rates, old[level])
           for level, rates in new.items()}
  if backtrack is not None:
    rose, cut, backtrack_state = _rate_rule.loss_rose(value, backtrack_state, backtrack)
    new = {level: _rate_rule.scaled_where(rose, cut, rates, old[level])
           for level, rates in new.items()}
    if search is not None:
      searching = searching & ~rose
  return new, searching, search_peak, backtrack_state


def cam_hd(inner: optax.GradientTransformation, learning_rate: float, hypergrad_lr: float,
           levels: Sequence[str] = ("layer", "global"), *,
           combination: CombinationWeights | None = None,
           blending: Blending | None = None,
           groups: LevelGroups | None = None,
           previous_direction_fn: Any = None,
           rule: RateRule | None = None,
           ) -> optax.GradientTransformationExtraArgs:
  """Wrap a direction transform with CAM-HD: hypergradient rates at several combined levels.

  Each level keeps its own rates, all updated by hypergradient descent from the same elementwise
  products ``e = g_t * d_{t-1}``; the applied per-element rate is the combination
  ``sum_l gamma_l a^l`` with learned weights ``gamma`` on the simplex (:class:`CombinationWeights`),
  optionally blended towards a final rate by ``tau(t) = exp(-r t)`` (:class:`Blending`). With
  ``levels=("global",)`` and the defaults it is :func:`optax_lr.hypergradient` exactly.

  Non-finite input: a rate whose hypergradient step is not finite stays as it was, per element
  (parameter level), per filter, per layer group and for the global rate, and the combination
  weights keep their values when their step is not finite:
  an inf or NaN gradient element freezes, for that step, only the rates whose groups contain it.

  Args:
    inner: a unit-rate direction transform (``optax.identity()``, ``optax.trace(...)``,
      ``optax.scale_by_adam()``, or a chain); extra ``update`` arguments are forwarded to it.
    learning_rate: initial rate ``> 0`` of every level (so the initial combination is this rate).
    hypergrad_lr: ``beta >= 0``, the hypergradient step shared by all levels.
    levels: a non-empty sequence of distinct levels from ``("parameter", "filter", "layer",
      "global")``, in any order (``combination.initial`` follows it).
    combination: ``None`` (default: equal, fixed weights) or a :class:`CombinationWeights`: the
      initial weights, their step ``delta`` and their parametrization.
    blending: ``None`` (default: off, ``kappa = a*``) or a :class:`Blending`: the convergence
      blending of Section 2.4 towards ``final_learning_rate`` (default ``learning_rate``).
    groups: ``None`` (default: ``LevelGroups()``, one layer rate per leaf, a bias in its kernel's
      filter groups, the "same scale" steps) or a :class:`LevelGroups`: how the ``layer`` and
      ``filter`` levels group the leaves and how a group's step is scaled.
    previous_direction_fn: optional ``inner_state -> d_{t-1}``, reading the previous direction
      off the inner state before this step's update (as in :func:`optax_lr.hypergradient`; a
      trace's: :func:`optax_lr.trace_previous_direction`, Adam's:
      :func:`optax_lr.adam_previous_direction`): the state then keeps no copy of
      it, and every level, the per-element one included, sees the same values as with the kept
      buffer, bit for bit. Not with ``rule.store_previous_direction``.
    rule: ``None`` (default: ``RateRule()``, Algorithm 1's additive step, no safeguard, no
      floor) or a :class:`RateRule`: the multiplicative rule, the rate search, the loss backtrack
      and a floor on ``kappa``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`CamHDState`.

  References:
    "Adaptive Hierarchical Hyper-gradient Descent" (anonymous authors, under review at ICLR
    2021): Algorithm 1, Eq. 6-8, Section 2.3 (combination, normalisation of the level steps),
    Section 2.4 (``kappa = tau a + (1 - tau) a_inf``). The level steps use the "same scale"
    normalisation ``N / n_j`` (the paper's reading under which the global level is Baydin's HD),
    in Algorithm 1's order of operations.

  Example:
    >>> opt = optax_lr.cam_hd(optax.scale_by_adam(), learning_rate=1e-3, hypergrad_lr=1e-8,
    ...                       levels=("filter", "global"),
    ...                       combination=optax_lr.CombinationWeights((0.2, 0.8), 0.01),
    ...                       blending=optax_lr.Blending(0.001))
    >>> opt = optax.chain(optax.clip_by_global_norm(1.0), opt)
  """
  _checks.learned_initial_rate(learning_rate, "CAM-HD")
  _checks.non_negative("hypergrad_lr", hypergrad_lr)
  check_option("rule", rule, RateRule, none_means="RateRule()")
  rule = rule if rule is not None else RateRule()
  if rule.store_previous_direction and previous_direction_fn is not None:
    raise ValueError("`previous_direction_fn` reads d_{t-1} off the inner state and "
                     "`RateRule.store_previous_direction` keeps it as a buffer: pass one.")
  search, backtrack, min_learning_rate = rule.search, rule.backtrack, rule.min_learning_rate
  check_option("combination", combination, CombinationWeights,
               none_means="CombinationWeights()")
  check_option("groups", groups, LevelGroups, none_means="LevelGroups()")
  blends = check_option("blending", blending, Blending)
  combination = combination if combination is not None else CombinationWeights()
  groups = groups if groups is not None else LevelGroups()
  layer_labels, filter_labels = groups.layer_labels, groups.filter_labels
  decay_rate = blending.decay_rate if blends else 0.0
  final_learning_rate = (blending.final_learning_rate if blends else None)
  if final_learning_rate is None:
    final_learning_rate = learning_rate
  levels = _check_levels(levels)
  initial_weights = _check_weights(combination.initial, levels)
  combination_lr = combination.learning_rate
  multiplicative = _rate_rule.check(rule.kind, hypergrad_lr)
  rate_search = _rate_rule.check_search(search, multiplicative)
  backtracks = _rate_rule.check_backtrack(backtrack)
  inner = optax.with_extra_args_support(inner)

  def _reported_settings(count, dtype):
    # What the applied rate needs besides the rates and weights, so that it can be reported
    # from the state alone; neutral values when an option is off keep the structure static.
    return dict(
        tau=(jnp.exp(-decay_rate * count.astype(_tree.RATE_DTYPE)).astype(dtype) if blends
             else _tree.full_rate(1.0, dtype)),
        final_learning_rate=_tree.full_rate(final_learning_rate if blends else 0.0, dtype),
        min_learning_rate=_tree.full_rate(
            -jnp.inf if min_learning_rate is None else min_learning_rate, dtype))

  learn_weights = not _checks.is_static_zero(combination_lr) and len(levels) > 1
  softmax = combination.parametrization == "softmax"

  level_rule = _Rule(multiplicative=multiplicative, same_scale=groups.scaling == "same_scale",
                     learn_weights=learn_weights)

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    _layer_groups(params, layer_labels)  # raises when the labels do not match the params
    if "filter" in levels:
      _filter_groups(params, filter_labels)
    dtype = _tree.rate_dtype(params)
    start = _rate_rule.initial_rate(learning_rate, search)
    rates: dict[str, Any] = {}
    for level in levels:
      if level == "global":
        rates[level] = _tree.full_rate(start, dtype)
      else:
        rates[level] = treedef.unflatten(_rate_arrays(level, leaves, start, dtype))
    rates[COMBINATION_WEIGHTS] = {
        level: _tree.full_rate(w, dtype) for level, w in initial_weights.items()}
    return CamHDState(
        count=jnp.zeros((), jnp.int32),
        learning_rate=rates,
        previous_direction=(_tree.zeros_like(params) if previous_direction_fn is None
                            else optax.EmptyState()),
        inner_state=inner.init(params),
        backtrack=_rate_rule.backtrack_init(dtype) if backtracks else optax.EmptyState(),
        searching=jnp.ones((), bool) if rate_search else optax.EmptyState(),
        search_peak=_rate_rule.search_init(dtype) if rate_search else optax.EmptyState(),
        **_reported_settings(jnp.zeros((), jnp.int32), dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    layout = _layout(updates, layer_labels, filter_labels if "filter" in levels else None)
    grads, treedef = jax.tree.flatten(updates)
    if previous_direction_fn is None:
      previous_tree = state.previous_direction
    else:
      # Read from the inner state before this step's update: d_{t-1} exactly.
      previous_tree = previous_direction_fn(state.inner_state)
    previous = treedef.flatten_up_to(previous_tree)
    old = state.learning_rate
    gammas = old[COMBINATION_WEIGHTS]
    tau = jnp.exp(-decay_rate * state.count.astype(_tree.RATE_DTYPE)) if blends else None

    # Algorithm 1, step 1: the sums of e = g_t * d_{t-1} that every level's hypergradient needs.
    sums = _reduction_pass(grads, previous, "filter" in levels, multiplicative)
    # Step 2: each level's rates take their hypergradient step beta gamma_l tau h_j. A rate whose
    # step is not finite (inf or NaN elements in its group, or an overflowing sum) stays as it
    # was: per element, per filter, per group, or the global rate.
    new: dict[str, Any] = {}
    descent: dict[str, Any] = {}  # sum_p e_p a^l_old(p), i.e. -dL/dgamma_l / tau
    for level in levels:
      step = hypergrad_lr * gammas[level]
      step = step if tau is None else step * tau
      rates, descent[level] = _LEVEL_STEPS[level](old[level], step, sums, level_rule, layout,
                                                  treedef)
      new[level] = _tree.where_finite(rates, old[level])
    new, searching, search_peak, backtrack_state = _safeguards(
        new, old, sums, search, backtrack, state.searching, state.search_peak, state.backtrack,
        extra_args.get("value"))
    # Step 3: the combination weights step along -dL/dgamma, on the simplex.
    if learn_weights:
      gradients = descent if tau is None else {k: tau * v for k, v in descent.items()}
      new_gammas = _new_combination_weights(gammas, gradients, combination_lr, softmax)
    else:
      new_gammas = gammas
    # Step 4: the applied rate combines the new level rates with the previous weights, blended
    # towards a_inf (Section 2.4).
    kappa = _combined_rates(new, gammas, treedef, tau, final_learning_rate)
    if min_learning_rate is not None:
      kappa = [jnp.maximum(rate, min_learning_rate).astype(rate.dtype) for rate in kappa]
    new[COMBINATION_WEIGHTS] = new_gammas
    # The buffers the reductions read (the kept direction, or the inner state it is derived
    # from, which the per-element rates read too) are rewritten after every new rate, so that
    # they are updated in place (_tree.after).
    tokens = ({k: v for k, v in new.items() if k != "parameter"},
              _tree.finite_or_zero(sums.global_sum),
              [_tree.one_element(r) for r in jax.tree.leaves(new.get("parameter", ()))])
    inner_state = state.inner_state
    if previous_direction_fn is not None:
      inner_state = _tree.after(inner_state, tokens)
    directions, inner_state = inner.update(updates, inner_state, params, **extra_args)
    previous_direction = (_tree.after(directions, tokens) if previous_direction_fn is None
                          else state.previous_direction)
    new_updates = _tree.scale_by_rate(treedef.unflatten(kappa), directions, True)
    count = optax.safe_increment(state.count)
    return new_updates, CamHDState(
        count=count,
        learning_rate=new,
        previous_direction=previous_direction,
        inner_state=inner_state,
        backtrack=backtrack_state,
        searching=searching,
        search_peak=search_peak,
        **_reported_settings(count, state.tau.dtype),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_cam_hd(learning_rate: float, hypergrad_lr: float = 1e-6,
               momentum: float | None = None, nesterov: bool = False,
               weight_decay: float | None = None,
               levels: Sequence[str] = ("layer", "global"), *,
               combination: CombinationWeights | None = None,
               blending: Blending | None = None,
               groups: LevelGroups | None = None,
               rule: RateRule | None = None) -> optax.GradientTransformation:
  """SGD-CAM-HD (``momentum=None``), SGDN-CAM-HD (``nesterov=True``): SGD with CAM-HD rates.

  Hypergradient rates of the paper's Table 1 for the SGD/SGDN base: ``1e-6`` on ResNet-18/34
  (with a combination step ``1e-3``), ``1e-3`` on LeNet-5 (with ``3e-2``). SGDN-CAM-HD is run on
  ResNets only in the paper (measurements on LeNet-5: the documentation's CAM-HD page).

  Args:
    learning_rate: initial rate ``> 0`` (paper: 0.1 for SGD/SGDN).
    hypergrad_lr: ``beta >= 0`` (default 1e-6, Table 1's SGD/SGDN value on ResNets).
    momentum: in ``[0, 1)``, the direction is then the momentum trace; ``None`` (default):
      plain SGD, no trace (as ``optax.sgd``).
    nesterov: Nesterov momentum (SGDN-CAM-HD).
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage), added to the
      gradient before the rates see it.
    levels, combination, blending, groups: as :func:`cam_hd` (by default equal fixed weights,
      no blending, a bias in its kernel's filter groups).
    rule: ``None`` (default: ``RateRule()``, the paper's additive rule, no safeguard, no floor)
      or a :class:`RateRule`: the multiplicative rule (scale-free, per group; ``beta`` in
      ``[0, 1)``), the rate search, the loss backtrack, a floor on the applied rate, a kept
      ``d_{t-1}`` (a heavy-ball trace is read otherwise), as :func:`cam_hd`.

  Returns:
    An ``optax.GradientTransformation``; ``levels=("global",)`` with the defaults equals
    :func:`optax_lr.sgd_hd` bit for bit (with the same ``kind``, ``search`` and
    ``backtrack``).

  References:
    "Adaptive Hierarchical Hyper-gradient Descent" (anonymous authors, under review at ICLR
    2021): Algorithm 1 with the SGD/SGDN base of Section 2.3, Section 3.5 and Table 1.

  Example:
    >>> opt = optax_lr.sgd_cam_hd(0.1, hypergrad_lr=1e-3, momentum=0.9, nesterov=True,
    ...                           levels=("filter", "global"),
    ...                           combination=optax_lr.CombinationWeights((0.2, 0.8), 0.03),
    ...                           blending=optax_lr.Blending(0.001))
  """
  check_option("rule", rule, RateRule, none_means="RateRule()")
  stores = rule is not None and rule.store_previous_direction
  # A heavy-ball trace is the previous direction itself: read it, keep no copy.
  reads_trace = _base.reuses_heavy_ball_trace(momentum, nesterov) and not stores
  transform = cam_hd(_base.momentum_direction(momentum, nesterov), learning_rate, hypergrad_lr,
                     levels, combination=combination, blending=blending, groups=groups,
                     previous_direction_fn=(_base.trace_previous_direction() if reads_trace
                                            else None),
                     rule=rule)
  return _base.with_coupled_weight_decay(transform, weight_decay)


def adam_cam_hd(learning_rate: float = 1e-3, hypergrad_lr: float = 1e-8,
                b1: float = 0.9, b2: float = 0.999,
                eps: float = 1e-8, weight_decay: float | None = None,
                levels: Sequence[str] = ("layer", "global"), *,
                combination: CombinationWeights | None = None,
                blending: Blending | None = None,
                groups: LevelGroups | None = None,
                mu_dtype: Any = None,
                rule: RateRule | None = None) -> optax.GradientTransformation:
  """Adam-CAM-HD: Adam directions ``m_hat / (sqrt(v_hat) + eps)`` with CAM-HD rates.

  Args:
    learning_rate: initial rate ``> 0`` (paper: 1e-3).
    hypergrad_lr: ``beta >= 0``; Table 1: 1e-7 for the MLPs, 1e-8 (default) for LeNet-5 and the
      ResNets.
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``>= 0``.
    weight_decay: coupled L2 decay ``>= 0`` (``None``, the default: no decay stage).
    levels, combination, blending, groups: as :func:`cam_hd`.
    mu_dtype: optax's option: the first moment's dtype (``jnp.bfloat16`` halves its memory);
      ``None`` (default) keeps the parameters' dtype.
    rule: ``None`` (default: ``RateRule()``, the paper's additive rule, no safeguard, no floor)
      or a :class:`RateRule`: the multiplicative rule (scale-free, per group; ``beta`` in
      ``[0, 1)``), the rate search, the loss backtrack, a floor on the applied rate, as
      :func:`cam_hd`. By default ``d_{t-1}`` is computed from Adam's moments before this step's
      update (:func:`optax_lr.adam_previous_direction`: the same values bit for bit, at every
      level), so the state is Adam's plus the rates; ``RateRule(store_previous_direction=True)``
      keeps it as a buffer instead.

  Returns:
    An ``optax.GradientTransformation``; ``levels=("global",)`` with the defaults equals
    :func:`optax_lr.adam_hd` bit for bit (with the same ``rate_rule``, ``search``,
    ``backtrack`` and ``store_previous_direction``).

  References:
    "Adaptive Hierarchical Hyper-gradient Descent" (anonymous authors, under review at ICLR
    2021): Algorithm 1 with the Adam base (``phi``, ``psi`` of Section 2.3), Table 1.

  Example:
    >>> opt = optax_lr.adam_cam_hd(1e-3, hypergrad_lr=1e-8, levels=("parameter", "layer",
    ...     "global"), combination=optax_lr.CombinationWeights((0.3, 0.3, 0.4), 0.01))
  """
  check_option("rule", rule, RateRule, none_means="RateRule()")
  levels = _check_levels(levels)
  derived = rule is None or not rule.store_previous_direction
  transform = cam_hd(_base.adam_direction(b1, b2, eps, mu_dtype), learning_rate, hypergrad_lr,
                     levels, combination=combination, blending=blending, groups=groups,
                     previous_direction_fn=(_base.adam_previous_direction(b1, b2, eps)
                                            if derived else None),
                     rule=rule)
  return _base.with_coupled_weight_decay(transform, weight_decay)


def _find_cam_hd_state(opt_state: Any) -> CamHDState:
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, CamHDState))
           if isinstance(x, CamHDState)]
  if len(found) != 1:
    raise ValueError(f"`opt_state` must hold exactly one CamHDState; found {len(found)}.")
  return found[0]


def cam_hd_effective_learning_rate(opt_state: Any) -> Any:
  """The effective per-element rate ``kappa`` a CAM-HD state holds, as a tree shaped like params.

  ``kappa = max(tau sum_l gamma_l a^l + (1 - tau) a_inf, min_learning_rate)`` with the state's
  rates, combination weights, blend ``tau = exp(-r t)`` (``t`` its update count), ``a_inf`` and
  floor, all read from the state (:class:`CamHDState`): the rate the next update starts from (the
  rate of the latest update whenever the combination weights are fixed and there is no
  :class:`Blending`). Leaves are scalars broadcast to their parameter's shape. Computed on
  device; callable inside ``jit``.

  Args:
    opt_state: a state holding one :class:`CamHDState` (for example ``adam_cam_hd``'s).

  Returns:
    A tree of rates (float32 unless the params are float64) with the structure of the params.
  """
  state = _find_cam_hd_state(opt_state)
  # The parameters' shapes: the kept direction, or the inner state it is read from (Adam's
  # first moment, or the trace).
  shaped = state.previous_direction
  if isinstance(shaped, optax.EmptyState):
    shaped = _base.previous_direction_source(state.inner_state)
  treedef = jax.tree.structure(shaped)
  rates = {k: v for k, v in state.learning_rate.items() if k != COMBINATION_WEIGHTS}
  # Without blending tau = 1 and a_inf = 0, so the blend is a* + 0 = a* exactly; without a floor
  # it is -inf.
  combined = _combined_rates(rates, state.learning_rate[COMBINATION_WEIGHTS], treedef, state.tau,
                             state.final_learning_rate)
  combined = [jnp.maximum(rate, state.min_learning_rate).astype(rate.dtype) for rate in combined]
  # Broadcast a scalar or per-filter leaf to its elements, so every element counts once.
  return treedef.unflatten([
      jnp.broadcast_to(rate, jnp.shape(d)) for rate, d in
      zip(combined, treedef.flatten_up_to(shaped), strict=True)])


def cam_hd_rate_summary(opt_state: Any) -> dict[str, jax.Array]:
  """Mean, min, max and Euclidean norm of the effective per-element rate, on device.

  Args:
    opt_state: a state holding one :class:`CamHDState`; the optimizer's settings are read from
      it.

  Returns:
    ``{"mean", "min", "max", "norm"}`` float32 scalars over every parameter element (see
    :func:`cam_hd_effective_learning_rate` and :func:`optax_lr.rate_summary`).

  Example:
    >>> stats = jax.jit(optax_lr.cam_hd_rate_summary)(opt_state)
  """
  return telemetry.rate_summary(cam_hd_effective_learning_rate(opt_state))
