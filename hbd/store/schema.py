"""Numbered schema migrations, tracked in ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. Append new
migrations; never edit a released one (files in the field were built by it).
All pending migrations run in one ``BEGIN IMMEDIATE`` transaction together
with the ``user_version`` bump, so a crash mid-upgrade leaves the old version.
"""

from __future__ import annotations

from hbd.core.vocabulary import TERMINAL_EVENT_TYPES, TERMINAL_TRIAL_STATUSES, EventType, sql_list
from hbd.errors import SchemaTooNew
from hbd.store.db import Database

# Terminal trial statuses, from hbd.core.vocabulary, for the SQL below. A trial
# in one of these can never change again (the trials_finished_is_final trigger).
# The generated text is the one released databases were built with:
# ('succeeded','failed','cancelled') (tests/store/test_schema.py keeps it so).
TERMINAL_SQL = sql_list(TERMINAL_TRIAL_STATUSES)
TERMINAL_EVENTS_SQL = sql_list(EventType(t) for t in TERMINAL_EVENT_TYPES)

_FINISHED_TRIAL_TRIGGER = f"""
CREATE TRIGGER trials_finished_is_final BEFORE UPDATE ON trials
WHEN OLD.status IN {TERMINAL_SQL}
BEGIN SELECT RAISE(ABORT, 'a finished trial cannot change'); END
"""

V1: tuple[str, ...] = (
    """
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
        sweep_id TEXT NOT NULL,
        type     TEXT NOT NULL,
        trial_id TEXT,
        payload  TEXT NOT NULL,                      -- JSON object
        at       REAL NOT NULL
    )
    """,
    "CREATE INDEX events_sweep_seq ON events(sweep_id, seq)",
    # Idempotence in the schema: one terminal event and one scheduling per trial,
    # one submit and one finish per sweep. A duplicate fails the whole batch.
    f"""
    CREATE UNIQUE INDEX events_one_terminal_per_trial ON events(trial_id)
    WHERE type IN {TERMINAL_EVENTS_SQL}
    """,
    f"""
    CREATE UNIQUE INDEX events_one_schedule_per_trial ON events(trial_id)
    WHERE type = '{EventType.TRIAL_SCHEDULED}'
    """,
    f"""
    CREATE UNIQUE INDEX events_one_submit_per_sweep ON events(sweep_id)
    WHERE type = '{EventType.SWEEP_SUBMITTED}'
    """,
    f"""
    CREATE UNIQUE INDEX events_one_finish_per_sweep ON events(sweep_id)
    WHERE type = '{EventType.SWEEP_FINISHED}'
    """,
    # The log is append-only: history is never rewritten.
    """
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END
    """,
    """
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END
    """,
    """
    CREATE TABLE sweeps (
        id            TEXT PRIMARY KEY,
        name          TEXT,
        status        TEXT NOT NULL,
        spec          TEXT NOT NULL,   -- the text as submitted
        spec_json     TEXT NOT NULL,   -- the parsed spec, JSON
        seed          INTEGER NOT NULL,
        created_at    REAL,
        finished_at   REAL,
        best_trial_id TEXT,
        best_metric   REAL,
        reason        TEXT,
        last_seq      INTEGER
    )
    """,
    """
    CREATE TABLE trials (
        id           TEXT PRIMARY KEY,
        sweep_id     TEXT NOT NULL REFERENCES sweeps(id),
        bracket      INT,
        rung         INT,
        idx          INT,
        config       TEXT,            -- JSON object
        resource     REAL,
        parent       TEXT,
        status       TEXT NOT NULL,
        executor     TEXT,
        metrics      TEXT,            -- JSON object, last value per key
        metric       REAL,
        reason       TEXT,
        scheduled_at REAL,
        started_at   REAL,
        ended_at     REAL
    )
    """,
    "CREATE INDEX trials_sweep_status ON trials(sweep_id, status)",
    "CREATE INDEX trials_sweep_bracket_rung ON trials(sweep_id, bracket, rung)",
    _FINISHED_TRIAL_TRIGGER,
)

# v2: keep `resume_from` in the projection so the reconciler can re-send a
# scheduled trial from the trials table alone, and index trials by executor
# for "what is active on executor X". Existing rows are back-filled from their
# trial.scheduled event; the finality trigger is lifted only for that.
V2: tuple[str, ...] = (
    "ALTER TABLE trials ADD COLUMN resume_from TEXT",
    "DROP TRIGGER trials_finished_is_final",
    f"""
    UPDATE trials SET resume_from = (
        SELECT json_extract(e.payload, '$.resume_from') FROM events AS e
        WHERE e.trial_id = trials.id AND e.type = '{EventType.TRIAL_SCHEDULED}'
    )
    """,
    _FINISHED_TRIAL_TRIGGER,
    "CREATE INDEX trials_executor_status ON trials(executor, status)",
)

# v3: one row per logged metrics line, keyed by (trial, run, the executor's
# line number), so that the store refuses a line logged twice (the daemon also
# skips repeats before writing) and the last logged line of each trial is one
# index lookup away (what the daemon fetches after a restart). ``run`` is the
# trial's run (1 unless hbd was interrupted under it and it ran again: a new
# run numbers its lines from 1 again). Back-filled from the log; a repeat
# already in an old log is kept in the log, indexed once.
V3: tuple[str, ...] = (
    """
    CREATE TABLE metrics_lines (
        trial_id TEXT NOT NULL,
        run      INTEGER NOT NULL DEFAULT 1,
        seq      INTEGER NOT NULL,   -- the executor's line number, from 1
        PRIMARY KEY (trial_id, run, seq)
    ) WITHOUT ROWID
    """,
    f"""
    INSERT OR IGNORE INTO metrics_lines (trial_id, run, seq)
    SELECT trial_id, COALESCE(json_extract(payload, '$.run'), 1),
           json_extract(payload, '$.seq') FROM events
    WHERE type = '{EventType.TRIAL_METRICS}' AND trial_id IS NOT NULL
      AND json_type(payload, '$.seq') = 'integer'
    """,
)

# v4: a sweep that finished with every bracket done may be extended (hbd
# extend: sweep.extended) and finish again, so a sweep's log may hold one
# sweep.finished per extension. The unique index becomes a trigger: a finish
# is refused while the sweep's last finish has no extension after it (run only
# for a finish, over that sweep's events by the events_sweep_seq index).
V4: tuple[str, ...] = (
    "DROP INDEX events_one_finish_per_sweep",
    f"""
    CREATE TRIGGER events_one_finish_per_extension BEFORE INSERT ON events
    WHEN NEW.type = '{EventType.SWEEP_FINISHED}' AND EXISTS (
        SELECT 1 FROM events AS f
        WHERE f.sweep_id = NEW.sweep_id AND f.type = '{EventType.SWEEP_FINISHED}'
          AND NOT EXISTS (
            SELECT 1 FROM events AS x
            WHERE x.sweep_id = NEW.sweep_id AND x.type = '{EventType.SWEEP_EXTENDED}'
              AND x.seq > f.seq
          )
    )
    BEGIN
        SELECT RAISE(ABORT, 'sweep already finished: one sweep.finished per extension');
    END
    """,
)

# v5: a sweep may run several Hyperband iterations (matrix.iterations, hbd
# extend), each with the same brackets and rungs, so the projection keeps a
# trial's iteration: progress, status, watch and the web page count each
# iteration's rungs apart. Back-filled from trial.scheduled (0 before
# iterations existed); the finality trigger is lifted only for that. Only an
# integer below MAX_HYPERBAND_ITERATIONS (1000 when this was written: a
# migration's text never changes, so it is spelled out) is taken: junk in an old log (text, a
# float, 2**63, a malformed payload) is iteration 0, never a failed upgrade, a
# text column or a plan of 2**63 iterations. Nested CASEs: SQLite's AND does
# not promise to skip json_type on a payload json_valid refused.
ITERATION_OF_TRIAL = f"""COALESCE((
        SELECT CASE WHEN json_valid(e.payload) THEN
            CASE WHEN json_type(e.payload, '$.iteration') = 'integer' THEN
                CASE WHEN json_extract(e.payload, '$.iteration')
                    BETWEEN 0 AND 999
                THEN json_extract(e.payload, '$.iteration') END
            END
        END
        FROM events AS e
        WHERE e.trial_id = trials.id AND e.type = '{EventType.TRIAL_SCHEDULED}'
    ), 0)"""
V5: tuple[str, ...] = (
    "ALTER TABLE trials ADD COLUMN iteration INT NOT NULL DEFAULT 0",
    "DROP TRIGGER trials_finished_is_final",
    f"UPDATE trials SET iteration = {ITERATION_OF_TRIAL}",
    _FINISHED_TRIAL_TRIGGER,
)
ITERATION_VERSION = 5  # the first version whose trials table has ``iteration``

MIGRATIONS: tuple[tuple[str, ...], ...] = (V1, V2, V3, V4, V5)
CURRENT_VERSION = len(MIGRATIONS)


async def user_version(db: Database) -> int:
    return int(await db.scalar("PRAGMA user_version"))


def check_not_too_new(path: str, found: int) -> None:
    if found > CURRENT_VERSION:
        raise SchemaTooNew(path=path, found=found, known=CURRENT_VERSION)


async def migrate(db: Database, *, target: int = CURRENT_VERSION) -> int:
    """Bring ``db`` up to ``target`` (tests pass a lower one to build old files).

    Returns the version now in force. Raises :class:`SchemaTooNew`, changing
    nothing, when the file is newer than this code.
    """
    if not 0 <= target <= CURRENT_VERSION:
        raise ValueError(f"target version {target} is not in 0..{CURRENT_VERSION}")
    async with db.transaction():
        # Re-read under the write lock: another process may have migrated
        # between our first look and BEGIN IMMEDIATE.
        rows = await db.fetchall_tx("PRAGMA user_version")
        found = int(rows[0][0])
        check_not_too_new(db.path, found)
        for version in range(found, target):
            for statement in MIGRATIONS[version]:
                await db.execute(statement)
        if target > found:
            # PRAGMA takes no bound parameters; target is an int we computed.
            await db.execute(f"PRAGMA user_version = {int(target)}")
    return max(found, target)
