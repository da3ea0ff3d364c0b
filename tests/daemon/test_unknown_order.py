"""A log this hbd cannot read (here a bracket order it does not know, as a
newer hbd might record) makes its sweep unusable, never the daemon: the
reconciler marks a running one broken, checkpoint retention (which replays
every sweep at start-up) skips it, and ``hbd extend`` of a finished one is
refused (409) with the reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from hbd.daemon.app import Daemon
from hbd.daemon.clock import FakeClock
from hbd.daemon.extend import CannotExtend, extend
from hbd.store.log import open_store
from tests.daemon.helpers import FakeExecutor, running_daemon, wait_finished
from tests.daemon.test_daemon_lifecycle import _leave_running
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

# A search record as Search.to_json writes it, with an order this hbd has not got.
FUTURE = {
    "sampler": "random",
    "settings": None,
    "promotion": "synchronous",
    "lazy": True,
    "opening": {"lag": 0, "slope": 1, "first": 0, "order": "descending"},
    "iterations": 1,
}


def _record_future_search(db: Path, *sweep_ids: str) -> None:
    con = sqlite3.connect(db)
    try:
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall():
            con.execute(f'DROP TRIGGER "{name}"')  # the log is append-only otherwise
        for sweep_id in sweep_ids:
            con.execute(
                "UPDATE events SET payload = json_set(payload, '$.search', json(?)) "
                "WHERE sweep_id = ? AND type = 'sweep.submitted'",
                (json.dumps(FUTURE), sweep_id),
            )
        con.commit()
    finally:
        con.close()


async def test_a_log_with_an_unknown_bracket_order_stops_its_sweep_not_the_daemon(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hbd.db"
    text = sweep_yaml(tmp_path / "u.jsonl")
    async with running_daemon(db, FakeExecutor(finish_on_submit=True)) as daemon:
        await daemon.submit(sweep_yaml(tmp_path / "v.jsonl", seed=2), sweep_id="done")
        assert await wait_finished(daemon, "done") == "succeeded"
    await _leave_running(db, FakeExecutor(slots=8), text, "running")
    _record_future_search(db, "running", "done")
    store = await open_store(db)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                daemon = Daemon(store, clock=FakeClock(), checkpoints_keep="resumable")
                await tg.start(daemon.run)
                assert "running" in daemon.broken_sweeps
                with pytest.raises(CannotExtend, match="descending"):
                    await extend(daemon, "done", 1)
                while not daemon.retention.idle:  # it has looked at both sweeps
                    await anyio.sleep(0.01)
                assert daemon.retention.stats.passes >= 2
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
