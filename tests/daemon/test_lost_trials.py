"""A trial whose executor stops answering past the grace period is lost once; a late result is refused."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from hbd.daemon.clock import FakeClock
from tests.daemon.helpers import FakeExecutor, event_types, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

GRACE = 30.0


def _failures(db: Path) -> dict[str, tuple[str, float]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT trial_id, payload, at FROM events WHERE type = 'trial.failed'"
        ).fetchall()
    finally:
        con.close()
    return {tid: (json.loads(p)["reason"], at) for tid, p, at in rows}


async def test_unreachable_trials_are_lost_once_after_the_grace_and_late_results_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    clock = FakeClock()
    executor = FakeExecutor(slots=2)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=2)
    with capture_logs() as logs:
        async with running_daemon(db, executor, clock=clock, lost_after=GRACE) as daemon:
            sweep_id, _ = await daemon.submit(text, sweep_id="lost")
            with anyio.fail_after(10):
                while len(executor.running()) < 2:
                    await anyio.sleep(0.005)
            running = executor.running()
            executor.down = True
            went_down = clock.wall()
            with anyio.fail_after(10):
                while not set(running) <= set(_failures(db)):
                    await anyio.sleep(0.005)
            executor.down = False
            # The trials' late results arrive, twice each: refused, logged, never stored.
            for trial_id in running:
                update = executor.finish_update(trial_id)
                for _ in range(2):
                    await daemon.on_update(update)
            executor.finish_on_submit = True
            for trial_id in executor.running():
                executor.finish(trial_id)
            await wait_finished(daemon, sweep_id)
    failures = _failures(db)
    for trial_id in running:
        reason, at = failures[trial_id]
        assert reason.startswith("lost: executor fake unreachable")
        assert at - went_down >= GRACE
        assert event_types(db, trial_id).count("trial.lost") == 1
        assert "trial.succeeded" not in event_types(db, trial_id)
        rejected = [
            e for e in logs if e["event"] == "result rejected" and trial_id in e.get("error", "")
        ]
        assert rejected, f"the late result of {trial_id} was not logged"
    assert set(executor.starts.values()) == {1}, "a lost trial must not be run again"
