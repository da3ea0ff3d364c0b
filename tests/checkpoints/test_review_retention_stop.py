"""Review: a sweep that ended early (a user's stop, early stopping) keeps only its best's lineage."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

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


@pytest.mark.anyio
async def test_a_pass_plans_in_a_worker_thread_not_in_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning replays the whole sweep (1.4 s for bench/resume.py's 21k-event
    # sweep on the build machine): in the event loop it would stall dispatch,
    # callbacks and health checks at every rung decision and every start.
    from hbd.daemon import retention as module
    from hbd.daemon.clock import FakeClock
    from hbd.store.log import open_store
    from tests.checkpoints.test_retention_units import Fake

    threads: list[int] = []
    real = module._plan

    def plan(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(module, "_plan", plan)
    store = await open_store(tmp_path / "hbd.db")
    try:
        records = [(e.type, e.payload) for e in _events("r9-user-stop.jsonl")]
        records[0] = (records[0][0], {**records[0][1], "spec": "golden"})  # the store wants it
        await store.append("golden", records, at=0.0)
        backend = Fake(default=3)
        r = module.Retention(
            store,
            {"a": backend},  # type: ignore[dict-item]
            FakeClock(),
            checkpoints=None,
            keep="resumable",
            executor_of=lambda _: None,
            published=lambda _: None,
        )
        assert await r.sweep("golden")
    finally:
        await store.close()
    assert threads and threads[0] != threading.get_ident()
    assert len(backend.asked) == 4  # every checkpoint but the best's (see above)
