"""What goes into the sweep machine (observations) and what comes out (decisions).

All are frozen, slotted, keyword-only dataclasses: values, not objects with
behaviour. Each class's ``TYPE`` is the event-log type it is stored under, so
the log, the SSE stream and the core speak one vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from hbd.core.vocabulary import EventType

JSON = Any  # a JSON-native value: configs and metrics travel through the event log as JSON


# ---- observations: the only inputs of SweepMachine.handle ----


@dataclass(frozen=True, slots=True, kw_only=True)
class Begin:
    """The sweep was submitted and may start its first rungs."""

    TYPE: ClassVar[EventType] = EventType.SWEEP_BEGIN


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialSucceeded:
    TYPE: ClassVar[EventType] = EventType.TRIAL_SUCCEEDED
    trial_id: str
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialFailed:
    TYPE: ClassVar[EventType] = EventType.TRIAL_FAILED
    trial_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialCancelled:
    TYPE: ClassVar[EventType] = EventType.TRIAL_CANCELLED
    trial_id: str
    reason: str = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialInterrupted:
    """The trial run was stopped by an interruption of hbd itself, not by its own doing.

    Not an outcome: the trial stays open and its run is started again, from
    scratch, as the same trial (same id, same attempt: no retry is counted).
    ``Trial.runs`` counts the runs, so an executor can tell the new run from
    the interrupted one.
    """

    TYPE: ClassVar[EventType] = EventType.TRIAL_INTERRUPTED
    trial_id: str
    reason: str = "interrupted"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequested:
    """Someone asked the sweep to stop: nothing new starts, running trials are cancelled."""

    TYPE: ClassVar[EventType] = EventType.SWEEP_STOP_REQUESTED
    reason: str = "cancelled by user"


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepExtended:
    """Someone asked for ``iterations`` more Hyperband iterations (``hbd extend``).

    A running sweep plans them after its own; a sweep that finished with every
    bracket done is reopened. A stopped sweep stays stopped.
    """

    TYPE: ClassVar[EventType] = EventType.SWEEP_EXTENDED
    iterations: int


Observation = (
    Begin
    | TrialSucceeded
    | TrialFailed
    | TrialCancelled
    | TrialInterrupted
    | StopRequested
    | SweepExtended
)


# ---- decisions: what the caller must do (after persisting them) ----


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTrial:
    """Run ``config`` at ``resource``. ``parent`` is the trial it was promoted from."""

    TYPE: ClassVar[EventType] = EventType.TRIAL_SCHEDULED
    trial_id: str
    bracket: int
    rung: int
    index: int
    config: Mapping[str, JSON]
    resource: int | float
    parent: str | None
    resume_from: str | None
    # The Hyperband iteration (Li et al.'s outer loop) the trial belongs to;
    # the log spells it only when it is not 0 (hbd.core.codec).
    iteration: int = 0

    @property
    def priority(self) -> int:
        """Dispatch order: higher first. Deeper rungs first, so that a sweep has
        full-resource results early (anytime); it changes when a trial starts,
        never what is decided."""
        return self.rung


@dataclass(frozen=True, slots=True, kw_only=True)
class RankedTrial:
    trial_id: str
    index: int
    status: str
    metric: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RungDecided:
    """A rung's trials have all ended; the best ``promoted`` go on to the next rung."""

    TYPE: ClassVar[EventType] = EventType.RUNG_DECIDED
    bracket: int
    rung: int
    ranking: tuple[RankedTrial, ...]
    promoted: tuple[str, ...]
    stopped: tuple[str, ...]
    cutoff: float | None  # metric of the last promoted trial; None when nothing was promoted
    reason: str
    iteration: int = 0  # see StartTrial.iteration


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTrials:
    TYPE: ClassVar[EventType] = EventType.TRIAL_CANCEL_REQUESTED
    trial_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyStopped:
    TYPE: ClassVar[EventType] = EventType.SWEEP_EARLY_STOPPED
    condition: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BestTrial:
    trial_id: str
    bracket: int
    rung: int
    config: Mapping[str, JSON]
    resource: int | float
    metric: float


# hbd.core.vocabulary.FINAL_SWEEP_STATUSES, as a type (a test keeps them equal).
SweepStatus = Literal["succeeded", "stopped", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepFinished:
    TYPE: ClassVar[EventType] = EventType.SWEEP_FINISHED
    status: SweepStatus
    reason: str
    best: BestTrial | None = field(default=None)


Decision = StartTrial | RungDecided | CancelTrials | EarlyStopped | SweepFinished
