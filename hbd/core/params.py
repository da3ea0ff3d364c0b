"""The 16 parameter kinds of a Polyaxon matrix, as validated pydantic models.

Each kind is ``{kind: <name>, value: <form>}``. The value may be written as a
list (``[0, 1]``), a mapping with Polyaxon's field names (``{low: 0, high: 1}``)
or an ``"a:b:c"`` string; all three normalise to one value model, so the rest
of hbd sees a single shape. Unlike Polyaxon, list items beyond the known
fields are an error rather than silently dropped, and every check that
Polyaxon defers to sampling time (empty grids, bad scales, ``geomspace``
through 0, ...) happens here, at submission.

Grid arithmetic (size and n-th point) lives on the value models so that
validation (``spec``) and sampling (``space``) cannot disagree about it.
Exact ``Fraction`` arithmetic on the decimal the user wrote keeps ``range``
and ``q`` grids free of float drift (0.1 * 3 is 0.3, not 0.30000000000000004).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticKnownError

__all__ = [
    "KIND_MODELS",
    "NUMERIC_KINDS",
    "PARAM_KINDS",
    "ChoiceParam",
    "DateRangeParam",
    "DateTimeRangeParam",
    "GeomspaceParam",
    "LinspaceParam",
    "LogNormalParam",
    "LogUniformParam",
    "LogspaceParam",
    "NormalParam",
    "PChoiceParam",
    "Param",
    "ParamOfKind",
    "QLogNormalParam",
    "QLogUniformParam",
    "QNormalParam",
    "QUniformParam",
    "RangeParam",
    "UniformParam",
    "exact",
    "json_native",
    "validate_param",
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


def _finite(what: str, x: float) -> None:
    """Refuse a spec whose draws could be inf (the store and JSON accept finite numbers only)."""
    if not math.isfinite(x):
        raise ValueError(f"{what} overflows a float: this parameter could sample inf")


Number = Annotated[int | float, BeforeValidator(_to_number)]


def exact(x: float) -> Fraction:
    """The decimal the user wrote, exactly (``exact(0.1) == Fraction(1, 10)``)."""
    return Fraction(x) if isinstance(x, int) else Fraction(repr(x))


def _out(x: Fraction, as_int: bool) -> int | float:
    return int(x) if as_int else float(x)


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


# ---------------------------------------------------------------- value forms


class _Value(Frozen):
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


def _positive(name: str, x: float) -> None:
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")


def _q_grid(lo: float | Fraction, hi: float | Fraction, q: Fraction) -> tuple[int, int]:
    """Indices k with k*q inside [lo, hi]; kmin > kmax means the grid is empty."""
    return math.ceil(Fraction(lo) / q), math.floor(Fraction(hi) / q)


class RangeValue(_Value):
    FIELDS = ("start", "stop", "step")
    KIND = "range"
    start: Number
    stop: Number
    step: Number

    @property
    def is_int(self) -> bool:
        return all(isinstance(x, int) for x in (self.start, self.stop, self.step))

    @property
    def size(self) -> int:
        # numpy.arange's count, computed exactly: stop is exclusive.
        n = math.ceil((exact(self.stop) - exact(self.start)) / exact(self.step))
        return max(n, 0)

    def at(self, i: int) -> int | float:
        return _out(exact(self.start) + i * exact(self.step), self.is_int)

    @model_validator(mode="after")
    def _check(self) -> RangeValue:
        # As Polyaxon: start < stop, and a grid that walks towards stop.
        if self.start >= self.stop:
            raise ValueError(f"start must be < stop, got start={self.start} stop={self.stop}")
        if self.step <= 0:
            raise ValueError(f"step must be > 0 (from start up to stop), got {self.step}")
        if self.size == 0:
            raise ValueError(
                f"empty grid: no value from start {self.start} towards stop {self.stop} "
                f"(exclusive) with step {self.step}"
            )
        return self


class _SpaceValue(_Value):
    start: Number
    stop: Number
    num: int = Field(ge=1)

    @model_validator(mode="after")
    def _ascending(self) -> _SpaceValue:
        # Polyaxon refuses descending grids; a reversed grid samples the same values anyway.
        if self.start >= self.stop:
            raise ValueError(f"start must be < stop, got start={self.start} stop={self.stop}")
        return self


class LinspaceValue(_SpaceValue):
    FIELDS = ("start", "stop", "num")
    KIND = "linspace"

    def at(self, i: int) -> float:
        if self.num == 1:
            return float(self.start)
        a, b = exact(self.start), exact(self.stop)
        return float(a + (b - a) * i / (self.num - 1))


class LogspaceValue(_SpaceValue):
    FIELDS = ("start", "stop", "num", "base")
    KIND = "logspace"
    base: Number = 10

    @field_validator("base")
    @classmethod
    def _base(cls, b: float) -> int | float:
        _positive("base", b)
        return b

    def exponent_at(self, i: int) -> float:
        return LinspaceValue(start=self.start, stop=self.stop, num=self.num).at(i)

    def at(self, i: int) -> float:
        return math.pow(self.base, self.exponent_at(i))

    @model_validator(mode="after")
    def _check(self) -> LogspaceValue:
        for e in (self.start, self.stop):
            if e * math.log(self.base) > MAX_EXP_ARG:
                raise ValueError(f"{self.base}^{e} overflows a float")
        return self


class GeomspaceValue(_SpaceValue):
    FIELDS = ("start", "stop", "num")
    KIND = "geomspace"

    def at(self, i: int) -> float:
        # numpy.geomspace: log-linear between the endpoints, endpoints exact.
        if i == 0:
            return float(self.start)
        if i == self.num - 1:
            return float(self.stop)
        # Base-10 logs, as numpy does: decades land exactly (1..1000 gives 10.0).
        sign = 1.0 if self.start > 0 else -1.0
        la, lb = math.log10(abs(self.start)), math.log10(abs(self.stop))
        return sign * math.pow(10.0, la + (lb - la) * i / (self.num - 1))

    @model_validator(mode="after")
    def _check(self) -> GeomspaceValue:
        if self.start == 0 or self.stop == 0:
            raise ValueError(
                "geomspace start and stop must be non-zero (a geometric series cannot reach 0)"
            )
        if (self.start > 0) != (self.stop > 0):
            raise ValueError(
                f"geomspace start {self.start} and stop {self.stop} must have the same sign "
                "(a geometric series cannot pass through 0)"
            )
        return self


class UniformValue(_Value):
    FIELDS = ("low", "high")
    KIND = "uniform"
    low: Number
    high: Number

    @model_validator(mode="after")
    def _check(self) -> UniformValue:
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        # numpy draws low + (high - low) * u: the spread itself must be a float.
        _finite(f"high - low ({self.high} - {self.low})", float(self.high) - float(self.low))
        return self


class LogUniformValue(UniformValue):
    KIND = "loguniform"

    @model_validator(mode="after")
    def _check_exp(self) -> LogUniformValue:
        if self.high > MAX_EXP_ARG:
            raise ValueError(
                f"bounds are natural-log exponents and exp({self.high}) overflows; "
                f"the largest usable high is {MAX_EXP_ARG}"
            )
        return self


class QUniformValue(_Value):
    FIELDS = ("low", "high", "q")
    KIND = "quniform"
    low: Number
    high: Number
    q: Number

    @property
    def is_int(self) -> bool:
        return all(isinstance(x, int) for x in (self.low, self.high, self.q))

    def support(self) -> tuple[float | Fraction, float | Fraction]:
        """Where the un-rounded draw lives."""
        return exact(self.low), exact(self.high)

    def grid(self) -> tuple[int, int]:
        lo, hi = self.support()
        return _q_grid(lo, hi, exact(self.q))

    def at(self, k: int) -> int | float:
        return _out(k * exact(self.q), self.is_int)

    @model_validator(mode="after")
    def _check(self) -> QUniformValue:
        _positive("q", self.q)
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        _finite(f"high - low ({self.high} - {self.low})", float(self.high) - float(self.low))
        lo, hi = self.support()
        reach = max(abs(float(lo)), abs(float(hi)))
        # Sampling rounds draw / q to an integer: that quotient must be a float too.
        _finite(f"the largest draw / q ({reach:.3g} / {self.q})", reach / self.q)
        kmin, kmax = self.grid()
        if kmin > kmax:
            lo, hi = self.support()
            raise ValueError(
                f"empty grid: no multiple of q={self.q} lies in [{float(lo):.6g}, {float(hi):.6g}]"
            )
        return self


class QLogUniformValue(QUniformValue):
    KIND = "qloguniform"

    def support(self) -> tuple[float | Fraction, float | Fraction]:
        return math.exp(self.low), math.exp(min(self.high, MAX_EXP_ARG))

    @model_validator(mode="after")
    def _check_exp(self) -> QLogUniformValue:
        if self.high > MAX_EXP_ARG:
            raise ValueError(f"bounds are natural-log exponents and exp({self.high}) overflows")
        return self


class NormalValue(_Value):
    FIELDS: ClassVar[tuple[str, ...]] = ("loc", "scale")
    KIND = "normal"
    loc: Number
    scale: Number

    @field_validator("scale")
    @classmethod
    def _scale(cls, s: float) -> int | float:
        _positive("scale", s)
        return s

    def reach(self) -> float:
        """The largest |draw| to expect: |loc| + NORMAL_TAIL_SCALES * scale (maybe inf)."""
        return abs(float(self.loc)) + NORMAL_TAIL_SCALES * float(self.scale)

    @model_validator(mode="after")
    def _check_finite(self) -> NormalValue:
        _finite(f"|loc| + {NORMAL_TAIL_SCALES} * scale", self.reach())
        return self


class QNormalValue(NormalValue):
    FIELDS: ClassVar[tuple[str, ...]] = ("loc", "scale", "q")
    KIND = "qnormal"
    q: Number

    @field_validator("q")
    @classmethod
    def _q(cls, q: float) -> int | float:
        _positive("q", q)
        return q

    @property
    def is_int(self) -> bool:
        return all(isinstance(x, int) for x in (self.loc, self.scale, self.q))

    def at(self, k: int) -> int | float:
        return _out(k * exact(self.q), self.is_int)

    @model_validator(mode="after")
    def _check_q(self) -> QNormalValue:
        if math.isfinite(self.reach()):  # else _check_finite names the problem
            _finite(f"(|loc| + {NORMAL_TAIL_SCALES} * scale) / q", self.reach() / self.q)
        return self


def _check_lognormal(v: NormalValue) -> float:
    """The largest draw of exp(normal(loc, scale)) to expect; refuses one that overflows."""
    exponent = float(v.loc) + NORMAL_TAIL_SCALES * float(v.scale)
    if exponent > MAX_EXP_ARG:
        raise ValueError(
            f"{v.KIND} draws exp(normal(loc, scale)), and exp(loc + {NORMAL_TAIL_SCALES} * scale)"
            f" = exp({exponent:.6g}) overflows a float: this parameter could sample inf; "
            f"keep loc + {NORMAL_TAIL_SCALES} * scale <= {MAX_EXP_ARG:g}"
        )
    return math.exp(exponent)


class LogNormalValue(NormalValue):
    KIND = "lognormal"

    @model_validator(mode="after")
    def _check_exp(self) -> LogNormalValue:
        _check_lognormal(self)
        return self


class QLogNormalValue(QNormalValue):
    KIND = "qlognormal"

    @model_validator(mode="after")
    def _check_q(self) -> QLogNormalValue:
        # Replaces QNormalValue._check_q: the draws are exp() of the normal's.
        _finite(f"exp(loc + {NORMAL_TAIL_SCALES} * scale) / q", _check_lognormal(self) / self.q)
        return self


class DateRangeValue(_Value):
    FIELDS = ("start", "stop", "step")
    KIND = "daterange"
    start: date
    stop: date
    step: int = Field(ge=1, description="days")

    @property
    def size(self) -> int:
        return -(-(self.stop - self.start).days // self.step)

    def at(self, i: int) -> date:
        return self.start + timedelta(days=i * self.step)

    @model_validator(mode="after")
    def _check(self) -> DateRangeValue:
        if self.start >= self.stop:
            raise ValueError(
                f"empty grid: start {self.start} must be before stop {self.stop} (exclusive)"
            )
        return self


_DATE_AHEAD = re.compile(r":(?=\s*\d{4}-\d{2}-\d{2})")


class DateTimeRangeValue(_Value):
    FIELDS = ("start", "stop", "step")
    KIND = "datetimerange"
    start: datetime
    stop: datetime
    step: int = Field(ge=1, description="seconds")

    @classmethod
    def _split(cls, s: str) -> list[str]:
        # Datetimes contain colons, so "a:b:step" is split at the colon before
        # the second date and at the last colon, not at every colon.
        head, sep, step = s.rpartition(":")
        parts = _DATE_AHEAD.split(head) if sep else []
        return [*parts, step] if len(parts) == 2 else s.split(":")

    @property
    def size(self) -> int:
        us = (self.stop - self.start) // timedelta(microseconds=1)
        return -(-us // (self.step * 1_000_000))

    def at(self, i: int) -> datetime:
        return self.start + timedelta(seconds=i * self.step)

    @model_validator(mode="after")
    def _check(self) -> DateTimeRangeValue:
        if (self.start.tzinfo is None) != (self.stop.tzinfo is None):
            raise ValueError("start and stop must both have a timezone or both have none")
        if self.start >= self.stop:
            raise ValueError(
                f"empty grid: start {self.start} must be before stop {self.stop} (exclusive)"
            )
        return self


# ---------------------------------------------------------------- the kinds


class ChoiceParam(Frozen):
    kind: Literal["choice"]
    value: list[Any]

    @field_validator("value", mode="before")
    @classmethod
    def _values(cls, v: object) -> object:
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"choice value must be a list, got {type(v).__name__}")
        if not v:
            raise ValueError("choice needs at least one value")
        # Each value keeps its own type (no coercion to strings, unlike Polyaxon).
        return [json_native(x, "choice value") for x in v]


class PChoiceParam(Frozen):
    kind: Literal["pchoice"]
    value: list[tuple[Any, Number]]

    @field_validator("value", mode="before")
    @classmethod
    def _pairs(cls, v: object) -> object:
        if not isinstance(v, (list, tuple)):
            raise ValueError(
                f"pchoice value must be a list of [value, probability] pairs, got {type(v).__name__}"
            )
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"item {i} must be a [value, probability] pair, got {item!r}")
            out.append((json_native(item[0], "pchoice value"), item[1]))
        return out

    @field_validator("value")
    @classmethod
    def _probabilities(cls, v: list[tuple[Any, int | float]]) -> list[tuple[Any, int | float]]:
        bad = [f"item {i} ({x!r}): {p!r}" for i, (x, p) in enumerate(v) if not 0 <= p <= 1]
        if bad:
            raise ValueError("probabilities must be in [0, 1]; " + "; ".join(bad))
        total = math.fsum(p for _, p in v)
        # Below 1 is accepted as Polyaxon accepts it (its own examples sum to
        # 0.9): the last value takes the remainder, and spec_warnings says so.
        if total > 1 + PCHOICE_TOLERANCE:
            raise ValueError(f"probabilities sum to {total:.12g}, more than 1")
        if total <= 0:
            raise ValueError("probabilities sum to 0; give at least one a positive probability")
        return v


class RangeParam(Frozen):
    kind: Literal["range"]
    value: RangeValue


class LinspaceParam(Frozen):
    kind: Literal["linspace"]
    value: LinspaceValue


class LogspaceParam(Frozen):
    kind: Literal["logspace"]
    value: LogspaceValue


class GeomspaceParam(Frozen):
    kind: Literal["geomspace"]
    value: GeomspaceValue


class UniformParam(Frozen):
    kind: Literal["uniform"]
    value: UniformValue


class QUniformParam(Frozen):
    kind: Literal["quniform"]
    value: QUniformValue


class LogUniformParam(Frozen):
    kind: Literal["loguniform"]
    value: LogUniformValue


class QLogUniformParam(Frozen):
    kind: Literal["qloguniform"]
    value: QLogUniformValue


class NormalParam(Frozen):
    kind: Literal["normal"]
    value: NormalValue


class QNormalParam(Frozen):
    kind: Literal["qnormal"]
    value: QNormalValue


class LogNormalParam(Frozen):
    kind: Literal["lognormal"]
    value: LogNormalValue


class QLogNormalParam(Frozen):
    kind: Literal["qlognormal"]
    value: QLogNormalValue


class DateRangeParam(Frozen):
    kind: Literal["daterange"]
    value: DateRangeValue


class DateTimeRangeParam(Frozen):
    kind: Literal["datetimerange"]
    value: DateTimeRangeValue


# Each kind's model, in the order of the ``Param`` union (error messages list
# the kinds in this order).
KIND_MODELS: dict[str, type[Frozen]] = {
    "choice": ChoiceParam,
    "pchoice": PChoiceParam,
    "range": RangeParam,
    "linspace": LinspaceParam,
    "logspace": LogspaceParam,
    "geomspace": GeomspaceParam,
    "uniform": UniformParam,
    "quniform": QUniformParam,
    "loguniform": LogUniformParam,
    "qloguniform": QLogUniformParam,
    "normal": NormalParam,
    "qnormal": QNormalParam,
    "lognormal": LogNormalParam,
    "qlognormal": QLogNormalParam,
    "daterange": DateRangeParam,
    "datetimerange": DateTimeRangeParam,
}

Param = Annotated[
    ChoiceParam
    | PChoiceParam
    | RangeParam
    | LinspaceParam
    | LogspaceParam
    | GeomspaceParam
    | UniformParam
    | QUniformParam
    | LogUniformParam
    | QLogUniformParam
    | NormalParam
    | QNormalParam
    | LogNormalParam
    | QLogNormalParam
    | DateRangeParam
    | DateTimeRangeParam,
    Field(discriminator="kind"),
]

_KIND = "'kind'"  # the discriminator, quoted as pydantic quotes it in its errors
_EXPECTED_TAGS = ", ".join(f"'{k}'" for k in KIND_MODELS)
_MISSING = object()


def validate_param(v: object) -> Any:
    """One matrix param, validated by the model of its ``kind`` alone.

    The same result and the same errors (types, locations, context) as the
    ``Param`` discriminated union, without building all 16 kinds' validators
    when a module is imported: a spec pays only for the kinds it uses, and
    ``hbd validate`` starts that much sooner. Each kind's model is built on
    its first use (``defer_build``).
    """
    if isinstance(v, Mapping):
        tag = v.get("kind", _MISSING)
    elif isinstance(v, BaseModel):
        tag = getattr(v, "kind", _MISSING)
    else:
        raise PydanticKnownError("model_attributes_type")
    if tag is _MISSING:
        raise PydanticKnownError("union_tag_not_found", {"discriminator": _KIND})
    model = KIND_MODELS.get(tag) if isinstance(tag, str) else None
    if model is None:
        raise PydanticKnownError(
            "union_tag_invalid",
            {"discriminator": _KIND, "tag": str(tag), "expected_tags": _EXPECTED_TAGS},
        )
    # A ValidationError raised here keeps its locations, under this param's.
    return model.model_validate(v)


if TYPE_CHECKING:
    ParamOfKind = Param
else:
    # What a spec's `matrix.params` values are validated with (see validate_param).
    ParamOfKind = Annotated[Any, PlainValidator(validate_param)]

# Kinds whose values are numbers, so the input they feed must be int or float.
NUMERIC_KINDS = frozenset(
    {
        "range",
        "linspace",
        "logspace",
        "geomspace",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "lognormal",
        "qlognormal",
    }
)

PARAM_KINDS = NUMERIC_KINDS | {"choice", "pchoice", "daterange", "datetimerange"}
