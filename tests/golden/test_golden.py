"""Committed event logs replay to exactly the decisions they recorded.

A log written by an earlier hbd must resume into the same sweep; if a change to
the core alters any decision here, it breaks every sweep in flight. Regenerate
(tests/golden/regenerate.py) only for an intended change, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hbd.core.codec import DECISION_TYPES, decision_record, observation_from_record
from hbd.core.errors import CoreError
from hbd.core.events import StartTrial, SweepExtended
from hbd.core.sweep import SweepMachine

HERE = Path(__file__).parent
GOLDEN = sorted(HERE.glob("*.jsonl"))


def test_there_are_golden_logs() -> None:
    assert len(GOLDEN) >= 6


def _replays(records: list[dict[str, Any]]) -> bool:
    """Whether the log's observations re-derive exactly its decisions, to the end."""
    machine = SweepMachine.for_submitted(records[0]["payload"], sweep_id="golden")
    replayed: list[dict[str, object]] = []
    for record in records:
        observation = observation_from_record(record["type"], record["payload"])
        if observation is None:
            continue
        try:
            decisions = machine.handle(observation)
        except CoreError:  # a result of a trial this order never scheduled
            return False
        for decision in decisions:
            t, p = decision_record(decision)
            replayed.append({"type": t, "payload": json.loads(json.dumps(p))})
    recorded = [r for r in records if r["type"] in DECISION_TYPES]
    return replayed == recorded and machine.finished is not None


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_log_replays_to_the_recorded_decisions(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert _replays(records)


@pytest.mark.parametrize(
    ("name", "order"),
    [("r27-bohb-lag-2it", "ascending-after-first"), ("r27-bohb-ascending-async-2it", None)],
)
def test_the_recorded_bracket_order_is_what_the_bohb_logs_replay_with(
    name: str, order: str | None
) -> None:
    """A log without the order ran Hyperband's in every iteration: read as
    ascending it diverges; one that recorded ascending diverges without it."""
    records = [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]
    opening = records[0]["payload"]["search"]["opening"]
    if order is None:
        del opening["order"]
    else:
        opening["order"] = order
    assert not _replays(records)


@pytest.mark.parametrize(
    ("name", "order"),
    [("r27-bohb-lag-2it", [3, 2, 1, 0]), ("r27-bohb-ascending-async-2it", [0, 1, 2, 3])],
)
def test_an_extended_old_sweep_keeps_the_order_it_recorded(name: str, order: list[int]) -> None:
    """``hbd extend`` of a finished sweep: the new iteration runs in the order of
    its record (Hyperband's when it has none), and is the one it opens first."""
    records = [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]
    assert _replays(records)
    machine = SweepMachine.for_submitted(records[0]["payload"], sweep_id="golden")
    for record in records:
        observation = observation_from_record(record["type"], record["payload"])
        if observation is not None:
            machine.handle(observation)
    starts = machine.handle(SweepExtended(iterations=1))
    position = machine.scheduler.position
    assert [s for p in range(8, 12) for s in range(4) if position(s, 2) == p] == order
    opened = {d.bracket for d in starts if isinstance(d, StartTrial)}
    assert opened == {order[0]}
