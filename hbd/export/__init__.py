"""Sweeps written out in other tools' formats (``hbd export``)."""
