"""The store's write health: failures are counted and named, a success clears them,
and a WAL that a reader pins is reported by the daemon's checkpoint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hbd.daemon.app import WAL_STUCK_FRAMES, Daemon
from hbd.errors import StoreReadError, StoreWriteError
from hbd.store.log import open_store

pytestmark = pytest.mark.anyio


async def test_a_failed_write_is_counted_and_a_success_clears_it(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "hbd.db")
    try:
        assert store.write_health.ok
        await store.db.conn.execute("PRAGMA query_only = ON")  # every write now fails
        with pytest.raises(StoreWriteError):
            await store.probe_write()
        health = store.write_health
        assert not health.ok and health.failures_total == 1 and health.last_error
        # The next write opens a fresh connection (query_only went with the old one).
        await store.probe_write()
        assert store.write_health.ok and store.write_health.failures_total == 1
    finally:
        await store.close()


async def test_a_wal_pinned_by_a_reader_is_logged(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    store = await open_store(db)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # holds its snapshot
        # Each append writes ~10 pages (a 40 KB spec), so a few hundred frames' worth
        # of commits is quick even with synchronous=FULL.
        for i in range(WAL_STUCK_FRAMES // 8):
            await store.append(f"sw{i}", [("sweep.submitted", _submitted())], at=float(i))
        with capture_logs() as logs:
            await Daemon(store).checkpoint_wal()
        stuck = [e for e in logs if "cannot be checkpointed" in e["event"]]
        assert stuck and stuck[0]["wal_frames"] - stuck[0]["checkpointed"] >= WAL_STUCK_FRAMES
        reader.execute("COMMIT")
        with capture_logs() as logs:
            await Daemon(store).checkpoint_wal()
        assert not [e for e in logs if "cannot be checkpointed" in e["event"]]
    finally:
        reader.close()
        await store.close()


def _submitted() -> dict[str, object]:
    return {"name": "", "spec": "x" * 40_000, "spec_json": {}, "seed": 1}


async def test_reads_fail_as_store_errors_while_no_connection_can_be_reopened(
    tmp_path: Path,
) -> None:
    # A failed write dropped its connection and the reopen failed too: reads
    # then met a closed aiosqlite connection (ValueError), which escaped the
    # daemon's store probe and took the daemon down.
    folder = tmp_path / "db"
    folder.mkdir()
    store = await open_store(folder / "hbd.db")
    moved = tmp_path / "moved"
    try:
        await store.db.conn.execute("PRAGMA query_only = ON")  # the next write poisons
        store.db._reopen = True
        folder.rename(moved)  # and no new connection can be opened at the old path
        with pytest.raises(StoreWriteError):
            await store.probe_write()
        with pytest.raises(StoreReadError):
            await store.db.fetchall("SELECT 1")
        daemon = Daemon(store)
        await daemon.probe_store()  # logged, not raised
        assert not store.write_health.ok
        moved.rename(folder)  # healed: the next read and write reopen
        await store.probe_write()
        assert store.write_health.ok
    finally:
        if moved.exists():
            moved.rename(folder)
        await store.close()
