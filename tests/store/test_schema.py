"""Migrations: fresh files, upgrades from v1, refusal of newer files, atomicity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hbd.errors import ConflictError, SchemaTooNew, StoreWriteError
from hbd.store import CURRENT_VERSION, open_store, schema
from hbd.store.db import apply_pragmas, connect

pytestmark = pytest.mark.anyio


async def _make_v1(path: Path) -> None:
    """A file as hbd schema v1 left it, with a live and a finished trial."""
    db = await connect(path)
    await apply_pragmas(db)
    assert await schema.migrate(db, target=1) == 1
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO events (sweep_id, type, trial_id, payload, at) VALUES ('s', ?, ?, ?, 1)",
            [
                ("sweep.submitted", None, '{"seed":1,"spec":"x","spec_json":{}}'),
                ("trial.scheduled", "live", '{"resume_from":"ckpt/a","trial_id":"live"}'),
                ("trial.scheduled", "done", '{"resume_from":null,"trial_id":"done"}'),
                ("trial.succeeded", "done", '{"metric":1.0,"trial_id":"done"}'),
            ],
        )
        await tx.execute(
            "INSERT INTO sweeps (id, status, spec, spec_json, seed, last_seq) VALUES ('s', 'running', 'x', '{}', 1, 4)"
        )
        await tx.execute(
            "INSERT INTO trials (id, sweep_id, status) VALUES ('live', 's', 'running')"
        )
        await tx.execute(
            "INSERT INTO trials (id, sweep_id, status, metric) VALUES ('done', 's', 'succeeded', 1.0)"
        )
    await db.close()


async def test_fresh_file_gets_current_version(db_path: Path) -> None:
    async with await open_store(db_path) as store:
        assert await store.schema_version() == CURRENT_VERSION == len(schema.MIGRATIONS)
        assert await store.integrity_check() == "ok"


async def test_reopening_current_file_changes_nothing(db_path: Path) -> None:
    async with await open_store(db_path):
        pass
    async with await open_store(db_path) as store:
        assert await store.schema_version() == CURRENT_VERSION


async def test_v1_file_upgrades_and_backfills(db_path: Path) -> None:
    await _make_v1(db_path)
    async with await open_store(db_path) as store:
        assert await store.schema_version() == CURRENT_VERSION
        live, done = await store.get_trial("live"), await store.get_trial("done")
        assert live is not None and live.resume_from == "ckpt/a"
        assert done is not None and (done.status, done.metric, done.resume_from) == (
            "succeeded",
            1.0,
            None,
        )
        # The finality trigger is back after the back-fill lifted it.
        with pytest.raises(ConflictError, match="finished trial"):
            async with store.db.transaction() as tx:
                await tx.execute("UPDATE trials SET status = 'running' WHERE id = 'done'")
        # And the upgraded file takes new events where v1 left off.
        stored = await store.append(
            "s", [("trial.failed", {"trial_id": "live", "reason": "x"})], at=2.0
        )
        assert stored[0].seq == 5
        assert await store.integrity_check() == "ok"


async def test_failed_migration_leaves_old_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _make_v1(db_path)
    broken = (*schema.MIGRATIONS[1][:1], "THIS IS NOT SQL")
    monkeypatch.setattr(schema, "MIGRATIONS", (schema.MIGRATIONS[0], broken))
    db = await connect(db_path)
    await apply_pragmas(db)
    with pytest.raises(StoreWriteError):
        await schema.migrate(db, target=2)
    assert await schema.user_version(db) == 1
    columns = [r[1] for r in await db.fetchall("PRAGMA table_info(trials)")]
    assert "resume_from" not in columns  # the ALTER TABLE was rolled back too
    await db.close()


async def test_newer_file_is_refused_and_left_unchanged(db_path: Path) -> None:
    async with await open_store(db_path) as store:
        await store.append("s", [("note", {"n": 1})], at=1.0)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    raw.close()
    before = db_path.read_bytes()

    with pytest.raises(SchemaTooNew) as info:
        await open_store(db_path)

    assert info.value.found == CURRENT_VERSION + 1 and info.value.known == CURRENT_VERSION
    assert str(CURRENT_VERSION + 1) in str(info.value) and "not changed" in str(info.value)
    assert db_path.read_bytes() == before


async def test_newer_rollback_journal_file_is_not_switched_to_wal(db_path: Path) -> None:
    # A file another tool made (rollback journal, future version): refusing it
    # must not even flip its journal mode.
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE TABLE t (x)")
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    before = db_path.read_bytes()
    with pytest.raises(SchemaTooNew):
        await open_store(db_path)
    assert db_path.read_bytes() == before


async def test_migrate_rejects_unknown_target(db_path: Path) -> None:
    db = await connect(db_path)
    try:
        with pytest.raises(ValueError):
            await schema.migrate(db, target=CURRENT_VERSION + 1)
    finally:
        await db.close()


async def _make_v4_with_two_iterations(path: Path) -> None:
    """A file as schema v4 left it: a sweep whose trials ran in iterations 0 and 1
    (the trials table had no iteration column; trial.scheduled said it)."""
    db = await connect(path)
    await apply_pragmas(db)
    assert await schema.migrate(db, target=4) == 4
    trials = [("a", 0, "succeeded"), ("b", 1, "succeeded"), ("c", 1, "running")]
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO events (sweep_id, type, trial_id, payload, at)"
            ' VALUES (\'s\', \'sweep.submitted\', NULL, \'{"seed":1,"spec":"x","spec_json":{}}\', 1)'
        )
        for tid, it, _ in trials:
            payload = f'{{"trial_id":"{tid}","bracket":0,"rung":0,"index":0,"iteration":{it}}}'
            await tx.execute(
                "INSERT INTO events (sweep_id, type, trial_id, payload, at)"
                " VALUES ('s', 'trial.scheduled', ?, ?, 1)",
                (tid, payload),
            )
        await tx.execute(
            "INSERT INTO sweeps (id, status, spec, spec_json, seed, last_seq)"
            " VALUES ('s', 'running', 'x', '{}', 1, 4)"
        )
        for tid, _, status in trials:
            await tx.execute(
                "INSERT INTO trials (id, sweep_id, bracket, rung, idx, status)"
                " VALUES (?, 's', 0, 0, 0, ?)",
                (tid, status),
            )
    await db.close()


async def test_v4_file_gets_each_trials_iteration_from_its_log(db_path: Path) -> None:
    await _make_v4_with_two_iterations(db_path)
    async with await open_store(db_path) as store:
        assert await store.schema_version() == CURRENT_VERSION
        trials = await store.list_trials("s")
        assert [(t.id, t.iteration) for t in trials] == [("a", 0), ("b", 1), ("c", 1)]
        progress = await store.rung_progress("s")
        assert [(p["iteration"], p["total"]) for p in progress] == [(0, 1), (1, 2)]
        with pytest.raises(ConflictError, match="finished trial"):  # the trigger is back
            async with store.db.transaction() as tx:
                await tx.execute("UPDATE trials SET status = 'running' WHERE id = 'b'")


async def test_a_v4_file_read_without_a_daemon_shows_iterations_and_is_not_changed(
    db_path: Path,
) -> None:
    from hbd.store import projections
    from hbd.store.readonly import ReadOnlyDatabase

    await _make_v4_with_two_iterations(db_path)
    before = db_path.read_bytes()
    ro = ReadOnlyDatabase(db_path)
    try:
        progress = await projections.rung_progress(ro, "s")  # type: ignore[arg-type]
        assert [(p["iteration"], p["total"]) for p in progress] == [(0, 1), (1, 2)]
        trials = await projections.list_trials(ro, "s")  # type: ignore[arg-type]
        assert [t.iteration for t in trials] == [0, 1, 1]
    finally:
        ro.close()
    assert db_path.read_bytes() == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4


# What an old file's trial.scheduled may say of its iteration, and what the
# upgrade (and a read without a daemon) makes of it: only an integer in
# 0..MAX_HYPERBAND_ITERATIONS-1 is an iteration; anything else is the first.
_JUNK_ITERATIONS = {
    "text": ('"abc"', 0),
    "digits": ('"7"', 0),
    "huge": (str(2**63), 0),
    "too_many": ("1000", 0),
    "negative": ("-1", 0),
    "real": ("1.5", 0),
    "null": ("null", 0),
    "list": ("[1,2]", 0),
    "true": ("true", 0),
    "fine": ("3", 3),
}


async def _make_v4_with_junk_iterations(path: Path) -> None:
    db = await connect(path)
    await apply_pragmas(db)
    assert await schema.migrate(db, target=4) == 4
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO sweeps (id, status, spec, spec_json, seed, last_seq)"
            " VALUES ('s', 'running', 'x', '{}', 1, 1)"
        )
        rows = [
            (tid, f'{{"trial_id":"{tid}","iteration":{v}}}')
            for tid, (v, _) in _JUNK_ITERATIONS.items()
        ]
        rows += [("absent", '{"trial_id":"absent"}'), ("broken", '{"trial_id": ')]
        for tid, payload in rows:
            await tx.execute(
                "INSERT INTO events (sweep_id, type, trial_id, payload, at)"
                " VALUES ('s', 'trial.scheduled', ?, ?, 1)",
                (tid, payload),
            )
            await tx.execute(
                "INSERT INTO trials (id, sweep_id, bracket, rung, idx, status)"
                " VALUES (?, 's', 0, 0, 0, 'succeeded')",
                (tid,),
            )
    await db.close()


_JUNK_EXPECTED = {**{t: it for t, (_, it) in _JUNK_ITERATIONS.items()}, "absent": 0, "broken": 0}


async def test_junk_iterations_in_an_old_log_upgrade_to_the_first(db_path: Path) -> None:
    await _make_v4_with_junk_iterations(db_path)
    async with await open_store(db_path) as store:
        assert await store.schema_version() == CURRENT_VERSION
        got = {t.id: t.iteration for t in await store.list_trials("s")}
        assert got == _JUNK_EXPECTED
        assert all(type(it) is int for it in got.values())


async def test_junk_iterations_in_an_old_log_read_without_a_daemon(db_path: Path) -> None:
    from hbd.store import projections
    from hbd.store.readonly import ReadOnlyDatabase

    await _make_v4_with_junk_iterations(db_path)
    ro = ReadOnlyDatabase(db_path)
    try:
        trials = await projections.list_trials(ro, "s")  # type: ignore[arg-type]
        got = {t.id: t.iteration for t in trials}
        assert got == _JUNK_EXPECTED
        progress = await projections.rung_progress(ro, "s")  # type: ignore[arg-type]
        assert [(p["iteration"], p["total"]) for p in progress] == [(0, 11), (3, 1)]
    finally:
        ro.close()


async def test_a_v1_file_read_without_a_daemon_lists_its_trials_unchanged(db_path: Path) -> None:
    # v1 had no resume_from (v2) and no iteration (v5): the read-only view shows
    # both as the migrations would, and the file stays as it was.
    from hbd.store import projections
    from hbd.store.readonly import ReadOnlyDatabase

    await _make_v1(db_path)
    before = db_path.read_bytes()
    ro = ReadOnlyDatabase(db_path)
    try:
        trials = await projections.list_trials(ro, "s")  # type: ignore[arg-type]
        got = {t.id: (t.resume_from, t.iteration, t.status) for t in trials}
        assert got == {"live": ("ckpt/a", 0, "running"), "done": (None, 0, "succeeded")}
    finally:
        ro.close()
    assert db_path.read_bytes() == before
