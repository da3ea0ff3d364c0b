"""Reading a database without a daemon (`--db`): read-only, whoever else holds it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from hbd.errors import SchemaTooNew, StoreReadError
from hbd.store import open_store, projections
from hbd.store.readonly import ReadOnlyDatabase
from tests.store.conftest import SWEEP, scheduled, submitted

pytestmark = pytest.mark.anyio


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_reads_what_a_running_store_committed_and_never_writes(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    store = await open_store(db)
    try:
        await store.append(SWEEP, [submitted(), scheduled(f"{SWEEP}-s2-r0-c0")], at=1.0)
        before = digest(db)
        ro = ReadOnlyDatabase(db)  # while the store (a daemon) holds the file open
        try:
            sweep = await projections.get_sweep(ro, SWEEP)  # type: ignore[arg-type]
            assert sweep is not None and sweep.seed == 7
            trials = await projections.list_trials(ro, SWEEP)  # type: ignore[arg-type]
            assert [t.id for t in trials] == [f"{SWEEP}-s2-r0-c0"]
            # a commit after the reader opened is seen by its next query
            await store.append(SWEEP, [scheduled(f"{SWEEP}-s2-r0-c1", index=1)], at=2.0)
            assert len(await projections.list_trials(ro, SWEEP)) == 2  # type: ignore[arg-type]
            events = ro.sweep_events(SWEEP, types=["trial.scheduled"])
            assert [e.trial_id for e in events] == [f"{SWEEP}-s2-r0-c0", f"{SWEEP}-s2-r0-c1"]
            with pytest.raises(StoreReadError):  # it cannot write, even if asked to
                ro._rows("DELETE FROM events", ())
        finally:
            ro.close()
    finally:
        await store.close()
    assert digest(db) != before  # the store's second append, not the reader
    after = digest(db)
    ro = ReadOnlyDatabase(db)
    await projections.list_sweeps(ro)  # type: ignore[arg-type]
    ro.close()
    assert digest(db) == after


def test_a_file_that_is_not_an_hbd_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00" * 5000)
    with pytest.raises(StoreReadError):
        ReadOnlyDatabase(junk)
    other = tmp_path / "other.db"  # a SQLite file of something else: no hbd schema
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreReadError, match="not an hbd database"):
        ReadOnlyDatabase(other)
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreReadError, match="not an hbd database"):
        ReadOnlyDatabase(tmp_path / "empty.db")
    with pytest.raises(FileNotFoundError):
        ReadOnlyDatabase(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_a_database_of_a_newer_hbd_is_refused_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    before = digest(db)
    with pytest.raises(SchemaTooNew):
        ReadOnlyDatabase(db)
    assert digest(db) == before
