"""Benchmarks: ``python -m train.bench overhead|compare ...``."""
