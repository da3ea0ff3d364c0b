"""Committed event logs replay to exactly the decisions they recorded.

A log written by an earlier hbd must resume into the same sweep; if a change to
the core alters any decision here, it breaks every sweep in flight. Regenerate
(tests/golden/regenerate.py) only for an intended change, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hbd.core.codec import DECISION_TYPES, decision_record, observation_from_record
from hbd.core.sweep import SweepMachine

GOLDEN = sorted(Path(__file__).parent.glob("*.jsonl"))


def test_there_are_golden_logs() -> None:
    assert len(GOLDEN) >= 6


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_log_replays_to_the_recorded_decisions(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first = records[0]["payload"]
    machine = SweepMachine.for_submitted(first, sweep_id="golden")
    replayed: list[dict[str, object]] = []
    for record in records:
        observation = observation_from_record(record["type"], record["payload"])
        if observation is None:
            continue
        for decision in machine.handle(observation):
            t, p = decision_record(decision)
            replayed.append({"type": t, "payload": json.loads(json.dumps(p))})
    recorded = [r for r in records if r["type"] in DECISION_TYPES]
    assert replayed == recorded
    assert machine.finished is not None
