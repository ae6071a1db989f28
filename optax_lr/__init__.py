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
# --- CAM-HD (optax_lr/cam_hd.py) ---
# --- AdaSecant family, CUS-Adam (optax_lr/adasecant.py, optax_lr/cus_adam.py) ---
# --- Schedules (optax_lr/schedules.py) ---

__version__ = "0.1.0"
