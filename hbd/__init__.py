"""hbd: a Hyperband sweep daemon."""

from hbd.report import report

__version__ = "0.1.0"

__all__ = ["__version__", "report"]
