"""The choice kinds: ``choice`` and ``pchoice`` (values with probabilities)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import field_validator

from hbd.core.kinds.shared import PCHOICE_TOLERANCE, Frozen, Number, json_native

__all__ = ["ChoiceParam", "PChoiceParam"]


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
