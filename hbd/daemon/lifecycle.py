"""Every event type the log holds, and the log-only markers the daemon adds.

The core's observations and decisions are spelled in :mod:`hbd.core.codec`;
the daemon adds facts the core does not need (a trial reached an executor,
reported a metric, a slot stood idle) and markers that make the log easier to
follow (a bracket or rung began). Markers are written in the same transaction
as the decisions they introduce and are never read back by replay.

``EVENT_TYPES`` is the stream's whole vocabulary: the SSE routes validate
``?type=`` against it and ``docs/events.md`` documents each entry (a test
checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hbd.core.codec import DECISION_TYPES, OBSERVATION_TYPES, Record, decision_record
from hbd.core.events import Decision, StartTrial
from hbd.core.vocabulary import EventType

# Log-only facts: written by the runner from a Note, never replayed.
TRIAL_SENDING = EventType.TRIAL_SENDING
TRIAL_DISPATCHED = EventType.TRIAL_DISPATCHED
TRIAL_RUNNING = EventType.TRIAL_RUNNING
TRIAL_METRICS = EventType.TRIAL_METRICS
TRIAL_LOST = (
    EventType.TRIAL_LOST
)  # the reconciler gave up on a trial's executor; its trial.failed follows
CAPACITY_IDLE = EventType.CAPACITY_IDLE
# Written by checkpoint retention (hbd.daemon.retention), also after a sweep finished.
CHECKPOINT_DELETED = EventType.CHECKPOINT_DELETED
# Markers derived from the decisions of one step.
BRACKET_STARTED = EventType.BRACKET_STARTED
RUNG_STARTED = EventType.RUNG_STARTED

NOTE_TYPES = frozenset(
    {TRIAL_SENDING, TRIAL_DISPATCHED, TRIAL_RUNNING, TRIAL_METRICS, TRIAL_LOST, CAPACITY_IDLE}
)
MARKER_TYPES = frozenset({BRACKET_STARTED, RUNG_STARTED})
EVENT_TYPES: frozenset[str] = (
    OBSERVATION_TYPES | DECISION_TYPES | NOTE_TYPES | MARKER_TYPES | {CHECKPOINT_DELETED}
)


def started_rungs(trials: Iterable[Any]) -> set[tuple[int, int, int]]:
    """The (iteration, bracket, rung) that already hold a trial: rungs already announced."""
    return {(t.iteration, t.bracket, t.rung) for t in trials}


def decision_records(
    decisions: Sequence[Decision], started: set[tuple[int, int, int]]
) -> list[Record]:
    """The records of ``decisions``, with ``bracket.started`` / ``rung.started`` markers.

    A synchronous rung's trials are all scheduled by one decision step, so the
    first StartTrial of an (iteration, bracket, rung) not in ``started``
    introduces it; ``started`` is updated in place. (With asynchronous
    promotion a rung fills over several steps: its marker counts the first.)
    A later iteration's markers carry ``iteration``.
    """
    new_rungs: dict[tuple[int, int, int], list[StartTrial]] = {}
    for d in decisions:
        if isinstance(d, StartTrial) and (d.iteration, d.bracket, d.rung) not in started:
            new_rungs.setdefault((d.iteration, d.bracket, d.rung), []).append(d)
    records: list[Record] = []
    for d in decisions:
        if isinstance(d, StartTrial) and (d.iteration, d.bracket, d.rung) in new_rungs:
            key = (d.iteration, d.bracket, d.rung)
            rung = new_rungs.pop(key)
            started.add(key)
            it = {"iteration": d.iteration} if d.iteration else {}
            if d.rung == 0:
                records.append((BRACKET_STARTED, {"bracket": d.bracket, "trials": len(rung), **it}))
            records.append(
                (
                    RUNG_STARTED,
                    {
                        "bracket": d.bracket,
                        "rung": d.rung,
                        "resource": d.resource,
                        "trials": len(rung),
                        "trial_ids": [t.trial_id for t in rung],
                        **it,
                    },
                )
            )
        records.append(decision_record(d))
    return records
