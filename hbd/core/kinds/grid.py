"""The grid kinds: ``range``, ``linspace``, ``logspace``, ``geomspace``."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from hbd.core.kinds.base import Value, from_exact, positive
from hbd.core.kinds.shared import MAX_EXP_ARG, Frozen, Number, exact

__all__ = [
    "GeomspaceParam",
    "GeomspaceValue",
    "LinspaceParam",
    "LinspaceValue",
    "LogspaceParam",
    "LogspaceValue",
    "RangeParam",
    "RangeValue",
]


class RangeValue(Value):
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
        return from_exact(exact(self.start) + i * exact(self.step), self.is_int)

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


class _SpaceValue(Value):
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
        positive("base", b)
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


# ---------------------------------------------------------------- the kinds


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
