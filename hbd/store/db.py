"""The one SQLite connection: PRAGMAs, write transactions, error translation.

This is the only module that catches ``sqlite3`` exceptions; each is re-raised
as an :mod:`hbd.errors` error ``from exc``. Every operation takes one lock, so
a reader never sees another task's uncommitted writes on the shared connection
and two writers never interleave inside one ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


# The files SQLite writes for a database in WAL mode, beside the database itself.
WAL_SUFFIXES = ("-wal", "-shm")


def _unwritable(path: str) -> str | None:
    """The first of the database, its directory and its WAL files we may not write, if any.

    SQLite reports a permission problem as "attempt to write a readonly
    database", "unable to open database file" or even "disk I/O error"
    (a -shm it cannot open for writing); naming the file tells the operator
    what to fix.
    """
    if path in ("", ":memory:"):
        return None
    candidates = [path, os.path.dirname(os.path.abspath(path))]
    candidates += [path + suffix for suffix in WAL_SUFFIXES]
    for candidate in candidates:
        if os.path.exists(candidate) and not os.access(candidate, os.W_OK):
            return candidate
    return None


def _translate(exc: sqlite3.Error, *, writing: bool, path: str = "") -> Exception:
    """Map a sqlite3 exception to the hbd error a caller can act on."""
    if isinstance(exc, sqlite3.IntegrityError):
        # UNIQUE, FOREIGN KEY and our RAISE(ABORT) triggers all land here.
        return ConflictError(f"the database refused the write: {exc}")
    if writing:
        denied = _unwritable(path)
        if denied is not None:
            return StoreWriteError(
                f"write failed, nothing was written: permission denied: {denied} is not"
                f" writable by this process (sqlite: {exc})"
            )
        return StoreWriteError(f"write failed, nothing was written: {exc}")
    return StoreReadError(f"read failed: {exc}")


# The errors after which a connection may never write again: opened read-only
# (a read-only file or -shm), or unable to open its WAL files. A full disk or
# a busy lock passes with the condition, on the same connection.
_REOPEN_AFTER = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR")


def _poisons_connection(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith(_REOPEN_AFTER)


@dataclass
class WriteHealth:
    """Whether the log can be written now, for /healthz and /metrics.

    ``failing_since`` is set by the first failed write and cleared by the next
    one that commits; ``failures_total`` only grows.
    """

    failures_total: int = 0
    failing_since: float | None = None  # wall-clock time of the first failure in a row
    last_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failing_since is None

    def failed(self, error: str) -> None:
        self.failures_total += 1
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = time.time()

    def succeeded(self) -> None:
        self.failing_since = None
        self.last_error = None


class Database:
    """One aiosqlite connection with its lock. Built by :func:`connect`."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self._lock = anyio.Lock()
        self.health = WriteHealth()
        # A failed write may leave the connection unable to write for good (one
        # opened while the file was read-only stays read-only): the next write
        # opens a fresh one first. See _reopen.
        self._reopen = False

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
                if self._reopen:
                    await self._reopen_connection()
                try:
                    await self.conn.execute("BEGIN IMMEDIATE")
                    yield self
                    await self.conn.execute("COMMIT")
                    if _fault_exit_after is not None:
                        _committed()
                except sqlite3.Error as exc:
                    await self._rollback()
                    error = _translate(exc, writing=True, path=self.path)
                    if isinstance(error, StoreWriteError):
                        self.health.failed(str(error))
                        self._reopen = _poisons_connection(exc)
                    raise error from exc
                except BaseException:
                    await self._rollback()
                    raise
                self.health.succeeded()

    async def _reopen_connection(self) -> None:
        """Replace the connection with a fresh one (the caller holds the lock).

        SQLite shares one file descriptor per file among the connections of a
        process, so a database opened read-only stays read-only for every
        connection until all are closed: close first, then open. Its -shm was
        created with the database's mode of the time (read-only too): once the
        database is writable again, the WAL files we own get its mode back.
        Raises StoreWriteError (recorded in ``health``) while that fails.
        """
        with anyio.move_on_after(ROLLBACK_TIMEOUT_S, shield=True):
            try:
                await self.conn.close()
            except sqlite3.Error:
                pass  # the old connection is being dropped either way
        try:
            await anyio.to_thread.run_sync(_match_wal_modes, self.path)
            self.conn = await _open(self.path)
            await _set_pragmas(self.conn)
        except (sqlite3.Error, OSError) as exc:
            message = f"write failed, cannot reopen {self.path}: {exc}"
            denied = await anyio.to_thread.run_sync(_unwritable, self.path)
            if denied is not None:
                message += f" (permission denied: {denied} is not writable by this process)"
            self.health.failed(message)
            raise StoreWriteError(message) from exc
        self._reopen = False

    async def probe_write(self) -> None:
        """A write that changes nothing (the schema version, set to itself).

        Tells at start whether the log can be written, and afterwards whether a
        failing one heals without waiting for a sweep to need it. Raises
        StoreWriteError while it cannot.
        """
        async with self.transaction() as tx:  # the read too: a dead connection is reopened
            version = int((await tx.fetchall_tx("PRAGMA user_version"))[0][0])
            await tx.execute(f"PRAGMA user_version = {version}")

    async def checkpoint(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(PASSIVE)``: (busy, WAL frames, frames checkpointed)."""
        row = await self.fetchone("PRAGMA wal_checkpoint(PASSIVE)")
        if row is None:
            return (0, 0, 0)
        return (int(row[0]), int(row[1]), int(row[2]))

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
            if self._reopen:
                # The last write dropped its connection and could not open a new
                # one: reading from the closed one would not be an sqlite3 error.
                try:
                    await self._reopen_connection()
                except StoreWriteError as exc:
                    raise StoreReadError(f"read failed: {exc}") from exc
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
    try:
        conn = await _open(str(path))
    except sqlite3.Error as exc:
        raise StoreReadError(f"cannot open database {path}: {exc}") from exc
    return Database(conn, str(path))


async def _open(path: str) -> aiosqlite.Connection:
    """A new connection to ``path`` with ``busy_timeout`` set; raises sqlite3.Error."""
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        await conn
    except sqlite3.Error:
        await _join_worker(conn)
        raise
    conn.row_factory = sqlite3.Row
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error:
        await conn.close()
        raise
    return conn


def _match_wal_modes(path: str) -> None:
    """Give our WAL files the database's permission bits when the database is writable.

    SQLite creates -wal and -shm with the database's mode: a daemon started on
    a read-only database leaves a read-only -shm behind, and every later
    connection is read-only through it even after the operator has made the
    database writable. Only files this process owns are touched.
    """
    if path in ("", ":memory:") or not os.access(path, os.W_OK):
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    for suffix in WAL_SUFFIXES:
        wal = path + suffix
        try:
            st = os.stat(wal)
        except FileNotFoundError:
            continue
        if st.st_uid == os.geteuid() and not os.access(wal, os.W_OK):
            os.chmod(wal, mode)


async def _join_worker(conn: aiosqlite.Connection) -> None:
    # After a failed connect aiosqlite stops its worker thread but does not
    # wait for it; the thread then reports to the event loop, which may be
    # closed by then (an error in tests, a crash report in the daemon). Wait
    # for it here. `_thread` is private, hence the getattr.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        await anyio.to_thread.run_sync(thread.join, WORKER_JOIN_TIMEOUT_S)


async def _set_pragmas(conn: aiosqlite.Connection) -> None:
    for name, value in PRAGMAS:
        await conn.execute(f"PRAGMA {name} = {value}")


async def apply_pragmas(db: Database) -> None:
    """Set every PRAGMA in :data:`PRAGMAS` and check that each one took."""
    try:
        await _set_pragmas(db.conn)
    except sqlite3.Error as exc:
        raise _translate(exc, writing=True, path=db.path) from exc
    mode = await db.scalar("PRAGMA journal_mode")
    if str(mode).lower() != "wal":
        # journal_mode silently stays put on some filesystems (no shared memory).
        raise StoreWriteError(f"cannot enable WAL on {db.path}: journal_mode is {mode}")
