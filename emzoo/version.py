"""The version of emzoo (one place; ``emzoo.__version__`` re-exports it)."""

__version__ = "0.1.0"
