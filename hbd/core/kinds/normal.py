"""The normal kinds: ``normal``, ``qnormal``, ``lognormal``, ``qlognormal``."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from hbd.core.kinds.base import Value, finite, from_exact, positive
from hbd.core.kinds.shared import MAX_EXP_ARG, NORMAL_TAIL_SCALES, Frozen, Number, exact

__all__ = [
    "LogNormalParam",
    "LogNormalValue",
    "NormalParam",
    "NormalValue",
    "QLogNormalParam",
    "QLogNormalValue",
    "QNormalParam",
    "QNormalValue",
]


class NormalValue(Value):
    FIELDS: ClassVar[tuple[str, ...]] = ("loc", "scale")
    KIND = "normal"
    loc: Number
    scale: Number

    @field_validator("scale")
    @classmethod
    def _scale(cls, s: float) -> int | float:
        positive("scale", s)
        return s

    def reach(self) -> float:
        """The largest |draw| to expect: |loc| + NORMAL_TAIL_SCALES * scale (maybe inf)."""
        return abs(float(self.loc)) + NORMAL_TAIL_SCALES * float(self.scale)

    @model_validator(mode="after")
    def _check_finite(self) -> NormalValue:
        finite(f"|loc| + {NORMAL_TAIL_SCALES} * scale", self.reach())
        return self


class QNormalValue(NormalValue):
    FIELDS: ClassVar[tuple[str, ...]] = ("loc", "scale", "q")
    KIND = "qnormal"
    q: Number

    @field_validator("q")
    @classmethod
    def _q(cls, q: float) -> int | float:
        positive("q", q)
        return q

    @property
    def is_int(self) -> bool:
        return all(isinstance(x, int) for x in (self.loc, self.scale, self.q))

    def at(self, k: int) -> int | float:
        return from_exact(k * exact(self.q), self.is_int)

    @model_validator(mode="after")
    def _check_q(self) -> QNormalValue:
        if math.isfinite(self.reach()):  # else _check_finite names the problem
            finite(f"(|loc| + {NORMAL_TAIL_SCALES} * scale) / q", self.reach() / self.q)
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
        finite(f"exp(loc + {NORMAL_TAIL_SCALES} * scale) / q", _check_lognormal(self) / self.q)
        return self


# ---------------------------------------------------------------- the kinds


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
