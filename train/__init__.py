"""Training side of optax_lr: data, the data-parallel loop, the optimizer registry, benchmarks.

Runs from the checkout (``python -m train``); it is not installed with the library.
"""
