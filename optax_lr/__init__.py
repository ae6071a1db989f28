"""optax_lr: automatic learning-rate methods as optax GradientTransformations.

Methods (each module names its paper and section):
  - Trainable Learning Rate (``tlr``): a Newton step on the rate from consecutive directions.
  - Hypergradient descent (``hypergradient``): Baydin et al.'s online rate adaptation.
"""

from optax_lr.hypergradient import HypergradientState, adam_hd, hypergradient, sgd_hd
from optax_lr.telemetry import learning_rates, rate_summary
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

# --- AutoDrop (optax_lr/autodrop.py) ---
from optax_lr.autodrop import (
    ScaleByAutoDropState,
    angle_degrees,
    autodrop_sgd,
    scale_by_autodrop,
)
# --- CAM-HD (optax_lr/cam_hd.py) ---
from optax_lr.cam_hd import (
    CamHDState,
    adam_cam_hd,
    cam_hd,
    cam_hd_effective_learning_rate,
    cam_hd_rate_summary,
    parent_module_label,
    sgd_cam_hd,
)
# --- AdaSecant family, CUS-Adam (optax_lr/adasecant.py, optax_lr/cus_adam.py) ---
from optax_lr.adasecant import (
    AdaSecantState,
    SimpleAdaSecantState,
    adasecant,
    simple_adasecant,
)
from optax_lr.cus_adam import cus_adam, scale_by_cus_adam
from optax_lr.switch import SwitchState, switch_at
# --- Schedules (optax_lr/schedules.py) ---
from optax_lr.schedules import (
    cyclical_schedule,
    exponential_decay_rate,
    exponential_decay_schedule,
    n_cycle_schedule,
    random_schedule,
)

__version__ = "0.1.0"
