"""Inspect a database file without changing it (for ``hbd doctor``).

Opens the file read-only (``mode=ro``) with the synchronous ``sqlite3``
module: a one-shot look from the CLI needs no event loop, and must never
create, migrate or switch the journal mode of the file it examines (a running
daemon may hold it). sqlite3 errors become findings, not exceptions; this and
``db.py`` are the only modules that catch them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from hbd.store.schema import CURRENT_VERSION

# A WAL file grows while readers keep SQLite from checkpointing; past this it
# points at a stuck reader (a forgotten `sqlite3` shell, a hung backup).
WAL_WARN_BYTES = 64 * 1024 * 1024
# integrity_check stops after this many problems: enough to tell "damaged".
MAX_INTEGRITY_ERRORS = 20


@dataclass
class DatabaseReport:
    path: Path
    exists: bool
    error: str | None = None  # could not be opened or read at all
    integrity: list[str] = field(default_factory=list)  # ["ok"] when sound
    schema_version: int | None = None
    current_version: int = CURRENT_VERSION
    journal_mode: str | None = None
    wal_bytes: int = 0
    events: int | None = None
    sweeps: int | None = None

    @property
    def sound(self) -> bool:
        return self.exists and self.error is None and self.integrity == ["ok"]


def inspect_database(path: Path) -> DatabaseReport:
    path = Path(path)
    report = DatabaseReport(path=path, exists=path.is_file())
    if not report.exists:
        return report
    wal = path.with_name(path.name + "-wal")
    report.wal_bytes = wal.stat().st_size if wal.exists() else 0
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        report.error = f"cannot open: {exc}"
        return report
    try:
        report.schema_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        report.journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        rows = conn.execute(f"PRAGMA integrity_check({MAX_INTEGRITY_ERRORS})").fetchall()
        report.integrity = [str(r[0]) for r in rows]
        if report.schema_version >= 1:
            report.events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            report.sweeps = int(conn.execute("SELECT count(*) FROM sweeps").fetchone()[0])
    except sqlite3.Error as exc:
        report.error = f"cannot read: {exc}"
    finally:
        conn.close()
    return report
