"""Every method of the library runs through the conformance suite (``tests/conformance.py``).

Register a method by adding a :class:`conformance.Case` to ``CASES`` in its section below.
"""

import jax.numpy as jnp
import optax
import pytest

import optax_lr
from tests import conformance
from tests.conformance import Case


def _grad_fn_arg(grad_fn, params):
  del params
  return {"grad_fn": grad_fn}


CASES = [
    # --- TLR and hypergradient descent (optax_lr/tlr.py, optax_lr/hypergradient.py) ---
    Case("tlr_sgd", lambda: optax_lr.tlr_sgd(0.1),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, momentum=0.9)),
    Case("tlr_sgd_window", lambda: optax_lr.tlr_sgd(0.1, update_every=3, momentum=0.5),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, update_every=3, momentum=0.9)),
    Case("tlr_sgd_per_tensor", lambda: optax_lr.tlr_sgd(0.1, per_tensor=True, weight_decay=1e-6),
         make_for_rosenbrock=lambda: optax_lr.tlr_sgd(1e-3, momentum=0.9, per_tensor=True)),
    Case("tlr_fixed_meta_rate",
         lambda: optax_lr.scale_by_tlr_fixed_meta_rate(0.1, meta_learning_rate=0.01),
         make_for_rosenbrock=lambda: optax.chain(
             optax.trace(0.9), optax_lr.scale_by_tlr_fixed_meta_rate(1e-3, 1e-6))),
    Case("naive_tlr", lambda: optax_lr.naive_tlr(0.1, meta_learning_rate=0.01),
         extra_args=_grad_fn_arg,
         make_for_rosenbrock=lambda: optax_lr.naive_tlr(1e-3, meta_learning_rate=1e-6)),
    Case("sgd_hd", lambda: optax_lr.sgd_hd(0.1, hypergrad_lr=1e-3),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-3, hypergrad_lr=1e-7, momentum=0.9)),
    Case("sgdn_hd", lambda: optax_lr.sgd_hd(0.1, momentum=0.5, nesterov=True, weight_decay=1e-6),
         make_for_rosenbrock=lambda: optax_lr.sgd_hd(1e-3, 1e-7, momentum=0.9, nesterov=True)),
    Case("adam_hd", lambda: optax_lr.adam_hd(0.1, hypergrad_lr=1e-4), parabola_steps=1000,
         make_for_rosenbrock=lambda: optax_lr.adam_hd(0.01, hypergrad_lr=1e-6)),
    # --- AutoDrop (optax_lr/autodrop.py) ---
    # --- CAM-HD (optax_lr/cam_hd.py) ---
    # --- AdaSecant family, CUS-Adam, schedules, switch_at (optax_lr/adasecant.py, ...) ---
]

_IDS = [case.name for case in CASES]


@pytest.fixture(params=CASES, ids=_IDS)
def case(request):
  return request.param


def test_names_unique():
  assert len(set(_IDS)) == len(_IDS)


def test_jit_once(case):
  conformance.check_jit_once(case)


def test_scan_matches_loop(case):
  conformance.check_scan_matches_loop(case)


def test_sharding_kept(case):
  conformance.check_sharding_kept(case)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_dtypes_kept(case, dtype):
  conformance.check_dtypes_kept(case, dtype)


def test_fresh_buffers_donate(case):
  conformance.check_fresh_buffers_donate(case)


def test_checkpoint_roundtrip(case, tmp_path):
  conformance.check_checkpoint_roundtrip(case, tmp_path)


@pytest.mark.parametrize("problem", ["parabola", "rosenbrock"])
def test_converges(case, problem):
  conformance.check_converges(case, problem)


def test_apply_if_finite(case):
  conformance.check_apply_if_finite(case)
