"""What every parameter kind's model is built from (``hbd.core.kinds``).

The frozen base model, the number type a spec may write, exact decimal
arithmetic and the JSON check of choice values. ``hbd.core.params`` re-exports
them; they live here so that the kinds' modules import nothing of
``params`` (which imports them, on first use).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from fractions import Fraction
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = [
    "MAX_EXP_ARG",
    "NORMAL_TAIL_SCALES",
    "PCHOICE_TOLERANCE",
    "Frozen",
    "Number",
    "exact",
    "json_native",
]

# exp() of anything above this overflows a float; such loguniform bounds could
# only ever produce inf, which is not JSON.
MAX_EXP_ARG = 709.0

# How far into a normal distribution's tails draws are assumed to reach when
# checking that every draw is a finite float: |z| > 10 has probability about
# 1.5e-23 per draw, so a spec whose values stay finite out to 10 scales never
# samples inf in practice (numpy's normal has no hard bound to check instead).
NORMAL_TAIL_SCALES = 10

# pchoice probabilities may exceed 1 by at most this (float sums of 0.1s; DESIGN.md).
PCHOICE_TOLERANCE = 1e-9


class Frozen(BaseModel):
    """Base of every spec model: immutable, strict about keys, camel or snake."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
        # Built on first validation, not at import: most commands never
        # validate most of these models (a spec uses a few of the 16 kinds).
        defer_build=True,
    )


def _to_number(v: object) -> int | float:
    # PyYAML reads `1e-4` (no dot) as a *string*, so numeric strings must be
    # accepted; booleans must not, although Python treats them as ints.
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    if isinstance(v, int):
        _fits_a_float(v)
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
        return v
    if isinstance(v, str):
        s = v.strip()
        try:
            n = int(s)
        except ValueError:
            pass
        else:
            _fits_a_float(n)
            return n
        try:
            f = float(s)
        except ValueError:
            raise ValueError(f"expected a number, got {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"expected a finite number, got {v!r}")
        return f
    raise ValueError(f"expected a number, got {type(v).__name__} {v!r}")


def _fits_a_float(n: int) -> None:
    # Sampling computes in floats: an int beyond float range would overflow there.
    try:
        float(n)
    except OverflowError:
        raise ValueError(
            f"a {len(str(abs(n)))}-digit integer is too large: numbers must fit a float "
            "(at most about 1.8e308)"
        ) from None


Number = Annotated[int | float, BeforeValidator(_to_number)]


def exact(x: float) -> Fraction:
    """The decimal the user wrote, exactly (``exact(0.1) == Fraction(1, 10)``)."""
    return Fraction(x) if isinstance(x, int) else Fraction(repr(x))


def json_native(v: object, where: str = "value") -> Any:
    """Return ``v`` as plain JSON data; dates become ISO strings. Raises ValueError."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{where}: {v!r} is not a finite number")
        return v
    if isinstance(v, (date, datetime)):  # datetime is a date subclass
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [json_native(x, where) for x in v]
    if isinstance(v, Mapping):
        out: dict[str, Any] = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: mapping key {k!r} is not a string")
            out[k] = json_native(x, where)
        return out
    raise ValueError(f"{where}: {type(v).__name__} {v!r} is not JSON data")
