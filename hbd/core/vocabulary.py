"""Every name for an event type and a status, defined once.

The event log, the SQL of the schema, the API, the SSE stream, the CLI, the
clients and the web page all speak these words; each is spelled here and
imported everywhere else. They are ``StrEnum``s: a member *is* its string, so
it goes into JSON, SQL parameters and comparisons with logged strings as is.
Standard library only, so that even ``hbd --help`` may import it.

Changing a value changes the format of every database in the field: add
members, never rename one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class EventType(StrEnum):
    """The ``type`` of an event in the log (and the SSE ``event:`` name)."""

    # A sweep's life. sweep.begin is the machine's word for sweep.submitted
    # (hbd.core.codec); it is never logged.
    SWEEP_SUBMITTED = "sweep.submitted"
    SWEEP_BEGIN = "sweep.begin"
    SWEEP_STOP_REQUESTED = "sweep.stop_requested"
    SWEEP_EXTENDED = "sweep.extended"  # more Hyperband iterations (hbd extend)
    SWEEP_EARLY_STOPPED = "sweep.early_stopped"
    SWEEP_FINISHED = "sweep.finished"
    # Markers the daemon derives from a step's decisions, and its idle notes.
    BRACKET_STARTED = "bracket.started"
    CAPACITY_IDLE = "capacity.idle"
    # Rungs: opened, and decided once all their trials ended.
    RUNG_STARTED = "rung.started"
    RUNG_DECIDED = "rung.decided"
    # A trial's life: scheduled → dispatched → running → an outcome.
    TRIAL_SCHEDULED = "trial.scheduled"
    # Written, and committed, before a submit: a trial that may have reached an
    # executor is known to the log even if the daemon dies before the answer.
    TRIAL_SENDING = "trial.sending"
    TRIAL_DISPATCHED = "trial.dispatched"
    TRIAL_RUNNING = "trial.running"
    TRIAL_METRICS = "trial.metrics"
    TRIAL_SUCCEEDED = "trial.succeeded"
    TRIAL_FAILED = "trial.failed"
    TRIAL_CANCELLED = "trial.cancelled"
    TRIAL_INTERRUPTED = "trial.interrupted"
    TRIAL_LOST = "trial.lost"  # the daemon gave up on its executor; trial.failed follows
    TRIAL_CANCEL_REQUESTED = "trial.cancel_requested"
    # A trial's checkpoint deleted by retention (hbd.core.retention); log-only.
    CHECKPOINT_DELETED = "checkpoint.deleted"


class TrialStatus(StrEnum):
    """Where a trial is in its life, as the daemon records it (the ``trials.status`` column).

    Not ``hbd.protocol.AgentTrialState``: that is what an executor agent says
    about the one run it holds (running or an outcome).
    """

    SCHEDULED = "scheduled"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # hbd stopped under it; it runs again as the same trial
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SweepStatus(StrEnum):
    """Where a sweep is in its life (the ``sweeps.status`` column; ``stopping`` and ``broken`` live)."""

    RUNNING = "running"
    STOPPING = "stopping"  # only live: no new trials, waiting for the running ones
    BROKEN = "broken"  # only live: the daemon cannot resume it (e.g. ReplayDiverged)
    SUCCEEDED = "succeeded"
    STOPPED = "stopped"  # a cancelled sweep ends stopped
    FAILED = "failed"
    CANCELLED = "cancelled"  # never written by this version; old databases may hold it


# The trial statuses that never change again (the schema's trigger enforces it).
TERMINAL_TRIAL_STATUSES: frozenset[TrialStatus] = frozenset(
    {TrialStatus.SUCCEEDED, TrialStatus.FAILED, TrialStatus.CANCELLED}
)
# The event that ends a trial, by the status it ends in.
TERMINAL_EVENT_TYPES: Mapping[str, TrialStatus] = {
    EventType.TRIAL_SUCCEEDED: TrialStatus.SUCCEEDED,
    EventType.TRIAL_FAILED: TrialStatus.FAILED,
    EventType.TRIAL_CANCELLED: TrialStatus.CANCELLED,
}
# A sweep whose status is one of these has finished.
FINISHED_SWEEP_STATUSES: frozenset[SweepStatus] = frozenset(
    {SweepStatus.SUCCEEDED, SweepStatus.STOPPED, SweepStatus.FAILED, SweepStatus.CANCELLED}
)
# The statuses a finishing sweep is written with today (hbd.core.events.SweepFinished).
FINAL_SWEEP_STATUSES: frozenset[SweepStatus] = FINISHED_SWEEP_STATUSES - {SweepStatus.CANCELLED}
# A sweep in one of these still has trials to wait for.
LIVE_SWEEP_STATUSES: frozenset[SweepStatus] = frozenset({SweepStatus.RUNNING, SweepStatus.STOPPING})


def sql_list(values: Iterable[StrEnum]) -> str:
    """``('a','b')``: members for an SQL ``IN``, in their enum's order.

    For DDL (indexes, triggers), where SQLite takes no parameters, and for
    fixed query text; the values are this module's members, never input.
    """
    ordered = sorted(
        values, key=lambda member: list(type(member).__members__.values()).index(member)
    )
    return "(" + ",".join(f"'{member}'" for member in ordered) + ")"
