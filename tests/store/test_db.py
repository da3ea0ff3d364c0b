"""Connection settings, fault handling, durability across reopen, concurrency."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from hbd.errors import ConflictError, StoreReadError, StoreWriteError
from hbd.store import Store, open_store
from hbd.store.db import BUSY_TIMEOUT_MS

from .conftest import SWEEP, scheduled, submitted

pytestmark = pytest.mark.anyio


async def test_pragmas_on_the_store_connection(store: Store) -> None:
    assert await store.pragmas() == {
        "busy_timeout": BUSY_TIMEOUT_MS,
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
    }
    assert store.db.conn.isolation_level is None


async def test_data_survives_reopen(db_path: Path) -> None:
    async with await open_store(db_path) as s:
        await s.append(SWEEP, [submitted(), scheduled("t1")], at=1.0)
    async with await open_store(db_path) as s:
        assert await s.integrity_check() == "ok"
        assert await s.event_count() == 2
        assert await s.last_seq() == 2
        sweep = await s.get_sweep(SWEEP)
        assert sweep is not None and sweep.last_seq == 2 and sweep.seed == 7
        trial = await s.get_trial("t1")
        assert trial is not None and trial.status == "scheduled"
        assert (await s.pragmas())["journal_mode"] == "wal"


async def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        await store.event_count(),
        await store.last_seq(),
        await store.get_sweep(SWEEP),
        await store.list_trials(SWEEP),
    )


async def _fill_disk(store: Store) -> None:
    # Cap the file at its current size: the next page SQLite needs is "disk full".
    pages = await store.db.scalar("PRAGMA page_count")
    await store.db.conn.execute(f"PRAGMA max_page_count = {pages}")


async def _free_disk(store: Store) -> None:
    await store.db.conn.execute("PRAGMA max_page_count = 1073741823")


async def _read_only(store: Store) -> None:
    await store.db.conn.execute("PRAGMA query_only = 1")


async def _writable(store: Store) -> None:
    await store.db.conn.execute("PRAGMA query_only = 0")


@pytest.mark.parametrize(
    ("fault", "heal"), [(_fill_disk, _free_disk), (_read_only, _writable)], ids=["full", "readonly"]
)
async def test_write_fault_writes_nothing_and_heals(
    store: Store,
    fault: Callable[[Store], Awaitable[None]],
    heal: Callable[[Store], Awaitable[None]],
) -> None:
    await store.append(SWEEP, [submitted(), scheduled("t0")], at=1.0)
    before = await _snapshot(store)
    await fault(store)
    big = [scheduled(f"t{i}", index=i) for i in range(1, 200)]
    big = [(t, p | {"config": {"blob": "x" * 2000}}) for t, p in big]
    with pytest.raises(StoreWriteError) as info:
        await store.append(SWEEP, [*big, ("trial.running", {"trial_id": "t0"})], at=2.0)
    assert info.value.__cause__ is not None  # translated `from` the sqlite3 error
    assert not store.db.conn.in_transaction
    assert await _snapshot(store) == before

    await heal(store)
    stored = await store.append(SWEEP, big, at=3.0)
    assert [e.seq for e in stored] == list(range(3, 3 + len(big)))  # no seq was burnt
    assert await store.integrity_check() == "ok"


async def test_concurrent_appends_get_contiguous_gap_free_seqs(store: Store) -> None:
    await store.append(SWEEP, [submitted()], at=0.0)
    batches: list[list[int]] = []

    async def writer(w: int) -> None:
        for b in range(5):
            events = [scheduled(f"w{w}-b{b}-{i}", index=i) for i in range(3)]
            batches.append([e.seq for e in await store.append(SWEEP, events, at=1.0)])

    async with anyio.create_task_group() as tg:
        for w in range(8):
            tg.start_soon(writer, w)

    for seqs in batches:
        assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert sorted(s for seqs in batches for s in seqs) == list(range(2, 2 + 8 * 5 * 3))
    everything = await store.read_after(0, limit=1000)
    assert [e.seq for e in everything] == list(range(1, 2 + 8 * 5 * 3))


async def test_cancelled_append_is_all_or_nothing_and_store_stays_usable(store: Store) -> None:
    await store.append(SWEEP, [submitted()], at=0.0)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.append(SWEEP, [scheduled("t1"), scheduled("t2", index=1)], at=1.0)
    # The append is shielded: it either committed whole or not at all.
    assert await store.event_count() in (1, 3)
    assert not store.db.conn.in_transaction
    await store.append(SWEEP, [scheduled("t3", index=2)], at=2.0)
    assert await store.last_seq() == await store.event_count()


async def test_failed_body_rolls_back(store: Store) -> None:
    await store.append(SWEEP, [submitted()], at=0.0)
    with pytest.raises(RuntimeError):
        async with store.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO events (sweep_id, type, payload, at) VALUES ('x','y','{}',1)"
            )
            raise RuntimeError("boom")
    assert await store.event_count() == 1
    with pytest.raises(ConflictError):
        async with store.db.transaction() as tx:
            await tx.execute("INSERT INTO trials (id, sweep_id, status) VALUES ('t', 'nope', 's')")
    assert await store.get_trial("t") is None


async def test_lock_held_by_another_process_is_a_write_error(store: Store, db_path: Path) -> None:
    await store.append(SWEEP, [submitted()], at=0.0)
    # Shorten the wait on this connection only; the default is seconds.
    await store.db.conn.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreWriteError, match="locked"):
            await store.append(SWEEP, [scheduled("t1")], at=1.0)
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert [e.seq for e in await store.append(SWEEP, [scheduled("t1")], at=2.0)] == [2]


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreReadError, match="cannot open"):
        await open_store(tmp_path / "no" / "such" / "dir" / "hbd.sqlite3")
