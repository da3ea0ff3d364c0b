"""Casting a value to its component input's type, as Polyaxon casts a child run's params.

Polyaxon validates each child run's params against the inputs: ``3.0`` on an
``int`` input becomes ``3``, ``"5"`` becomes ``5``, ``2.7`` is refused
(polyaxon-semantics.md §6). hbd does the same, but for every value a param
can produce, at submission, so that a sweep never discovers a bad value at
its 200th trial.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BOOL_STRINGS", "INTEGRAL_TOLERANCE", "cast_value"]

# Relative distance from an integer below which a float counts as that integer:
# grids computed through pow/log (logspace, geomspace) land on 999.9999999999999
# where 1000 was meant; a real fraction is many orders of magnitude further.
INTEGRAL_TOLERANCE = 1e-9

# Strings a bool input accepts, as Polyaxon's bool parser does.
BOOL_STRINGS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a bool is not an int")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            nearest = round(value)
            if abs(value - nearest) <= INTEGRAL_TOLERANCE * max(1.0, abs(value)):
                return int(nearest)
        raise ValueError("not a whole number")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return _as_int(_as_float(value))
    raise ValueError(f"a {type(value).__name__} is not an int")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a bool is not a float")
    if isinstance(value, (int, float)):
        try:
            out = float(value)
        except OverflowError:  # an int of hundreds of digits
            raise ValueError("too large for a float") from None
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise ValueError("not a number") from None
    else:
        raise ValueError(f"a {type(value).__name__} is not a float")
    if not math.isfinite(out):
        raise ValueError("not a finite number")
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return BOOL_STRINGS[value.strip().lower()]
    raise ValueError("not a bool (true/false)")


def cast_value(value: Any, io_type: str) -> Any:
    """``value`` as an input of ``io_type`` receives it; ValueError says why it cannot."""
    if value is None:
        return None
    if io_type == "int":
        return _as_int(value)
    if io_type == "float":
        return _as_float(value)
    if io_type == "bool":
        return _as_bool(value)
    if io_type == "str":
        if isinstance(value, (dict, list)):
            raise ValueError(f"a {type(value).__name__} is not a str")
        if isinstance(value, bool):
            return "true" if value else "false"
        return (
            value
            if isinstance(value, str)
            else repr(value)
            if isinstance(value, float)
            else str(value)
        )
    if io_type == "dict" and not isinstance(value, dict):
        raise ValueError("not a mapping")
    if io_type == "list" and not isinstance(value, list):
        raise ValueError("not a list")
    return value  # any, date (ISO strings), paths, uris, ...: kept as written
