"""What the value forms of the parameter kinds share (``hbd.core.kinds``).

A kind's value may be written as a list, a mapping or an ``"a:b:c"`` string;
``Value`` normalises all three to its fields before they are validated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import ClassVar

from pydantic import model_validator

from hbd.core.kinds.shared import Frozen

__all__ = ["Value", "finite", "from_exact", "positive", "q_grid"]


def finite(what: str, x: float) -> None:
    """Refuse a spec whose draws could be inf (the store and JSON accept finite numbers only)."""
    if not math.isfinite(x):
        raise ValueError(f"{what} overflows a float: this parameter could sample inf")


def from_exact(x: Fraction, as_int: bool) -> int | float:
    return int(x) if as_int else float(x)


class Value(Frozen):
    """A kind's value; accepts list / mapping / "a:b:c" and normalises to fields."""

    FIELDS: ClassVar[tuple[str, ...]]
    KIND: ClassVar[str]

    @classmethod
    def _split(cls, s: str) -> list[str]:
        return s.split(":")

    @model_validator(mode="before")
    @classmethod
    def _normalise_form(cls, v: object) -> object:
        if isinstance(v, Mapping):
            return v
        if isinstance(v, str):
            v = cls._split(v)
        if isinstance(v, (list, tuple)):
            if len(v) > len(cls.FIELDS):
                raise ValueError(
                    f"{cls.KIND} takes at most {len(cls.FIELDS)} items "
                    f"[{', '.join(cls.FIELDS)}], got {len(v)}: {list(v)!r}"
                )
            return dict(zip(cls.FIELDS, v, strict=False))  # trailing fields are optional
        raise ValueError(
            f"{cls.KIND} value must be a list [{', '.join(cls.FIELDS)}], a mapping with "
            f'those keys, or a "{":".join(cls.FIELDS)}" string; got {type(v).__name__}'
        )


def positive(name: str, x: float) -> None:
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")


def q_grid(lo: float | Fraction, hi: float | Fraction, q: Fraction) -> tuple[int, int]:
    """Indices k with k*q inside [lo, hi]; kmin > kmax means the grid is empty."""
    return math.ceil(Fraction(lo) / q), math.floor(Fraction(hi) / q)
