"""Review: a trial sent before a crash, to an executor down at the restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from tests.daemon.helpers import FakeExecutor, running_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


def _forget_dispatch(db: Path, trial_id: str) -> None:
    """A crash between the submit's answer and the commit of its trial.dispatched."""
    con = sqlite3.connect(db)
    try:
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        ).fetchall():
            con.execute(f'DROP TRIGGER "{name}"')  # the log is append-only; this test is the crash
        con.execute(
            "DELETE FROM events WHERE trial_id = ? AND type IN ('trial.dispatched', 'trial.running')",
            (trial_id,),
        )
        con.commit()
    finally:
        con.close()


async def _crash_after_a_submit_to_other(
    tmp_path: Path,
) -> tuple[Path, FakeExecutor, FakeExecutor, str]:
    """A sweep running on "fake" and "other"; then the daemon is gone with one of
    other's trials submitted but not logged as dispatched, and other goes down
    (it still runs the trial; it just does not answer)."""
    db = tmp_path / "hbd.db"
    a, b = FakeExecutor(slots=2), FakeExecutor(slots=2)
    text = sweep_yaml(tmp_path / "u.jsonl", concurrency=None)
    async with running_daemon(db, a, more={"other": b}) as daemon:
        await daemon.submit(text, sweep_id="ud")
        with anyio.fail_after(10):
            while len(a.running()) < 2 or len(b.running()) < 2:
                await anyio.sleep(0.005)
        await anyio.sleep(0.1)  # dispatched notes committed
    trial_id = sorted(b.running())[0]
    _forget_dispatch(db, trial_id)
    b.down = True
    return db, a, b, trial_id


async def test_a_trial_maybe_on_a_down_executor_is_not_sent_elsewhere_at_resume(
    tmp_path: Path,
) -> None:
    db, a, b, trial_id = await _crash_after_a_submit_to_other(tmp_path)
    a.slots = 8  # room for it on "fake"
    async with running_daemon(db, a, more={"other": b}):
        with anyio.fail_after(10):
            while len(a.running()) < 3:
                await anyio.sleep(0.005)
        await anyio.sleep(0.3)
        # It may be running on "other" (it is): sending it to "fake" runs it twice.
        assert a.posts[trial_id] == 0, "a trial maybe running on a down executor was sent again"


async def test_it_is_sent_elsewhere_once_the_silent_executor_stays_away_lost_after(
    tmp_path: Path,
) -> None:
    db, a, b, trial_id = await _crash_after_a_submit_to_other(tmp_path)
    a.slots = 64  # room for every queued trial: this one comes last
    async with running_daemon(db, a, more={"other": b}, lost_after=1.0):
        with anyio.fail_after(15):
            while a.posts[trial_id] == 0:
                await anyio.sleep(0.01)
        # Sent once the silent executor was away lost_after; that one cancels
        # its copy when it answers again.
        b.down = False
        with anyio.fail_after(15):
            while b.trials[trial_id].state != "cancelled":
                await anyio.sleep(0.01)
