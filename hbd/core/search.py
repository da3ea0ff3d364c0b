"""What a sweep searches with: its sampler, its scheduler and their options.

A spec names them (``matrix.tuner``, ``matrix.promotion``, ``matrix.iterations``);
``Search.of(matrix)`` reads them, and the daemon records ``Search.to_json()``
in the sweep's ``sweep.submitted`` so that a replay builds the same machine
even if a later hbd changes a default (a BOHB setting, when brackets open).
An older log without the record ran random sampling, synchronous promotion,
every bracket opened at once, one iteration: ``Search.from_json(None)``.

Why a learning sampler opens brackets lazily: a sampler's history must be a
function of the results, never of their arrival order (the determinism the
property tests hold). Opened lazily, a bracket opens exactly when the rungs
its ``Opening`` rule names are settled, and is shown exactly the closed ones
among them, whatever the order (scheduler.py). Eagerly, every bracket opens
at the start with nothing to learn from.

The rule is recorded (``opening``: lag, slope, first, order): a diagonal
wavefront with ``tuner.params.lag`` (default 0, ``scheduler.DEFAULT_OPENING``;
docs/search.md has the measurements behind it), brackets in ascending order
after the first iteration. A log written before the rule was recorded
(``lazy`` true, no ``opening``) ran ``LEGACY_OPENING``, whole brackets with
lag 1, and replays with it; one written before the order was recorded (no
``order``) ran Hyperband's order in every iteration, and replays with it.

``stragglers`` (asynchronous promotion: how many running trials a rung's last
promotions may leave behind, scheduler.AsynchronousHyperband) is recorded
too; a log without it ran ASHA's rule, 0, and replays with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hbd.core import geometry
from hbd.core.params import Param
from hbd.core.ranking import Direction
from hbd.core.sampler import RandomSampler, Sampler
from hbd.core.scheduler import (
    LEGACY_OPENING,
    AsynchronousHyperband,
    BracketOrder,
    Opening,
    Scheduler,
    SynchronousHyperband,
)
from hbd.core.spec import HyperbandMatrix
from hbd.core.tpe import UNRECORDED_SETTINGS, BOHBSampler, BOHBSettings
from hbd.core.tunerparams import BOHBParams

__all__ = ["Search"]

SamplerKind = Literal["random", "bohb"]
Promotion = Literal["synchronous", "asynchronous"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Search:
    sampler: SamplerKind = "random"
    settings: Mapping[str, Any] | None = None  # the sampler's settings (BOHBSettings), in full
    promotion: Promotion = "synchronous"
    opening: Opening | None = None  # None: every bracket at once; else lazily by this rule
    iterations: int = 1  # as submitted; sweep.extended events add to it
    stragglers: int = 0  # asynchronous: running trials a rung's last promotions leave behind

    @property
    def lazy(self) -> bool:
        """Brackets open one after another (see the module doc)."""
        return self.opening is not None

    @classmethod
    def of(cls, matrix: HyperbandMatrix) -> Search:
        tuner = matrix.tuner
        kind: SamplerKind = "bohb" if tuner is not None and tuner.hub_ref == "bohb" else "random"
        settings = None
        opening = None
        if kind == "bohb":
            bohb = tuner.params if tuner is not None and tuner.params else BOHBParams()
            settings = bohb.model_dump(mode="json", exclude={"lag", "order"})
            opening = Opening(lag=bohb.lag, slope=1, first=bohb.lag, order=bohb.order)
        return cls(
            sampler=kind,
            settings=settings,
            promotion=matrix.promotion,
            opening=opening,
            iterations=matrix.iterations,
            stragglers=matrix.stragglers,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Search:
        """The record of a ``sweep.submitted`` (None: an older log, today's defaults then)."""
        if data is None:
            return cls()
        settings = data.get("settings")
        opening = None
        if data["lazy"]:
            rule = data.get("opening")  # absent: a log of the unrecorded rule
            opening = (
                LEGACY_OPENING
                if rule is None
                else Opening(
                    lag=int(rule["lag"]),
                    slope=int(rule["slope"]),
                    first=int(rule["first"]),
                    # absent: a log of the time before the order was recorded
                    order=_bracket_order(rule.get("order", "hyperband")),
                )
            )
        return cls(
            sampler=data["sampler"],
            settings=dict(settings) if settings is not None else None,
            promotion=data["promotion"],
            opening=opening,
            iterations=int(data["iterations"]),
            # absent: a log of the time before it was recorded, ASHA's rule
            stragglers=int(data.get("stragglers", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "settings": None if self.settings is None else dict(self.settings),
            "promotion": self.promotion,
            "lazy": self.lazy,
            "opening": None if self.opening is None else self.opening.to_json(),
            "iterations": self.iterations,
            "stragglers": self.stragglers,
        }

    def make_sampler(self, params: Mapping[str, Param], *, seed: int) -> Sampler:
        if self.sampler == "bohb":
            # A field the record lacks was added since: the sweep ran without it.
            recorded = {} if self.settings is None else {**UNRECORDED_SETTINGS, **self.settings}
            settings = BOHBSettings.model_validate(recorded)
            return BOHBSampler(params, seed=seed, settings=settings)
        return RandomSampler(params, seed=seed)

    def make_scheduler(
        self, plan: Sequence[geometry.Bracket], *, metric: str, direction: Direction
    ) -> Scheduler:
        if self.promotion == "asynchronous":
            return AsynchronousHyperband(
                plan,
                metric=metric,
                direction=direction,
                opening=self.opening,
                iterations=self.iterations,
                stragglers=self.stragglers,
            )
        return SynchronousHyperband(
            plan,
            metric=metric,
            direction=direction,
            opening=self.opening,
            iterations=self.iterations,
        )


def _bracket_order(value: object) -> BracketOrder:
    if value == "hyperband":
        return "hyperband"
    if value == "ascending-after-first":
        return "ascending-after-first"
    raise ValueError(f"unknown bracket order in the log: {value!r}")
