"""Order trials by the sweep's metric.

A trial that failed, was cancelled, or did not report a finite value of the
metric ranks after every trial that did; ties (and the unranked tail) keep the
order of ``order_key``, so the ranking never depends on completion order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, TypeVar

Direction = Literal["minimize", "maximize"]
T = TypeVar("T")


def metric_value(metrics: Mapping[str, float] | None, name: str) -> float | None:
    """The finite value of ``name`` in ``metrics``, else None (NaN and inf do not rank)."""
    if not metrics:
        return None
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def rank(
    items: Iterable[T],
    *,
    value: Callable[[T], float | None],
    order_key: Callable[[T], tuple[int, ...]],
    direction: Direction,
) -> list[T]:
    sign = 1.0 if direction == "minimize" else -1.0

    def key(item: T) -> tuple[int, float, tuple[int, ...]]:
        v = value(item)
        return (1, 0.0, order_key(item)) if v is None else (0, sign * v, order_key(item))

    return sorted(items, key=key)


def reached(value: float, threshold: float, direction: Direction) -> bool:
    """Whether ``value`` meets an early-stopping threshold in the given direction."""
    return value >= threshold if direction == "maximize" else value <= threshold
