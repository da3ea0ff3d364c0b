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

from hbd.core.params import PCHOICE_TOLERANCE

if TYPE_CHECKING:
    import numpy as np

    from hbd.core.params import Param

# Parameters are told apart by their `kind`, not by class: matching on the
# classes would make every kind's model (hbd.core.params makes each on first use).

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


# numpy draws integers below 2**63 only; a grid may be larger (a `range` to
# 1e308, a `linspace` of 10**20 points), and must not crash the sweep.
_NUMPY_INT_LIMIT = 2**63 - 1


def _pick(rng: np.random.Generator, n: int) -> int:
    """A uniform index in [0, n)."""
    if n <= _NUMPY_INT_LIMIT:
        return int(rng.integers(n))  # every grid below the limit draws as before
    bits = (n - 1).bit_length()
    while True:  # rejection from [0, 2**bits): kept with probability > 1/2
        x = 0
        for _ in range(0, bits, 32):
            x = (x << 32) | int(rng.integers(2**32))
        x >>= -bits % 32
        if x < n:
            return x


def _round_q(x: float, q: float) -> int:
    import numpy as np

    return int(np.round(x / q))


def sample_value(param: Param, rng: np.random.Generator) -> JSONValue:
    """One draw of ``param`` from ``rng``."""
    import numpy as np

    match param.kind:
        case "choice":
            return cast(JSONValue, copy.deepcopy(param.value[_pick(rng, len(param.value))]))
        case "pchoice":
            pairs = param.value
            p = np.array([w for _, w in pairs], dtype=float)
            total = math.fsum(w for _, w in pairs)
            if total < 1 - PCHOICE_TOLERANCE:
                p[-1] += 1 - total  # Polyaxon gives the remainder to the last value
            # Zero-weight entries have an empty CDF interval, so they are
            # never drawn (Polyaxon hangs on them).
            i = int(rng.choice(len(pairs), p=p / p.sum()))
            return cast(JSONValue, copy.deepcopy(pairs[i][0]))
        case "range":
            return param.value.at(_pick(rng, param.value.size))
        case "linspace" | "logspace" | "geomspace":
            return param.value.at(_pick(rng, param.value.num))
        case "uniform":
            return float(rng.uniform(param.value.low, param.value.high))
        case "loguniform":
            return float(np.exp(rng.uniform(param.value.low, param.value.high)))
        case "quniform" | "qloguniform":
            q = param.value
            x = rng.uniform(q.low, q.high)
            if param.kind == "qloguniform":
                x = np.exp(x)
            kmin, kmax = q.grid()
            # Rounding may step just outside [low, high]; clip to the grid.
            return q.at(min(max(_round_q(float(x), float(q.q)), kmin), kmax))
        case "normal":
            return float(rng.normal(param.value.loc, param.value.scale))
        case "lognormal":
            return float(rng.lognormal(param.value.loc, param.value.scale))
        case "qnormal" | "qlognormal":
            n = param.value
            draw = rng.normal if param.kind == "qnormal" else rng.lognormal
            return n.at(_round_q(float(draw(n.loc, n.scale)), float(n.q)))
        case "daterange" | "datetimerange":
            return param.value.at(_pick(rng, param.value.size)).isoformat()
    raise TypeError(f"not a parameter: {param!r}")  # pragma: no cover


def value_bounds(param: Param) -> tuple[float, float] | None:
    """The smallest and largest value ``param`` can produce, if numeric and bounded."""
    match param.kind:
        case "range":
            r = param.value
            a, b = float(r.at(0)), float(r.at(r.size - 1))
            return (min(a, b), max(a, b))
        case "linspace" | "logspace" | "geomspace":
            s = param.value
            a, b = s.at(0), s.at(s.num - 1)
            return (min(a, b), max(a, b))
        case "uniform":
            return (float(param.value.low), float(param.value.high))
        case "loguniform":
            return (math.exp(param.value.low), math.exp(param.value.high))
        case "quniform" | "qloguniform":
            kmin, kmax = param.value.grid()
            return (float(param.value.at(kmin)), float(param.value.at(kmax)))
    return None  # choices, unbounded distributions, dates


def _fmt(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _list(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(_fmt(x) for x in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def describe(param: Param) -> str:
    """The effective value range, as ``hbd plan`` shows it."""
    match param.kind:
        case "choice":
            return f"choice of {len(param.value)}: {_list(param.value)}"
        case "pchoice":
            items = [f"{_fmt(x)} (p={_fmt(w)})" for x, w in param.value]
            return f"pchoice of {len(param.value)}: {_list(items)}"
        case "range":
            r = param.value
            kind = "int" if r.is_int else "float"
            last = r.at(r.size - 1)
            return (
                f"range {_fmt(r.start)}..{_fmt(last)} step {_fmt(r.step)} ({r.size} values, {kind})"
            )
        case "linspace":
            lin = param.value
            return f"linspace {_fmt(lin.start)}..{_fmt(lin.stop)} ({lin.num} values)"
        case "logspace":
            log = param.value
            return (
                f"logspace {_fmt(log.base)}^[{_fmt(log.start)}, {_fmt(log.stop)}] = "
                f"{log.at(0):.4g}..{log.at(log.num - 1):.4g} ({log.num} values)"
            )
        case "geomspace":
            geo = param.value
            return f"geomspace {_fmt(geo.start)}..{_fmt(geo.stop)} ({geo.num} values)"
        case "uniform":
            u = param.value
            return f"uniform [{_fmt(u.low)}, {_fmt(u.high)})"
        case "loguniform":
            lu = param.value
            return (
                f"loguniform exp([{lu.low:.3g}, {lu.high:.3g})) = "
                f"[{math.exp(lu.low):.4g}, {math.exp(lu.high):.4g})"
            )
        case "quniform" | "qloguniform":
            q = param.value
            kmin, kmax = q.grid()
            base = (
                f"quniform [{_fmt(q.low)}, {_fmt(q.high)}]"
                if param.kind == "quniform"
                else f"qloguniform exp([{q.low:.3g}, {q.high:.3g}])"
            )
            return (
                f"{base} to nearest multiple of {_fmt(q.q)}: "
                f"{_fmt(q.at(kmin))}..{_fmt(q.at(kmax))} ({kmax - kmin + 1} values)"
            )
        case "normal" | "lognormal":
            n = param.value
            prefix = "" if param.kind == "normal" else "exp of "
            return f"{prefix}normal(loc={_fmt(n.loc)}, scale={_fmt(n.scale)})"
        case "qnormal" | "qlognormal":
            qn = param.value
            prefix = "" if param.kind == "qnormal" else "exp of "
            return f"{prefix}normal(loc={_fmt(qn.loc)}, scale={_fmt(qn.scale)}) to nearest multiple of {_fmt(qn.q)}"
        case "daterange":
            d = param.value
            return f"daterange {d.at(0).isoformat()}..{d.at(d.size - 1).isoformat()} every {d.step} day(s) ({d.size} values)"
        case "datetimerange":
            dt = param.value
            return f"datetimerange {dt.at(0).isoformat()}..{dt.at(dt.size - 1).isoformat()} every {dt.step} s ({dt.size} values)"
    raise TypeError(f"not a parameter: {param!r}")  # pragma: no cover
