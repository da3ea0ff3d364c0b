"""The event log and the :class:`Store` facade over it.

``append`` writes a batch of events and their projections in one transaction
and returns them with their ``seq``; ``seq`` is gap-free and increasing (it is
assigned under the write lock and a rolled-back batch consumes none), so it
serves as the SSE ``id:`` and the replay cursor.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from hbd.store import projections
from hbd.store.db import Database, WriteHealth, apply_pragmas, connect
from hbd.store.files import private_file
from hbd.store.projections import SweepRow, TrialRow, dumps
from hbd.store.schema import check_not_too_new, migrate, user_version

if TYPE_CHECKING:
    from hbd.core.scheduler import BracketOrder

# Default page for read_after: an SSE replay or a replay loop pages through
# the log, so one page need only be big enough to amortize the query.
DEFAULT_READ_LIMIT = 1000
# Upper bound on one page, so a careless caller cannot pull a whole
# multi-sweep log into memory (or hold the connection lock) in one call.
MAX_READ_LIMIT = 10_000

# Batches at least this large are encoded (and decoded back) in a worker
# thread: a new sweep's first rungs can be tens of thousands of events, seconds
# of JSON work that would stall every request (issue 10.7); small batches stay
# on the loop, where a thread hop would cost more than the work.
THREAD_ENCODE_EVENTS = 1_000

_EVENT_COLS = "seq, sweep_id, type, trial_id, payload, at"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """One committed event. ``payload`` is the decoded JSON object."""

    seq: int
    sweep_id: str
    type: str
    trial_id: str | None
    payload: dict[str, Any]
    at: float


_Encoded = list[tuple[str, str | None, str, dict[str, Any]]]


def _encode(
    sweep_id: str, events: Sequence[tuple[str, Mapping[str, Any]]], at: float
) -> tuple[_Encoded, list[projections.Statement]]:
    """Each event's JSON text, and the batch's projection SQL (CPU only, no I/O)."""
    encoded: _Encoded = []
    for event_type, payload in events:
        if not isinstance(payload, Mapping):
            raise TypeError(f"{event_type} payload must be a mapping, not {type(payload)}")
        plain = dict(payload)
        text = dumps(plain)
        trial_id = plain.get("trial_id")
        encoded.append((event_type, None if trial_id is None else str(trial_id), text, plain))
    return encoded, projections.statements(sweep_id, ((t, p, at) for t, _, _, p in encoded))


def _committed(sweep_id: str, encoded: _Encoded, first: int, at: float) -> list[StoredEvent]:
    # Decode our own canonical text so callers get exactly what a reader will.
    return [
        StoredEvent(
            seq=first + i,
            sweep_id=sweep_id,
            type=event_type,
            trial_id=trial_id,
            payload=json.loads(text),
            at=at,
        )
        for i, (event_type, trial_id, text, _) in enumerate(encoded)
    ]


def _filters(
    after_seq: int, sweep_id: str | None, types: Collection[str] | None
) -> tuple[list[str], list[str | int]]:
    """WHERE terms and parameters of a log read; no terms when ``types`` is empty."""
    where: list[str] = ["seq > ?"]
    params: list[str | int] = [after_seq]
    if sweep_id is not None:
        where.append("sweep_id = ?")
        params.append(sweep_id)
    if types is not None:
        wanted = sorted(set(types))
        if not wanted:
            return [], []
        where.append(f"type IN ({','.join('?' * len(wanted))})")
        params.extend(wanted)
    return where, params


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        seq=row[0],
        sweep_id=row[1],
        type=row[2],
        trial_id=row[3],
        payload=json.loads(row[4]),
        at=row[5],
    )


class Store:
    """The event log plus its projections. Open with :func:`open_store`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- writing ---------------------------------------------------------------

    async def append(
        self, sweep_id: str, events: Sequence[tuple[str, Mapping[str, Any]]], *, at: float
    ) -> list[StoredEvent]:
        """Append ``events`` for one sweep and apply their projections, atomically.

        Raises :class:`~hbd.errors.ConflictError` when a constraint refuses any
        event (a repeat), :class:`~hbd.errors.StoreWriteError` when the write
        fails; in both cases nothing of the batch is written. A malformed
        payload raises before any write: ``ValueError`` for a missing key or
        a value JSON cannot carry (NaN, infinity), ``TypeError`` for a
        payload that is not a mapping or holds a non-JSON type.
        """
        if not events:
            return []
        # Encode and build all SQL before BEGIN: a bad payload fails fast and
        # the write lock is held only for the statements themselves.
        if len(events) >= THREAD_ENCODE_EVENTS:
            encoded, stmts = await anyio.to_thread.run_sync(_encode, sweep_id, events, at)
        else:
            encoded, stmts = _encode(sweep_id, events, at)

        async with self.db.transaction() as tx:
            rows = await tx.fetchall_tx("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            first = (rows[0][0] if rows else 0) + 1
            await tx.executemany(
                _INSERT_EVENT,
                [
                    (first + i, sweep_id, event_type, trial_id, text, at)
                    for i, (event_type, trial_id, text, _) in enumerate(encoded)
                ],
            )
            for sql, params in projections.grouped(stmts):
                await tx.executemany(sql, params)
            last = first + len(encoded) - 1
            if any(e[0] not in projections.AFTER_THE_END_TYPES for e in encoded):
                await tx.execute(projections.LAST_SEQ, (last, sweep_id))

        if len(encoded) >= THREAD_ENCODE_EVENTS:
            return await anyio.to_thread.run_sync(_committed, sweep_id, encoded, first, at)
        return _committed(sweep_id, encoded, first, at)

    # -- the log ---------------------------------------------------------------

    async def read_after(
        self,
        after_seq: int,
        *,
        sweep_id: str | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_READ_LIMIT,
    ) -> list[StoredEvent]:
        """Events with ``seq > after_seq`` in seq order, at most ``limit`` of them."""
        if not 1 <= limit <= MAX_READ_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_READ_LIMIT}, got {limit}")
        where, params = _filters(after_seq, sweep_id, types)
        if not where:
            return []
        rows = await self.db.fetchall(
            f"SELECT {_EVENT_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [_event(r) for r in rows]

    async def read_page(
        self,
        after_seq: int,
        *,
        sweep_id: str | None = None,
        types: Collection[str] | None = None,
        limit: int = DEFAULT_READ_LIMIT,
        max_bytes: int,
    ) -> tuple[list[StoredEvent], bool]:
        """Like ``read_after``, but the page also stops before its payloads exceed
        ``max_bytes`` (always at least one event); returns (events, whether more
        may follow). An event stream replaying large events holds one bounded page.
        """
        if not 1 <= limit <= MAX_READ_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_READ_LIMIT}, got {limit}")
        where, params = _filters(after_seq, sweep_id, types)
        if not where:
            return [], False
        sizes = await self.db.fetchall(
            f"SELECT seq, length(CAST(payload AS BLOB)) FROM events WHERE {' AND '.join(where)} "
            "ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        total, last, cut = 0, None, False
        for seq, size in sizes:
            total += size
            if total > max_bytes and last is not None:
                cut = True
                break
            last = seq
        if last is None:
            return [], False
        rows = await self.db.fetchall(
            f"SELECT {_EVENT_COLS} FROM events WHERE {' AND '.join(where)} AND seq <= ? "
            "ORDER BY seq LIMIT ?",
            [*params, last, limit],
        )
        return [_event(r) for r in rows], cut or len(sizes) >= limit

    async def sweep_events(
        self, sweep_id: str, *, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """Every event of one sweep in seq order (only ``types``, if given): the input to a replay.

        A replay needs only the machine's inputs, a few percent of a long
        sweep's log (the rest is dispatched/running/metrics notes); filtering
        in SQL spares reading and JSON-decoding the rest.
        """
        if types is None:
            rows = await self.db.fetchall(
                f"SELECT {_EVENT_COLS} FROM events WHERE sweep_id = ? ORDER BY seq", (sweep_id,)
            )
        else:
            wanted = sorted(set(types))
            rows = await self.db.fetchall(
                f"SELECT {_EVENT_COLS} FROM events WHERE sweep_id = ?"
                f" AND type IN ({','.join('?' * len(wanted))}) ORDER BY seq",
                (sweep_id, *wanted),
            )
        return [_event(r) for r in rows]

    async def last_seq(self) -> int:
        return int(await self.db.scalar("SELECT COALESCE(MAX(seq), 0) FROM events"))

    async def event_count(self) -> int:
        return int(await self.db.scalar("SELECT count(*) FROM events"))

    # -- projections -----------------------------------------------------------

    async def get_sweep(self, sweep_id: str) -> SweepRow | None:
        return await projections.get_sweep(self.db, sweep_id)

    async def list_sweeps(self, status: str | None = None) -> list[SweepRow]:
        return await projections.list_sweeps(self.db, status)

    async def unfinished_sweep_ids(self) -> list[str]:
        return await projections.unfinished_sweep_ids(self.db)

    async def get_trial(self, trial_id: str) -> TrialRow | None:
        return await projections.get_trial(self.db, trial_id)

    async def list_trials(
        self,
        sweep_id: str,
        *,
        status: str | None = None,
        bracket: int | None = None,
        rung: int | None = None,
    ) -> list[TrialRow]:
        return await projections.list_trials(
            self.db, sweep_id, status=status, bracket=bracket, rung=rung
        )

    async def open_trial_metrics(self, sweep_id: str) -> dict[str, tuple[int, list[str], int]]:
        """Unfinished trials' (last logged metrics seq, metric keys, run): what a runner resumes with."""
        return await projections.open_trial_metrics(self.db, sweep_id)

    async def trial_counts(self, sweep_id: str) -> dict[str, int]:
        return await projections.trial_counts(self.db, sweep_id)

    async def rung_progress(self, sweep_id: str) -> list[dict[str, Any]]:
        return await projections.rung_progress(self.db, sweep_id)

    async def checkpoint_summary(self, sweep_id: str) -> dict[str, int]:
        return await projections.checkpoint_summary(self.db, sweep_id)

    async def planned_iterations(self, sweep_id: str, asked: int) -> int:
        return await projections.planned_iterations(self.db, sweep_id, asked)

    async def bracket_order(self, sweep_id: str) -> BracketOrder:
        return await projections.bracket_order(self.db, sweep_id)

    # -- housekeeping ----------------------------------------------------------

    async def pragmas(self) -> dict[str, Any]:
        return await self.db.pragmas()

    async def schema_version(self) -> int:
        return await user_version(self.db)

    async def status_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(sweeps by status, trials by status), for metrics."""
        sweeps = await self.db.fetchall("SELECT status, count(*) FROM sweeps GROUP BY status")
        trials = await self.db.fetchall("SELECT status, count(*) FROM trials GROUP BY status")
        return {r[0]: r[1] for r in sweeps}, {r[0]: r[1] for r in trials}

    @property
    def write_health(self) -> WriteHealth:
        """Whether the log can be written now (see :class:`~hbd.store.db.WriteHealth`)."""
        return self.db.health

    async def probe_write(self) -> None:
        """A write that changes nothing; raises StoreWriteError while the log cannot be written."""
        await self.db.probe_write()

    async def checkpoint(self) -> tuple[int, int, int]:
        """A passive WAL checkpoint: (busy, WAL frames, frames checkpointed)."""
        return await self.db.checkpoint()

    async def ping(self) -> None:
        """A trivial read: raises StoreReadError if the database does not answer."""
        await self.db.scalar("SELECT 1")

    async def integrity_check(self) -> str:
        """``"ok"`` for a sound file, else SQLite's list of problems."""
        rows = await self.db.fetchall("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    async def close(self) -> None:
        await self.db.close()


async def open_store(path: Path | str) -> Store:
    """Open (creating if needed) and migrate the database at ``path``.

    Raises :class:`~hbd.errors.SchemaTooNew`, leaving the file untouched, when
    it was written by a newer hbd.
    """
    if str(path) != ":memory:" and not str(path).startswith("file:"):
        # Private from the first byte: the database 0600, and so its -wal and
        # -shm files (see hbd.store.files). The folder is the caller's (the
        # CLI creates it 0700); a missing one is reported by connect below.
        private_file(Path(path))
    db = await connect(path)
    try:
        # Check before any PRAGMA that writes (journal_mode) or any migration.
        check_not_too_new(db.path, await user_version(db))
        await apply_pragmas(db)
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return Store(db)
