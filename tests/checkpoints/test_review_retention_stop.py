"""Review: a sweep that ended early (a user's stop, early stopping) keeps only its best's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hbd.daemon.retention import _plan
from hbd.store.log import StoredEvent

GOLDEN = Path(__file__).parent.parent / "golden"


def _events(name: str) -> list[StoredEvent]:
    records = [json.loads(line) for line in (GOLDEN / name).read_text().splitlines()]
    return [
        StoredEvent(
            seq=i + 1,
            sweep_id="golden",
            type=r["type"],
            trial_id=r["payload"].get("trial_id"),
            payload=r["payload"],
            at=0.0,
        )
        for i, r in enumerate(records)
    ]


@pytest.mark.parametrize("name", ["r9-user-stop.jsonl", "r27-early-stop.jsonl"])
def test_an_ended_sweep_deletes_every_checkpoint_outside_the_best_lineage(name: str) -> None:
    # Stopped mid-bracket, its open rungs are never decided; yet nothing can
    # resume any more, so their trials' checkpoints must go too (else every
    # stopped sweep keeps a rung's worth of checkpoints for ever).
    events = _events(name)
    plan = _plan("golden", events, "resumable")
    assert plan is not None
    ids, _, _, wrote, _ = plan
    best = next(e for e in events if e.type == "sweep.finished").payload["best"]["trial_id"]
    assert sorted(ids) == sorted(t for t in wrote if t != best)
