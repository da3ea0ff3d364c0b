"""SQLite write errors (disk full, I/O error) at the N-th write: progress stops cleanly, then resumes.

``FaultyDatabase`` is the real connection with one seam: while ``failing`` is
set, the event insert of a transaction raises the sqlite3 error a full disk
or a failing disk raises, inside BEGIN IMMEDIATE, so the real rollback and
error translation run. A second variant uses SQLite's own limit
(``PRAGMA max_page_count``) to get a genuine SQLITE_FULL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import anyio
import pytest

from hbd.errors import StoreWriteError
from hbd.store.db import Database, Params
from hbd.store.log import Store, open_store
from tests.crash.harness import expected_outcome, outcome
from tests.daemon.helpers import FakeExecutor, event_count, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

ERRORS = {"full": "database or disk is full", "io": "disk I/O error"}
# How long the fault lasts: several retries of the runner's backoff (0.2, 0.4 s ...).
FAULT_SECONDS = 0.5
# SQLite's default max_page_count.
UNLIMITED_PAGES = 4294967294


class FaultyDatabase(Database):
    fail_from: int | None = None  # the event-insert count at which failing starts
    error = ERRORS["io"]
    failing = False
    inserts = 0
    refused = 0

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        if sql.startswith("INSERT INTO events"):
            self.inserts += 1
            if self.fail_from is not None and self.inserts >= self.fail_from:
                self.failing, self.fail_from = True, None
            if self.failing:
                self.refused += 1
                raise sqlite3.OperationalError(self.error)
        await super().executemany(sql, rows)


async def faulty_store(path: Path) -> Store:
    store = await open_store(path)
    store.db.__class__ = FaultyDatabase  # the same connection and lock, one more seam
    return store


@pytest.mark.parametrize("kind", sorted(ERRORS))
@pytest.mark.parametrize("nth", [2, 5, 9])
async def test_write_errors_pause_the_sweep_and_it_resumes(
    tmp_path: Path, kind: str, nth: int
) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=4, finish_on_submit=True, db=db)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=3)
    async with running_daemon(db, executor, store_factory=faulty_store) as daemon:
        faulty = daemon.store.db
        assert isinstance(faulty, FaultyDatabase)
        faulty.error, faulty.fail_from = ERRORS[kind], nth
        sweep_id, _ = await daemon.submit(text, sweep_id="disk")
        with anyio.fail_after(10):
            while not faulty.failing:
                await anyio.sleep(0.005)
        frozen = event_count(db)
        sent = len(executor.submissions)
        # The runner retries the write (after 0.2 s, then longer): polled, since a
        # loaded machine may take longer than FAULT_SECONDS to get there; nothing
        # may have been written meanwhile (checked below).
        with anyio.fail_after(10):
            while faulty.refused < 2:
                await anyio.sleep(0.01)
        assert event_count(db) == frozen, "nothing may be written while the disk fails"
        assert sweep_id in daemon.runners  # paused, not dead
        # At most the trials already committed before the fault were sent meanwhile.
        assert len(executor.submissions) - sent <= 3
        faulty.failing = False
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    assert executor.uncommitted_sends == [], "a trial was sent before its record was committed"
    assert set(executor.starts.values()) == {1}
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))


async def test_a_genuinely_full_database_pauses_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    executor = FakeExecutor(slots=4, finish_on_submit=True, db=db)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=3)
    async with running_daemon(db, executor) as daemon:
        conn = daemon.store.db.conn

        async def no_room_to_grow() -> None:  # SQLITE_FULL as soon as the file must grow
            pages = (await (await conn.execute("PRAGMA page_count")).fetchone())[0]  # type: ignore[index]
            await conn.execute(f"PRAGMA max_page_count = {pages}")

        await no_room_to_grow()
        with pytest.raises(StoreWriteError):
            await daemon.submit(text, sweep_id="full")
        assert event_count(db) == 0 and await daemon.store.get_sweep("full") is None
        await conn.execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")
        sweep_id, _ = await daemon.submit(text, sweep_id="full")
        await no_room_to_grow()
        with anyio.fail_after(10):
            while len(executor.submissions) < 3:
                await anyio.sleep(0.01)
        await anyio.sleep(FAULT_SECONDS)
        frozen = event_count(db)
        await anyio.sleep(FAULT_SECONDS)
        assert event_count(db) == frozen, "the log must not move while the disk is full"
        stuck = await daemon.store.get_sweep(sweep_id)
        assert stuck is not None and stuck.status == "running"
        assert event_count(db) < 60  # it stopped short of the ~80 events a whole sweep writes
        await conn.execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")
        assert await wait_finished(daemon, sweep_id) == "succeeded"
    assert executor.uncommitted_sends == []
    assert set(executor.starts.values()) == {1}
    outcome(db, sweep_id).same_as(expected_outcome(text, sweep_id))
