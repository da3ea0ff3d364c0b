"""Replay a sweep's log into a fresh machine, checking each decision it re-derives.

The log is authoritative. A machine fed the logged observations must make the
decisions the log recorded after each of them (they were committed in the same
transaction, right after their observation): the same trials (ids, configs,
resources, parents) and the same rung decisions (promotions). Sampling is a
function of the installed numpy, and numpy promises the same stream only for
the same build; an upgrade between a stop and a start, or a changed core, must
stop the sweep loudly (``ReplayDiverged`` naming the first differing event)
instead of continuing on configurations nobody logged.

Pure: the caller reads the events (anything with ``seq``, ``type`` and
``payload``) and decides what a divergence means for the daemon.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, Protocol

from hbd.core.codec import OBSERVATION_TYPES, SUBMITTED, observation_from_record, plain
from hbd.core.errors import DuplicateEvent, ReplayDiverged
from hbd.core.events import Decision, RungDecided, StartTrial
from hbd.core.sweep import SweepMachine

__all__ = ["CHECKED_FIELDS", "REPLAY_TYPES", "LoggedEvent", "replay"]

# The logged decisions a replay checks, and the fields compared. Other fields
# (a rung's reason text, its ranking's wording) may change between hbd
# versions without changing what the sweep does; these define it.
CHECKED_FIELDS: Mapping[str, tuple[str, ...]] = {
    StartTrial.TYPE: ("trial_id", "bracket", "rung", "index", "config", "resource", "parent"),
    RungDecided.TYPE: ("bracket", "rung", "promoted"),
}
# What a replay reads from the log: the machine's inputs and the decisions it checks.
REPLAY_TYPES = OBSERVATION_TYPES | frozenset(CHECKED_FIELDS)


class LoggedEvent(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


def _checked(decision: Decision) -> tuple[str, dict[str, Any]] | None:
    """The checked fields of a decision, as the log spells them (tuples are lists).

    Built by hand, not with ``decision_record``: a replay checks every decision
    of a sweep, and a deep copy of each (``dataclasses.asdict``) is most of the cost.
    """
    if isinstance(decision, StartTrial):
        return decision.TYPE, {
            "trial_id": decision.trial_id,
            "bracket": decision.bracket,
            "rung": decision.rung,
            "index": decision.index,
            "config": plain(decision.config),
            "resource": decision.resource,
            "parent": decision.parent,
        }
    if isinstance(decision, RungDecided):
        return decision.TYPE, {
            "bracket": decision.bracket,
            "rung": decision.rung,
            "promoted": list(decision.promoted),
        }
    return None


def _label(type_: str, payload: Mapping[str, Any]) -> str:
    if type_ == StartTrial.TYPE:
        return f"{type_} {payload.get('trial_id')}"
    if type_ == RungDecided.TYPE:
        return f"{type_} bracket {payload.get('bracket')} rung {payload.get('rung')}"
    return type_


def replay(sweep_id: str, events: Iterable[LoggedEvent]) -> SweepMachine:
    """A fresh machine fed every logged observation, its decisions checked against the log.

    ``events`` are one sweep's events in seq order, starting with its
    ``sweep.submitted`` (events of other types are skipped). Raises
    ``ReplayDiverged`` at the first logged decision that differs from the
    re-derived one, that the machine did not derive, or that is missing.
    """
    machine: SweepMachine | None = None
    expected: deque[tuple[str, dict[str, Any]]] = deque()  # derived, not yet met in the log
    last_seq = 0
    for event in events:
        last_seq = event.seq
        if machine is None:
            if event.type != SUBMITTED:
                raise ReplayDiverged(
                    sweep_id=sweep_id,
                    seq=event.seq,
                    what="first event",
                    logged=event.type,
                    derived=SUBMITTED,
                )
            machine = SweepMachine.for_submitted(event.payload, sweep_id=sweep_id)
        fields = CHECKED_FIELDS.get(event.type)
        if fields is not None:
            _check(sweep_id, event, fields, expected)
            continue
        observation = observation_from_record(event.type, event.payload)
        if observation is None:
            continue
        if expected:
            _missing(sweep_id, event.seq, event.type, expected[0])
        try:
            decisions = machine.handle(observation)
        except DuplicateEvent:
            # A repeat changes nothing, live or here: a second stop that
            # Daemon.cancel wrote into the log of a sweep with no runner.
            continue
        for decision in decisions:
            checked = _checked(decision)
            if checked is not None:
                expected.append(checked)
    if machine is None:
        raise ReplayDiverged(
            sweep_id=sweep_id, seq=0, what="first event", logged=None, derived=SUBMITTED
        )
    if expected:
        _missing(sweep_id, last_seq, "the end of the log", expected[0])
    return machine


def _check(
    sweep_id: str,
    event: LoggedEvent,
    fields: tuple[str, ...],
    expected: deque[tuple[str, dict[str, Any]]],
) -> None:
    if not expected:
        raise ReplayDiverged(
            sweep_id=sweep_id,
            seq=event.seq,
            what=f"{_label(event.type, event.payload)}: not derived",
            logged=dict(event.payload),
            derived=None,
        )
    type_, derived = expected.popleft()
    if type_ != event.type:
        raise ReplayDiverged(
            sweep_id=sweep_id,
            seq=event.seq,
            what="decision type",
            logged=_label(event.type, event.payload),
            derived=_label(type_, derived),
        )
    for name in fields:
        logged_value = event.payload.get(name)
        derived_value = derived.get(name)
        if logged_value != derived_value:
            raise ReplayDiverged(
                sweep_id=sweep_id,
                seq=event.seq,
                what=f"{_label(event.type, event.payload)}: {name}",
                logged=logged_value,
                derived=derived_value,
            )


def _missing(sweep_id: str, seq: int, found: str, derived: tuple[str, dict[str, Any]]) -> NoReturn:
    type_, payload = derived
    raise ReplayDiverged(
        sweep_id=sweep_id,
        seq=seq,
        what=f"{_label(type_, payload)}: missing from the log (found {found})",
        logged=None,
        derived=payload,
    )
