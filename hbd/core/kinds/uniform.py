"""The uniform kinds: ``uniform``, ``quniform``, ``loguniform``, ``qloguniform``."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

from pydantic import model_validator

from hbd.core.kinds.base import Value, finite, from_exact, positive, q_grid
from hbd.core.kinds.shared import MAX_EXP_ARG, Frozen, Number, exact

__all__ = [
    "LogUniformParam",
    "LogUniformValue",
    "QLogUniformParam",
    "QLogUniformValue",
    "QUniformParam",
    "QUniformValue",
    "UniformParam",
    "UniformValue",
]


class UniformValue(Value):
    FIELDS = ("low", "high")
    KIND = "uniform"
    low: Number
    high: Number

    @model_validator(mode="after")
    def _check(self) -> UniformValue:
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        # numpy draws low + (high - low) * u: the spread itself must be a float.
        finite(f"high - low ({self.high} - {self.low})", float(self.high) - float(self.low))
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


class QUniformValue(Value):
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
        return q_grid(lo, hi, exact(self.q))

    def at(self, k: int) -> int | float:
        return from_exact(k * exact(self.q), self.is_int)

    @model_validator(mode="after")
    def _check(self) -> QUniformValue:
        positive("q", self.q)
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        finite(f"high - low ({self.high} - {self.low})", float(self.high) - float(self.low))
        lo, hi = self.support()
        reach = max(abs(float(lo)), abs(float(hi)))
        # Sampling rounds draw / q to an integer: that quotient must be a float too.
        finite(f"the largest draw / q ({reach:.3g} / {self.q})", reach / self.q)
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


# ---------------------------------------------------------------- the kinds


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
