"""Schedulers: which trial runs to start, when a rung is decided, which trials go on.

The machine (``SweepMachine``) keeps the trial registry, retries, early
stopping, stop and finish; a scheduler keeps the algorithm. It never creates a
trial itself: it answers with ``Slot``s (a new configuration to sample, or a
trial to promote), the machine makes the trials (asking its sampler for new
configurations) and hands them back through ``started``. So a new algorithm
(asynchronous promotion, ASHA) is a new class here, not an edit of the machine.

A scheduler is pure and deterministic: what it answers is a function of the
plan and of the calls it received, in order. The machine calls it only from
``handle``, so a replay of the log makes the same calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hbd.core import geometry
from hbd.core.bracket import BracketRun, Trial
from hbd.core.events import RungDecided
from hbd.core.ranking import Direction

__all__ = ["Scheduler", "Slot", "Step", "SynchronousHyperband"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One trial run to start: a new configuration (``parent`` None) or a promotion."""

    bracket: int
    rung: int
    index: int
    resource: int | float
    parent: Trial | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What a scheduler decided after a trial ended.

    ``decided`` come first: the machine records their results (a sampler's
    history) before it fills ``starts``, in order, so a bracket opened by this
    step samples with those rungs' results known.
    """

    decided: tuple[RungDecided, ...] = ()
    starts: tuple[Slot, ...] = ()


class Scheduler(Protocol):
    def begin(self) -> list[Slot]:
        """The trial runs to start when the sweep begins."""
        ...

    def started(self, trials: Sequence[Trial]) -> None:
        """The trials the machine made for the slots last returned, in the same order."""
        ...

    def replaced(self, old: Trial, new: Trial) -> None:
        """A retry of the failed ``old`` takes its place (its rung waits for ``new``)."""
        ...

    def ended(self, trial: Trial, *, decide: bool = True) -> Step:
        """``trial`` ended. ``decide`` False: the sweep is stopping, only count it."""
        ...

    @property
    def done(self) -> bool:
        """Nothing more will be started: every trial run of the plan was decided."""
        ...

    def position(self, bracket: int) -> int:
        """Bracket order for ranking ties (0 for the first bracket to start)."""
        ...

    def snapshot(self) -> list[Any]:
        """Everything that determines future answers, as plain comparable data."""
        ...


class SynchronousHyperband:
    """Hyperband (Li et al. 2018) with a rung barrier per bracket, brackets side by side.

    A rung is decided only when every one of its trials has ended, from the
    complete set of results, so promotions never depend on arrival order.

    ``lazy``: open bracket b+1 only once bracket b's first rung is decided
    (default: every bracket opens at the start, so executors are not idle at one
    bracket's barrier). A learning sampler then sees results before it proposes
    the next bracket's configurations. Which scheduler options a sweep runs with
    must be part of what its log records, so that a replay uses the same.
    """

    def __init__(
        self,
        plan: Sequence[geometry.Bracket],
        *,
        metric: str,
        direction: Direction,
        lazy: bool = False,
    ) -> None:
        self.metric = metric
        self.direction = direction
        self.lazy = lazy
        self._brackets = [BracketRun(plan=b, position=p) for p, b in enumerate(plan)]
        self._opened = 0  # brackets opened so far, in plan order (s_max first)

    def begin(self) -> list[Slot]:
        count = 1 if self.lazy else len(self._brackets)
        return [s for run in self._brackets[:count] for s in self._open_first(run)]

    def _open_first(self, run: BracketRun) -> list[Slot]:
        self._opened += 1
        rung = run.plan.rungs[0]
        return [
            Slot(bracket=run.s, rung=0, index=i, resource=rung.resource, parent=None)
            for i in range(rung.configs)
        ]

    def started(self, trials: Sequence[Trial]) -> None:
        by_bracket: dict[int, list[Trial]] = {}
        for t in trials:
            by_bracket.setdefault(t.bracket, []).append(t)
        for bracket, group in by_bracket.items():
            self._run(bracket).open_rung(group)

    def replaced(self, old: Trial, new: Trial) -> None:
        self._run(old.bracket).replace(old, new)

    def ended(self, trial: Trial, *, decide: bool = True) -> Step:
        # The previous rungs of this bracket are closed, so the trial is in the open one.
        run = self._run(trial.bracket)
        if not run.trial_ended() or not decide:
            return Step()
        decision, promoted = run.decide(self.metric, self.direction)
        starts = []
        if promoted:
            rung = run.plan.rungs[run.rung + 1]
            starts = [
                Slot(
                    bracket=run.s, rung=rung.index, index=t.index, resource=rung.resource, parent=t
                )
                for t in promoted
            ]
        if self.lazy and decision.rung == 0 and self._opened < len(self._brackets):
            starts += self._open_first(self._brackets[self._opened])
        return Step(decided=(decision,), starts=tuple(starts))

    @property
    def done(self) -> bool:
        return self._opened == len(self._brackets) and all(b.done for b in self._brackets)

    def position(self, bracket: int) -> int:
        return self._brackets[0].s - bracket

    def _run(self, bracket: int) -> BracketRun:
        return self._brackets[self.position(bracket)]

    def snapshot(self) -> list[Any]:
        return [
            (b.s, b.rung, b.done, [[t.trial_id for t in r] for r in b.trials])
            for b in self._brackets
        ]
