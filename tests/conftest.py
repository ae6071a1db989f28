"""Test configuration: eight simulated CPU devices for the sharding and data-parallel tests."""

import os

# Must be set before jax initialises its backends.

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
