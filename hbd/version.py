"""hbd's version, in a module every layer may import (``hbd/__init__`` re-exports it)."""

__version__ = "0.1.0"
