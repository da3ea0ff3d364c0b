"""Sampling the search space: one configuration per (seed, bracket, config index).

Each parameter draws from its own generator, seeded by
``(seed, bracket, index, crc32(name))``. So a configuration depends only on
its key, never on the order in which configurations were asked for (replay
after a restart gives the same sweep); brackets are independent (Polyaxon
reuses one stream, making every bracket a prefix of the first); and adding a
parameter leaves the others' values unchanged.

Values are plain JSON data: Python ints/floats/strs, dates as ISO strings.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from hbd.core.params import (
    PCHOICE_TOLERANCE,
    ChoiceParam,
    DateRangeParam,
    DateTimeRangeParam,
    GeomspaceParam,
    LinspaceParam,
    LogNormalParam,
    LogspaceParam,
    LogUniformParam,
    NormalParam,
    Param,
    PChoiceParam,
    QLogNormalParam,
    QLogUniformParam,
    QNormalParam,
    QUniformParam,
    RangeParam,
    UniformParam,
)

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where a value is drawn, not here: `hbd validate` and `hbd
# plan` read specs without sampling, and start faster without it.

__all__ = ["JSONValue", "describe", "param_rng", "sample_config", "sample_value", "value_bounds"]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

_SEED_MOD = 2**64  # SeedSequence entropy words must be non-negative


def param_rng(*, seed: int, bracket: int, index: int, name: str) -> np.random.Generator:
    """The generator for one parameter of one configuration."""
    if bracket < 0 or index < 0:
        raise ValueError(f"bracket and index must be >= 0, got {bracket}, {index}")
    import numpy as np

    key = [seed % _SEED_MOD, bracket, index, zlib.crc32(name.encode())]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def sample_config(
    params: Mapping[str, Param], *, seed: int, bracket: int, index: int
) -> dict[str, JSONValue]:
    """The configuration with key (seed, bracket, index), in declaration order."""
    return {
        name: sample_value(p, param_rng(seed=seed, bracket=bracket, index=index, name=name))
        for name, p in params.items()
    }


def _pick(rng: np.random.Generator, n: int) -> int:
    return int(rng.integers(n))


def _round_q(x: float, q: float) -> int:
    import numpy as np

    return int(np.round(x / q))


def sample_value(param: Param, rng: np.random.Generator) -> JSONValue:
    """One draw of ``param`` from ``rng``."""
    import numpy as np

    match param:
        case ChoiceParam(value=values):
            return cast(JSONValue, copy.deepcopy(values[_pick(rng, len(values))]))
        case PChoiceParam(value=pairs):
            p = np.array([w for _, w in pairs], dtype=float)
            total = math.fsum(w for _, w in pairs)
            if total < 1 - PCHOICE_TOLERANCE:
                p[-1] += 1 - total  # Polyaxon gives the remainder to the last value
            # Zero-weight entries have an empty CDF interval, so they are
            # never drawn (Polyaxon hangs on them).
            i = int(rng.choice(len(pairs), p=p / p.sum()))
            return cast(JSONValue, copy.deepcopy(pairs[i][0]))
        case RangeParam(value=v):
            return v.at(_pick(rng, v.size))
        case LinspaceParam(value=v) | LogspaceParam(value=v) | GeomspaceParam(value=v):
            return v.at(_pick(rng, v.num))
        case UniformParam(value=v):
            return float(rng.uniform(v.low, v.high))
        case LogUniformParam(value=v):
            return float(np.exp(rng.uniform(v.low, v.high)))
        case QUniformParam(value=v) | QLogUniformParam(value=v):
            x = rng.uniform(v.low, v.high)
            if isinstance(param, QLogUniformParam):
                x = np.exp(x)
            kmin, kmax = v.grid()
            # Rounding may step just outside [low, high]; clip to the grid.
            return v.at(min(max(_round_q(float(x), float(v.q)), kmin), kmax))
        case NormalParam(value=v):
            return float(rng.normal(v.loc, v.scale))
        case LogNormalParam(value=v):
            return float(rng.lognormal(v.loc, v.scale))
        case QNormalParam(value=v):
            return v.at(_round_q(float(rng.normal(v.loc, v.scale)), float(v.q)))
        case QLogNormalParam(value=v):
            return v.at(_round_q(float(rng.lognormal(v.loc, v.scale)), float(v.q)))
        case DateRangeParam(value=v) | DateTimeRangeParam(value=v):
            return v.at(_pick(rng, v.size)).isoformat()
    raise TypeError(f"not a parameter: {param!r}")  # pragma: no cover


def value_bounds(param: Param) -> tuple[float, float] | None:
    """The smallest and largest value ``param`` can produce, if numeric and bounded."""
    match param:
        case RangeParam(value=v):
            a, b = float(v.at(0)), float(v.at(v.size - 1))
            return (min(a, b), max(a, b))
        case LinspaceParam(value=v) | LogspaceParam(value=v) | GeomspaceParam(value=v):
            a, b = v.at(0), v.at(v.num - 1)
            return (min(a, b), max(a, b))
        case UniformParam(value=v):
            return (float(v.low), float(v.high))
        case LogUniformParam(value=v):
            return (math.exp(v.low), math.exp(v.high))
        case QUniformParam(value=v) | QLogUniformParam(value=v):
            kmin, kmax = v.grid()
            return (float(v.at(kmin)), float(v.at(kmax)))
    return None  # choices, unbounded distributions, dates


def _fmt(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _list(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(_fmt(x) for x in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def describe(param: Param) -> str:
    """The effective value range, as ``hbd plan`` shows it."""
    match param:
        case ChoiceParam(value=values):
            return f"choice of {len(values)}: {_list(values)}"
        case PChoiceParam(value=pairs):
            items = [f"{_fmt(x)} (p={_fmt(w)})" for x, w in pairs]
            return f"pchoice of {len(pairs)}: {_list(items)}"
        case RangeParam(value=v):
            kind = "int" if v.is_int else "float"
            last = v.at(v.size - 1)
            return (
                f"range {_fmt(v.start)}..{_fmt(last)} step {_fmt(v.step)} ({v.size} values, {kind})"
            )
        case LinspaceParam(value=v):
            return f"linspace {_fmt(v.start)}..{_fmt(v.stop)} ({v.num} values)"
        case LogspaceParam(value=v):
            return (
                f"logspace {_fmt(v.base)}^[{_fmt(v.start)}, {_fmt(v.stop)}] = "
                f"{v.at(0):.4g}..{v.at(v.num - 1):.4g} ({v.num} values)"
            )
        case GeomspaceParam(value=v):
            return f"geomspace {_fmt(v.start)}..{_fmt(v.stop)} ({v.num} values)"
        case UniformParam(value=v):
            return f"uniform [{_fmt(v.low)}, {_fmt(v.high)})"
        case LogUniformParam(value=v):
            return (
                f"loguniform exp([{v.low:.3g}, {v.high:.3g})) = "
                f"[{math.exp(v.low):.4g}, {math.exp(v.high):.4g})"
            )
        case QUniformParam(value=v) | QLogUniformParam(value=v):
            kmin, kmax = v.grid()
            base = (
                f"quniform [{_fmt(v.low)}, {_fmt(v.high)}]"
                if isinstance(param, QUniformParam)
                else f"qloguniform exp([{v.low:.3g}, {v.high:.3g}])"
            )
            return (
                f"{base} to nearest multiple of {_fmt(v.q)}: "
                f"{_fmt(v.at(kmin))}..{_fmt(v.at(kmax))} ({kmax - kmin + 1} values)"
            )
        case NormalParam(value=v) | LogNormalParam(value=v):
            prefix = "" if isinstance(param, NormalParam) else "exp of "
            return f"{prefix}normal(loc={_fmt(v.loc)}, scale={_fmt(v.scale)})"
        case QNormalParam(value=v) | QLogNormalParam(value=v):
            prefix = "" if isinstance(param, QNormalParam) else "exp of "
            return f"{prefix}normal(loc={_fmt(v.loc)}, scale={_fmt(v.scale)}) to nearest multiple of {_fmt(v.q)}"
        case DateRangeParam(value=v):
            return f"daterange {v.at(0).isoformat()}..{v.at(v.size - 1).isoformat()} every {v.step} day(s) ({v.size} values)"
        case DateTimeRangeParam(value=v):
            return f"datetimerange {v.at(0).isoformat()}..{v.at(v.size - 1).isoformat()} every {v.step} s ({v.size} values)"
    raise TypeError(f"not a parameter: {param!r}")  # pragma: no cover
