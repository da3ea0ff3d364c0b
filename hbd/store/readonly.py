"""A database read without a daemon: ``hbd status/trials/results --db PATH``.

Opened read-only (``mode=ro`` URI) with the synchronous ``sqlite3`` module, as
``check.py`` does: it never creates, migrates or changes the journal mode of
the file, and it reads a WAL database while a daemon writes it (readers do not
block the writer; each query sees the last commit). It offers the two read
calls of ``Database`` that the projection queries use, so ``hbd status --db``
shows what the daemon's API would. sqlite3 errors become ``StoreReadError``
here, at the boundary.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hbd.core.vocabulary import EventType
from hbd.errors import StoreReadError
from hbd.store.log import _EVENT_COLS, StoredEvent, _event
from hbd.store.schema import ITERATION_OF_TRIAL, ITERATION_VERSION, check_not_too_new

# v2 added trials.resume_from (back-filled from trial.scheduled): a v1 file read
# here shows it the same way, or listing its trials fails on the column.
RESUME_FROM_VERSION = 2
_RESUME_FROM_OF_TRIAL = f"""(
    SELECT CASE WHEN json_valid(e.payload) THEN json_extract(e.payload, '$.resume_from') END
    FROM events AS e
    WHERE e.trial_id = trials.id AND e.type = '{EventType.TRIAL_SCHEDULED}'
)"""

# How long a read waits for a lock (a checkpoint in progress), as hbd doctor does.
READ_TIMEOUT_SECONDS = 5.0
# Events one call reads at most: a CLI report needs the first few failures,
# not a whole sweep's log in memory.
MAX_EVENTS_READ = 10_000


class ReadOnlyDatabase:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        if not path.is_file():
            raise FileNotFoundError(self.path)
        try:
            self._conn = sqlite3.connect(
                f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=READ_TIMEOUT_SECONDS
            )
        except sqlite3.Error as exc:
            raise StoreReadError(f"{self.path}: cannot open ({exc})") from None
        try:
            self._conn.row_factory = sqlite3.Row
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version == 0:
                raise StoreReadError(f"{self.path}: not an hbd database (no schema)")
            check_not_too_new(self.path, version)
            if version < ITERATION_VERSION:
                # An older file is never migrated here: a temporary view (the
                # file is not written) shows its trials as the migrations would.
                added = [f"{ITERATION_OF_TRIAL} AS iteration"]
                if version < RESUME_FROM_VERSION:
                    added.append(f"{_RESUME_FROM_OF_TRIAL} AS resume_from")
                self._conn.execute(
                    f"CREATE TEMP VIEW trials AS SELECT *, {', '.join(added)}"
                    " FROM main.trials AS trials"
                )
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreReadError(f"{self.path}: not a readable hbd database ({exc})") from None
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreReadError(f"{self.path}: {exc}") from None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._rows(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def sweep_events(
        self, sweep_id: str, *, after: int = 0, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        where, params = ["sweep_id = ?", "seq > ?"], [sweep_id, after]
        if types:
            wanted = sorted(set(types))
            where.append(f"type IN ({','.join('?' * len(wanted))})")
            params.extend(wanted)
        rows = self._rows(
            f"SELECT {_EVENT_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*params, MAX_EVENTS_READ],
        )
        return [_event(r) for r in rows]
