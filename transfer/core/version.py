"""The package's version, in one place (the distribution's is in pyproject.toml)."""

__version__ = "0.1.0"
