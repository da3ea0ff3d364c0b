"""Samplers: where a new configuration comes from (random today; model-based next).

A sampler proposes the configuration of one new trial, keyed by
``(bracket, index)``, given the ``history`` of completed trial runs. The
machine defines that history by the log, never by arrival order: it is the
results of the closed rungs ``scheduler.visible`` shows the bracket that asks
(every rung of the brackets two or more before it, the first rung of the one
just before: with lazy opening exactly the rungs closed when it opens), sorted
by trial id. So the same results give a learning sampler the same history in
any order, a replay of the log gives it the same history, and it proposes the
same configurations.

A sampler must be a pure function of its constructor arguments and of what
``propose`` is given: no clock, no global RNG, no state carried between calls
that the history does not determine (the machine may be rebuilt from the log
at any point and asked again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hbd.core.params import Param
from hbd.core.space import JSONValue, sample_config

__all__ = ["RandomSampler", "RunResult", "Sampler"]


@dataclass(frozen=True)
class RunResult:
    """One completed trial run, as the sampler sees it."""

    config: Mapping[str, JSONValue]  # the configuration as sampled (before casting to inputs)
    resource: float  # the rung's resource value (e.g. 9.0)
    loss: float | None  # the metric oriented so that lower is better; None: failed / no metric


class Sampler(Protocol):
    def propose(
        self, *, bracket: int, index: int, history: Sequence[RunResult]
    ) -> dict[str, JSONValue]: ...


class RandomSampler:
    """Independent draws keyed by (seed, bracket, index); the history is not used."""

    def __init__(self, params: Mapping[str, Param], *, seed: int) -> None:
        self.params = params
        self.seed = seed

    def propose(
        self, *, bracket: int, index: int, history: Sequence[RunResult]
    ) -> dict[str, JSONValue]:
        return sample_config(self.params, seed=self.seed, bracket=bracket, index=index)
