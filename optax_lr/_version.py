"""The version of optax_lr, in one place.

``pyproject.toml`` reads it from here without importing the package (setuptools' ``attr:``
evaluates a plain assignment statically), ``optax_lr.__version__`` re-exports it, and the
documentation's ``conf.py`` takes it from ``optax_lr.__version__``. CHANGELOG.md records what
each version changed.
"""

__version__ = "0.1.0"
