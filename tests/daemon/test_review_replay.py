"""Review of the replay check: logs the daemon itself writes must replay (no false ReplayDiverged)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hbd.core.codec import observation_record
from hbd.core.events import StopRequested
from hbd.core.vocabulary import EventType
from hbd.daemon.runner import replay

GOLDEN = Path(__file__).parent.parent / "golden"


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    payload: dict[str, Any]


def test_a_second_stop_written_without_a_runner_replays() -> None:
    # A sweep stopping (its stop logged, trials being cancelled) when the daemon
    # went down; on the next start it has no runner (a broken sweep, or one the
    # runner did not come up for in RUNNER_WAIT) and ``Daemon.cancel`` writes the
    # user's stop straight into the log. The log is legal: the sweep must resume.
    lines = (GOLDEN / "r9-user-stop.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    cut = next(i for i, r in enumerate(records) if r["type"] == EventType.SWEEP_STOP_REQUESTED)
    kept = records[: cut + 2]  # the stop and the cancel it decided; trials still running
    events = [Event(i + 1, r["type"], r["payload"]) for i, r in enumerate(kept)]
    type_, payload = observation_record(StopRequested(reason="cancelled by user"))
    events.append(Event(len(events) + 1, type_, payload))
    machine = replay("golden", events)
    assert machine.state.value == "stopping"
