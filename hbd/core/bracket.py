"""Every state change of trials, rungs and the sweep, as tables plus the rung barrier.

``TRIAL_TRANSITIONS`` and ``SWEEP_TRANSITIONS`` map (state, event type) to the
next state; an event absent from the table is illegal in that state. The
README's state diagram is generated from these tables
(``state_diagram()``; a test keeps them in step). What cannot be a table entry, the rung
barrier and promotion, is ``BracketRun`` below.

No state is assigned by hand: ``fire`` computes the next state from a table
and raises ``InvalidTransition`` (a ``CoreError``) for a move the table does
not hold; ``Trial.fire`` and the machine's sweep moves go through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from hbd.core import geometry
from hbd.core.errors import InvalidTransition
from hbd.core.events import JSON, RankedTrial, RungDecided, StartTrial
from hbd.core.ranking import Direction, metric_value, rank
from hbd.core.vocabulary import EventType


class TrialState(StrEnum):
    SCHEDULED = "scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self is not TrialState.SCHEDULED


class SweepState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"  # no new trials; waiting for the running ones to end
    FINISHED = "finished"


TRIAL_TRANSITIONS: Mapping[tuple[TrialState, str], TrialState] = {
    (TrialState.SCHEDULED, EventType.TRIAL_SUCCEEDED): TrialState.SUCCEEDED,
    (TrialState.SCHEDULED, EventType.TRIAL_FAILED): TrialState.FAILED,
    (TrialState.SCHEDULED, EventType.TRIAL_CANCELLED): TrialState.CANCELLED,
    # Not an outcome: the trial stays open and its run starts again (Trial.runs + 1).
    (TrialState.SCHEDULED, EventType.TRIAL_INTERRUPTED): TrialState.SCHEDULED,
}

# Trial results keep a running or stopping sweep where it is; the moves the
# machine makes by itself after an event are MACHINE_TRANSITIONS, by condition.
SWEEP_TRANSITIONS: Mapping[tuple[SweepState, str], SweepState] = {
    (SweepState.CREATED, EventType.SWEEP_BEGIN): SweepState.RUNNING,
    (SweepState.RUNNING, EventType.TRIAL_SUCCEEDED): SweepState.RUNNING,
    (SweepState.RUNNING, EventType.TRIAL_FAILED): SweepState.RUNNING,
    (SweepState.RUNNING, EventType.TRIAL_CANCELLED): SweepState.RUNNING,
    (SweepState.RUNNING, EventType.TRIAL_INTERRUPTED): SweepState.RUNNING,
    (SweepState.RUNNING, EventType.SWEEP_STOP_REQUESTED): SweepState.STOPPING,
    # More Hyperband iterations: planned after the running ones, or reopening a
    # sweep that finished with every bracket done (the machine refuses to
    # reopen a stopped one, whose state is the same).
    (SweepState.RUNNING, EventType.SWEEP_EXTENDED): SweepState.RUNNING,
    (SweepState.FINISHED, EventType.SWEEP_EXTENDED): SweepState.RUNNING,
    (SweepState.STOPPING, EventType.TRIAL_SUCCEEDED): SweepState.STOPPING,
    (SweepState.STOPPING, EventType.TRIAL_FAILED): SweepState.STOPPING,
    (SweepState.STOPPING, EventType.TRIAL_CANCELLED): SweepState.STOPPING,
    (SweepState.STOPPING, EventType.TRIAL_INTERRUPTED): SweepState.STOPPING,
}
# The conditions under which the machine moves by itself (names of MACHINE_TRANSITIONS).
EARLY_STOPPED = "early stopping condition met"
ALL_DONE = "every bracket done"
IDLE = "no trial left running"
MACHINE_TRANSITIONS: Mapping[tuple[SweepState, str], SweepState] = {
    (SweepState.RUNNING, EARLY_STOPPED): SweepState.STOPPING,
    (SweepState.RUNNING, ALL_DONE): SweepState.FINISHED,
    (SweepState.STOPPING, IDLE): SweepState.FINISHED,
}
# Every move of a sweep: on an event, or by itself on a condition (the keys differ).
SWEEP_MOVES: Mapping[tuple[SweepState, str], SweepState] = {
    **SWEEP_TRANSITIONS,
    **MACHINE_TRANSITIONS,
}

_S = TypeVar("_S", TrialState, SweepState)


def fire(
    table: Mapping[tuple[_S, str], _S],
    state: _S,
    trigger: str,
    *,
    sweep_id: str,
    trial_id: str | None = None,
) -> _S:
    """The state ``trigger`` (an event type or a condition) moves ``state`` to.

    The one place a state changes: anything absent from ``table`` raises
    ``InvalidTransition`` and the caller has changed nothing yet.
    """
    nxt = table.get((state, trigger))
    if nxt is None:
        kind = "trial " if isinstance(state, TrialState) else ""
        raise InvalidTransition(
            event=trigger,
            state=f"{kind}{state.value}",
            sweep_id=sweep_id,
            trial_id=trial_id,
            detail="not in the transition table",
        )
    return nxt


@dataclass(slots=True)
class Trial:
    trial_id: str
    bracket: int
    rung: int
    index: int
    config: Mapping[str, JSON]
    resource: int | float
    parent: str | None
    attempt: int = 0  # 0 for the first run; retries of a failed run count up
    runs: int = 1  # runs started of this attempt: one more after each interruption
    state: TrialState = TrialState.SCHEDULED
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None
    # The configuration as the sampler proposed it, before casting to inputs
    # (what a learning sampler is shown); None for trials built elsewhere.
    sampled: Mapping[str, JSON] | None = None
    iteration: int = 0  # the Hyperband iteration (outer loop) it belongs to

    def fire(self, event: str, *, sweep_id: str) -> TrialState:
        """Move this trial by ``event`` through ``TRIAL_TRANSITIONS``; the new state."""
        self.state = fire(
            TRIAL_TRANSITIONS, self.state, event, sweep_id=sweep_id, trial_id=self.trial_id
        )
        return self.state

    def start(self, *, resume: bool) -> StartTrial:
        """The decision that starts this trial (``resume``: continue from its parent)."""
        return StartTrial(
            trial_id=self.trial_id,
            bracket=self.bracket,
            rung=self.rung,
            index=self.index,
            config=self.config,
            resource=self.resource,
            parent=self.parent,
            resume_from=self.parent if resume else None,
            iteration=self.iteration,
        )

    def order_key(self, bracket_position: int) -> tuple[int, ...]:
        """Canonical trial order: bracket position (the order brackets open in:
        s_max..0 in Hyperband's), then rung, then config index."""
        return (bracket_position, self.rung, self.index)


@dataclass(slots=True)
class BracketRun:
    """One bracket in flight: which rung is open and which trials are in it."""

    plan: geometry.Bracket
    # 0 for the first bracket to start (s_max in Hyperband's order), counting
    # on over iterations in the order the scheduler opens them
    position: int
    iteration: int = 0
    rung: int = 0
    trials: list[list[Trial]] = field(default_factory=list)  # trials[rung] in index order
    done: bool = False
    ended: int = 0  # trials of the open rung that have ended: the barrier is a count, not a scan

    @property
    def s(self) -> int:
        return self.plan.s

    def open_rung(self, trials: list[Trial]) -> None:
        self.trials.append(trials)
        self.rung = len(self.trials) - 1
        self.ended = 0

    def replace(self, old: Trial, new: Trial) -> None:
        """A retry takes its failed attempt's place in the open rung."""
        rung = self.trials[self.rung]
        rung[rung.index(old)] = new

    def trial_ended(self) -> bool:
        """Count one ended trial of the open rung; True when the rung is complete."""
        self.ended += 1
        return not self.done and self.ended == len(self.trials[self.rung])

    def decide(self, metric: str, direction: Direction) -> tuple[RungDecided, list[Trial]]:
        """Close the open rung; returns the decision and the trials to promote.

        Only trials that succeeded with a finite metric are promoted, at most the
        planned size of the next rung: a failed configuration is not worth more
        resource, so a rung with failures may run smaller than planned.
        """
        current = self.trials[self.rung]
        ranked = rank(
            current,
            value=lambda t: (
                metric_value(t.metrics, metric) if t.state is TrialState.SUCCEEDED else None
            ),
            order_key=lambda t: t.order_key(self.position),
            direction=direction,
        )
        last = self.rung == self.s
        keep = 0 if last else self.plan.rungs[self.rung + 1].configs
        promotable = [
            t
            for t in ranked
            if t.state is TrialState.SUCCEEDED and metric_value(t.metrics, metric) is not None
        ]
        promoted = promotable[:keep]
        promoted_ids = {t.trial_id for t in promoted}
        if last:
            reason = "last rung of the bracket"
        elif not promoted:
            reason = f"no trial of this rung reported {metric!r}; the bracket ends here"
        else:
            reason = f"top {len(promoted)} of {len(current)} by {metric} ({direction})"
        cutoff = metric_value(promoted[-1].metrics, metric) if promoted else None
        decision = RungDecided(
            bracket=self.s,
            rung=self.rung,
            ranking=tuple(
                RankedTrial(
                    trial_id=t.trial_id,
                    index=t.index,
                    status=t.state.value,
                    metric=metric_value(t.metrics, metric),
                )
                for t in ranked
            ),
            promoted=tuple(t.trial_id for t in promoted),
            # At the last rung nothing is stopped: its trials are the bracket's result.
            stopped=()
            if last
            else tuple(t.trial_id for t in ranked if t.trial_id not in promoted_ids),
            cutoff=cutoff,
            reason=reason,
            iteration=self.iteration,
        )
        if not promoted:
            self.done = True
        return decision, promoted


def state_diagram() -> str:
    """A Mermaid diagram of both transition tables, for the README."""
    lines = ["```mermaid", "stateDiagram-v2"]
    lines += [
        f"    trial_{a.value} --> trial_{b.value}: {e}" for (a, e), b in TRIAL_TRANSITIONS.items()
    ]
    lines += [
        f"    {a.value} --> {b.value}: {e}" for (a, e), b in SWEEP_TRANSITIONS.items() if a is not b
    ]
    lines += [f"    {a.value} --> {b.value}: {c}" for (a, c), b in MACHINE_TRANSITIONS.items()]
    lines.append("```")
    return "\n".join(lines)
