"""Schedulers: which trial runs to start, when a rung is decided, which trials go on.

The machine (``SweepMachine``) keeps the trial registry, retries, early
stopping, stop and finish; a scheduler keeps the algorithm. It never creates a
trial itself: it answers with ``Slot``s (a new configuration to sample, or a
trial to promote), the machine makes the trials (asking its sampler for new
configurations) and hands them back through ``started``. So a new algorithm
is a new class here, not an edit of the machine: ``SynchronousHyperband``
(a rung barrier per bracket) and ``AsynchronousHyperband`` (ASHA's promotion
rule) share the outer loop, ``_Iterations``: brackets in Hyperband's order
(or ascending after the first iteration, ``Opening.order``) over
``iterations`` repetitions of the plan, opened all at once or lazily by an
``Opening`` rule (a diagonal wavefront over bracket positions and rungs, so
that a learning sampler's history is a function of the results), and
``extend`` for more.

A scheduler is pure and deterministic: what it answers is a function of the
plan and of the calls it received, in order. The machine calls it only from
``handle``, so a replay of the log makes the same calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

from hbd.core import geometry
from hbd.core.bracket import BracketRun, Trial, TrialState
from hbd.core.events import RankedTrial, RungDecided
from hbd.core.ranking import Direction, metric_value, rank

__all__ = [
    "DEFAULT_OPENING",
    "LEGACY_OPENING",
    "AsynchronousHyperband",
    "BracketOrder",
    "Opening",
    "Scheduler",
    "Slot",
    "Step",
    "SynchronousHyperband",
    "run_order",
]


# The order of the brackets within an iteration (``Opening.order``).
BracketOrder = Literal["hyperband", "ascending-after-first"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One trial run to start: a new configuration (``parent`` None) or a promotion."""

    bracket: int
    rung: int
    index: int
    resource: int | float
    parent: Trial | None
    iteration: int = 0


def promotions(
    bracket: int, iteration: int, rung: geometry.Rung, parents: Sequence[Trial]
) -> list[Slot]:
    """The slots that continue ``parents`` at ``rung`` (each keeps its config index)."""
    return [
        Slot(
            bracket=bracket,
            rung=rung.index,
            index=t.index,
            resource=rung.resource,
            parent=t,
            iteration=iteration,
        )
        for t in parents
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What a scheduler decided after a trial ended.

    ``decided`` come first: every rung decision, in order (a synchronous rung is
    decided once; an asynchronous one at each promotion and when it closes).
    ``closed`` are those that close a rung (all its trials ended): the machine
    keeps their results as a sampler's history before it fills ``starts``, in
    order, so a bracket opened by this step samples with them (``visible``).
    """

    decided: tuple[RungDecided, ...] = ()
    starts: tuple[Slot, ...] = ()
    closed: tuple[RungDecided, ...] = ()


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

    def extend(self, iterations: int) -> list[Slot]:
        """Plan ``iterations`` more Hyperband iterations; the trial runs to start now."""
        ...

    @property
    def iterations(self) -> int:
        """Hyperband iterations planned so far."""
        ...

    @property
    def done(self) -> bool:
        """Nothing more will be started: every trial run of the plan was decided."""
        ...

    def position(self, bracket: int, iteration: int = 0) -> int:
        """Bracket order for ranking ties (0 for the first bracket to start)."""
        ...

    def sample_key(self, bracket: int, iteration: int = 0) -> int:
        """The ``bracket`` a sampler is given: the bracket in the first iteration,
        distinct ones after (so no two iterations draw the same configurations)."""
        ...

    def snapshot(self) -> list[Any]:
        """Everything that determines future answers, as plain comparable data."""
        ...

    def visible(self, opening: int, position: int, rung: int) -> bool:
        """Whether the closed rung (bracket ``position``, ``rung``) is in the history
        a sampler is shown for the bracket opening at position ``opening``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Opening:
    """When a lazily opened bracket opens, and so what its sampler is shown.

    Bracket p (its position, counted over iterations) opens, after bracket
    p-1, when the first rung of every bracket at positions <= p-1-first is
    closed and every rung (j, k) (bracket position j, rung k) with
    ``j + slope * k <= p - 1 - lag`` is *settled*: closed, or never to run
    (its bracket ended early or has no rung k). A spec's ``tuner.params.lag``
    L is ``Opening(lag=L, slope=1, first=L)``: the cells j + k <= p-1-L.
    ``slope`` 1 is a diagonal wavefront: a bracket waits for the shallow rungs
    of recent brackets and the deep rungs of older ones only, so promotions and
    the next brackets' first rungs overlap and slots stay busy. ``slope`` 0
    waits for whole brackets: ``Opening(lag=1, slope=0, first=0)`` is the rule before
    the lag was recorded (bracket p opens when bracket p-1's first rung is
    closed and every bracket before it is done; ``LEGACY_OPENING``).

    Whatever order trials ended in, the settled rungs at opening are exactly
    those of the rule (a settled rung stays settled), so the closed ones among
    them, ``visible``, are a function of the results: the history a learning
    sampler is shown (sweep.py). Other rungs may or may not have closed by
    then: they are not shown.

    ``order`` is the order of the brackets (their s) within each iteration,
    and so their positions. ``hyperband``: s_max down to 0, Hyperband's, in
    every iteration. ``ascending-after-first``: Hyperband's in the first
    iteration, s = 0 up to s_max after it. With Hyperband's order the
    full-resource rung of every bracket of an iteration (j + k the same for
    all) lies on one diagonal, so an iteration's full-resource results are
    shown together, to the next iteration only: the model at the full resource
    is refitted once per iteration. Ascending, a later iteration's short
    brackets run first and the brackets after them learn from their
    full-resource results (docs/search.md has the figures). The first
    iteration keeps Hyperband's order: with nothing learnt yet, its wide
    first bracket is what the next ones learn from.
    """

    lag: int
    slope: int = 1
    first: int = 0
    order: BracketOrder = "hyperband"

    def visible(self, opening: int, position: int, rung: int) -> bool:
        """Whether a closed rung (bracket ``position``, ``rung``) is in the history
        of the bracket opening at position ``opening``."""
        if rung == 0 and position <= opening - 1 - self.first:
            return True
        return position + self.slope * rung <= opening - 1 - self.lag

    def to_json(self) -> dict[str, int | str]:
        return {"lag": self.lag, "slope": self.slope, "first": self.first, "order": self.order}

    def brackets(self, plan: Sequence[int], iteration: int) -> tuple[int, ...]:
        """The s of each bracket of ``iteration`` in position order (``plan``:
        Hyperband's order, s_max down to 0)."""
        return run_order(plan, self.order, iteration)


def run_order(plan: Sequence[int], order: BracketOrder, iteration: int) -> tuple[int, ...]:
    """The s of each bracket of ``iteration`` in the order they run under ``order``
    (``plan``: Hyperband's order, s_max down to 0); also what views list them by."""
    if order == "ascending-after-first" and iteration > 0:
        return tuple(reversed(plan))
    return tuple(plan)


# The rule of logs written before the opening was recorded (search.py).
LEGACY_OPENING = Opening(lag=1, slope=0)
# The default for a learning sampler, the diagonal with lag 0 (``tuner.params.lag``
# sets lag and first): it learns as much per unit of budget as the legacy rule
# and keeps 2.5 times the slots busy; lag 1 keeps as many busy as random
# sampling but learns less. Brackets ascending after the first iteration refit
# the full-resource model within an iteration, not once per iteration
# (docs/search.md has the figures behind both choices).
DEFAULT_OPENING = Opening(lag=0, slope=1, first=0, order="ascending-after-first")


class _Iterations:
    """Hyperband's outer loop, shared by both schedulers.

    Brackets run in Hyperband's order (s_max down to 0), iteration after
    iteration, unless the ``Opening`` orders them otherwise (``Opening.brackets``);
    ``position`` counts them from 0 over all iterations in that order. Eager
    (``opening`` None, the default) opens every bracket at once, so executors
    are not idle at one bracket's barrier, and shows a sampler nothing. Lazy
    opens each bracket by the ``Opening`` rule, so that the rungs closed when it
    opens, and shown to its sampler (``visible``), are a function of the
    results and never of their arrival order.
    """

    def __init__(
        self,
        plan: Sequence[geometry.Bracket],
        *,
        metric: str,
        direction: Direction,
        opening: Opening | None = None,
        iterations: int = 1,
    ) -> None:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.metric = metric
        self.direction = direction
        self.opening = opening
        self.plan = tuple(plan)
        self._top = self.plan[0].s
        self._per = len(self.plan)
        self._iterations = 0
        self._brackets: list[Any] = []
        self._opened = 0  # brackets opened so far, in position order
        self._first_closed = 0  # brackets 0.._first_closed-1 have their first rung closed
        self._settled: list[int] = []  # per position: its leading rungs settled (Opening)
        self._frontier = -1  # every (j, k) with j + slope * k <= _frontier is settled
        # Where each (iteration, s) sits: positions follow the opening's bracket order.
        self._positions: dict[tuple[int, int], int] = {}
        self._add(iterations)

    @property
    def lazy(self) -> bool:
        return self.opening is not None

    def _new_bracket(self, plan: geometry.Bracket, *, position: int, iteration: int) -> Any:
        raise NotImplementedError  # pragma: no cover - each scheduler has its bracket

    def _add(self, iterations: int) -> None:
        by_s = {b.s: b for b in self.plan}
        rule = self.opening or Opening(lag=0)  # eager: Hyperband's order
        for it in range(self._iterations, self._iterations + iterations):
            for p, s in enumerate(rule.brackets(list(by_s), it)):
                position = it * self._per + p
                self._positions[it, s] = position
                self._brackets.append(self._new_bracket(by_s[s], position=position, iteration=it))
                self._settled.append(0)
        self._iterations += iterations

    @property
    def iterations(self) -> int:
        return self._iterations

    def begin(self) -> list[Slot]:
        if self.opening is None:
            return [s for _ in range(len(self._brackets)) for s in self._open_next()]
        return self._open_ready()

    def extend(self, iterations: int) -> list[Slot]:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self._add(iterations)
        if self.opening is None:
            return [s for _ in range(self._opened, len(self._brackets)) for s in self._open_next()]
        # Lazily, the next bracket opens now if what it waits for is settled.
        return self._open_ready()

    def _open_next(self) -> list[Slot]:
        run = self._brackets[self._opened]
        self._opened += 1
        rung = run.plan.rungs[0]
        self._opening(run)
        return [
            Slot(
                bracket=run.s,
                rung=0,
                index=i,
                resource=rung.resource,
                parent=None,
                iteration=run.iteration,
            )
            for i in range(rung.configs)
        ]

    def _opening(self, run: Any) -> None:
        """A bracket opens (hook for the scheduler's own bookkeeping)."""

    def _rung_closed(self, position: int, rung: int, *, bracket_done: bool) -> None:
        """Rung ``rung`` of the bracket at ``position`` closed (all its trials ended)."""
        self._settled[position] = self._top + 1 if bracket_done else rung + 1

    def _is_settled(self, position: int, rung: int) -> bool:
        if position >= self._opened:
            return False
        return rung > self._brackets[position].s or rung < self._settled[position]

    def _open_ready(self) -> list[Slot]:
        """Lazily: the next bracket's slots if the ``Opening`` rule lets it open now."""
        rule = self.opening
        if rule is None:
            return []
        starts: list[Slot] = []
        while self._opened < len(self._brackets):
            # Advance the frontier over every rung that is settled by now.
            while True:
                d = self._frontier + 1
                cells = [(d - rule.slope * k, k) for k in range(self._top + 1)]
                if not all(self._is_settled(j, k) for j, k in cells if j >= 0):
                    break
                self._frontier = d
            while self._first_closed < self._opened and self._settled[self._first_closed]:
                self._first_closed += 1
            p = self._opened
            if self._first_closed < p - rule.first or self._frontier < p - 1 - rule.lag:
                break
            starts += self._open_next()
        return starts

    @property
    def done(self) -> bool:
        return self._opened == len(self._brackets) and all(b.done for b in self._brackets)

    def position(self, bracket: int, iteration: int = 0) -> int:
        planned = self._positions.get((iteration, bracket))
        if planned is not None:
            return planned
        # Not planned (yet): where Hyperband's order would put it, as before.
        return iteration * self._per + self._top - bracket

    def sample_key(self, bracket: int, iteration: int = 0) -> int:
        return bracket + iteration * self._per

    def _run(self, trial: Trial) -> Any:
        return self._brackets[self.position(trial.bracket, trial.iteration)]

    def visible(self, opening: int, position: int, rung: int) -> bool:
        """Whether a closed rung is in the history of the bracket opening at
        ``opening`` (eagerly: none is, what is closed then depends on the order)."""
        return self.opening is not None and self.opening.visible(opening, position, rung)


class SynchronousHyperband(_Iterations):
    """Hyperband (Li et al. 2018) with a rung barrier per bracket, brackets side by side.

    A rung is decided only when every one of its trials has ended, from the
    complete set of results, so promotions never depend on arrival order.
    Which scheduler options a sweep runs with are recorded in its
    ``sweep.submitted`` (hbd.core.search), so that a replay uses the same.
    """

    def _new_bracket(self, plan: geometry.Bracket, *, position: int, iteration: int) -> BracketRun:
        return BracketRun(plan=plan, position=position, iteration=iteration)

    def started(self, trials: Sequence[Trial]) -> None:
        by_bracket: dict[int, list[Trial]] = {}
        for t in trials:
            by_bracket.setdefault(self.position(t.bracket, t.iteration), []).append(t)
        for position, group in by_bracket.items():
            self._brackets[position].open_rung(group)

    def replaced(self, old: Trial, new: Trial) -> None:
        self._run(old).replace(old, new)

    def ended(self, trial: Trial, *, decide: bool = True) -> Step:
        # The previous rungs of this bracket are closed, so the trial is in the open one.
        run: BracketRun = self._run(trial)
        if not run.trial_ended() or not decide:
            return Step()
        decision, promoted = run.decide(self.metric, self.direction)
        starts = []
        if promoted:
            starts = promotions(run.s, run.iteration, run.plan.rungs[run.rung + 1], promoted)
        self._rung_closed(run.position, decision.rung, bracket_done=run.done)
        starts += self._open_ready()
        return Step(decided=(decision,), starts=tuple(starts), closed=(decision,))

    def snapshot(self) -> list[Any]:
        return [
            (b.iteration, b.s, b.rung, b.done, [[t.trial_id for t in r] for r in b.trials])
            for b in self._brackets
        ]


@dataclass(slots=True)
class _Rung:
    """One rung of an asynchronous bracket: its trials, in the order they started."""

    trials: list[Trial] = field(default_factory=list)
    expected: int = 0  # trials sent into it (promotions whose trials may not exist yet)
    ended: list[Trial] = field(default_factory=list)  # in the order they ended
    promoted: list[Trial] = field(default_factory=list)  # in the order they went on
    closed: bool = False


@dataclass(slots=True)
class _AsyncBracket:
    plan: geometry.Bracket
    position: int
    iteration: int
    rungs: list[_Rung]
    done: bool = False

    @property
    def s(self) -> int:
        return self.plan.s


class AsynchronousHyperband(_Iterations):
    """Hyperband with ASHA's promotion rule (Li et al. 2020, Algorithm 2), per bracket.

    When a trial of rung i ends, every trial among the top floor(m / eta) of the
    m trials of rung i that have ended so far, not yet promoted, goes on at
    once: no trial waits for its rung's slowest. A bracket promotes at most the
    planned size of its next rung, as synchronous Hyperband does, so its
    budget is the same; when the last trial of a rung ends (the rung closes)
    the best not yet promoted fill what is left of it.

    What it gives up: a promotion depends on the order results arrived in (an
    early good result may go on where the full ranking would have stopped
    it), so two runs of the same sweep may differ. The log makes it
    replayable: promotions are logged ``rung.decided`` events, decided from the
    results in logged order, and replay checks them.

    ``stragglers`` k > 0: once no more trials can join a rung (the rung below
    is closed) and at most k of them are still running, those count as the
    worst and the best ended fill what is left of the next rung at once. With
    k = 0 (Li et al.'s rule) a top rung of 3 trials promotes 1 only when its
    slowest ends, and at the end of a one-iteration sweep every other slot
    waits for that straggler (docs/search.md has the figures). Decided at a
    result of the rung and when the rung below closes, both logged events, so
    a replay decides the same.
    """

    def __init__(
        self,
        plan: Sequence[geometry.Bracket],
        *,
        metric: str,
        direction: Direction,
        opening: Opening | None = None,
        iterations: int = 1,
        stragglers: int = 0,
    ) -> None:
        if isinstance(stragglers, bool) or stragglers < 0:
            raise ValueError(f"stragglers must be an int >= 0, got {stragglers!r}")
        super().__init__(
            plan, metric=metric, direction=direction, opening=opening, iterations=iterations
        )
        self.stragglers = stragglers

    def _new_bracket(
        self, plan: geometry.Bracket, *, position: int, iteration: int
    ) -> _AsyncBracket:
        return _AsyncBracket(
            plan=plan,
            position=position,
            iteration=iteration,
            rungs=[_Rung() for _ in plan.rungs],
        )

    def _opening(self, run: Any) -> None:
        run.rungs[0].expected = run.plan.rungs[0].configs

    def started(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            self._run(t).rungs[t.rung].trials.append(t)

    def replaced(self, old: Trial, new: Trial) -> None:
        trials = self._run(old).rungs[old.rung].trials
        trials[trials.index(old)] = new

    def ended(self, trial: Trial, *, decide: bool = True) -> Step:
        run: _AsyncBracket = self._run(trial)
        rung = run.rungs[trial.rung]
        rung.ended.append(trial)
        if not decide or run.done:
            return Step()
        decided: list[RungDecided] = []
        closed: list[RungDecided] = []
        starts: list[Slot] = []
        if trial.rung < run.s:
            decision = self._promote(run, trial.rung, final=False, starts=starts)
            if decision is not None:
                decided.append(decision)
        # Close every rung that is complete now, from this one up: a closed rung
        # fixes the next one's population, which may be complete already.
        for i in range(trial.rung, run.s + 1):
            if not self._closable(run, i):
                break
            decision = self._close(run, i, starts)
            decided.append(decision)
            closed.append(decision)
            self._rung_closed(run.position, i, bracket_done=run.done)
            if run.done:
                break
            # The next rung's population is fixed now: it may be down to its stragglers.
            if self.stragglers and i + 1 < run.s and not self._closable(run, i + 1):
                decision = self._promote(run, i + 1, final=False, starts=starts)
                if decision is not None:
                    decided.append(decision)
        if closed:
            starts += self._open_ready()
        return Step(decided=tuple(decided), starts=tuple(starts), closed=tuple(closed))

    def _closable(self, run: _AsyncBracket, i: int) -> bool:
        rung = run.rungs[i]
        if rung.closed:
            return False
        before_closed = i == 0 or run.rungs[i - 1].closed
        return before_closed and len(rung.ended) == rung.expected

    def _only_stragglers(self, run: _AsyncBracket, i: int) -> bool:
        """Whether rung i can gain no more trials and at most ``stragglers`` still run."""
        rung = run.rungs[i]
        fixed = i == 0 or run.rungs[i - 1].closed
        return fixed and rung.expected - len(rung.ended) <= self.stragglers

    def _ranked(self, trials: Sequence[Trial], run: _AsyncBracket) -> list[Trial]:
        return rank(
            trials,
            value=lambda t: (
                metric_value(t.metrics, self.metric) if t.state is TrialState.SUCCEEDED else None
            ),
            order_key=lambda t: t.order_key(run.position),
            direction=self.direction,
        )

    def _promote(
        self, run: _AsyncBracket, i: int, *, final: bool, starts: list[Slot]
    ) -> RungDecided | None:
        """Promote from rung i what ASHA's rule allows now; the decision, or None."""
        rung = run.rungs[i]
        nxt = run.plan.rungs[i + 1]
        ranked = self._ranked(rung.ended, run)
        good = [
            t
            for t in ranked
            if t.state is TrialState.SUCCEEDED and metric_value(t.metrics, self.metric) is not None
        ]
        # Down to its stragglers, a rung is decided as if they ended last.
        if final or (self.stragglers and self._only_stragglers(run, i)):
            top = good
        else:
            eta = geometry.as_fraction(self._eta_of(run))
            top = good[: math.floor(Fraction(len(rung.ended)) / eta)]
        done = {t.trial_id for t in rung.promoted}
        room = nxt.configs - len(rung.promoted)
        new = [t for t in top if t.trial_id not in done][: max(room, 0)]
        if not new and not final:
            return None
        rung.promoted += new
        run.rungs[i + 1].expected += len(new)
        starts += promotions(run.s, run.iteration, nxt, new)
        return self._decision(run, i, ranked, new, final=final)

    def _eta_of(self, run: _AsyncBracket) -> Fraction:
        # eta is the ratio of successive rung resources (exact, from geometry).
        rungs = run.plan.rungs
        if len(rungs) > 1:
            return rungs[1].exact_resource / rungs[0].exact_resource
        return Fraction(1)  # pragma: no cover - a one-rung bracket promotes nothing

    def _close(self, run: _AsyncBracket, i: int, starts: list[Slot]) -> RungDecided:
        rung = run.rungs[i]
        rung.closed = True
        if i < run.s:
            decision = self._promote(run, i, final=True, starts=starts)
            assert decision is not None
            if not rung.promoted:
                run.done = True
            return decision
        run.done = True
        return self._decision(run, i, self._ranked(rung.ended, run), [], final=True)

    def _decision(
        self,
        run: _AsyncBracket,
        i: int,
        ranked: Sequence[Trial],
        new: Sequence[Trial],
        *,
        final: bool,
    ) -> RungDecided:
        rung = run.rungs[i]
        last = i == run.s
        if last:
            reason = "last rung of the bracket"
        elif final:
            reason = (
                f"rung closed: {len(rung.promoted)} of {len(rung.trials)} promoted "
                f"by {self.metric} ({self.direction}), {len(new)} now"
                if rung.promoted
                else f"no trial of this rung reported {self.metric!r}; the bracket ends here"
            )
        elif self.stragglers and self._only_stragglers(run, i):
            out = rung.expected - len(rung.ended)
            reason = (
                f"asynchronous: the best of the {len(rung.ended)} ended by {self.metric} "
                f"({self.direction}); the {out} still running count as the worst "
                f"(stragglers: {self.stragglers})"
            )
        else:
            reason = (
                f"asynchronous: in the top 1/eta of the {len(rung.ended)} ended so far "
                f"by {self.metric} ({self.direction})"
            )
        promoted_ids = {t.trial_id for t in rung.promoted}
        return RungDecided(
            bracket=run.s,
            rung=i,
            ranking=tuple(
                RankedTrial(
                    trial_id=t.trial_id,
                    index=t.index,
                    status=t.state.value,
                    metric=metric_value(t.metrics, self.metric),
                )
                for t in ranked
            ),
            promoted=tuple(t.trial_id for t in new),
            stopped=tuple(t.trial_id for t in ranked if t.trial_id not in promoted_ids)
            if final and not last
            else (),
            cutoff=metric_value(new[-1].metrics, self.metric) if new else None,
            reason=reason,
            iteration=run.iteration,
        )

    def snapshot(self) -> list[Any]:
        return [
            (
                b.iteration,
                b.s,
                b.done,
                [
                    (
                        r.closed,
                        r.expected,
                        [t.trial_id for t in r.trials],
                        [t.trial_id for t in r.ended],
                        [t.trial_id for t in r.promoted],
                    )
                    for r in b.rungs
                ],
            )
            for b in self._brackets
        ]
