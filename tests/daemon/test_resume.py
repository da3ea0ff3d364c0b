"""Restart: the log is replayed and every open trial converges with what its executor says."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from hbd.daemon.app import SweepChanged
from tests.crash.harness import expected_outcome, outcome
from tests.daemon.helpers import (
    FakeExecutor,
    event_count,
    finish_running,
    running_daemon,
    wait_finished,
)
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


async def test_restart_converges_every_open_trial(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=8)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=None)
    async with running_daemon(db, executor) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="re")
        with anyio.fail_after(10):
            while len(executor.running()) < 8:
                await anyio.sleep(0.005)
        await anyio.sleep(0.1)  # the dispatched/running notes are committed
    sent = sorted(executor.trials)
    never_sent = sorted(t for t in (await _scheduled(db)) if t not in executor.trials)
    assert len(sent) == 8 and len(never_sent) == 9
    finished_while_down, forgotten, *adopted = sent
    executor.finish(finished_while_down)
    del executor.trials[forgotten]  # e.g. its executor lost its disk: reachable, but unknown there
    async with running_daemon(db, executor) as daemon:
        await finish_running([executor], daemon, sweep_id)
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    assert all(executor.posts[t] == 1 for t in adopted), "a running trial was adopted, not re-sent"
    assert executor.posts[finished_while_down] == 1 and executor.starts[finished_while_down] == 1
    assert executor.starts[forgotten] == 2  # unknown to a reachable executor: sent again, same id
    assert all(executor.starts[t] == 1 for t in never_sent)
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))


async def test_a_changed_spec_under_an_existing_id_is_refused_across_restarts(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=4, finish_on_submit=True)
    text = sweep_yaml(tmp_path / "unused.jsonl", seed=1)
    async with running_daemon(db, executor) as daemon:
        await daemon.submit(text, sweep_id="same")
        await wait_finished(daemon, "same")
    before = event_count(db)
    async with running_daemon(db, executor) as daemon:
        with pytest.raises(SweepChanged):
            await daemon.submit(sweep_yaml(tmp_path / "unused.jsonl", seed=2), sweep_id="same")
        assert await daemon.submit(text, sweep_id="same") == ("same", False)
    assert event_count(db) == before


async def _scheduled(db: Path) -> list[str]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return [
            r[0] for r in con.execute("SELECT trial_id FROM events WHERE type = 'trial.scheduled'")
        ]
    finally:
        con.close()
