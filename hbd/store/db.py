"""The one SQLite connection: PRAGMAs, write transactions, error translation.

This is the only module that catches ``sqlite3`` exceptions; each is re-raised
as an :mod:`hbd.errors` error ``from exc``. Every operation takes one lock, so
a reader never sees another task's uncommitted writes on the shared connection
and two writers never interleave inside one ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from hbd.errors import ConflictError, StoreReadError, StoreWriteError

# How long a statement waits for another process's write lock before failing
# with SQLITE_BUSY. Our own writes are serialized by a lock and take
# milliseconds; 5 s rides out a concurrent `hbd` CLI or a backup holding the
# lock, yet fails fast enough for the daemon to report a stuck database.
BUSY_TIMEOUT_MS = 5000

# Cap on a rollback after a failed write. Rollback is local and quick; the cap
# only keeps a wedged disk from hanging a shielded cleanup forever.
ROLLBACK_TIMEOUT_S = 10.0

# Cap on waiting for aiosqlite's worker thread to exit after a failed open;
# it has nothing left to do but close, so this is only a guard against a hang.
WORKER_JOIN_TIMEOUT_S = 5.0

# Applied on every connection. WAL lets readers (another process, `sqlite3`
# on the command line) read while we write; synchronous=FULL makes a commit
# durable on power loss, which "nothing is decided that is not first written"
# needs; foreign_keys is off by default in SQLite and must be set per connection.
PRAGMAS: tuple[tuple[str, str | int], ...] = (
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
)

Params = Sequence[Any]

# Test hook, for the crash harness (tests/crash): with HBD_FAULT_EXIT_AFTER_COMMITS=N
# in the environment, the process dies with os._exit(137) (the status of a
# kill -9) right after its N-th successful COMMIT, counting every write
# transaction of the process, migrations included. Read once at import; when
# unset the only cost is one `is None` test per commit. Never set it in
# production.
FAULT_EXIT_ENV = "HBD_FAULT_EXIT_AFTER_COMMITS"
FAULT_EXIT_STATUS = 137
_fault_exit_after: int | None = (
    int(os.environ[FAULT_EXIT_ENV]) if os.environ.get(FAULT_EXIT_ENV) else None
)
_commits = 0


def _committed() -> None:
    global _commits
    _commits += 1
    if _commits == _fault_exit_after:
        os._exit(FAULT_EXIT_STATUS)


def _translate(exc: sqlite3.Error, *, writing: bool) -> Exception:
    """Map a sqlite3 exception to the hbd error a caller can act on."""
    if isinstance(exc, sqlite3.IntegrityError):
        # UNIQUE, FOREIGN KEY and our RAISE(ABORT) triggers all land here.
        return ConflictError(f"the database refused the write: {exc}")
    if writing:
        return StoreWriteError(f"write failed, nothing was written: {exc}")
    return StoreReadError(f"read failed: {exc}")


class Database:
    """One aiosqlite connection with its lock. Built by :func:`connect`."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """``BEGIN IMMEDIATE … COMMIT``; rollback and translate on any error.

        IMMEDIATE takes the write lock at BEGIN, so a busy database fails here,
        before any work, rather than at the first write. The body and commit
        are shielded from cancellation: a commit that might or might not have
        happened would leave the caller unsure whether to act on a decision.
        """
        async with self._lock:
            with anyio.CancelScope(shield=True):
                try:
                    await self.conn.execute("BEGIN IMMEDIATE")
                    yield self
                    await self.conn.execute("COMMIT")
                    if _fault_exit_after is not None:
                        _committed()
                except sqlite3.Error as exc:
                    await self._rollback()
                    raise _translate(exc, writing=True) from exc
                except BaseException:
                    await self._rollback()
                    raise

    async def _rollback(self) -> None:
        # SQLite itself rolls back on some errors (SQLITE_FULL, SQLITE_IOERR),
        # after which ROLLBACK would fail with "no transaction is active".
        if not self.conn.in_transaction:
            return
        with anyio.move_on_after(ROLLBACK_TIMEOUT_S, shield=True):
            try:
                await self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                # The error that brought us here is the one worth reporting.
                pass

    # -- statements inside a transaction (the caller holds the lock) --------

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self.conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetchall_tx(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self.conn.execute_fetchall(sql, params))

    # -- standalone reads ---------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                return list(await self.conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise _translate(exc, writing=False) from exc

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def scalar(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def pragmas(self) -> dict[str, Any]:
        """The settings in force on this connection, for tests and `hbd status`."""
        return {name: await self.scalar(f"PRAGMA {name}") for name, _ in PRAGMAS}

    async def close(self) -> None:
        async with self._lock:
            try:
                await self.conn.close()
            except sqlite3.Error as exc:
                raise _translate(exc, writing=False) from exc


async def connect(path: Path | str) -> Database:
    """Open ``path`` with ``isolation_level=None`` (we issue BEGIN ourselves).

    Only ``busy_timeout`` is set here; :func:`apply_pragmas` sets the rest once
    the schema version has been checked, so refusing a too-new file changes
    nothing in it (journal_mode=WAL would rewrite its header).
    """
    conn = aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn
    except sqlite3.Error as exc:
        await _join_worker(conn)
        raise StoreReadError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    db = Database(conn, str(path))
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        await conn.close()
        raise StoreReadError(f"cannot open database {path}: {exc}") from exc
    return db


async def _join_worker(conn: aiosqlite.Connection) -> None:
    # After a failed connect aiosqlite stops its worker thread but does not
    # wait for it; the thread then reports to the event loop, which may be
    # closed by then (an error in tests, a crash report in the daemon). Wait
    # for it here. `_thread` is private, hence the getattr.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        await anyio.to_thread.run_sync(thread.join, WORKER_JOIN_TIMEOUT_S)


async def apply_pragmas(db: Database) -> None:
    """Set every PRAGMA in :data:`PRAGMAS` and check that each one took."""
    try:
        for name, value in PRAGMAS:
            await db.conn.execute(f"PRAGMA {name} = {value}")
    except sqlite3.Error as exc:
        raise _translate(exc, writing=True) from exc
    mode = await db.scalar("PRAGMA journal_mode")
    if str(mode).lower() != "wal":
        # journal_mode silently stays put on some filesystems (no shared memory).
        raise StoreWriteError(f"cannot enable WAL on {db.path}: journal_mode is {mode}")
