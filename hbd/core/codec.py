"""Observations and decisions to and from event-log records ``(type, payload)``.

The event log stores JSON; this module is the one place that knows how each
core event is spelled there, so replay reads back exactly what was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from hbd.core.events import (
    Begin,
    CancelTrials,
    Decision,
    EarlyStopped,
    Observation,
    RungDecided,
    StartTrial,
    StopRequested,
    SweepExtended,
    SweepFinished,
    TrialCancelled,
    TrialFailed,
    TrialInterrupted,
    TrialSucceeded,
)
from hbd.core.vocabulary import EventType

Record = tuple[str, dict[str, Any]]

# The log stores the submission as "sweep.submitted"; to the machine it is Begin.
SUBMITTED = EventType.SWEEP_SUBMITTED
OBSERVATION_TYPES = frozenset(
    {
        SUBMITTED,
        TrialSucceeded.TYPE,
        TrialFailed.TYPE,
        TrialCancelled.TYPE,
        TrialInterrupted.TYPE,
        StopRequested.TYPE,
        SweepExtended.TYPE,
    }
)
DECISION_TYPES = frozenset(
    {StartTrial.TYPE, RungDecided.TYPE, CancelTrials.TYPE, EarlyStopped.TYPE, SweepFinished.TYPE}
)


def plain(value: Any) -> Any:
    """A value as JSON holds it: mappings as dicts, tuples as lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def decision_record(decision: Decision) -> Record:
    payload = plain(asdict(decision))
    if isinstance(decision, StartTrial):
        payload["trial_id"] = decision.trial_id
    # A first iteration's decisions are spelled as before iterations existed,
    # so one-iteration sweeps log what older versions logged.
    if payload.get("iteration") == 0:
        del payload["iteration"]
    return decision.TYPE, payload


def observation_record(observation: Observation, **extra: Any) -> Record:
    """``extra`` carries what the core does not need but the log keeps (stderr, executor)."""
    if isinstance(observation, Begin):
        raise ValueError("Begin is recorded as the sweep.submitted event")
    return observation.TYPE, {**plain(asdict(observation)), **extra}


def observation_from_record(type_: str, payload: Mapping[str, Any]) -> Observation | None:
    """The observation a logged record stands for, or None for records that are not inputs."""
    if type_ == SUBMITTED:
        return Begin()
    if type_ == TrialSucceeded.TYPE:
        return TrialSucceeded(
            trial_id=payload["trial_id"], metrics=dict(payload.get("metrics") or {})
        )
    if type_ == TrialFailed.TYPE:
        return TrialFailed(trial_id=payload["trial_id"], reason=str(payload.get("reason", "")))
    if type_ == TrialCancelled.TYPE:
        return TrialCancelled(trial_id=payload["trial_id"], reason=str(payload.get("reason", "")))
    if type_ == TrialInterrupted.TYPE:
        return TrialInterrupted(
            trial_id=payload["trial_id"], reason=str(payload.get("reason", "interrupted"))
        )
    if type_ == StopRequested.TYPE:
        return StopRequested(reason=str(payload.get("reason", "")))
    if type_ == SweepExtended.TYPE:
        return SweepExtended(iterations=int(payload["iterations"]))
    return None
