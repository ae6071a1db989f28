"""optax_lr: automatic learning-rate methods as optax GradientTransformations.

Not sure of the rate? ``optax_lr.auto_adam(total_steps=n)`` (or ``optax_lr.auto_adam()`` when the
run's length is open) is the library's recommendation, with its settings as defaults (module
``auto``): Adam at a distance-estimated rate with a decay.

Each module names its paper and the sections it implements:
  - ``tlr``: Trainable Learning Rate (anonymous, ICLR 2021 submission), a Newton step on the rate.
  - ``hypergradient``: hypergradient descent (Baydin et al. 2018), the shared baseline.
  - ``autodrop``: AutoDrop (Teng, Wang, Choromanska), drops the rate when the angular velocity
    saturates.
  - ``cam_hd``: combined multi-level hypergradient rates (Adaptive Hierarchical
    Hyper-gradient Descent, anonymous, ICLR 2021 submission).
  - ``adasecant``, ``cus_adam``, ``schedules``, ``switch``: Sasse's thesis, *Investigating the
    Influence of Learning Rates on the Learning Speed of Neural Networks* (University of Stuttgart,
    2021).
  - ``l4``: L4 stepsize adaptation (Rolínek and Martius, NeurIPS 2018), a baseline of CAM-HD.
  - ``adabound``: AdaBound / AMSBound (Luo et al., ICLR 2019), a baseline of CAM-HD.
  - ``safeguards``: the options that guard a learned rate (rate search, loss backtracks).
  - ``telemetry``: reading every rate out of any optimizer state.
"""

from optax_lr._base import adam_previous_direction, trace_previous_direction
from optax_lr._version import __version__ as __version__
from optax_lr.adabound import ScaleByAdaBoundState, adabound, adabound_bounds, scale_by_adabound
from optax_lr.adasecant import AdaSecantState, SimpleAdaSecantState, adasecant, simple_adasecant
from optax_lr.auto import AutoAdamState, auto_adam, auto_adam_hd, auto_sgd
from optax_lr.autodrop import (
    DropTrigger,
    ScaleByAutoDropState,
    WithAutoDropState,
    angle_degrees,
    autodrop_sgd,
    scale_by_autodrop,
    with_autodrop,
)
from optax_lr.cam_hd import (
    Blending,
    CamHDState,
    CombinationWeights,
    LevelGroups,
    RateRule,
    adam_cam_hd,
    cam_hd,
    cam_hd_effective_learning_rate,
    cam_hd_rate_summary,
    parent_module_label,
    sgd_cam_hd,
)
from optax_lr.cus_adam import cus_adam, scale_by_cus_adam
from optax_lr.hypergradient import HypergradientState, adam_hd, hypergradient, sgd_hd
from optax_lr.l4 import ScaleByL4State, l4_adam, l4_momentum, scale_by_l4
from optax_lr.safeguards import LossBacktrack, RateSearch, WindowBacktrack
from optax_lr.schedules import (
    cyclical_schedule,
    exponential_decay_rate,
    exponential_decay_schedule,
    n_cycle_schedule,
    random_schedule,
)
from optax_lr.switch import SwitchState, switch_at
from optax_lr.telemetry import blown_up, largest_step_ratio, learning_rates, rate_summary
from optax_lr.tlr import (
    ScaleByNaiveTLRState,
    ScaleByTLRState,
    naive_tlr,
    newton_factor,
    scale_by_naive_tlr,
    scale_by_tlr,
    scale_by_tlr_fixed_meta_rate,
    tlr_sgd,
    update_every_from_fraction,
)

__all__ = [
    # The recommendation when the rate is unknown
    "AutoAdamState", "auto_adam", "auto_adam_hd", "auto_sgd",
    # Trainable Learning Rate
    "ScaleByNaiveTLRState", "ScaleByTLRState", "naive_tlr", "newton_factor",
    "scale_by_naive_tlr", "scale_by_tlr", "scale_by_tlr_fixed_meta_rate", "tlr_sgd",
    "update_every_from_fraction",
    # Hypergradient descent (Baydin et al. 2018)
    "HypergradientState", "adam_hd", "hypergradient", "sgd_hd", "adam_previous_direction",
    "trace_previous_direction",
    # AutoDrop (Teng, Wang, Choromanska)
    "DropTrigger", "ScaleByAutoDropState", "WithAutoDropState", "angle_degrees", "autodrop_sgd",
    "scale_by_autodrop", "with_autodrop",
    # CAM-HD (Adaptive Hierarchical Hyper-gradient Descent)
    "Blending", "CamHDState", "CombinationWeights", "LevelGroups", "RateRule", "adam_cam_hd",
    "cam_hd",
    "cam_hd_effective_learning_rate", "cam_hd_rate_summary", "parent_module_label", "sgd_cam_hd",
    # Sasse's thesis: AdaSecant family, CUS-Adam, schedules, switching
    "AdaSecantState", "SimpleAdaSecantState", "adasecant", "simple_adasecant", "cus_adam",
    "scale_by_cus_adam", "cyclical_schedule", "exponential_decay_rate",
    "exponential_decay_schedule", "n_cycle_schedule", "random_schedule", "SwitchState",
    "switch_at",
    # Baselines the papers compare with: L4 (Rolinek and Martius 2018), AdaBound (Luo et al. 2019)
    "ScaleByL4State", "l4_adam", "l4_momentum", "scale_by_l4",
    "ScaleByAdaBoundState", "adabound", "adabound_bounds", "scale_by_adabound",
    # Safeguards of the learned rates (options of the factories above)
    "LossBacktrack", "RateSearch", "WindowBacktrack",
    # Telemetry
    "learning_rates", "rate_summary", "blown_up", "largest_step_ratio",
]
