"""The ``sweeps`` and ``trials`` tables, derived from events.

:func:`statements` turns a batch of events into the SQL that applies them; the
log runs that SQL in the same transaction as the event insert, so a projection
never runs ahead of or behind the log. The query helpers read the tables back
as frozen rows with their JSON columns decoded.

Projection rules, per event type:

- ``sweep.submitted``: insert the sweep, status ``running``.
- ``trial.scheduled``: insert the trial, status ``scheduled``.
- ``trial.dispatched`` / ``trial.running``: status, executor (and started_at).
- ``trial.metrics``: merge metrics, last value per key (RFC 7396 merge patch:
  a ``null`` value removes its key), and index the line's ``seq`` in
  ``metrics_lines`` (primary key (trial_id, run, seq), ``run`` 1 when the
  payload has none: a line logged twice is a conflict). The daemon bounds what it merges (``hbd.daemon.metricsync``):
  at most MAX_METRIC_KEYS keys per trial, so a merge costs keys, never
  keys x lines.
- ``trial.succeeded`` / ``failed`` / ``cancelled``: terminal status,
  ended_at, metrics merged, metric and reason from the event (a ``lost``
  reason does not outlive a later verdict).
- ``trial.interrupted``: status ``interrupted``, reason, metrics cleared (the
  next run's ``trial.dispatched`` moves it on).
- ``trial.lost``: reason.
- ``sweep.finished``: status, finished_at, best trial and metric, reason.
- ``sweep.extended``: status running again; finished_at, best and reason cleared.
- anything else: logged only.

Trial updates apply only while the trial is not finished: a late ``running``
or ``metrics`` (a poll that crossed a callback) is kept in the log but cannot
move a finished trial. A second terminal event never gets here; the unique
index on events refuses it first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hbd.core.limits import MAX_HYPERBAND_ITERATIONS
from hbd.core.vocabulary import (
    FINISHED_SWEEP_STATUSES,
    TERMINAL_EVENT_TYPES,
    TERMINAL_TRIAL_STATUSES,
    EventType,
    SweepStatus,
    TrialStatus,
    sql_list,
)
from hbd.store.db import Database
from hbd.store.schema import TERMINAL_SQL

if TYPE_CHECKING:
    from hbd.core.scheduler import BracketOrder

Statement = tuple[str, tuple[Any, ...]]


def dumps(value: Any) -> str:
    """Canonical JSON: compact and key-sorted, so equal values store equal text.

    NaN and infinities are refused: they are not JSON and would break every
    consumer of the event stream. Callers turn them into ``null`` or a failure.
    """
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _loads_obj(text: str | None) -> dict[str, Any]:
    return {} if text is None else dict(json.loads(text))


# -- writing -------------------------------------------------------------------

_NOT_FINISHED = f"status NOT IN {TERMINAL_SQL}"

_INSERT_SWEEP = (
    "INSERT INTO sweeps (id, name, status, spec, spec_json, seed, created_at)"
    f" VALUES (?, ?, '{SweepStatus.RUNNING}', ?, ?, ?, ?)"
)
_INSERT_TRIAL = (
    "INSERT INTO trials (id, sweep_id, bracket, rung, idx, config, resource, parent,"
    " resume_from, status, metrics, scheduled_at, iteration)"
    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{TrialStatus.SCHEDULED}', '{{}}', ?, ?)"
)
_DISPATCHED = f"UPDATE trials SET status = '{TrialStatus.DISPATCHED}', executor = ? WHERE id = ? AND {_NOT_FINISHED}"
_RUNNING = (
    f"UPDATE trials SET status = '{TrialStatus.RUNNING}', executor = COALESCE(?, executor), started_at = ?"
    f" WHERE id = ? AND {_NOT_FINISHED}"
)
_METRICS = (
    "UPDATE trials SET metrics = json_patch(COALESCE(metrics, '{}'), ?)"
    f" WHERE id = ? AND {_NOT_FINISHED}"
)
_TERMINAL = (
    "UPDATE trials SET status = ?, ended_at = ?,"
    " metrics = json_patch(COALESCE(metrics, '{}'), ?), metric = ?,"
    f" reason = ? WHERE id = ? AND {_NOT_FINISHED}"
)
# An interrupted run's metrics go: the next run reports its own from the start.
_INTERRUPTED = (
    f"UPDATE trials SET status = '{TrialStatus.INTERRUPTED}', reason = ?, metrics = '{{}}'"
    f" WHERE id = ? AND {_NOT_FINISHED}"
)
_METRICS_LINE = "INSERT INTO metrics_lines (trial_id, run, seq) VALUES (?, ?, ?)"
_LOST = f"UPDATE trials SET reason = ? WHERE id = ? AND {_NOT_FINISHED}"
_FINISHED = (
    "UPDATE sweeps SET status = ?, finished_at = ?, best_trial_id = ?, best_metric = ?,"
    " reason = ? WHERE id = ?"
)
# An extended sweep runs again: not finished, no final best (hbd extend).
_REOPENED = (
    f"UPDATE sweeps SET status = '{SweepStatus.RUNNING}', finished_at = NULL,"
    " best_trial_id = NULL, best_metric = NULL, reason = NULL WHERE id = ?"
)
LAST_SEQ = "UPDATE sweeps SET last_seq = ? WHERE id = ?"
# Log-only events that may follow a sweep's sweep.finished (checkpoint retention
# deletes the last checkpoints once the sweep ends): a batch of only these does
# not move ``last_seq``, which marks the end of the sweep's event stream.
AFTER_THE_END_TYPES = frozenset({EventType.CHECKPOINT_DELETED})


def _need(event_type: str, payload: Mapping[str, Any], key: str) -> Any:
    try:
        return payload[key]
    except KeyError:
        raise ValueError(f"{event_type} payload lacks {key!r}") from None


def statement(
    sweep_id: str, event_type: str, payload: Mapping[str, Any], at: float
) -> Statement | None:
    """The SQL that projects one event, or None for a log-only event."""
    p, t = payload, event_type
    if t == EventType.SWEEP_SUBMITTED:
        spec_json = dumps(_need(t, p, "spec_json"))
        return _INSERT_SWEEP, (
            sweep_id,
            p.get("name"),
            _need(t, p, "spec"),
            spec_json,
            int(_need(t, p, "seed")),
            at,
        )
    if t == EventType.SWEEP_EXTENDED:
        return _REOPENED, (sweep_id,)
    if t == EventType.SWEEP_FINISHED:
        best = p.get("best") or {}
        return _FINISHED, (
            _need(t, p, "status"),
            at,
            best.get("trial_id"),
            best.get("metric"),
            p.get("reason"),
            sweep_id,
        )
    if t == EventType.TRIAL_SCHEDULED:
        return _INSERT_TRIAL, (
            _need(t, p, "trial_id"),
            sweep_id,
            _need(t, p, "bracket"),
            _need(t, p, "rung"),
            _need(t, p, "index"),
            dumps(_need(t, p, "config")),
            _need(t, p, "resource"),
            p.get("parent"),
            p.get("resume_from"),
            at,
            p.get("iteration") or 0,
        )
    if t == EventType.TRIAL_DISPATCHED:
        return _DISPATCHED, (p.get("executor"), _need(t, p, "trial_id"))
    if t == EventType.TRIAL_RUNNING:
        return _RUNNING, (p.get("executor"), at, _need(t, p, "trial_id"))
    if t == EventType.TRIAL_METRICS:
        return _METRICS, (dumps(p.get("metrics") or {}), _need(t, p, "trial_id"))
    if t in TERMINAL_EVENT_TYPES:
        return _TERMINAL, (
            TERMINAL_EVENT_TYPES[t],
            at,
            dumps(p.get("metrics") or {}),
            p.get("metric"),
            p.get("reason"),
            _need(t, p, "trial_id"),
        )
    if t == EventType.TRIAL_INTERRUPTED:
        return _INTERRUPTED, (p.get("reason"), _need(t, p, "trial_id"))
    if t == EventType.TRIAL_LOST:
        return _LOST, (p.get("reason"), _need(t, p, "trial_id"))
    return None


def statements(
    sweep_id: str, events: Iterable[tuple[str, Mapping[str, Any], float]]
) -> list[Statement]:
    """Projection SQL for a batch, in event order. Raises ValueError on a bad payload."""
    out = []
    for event_type, payload, at in events:
        if event_type == EventType.TRIAL_METRICS:
            seq, run = payload.get("seq"), payload.get("run", 1)
            if isinstance(seq, int) and not isinstance(seq, bool):
                out.append((_METRICS_LINE, (_need(event_type, payload, "trial_id"), run, seq)))
        stmt = statement(sweep_id, event_type, payload, at)
        if stmt is not None:
            out.append(stmt)
    return out


def grouped(stmts: Sequence[Statement]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Runs of the same SQL, for executemany; order across runs is kept."""
    i = 0
    while i < len(stmts):
        sql, j = stmts[i][0], i
        while j < len(stmts) and stmts[j][0] == sql:
            j += 1
        yield sql, [params for _, params in stmts[i:j]]
        i = j


# -- reading -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepRow:
    id: str
    name: str | None
    status: str
    spec: str
    spec_json: dict[str, Any]
    seed: int
    created_at: float | None
    finished_at: float | None
    best_trial_id: str | None
    best_metric: float | None
    reason: str | None
    last_seq: int | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_SWEEP_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRow:
    id: str
    sweep_id: str
    bracket: int | None
    rung: int | None
    idx: int | None
    config: dict[str, Any]
    resource: float | None
    parent: str | None
    resume_from: str | None
    status: str
    executor: str | None
    metrics: dict[str, Any]
    metric: float | None
    reason: str | None
    scheduled_at: float | None
    started_at: float | None
    ended_at: float | None
    iteration: int = 0  # the Hyperband iteration (matrix.iterations, hbd extend)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_TRIAL_STATUSES


_SWEEP_COLS = (
    "id, name, status, spec, spec_json, seed, created_at, finished_at,"
    " best_trial_id, best_metric, reason, last_seq"
)
_TRIAL_COLS = (
    "id, sweep_id, bracket, rung, idx, config, resource, parent, resume_from, status,"
    " executor, metrics, metric, reason, scheduled_at, started_at, ended_at, iteration"
)
_TRIAL_ORDER = "ORDER BY iteration, bracket DESC, rung, idx, id"
_SWEEP_ORDER = "ORDER BY created_at, id"
_FINISHED_SWEEPS_SQL = sql_list(FINISHED_SWEEP_STATUSES)


def _sweep(row: sqlite3.Row) -> SweepRow:
    d = dict(row)
    d["spec_json"] = _loads_obj(d["spec_json"])
    return SweepRow(**d)


def _trial(row: sqlite3.Row) -> TrialRow:
    d = dict(row)
    d["config"] = _loads_obj(d["config"])
    d["metrics"] = _loads_obj(d["metrics"])
    return TrialRow(**d)


async def get_sweep(db: Database, sweep_id: str) -> SweepRow | None:
    row = await db.fetchone(f"SELECT {_SWEEP_COLS} FROM sweeps WHERE id = ?", (sweep_id,))
    return None if row is None else _sweep(row)


async def list_sweeps(db: Database, status: str | None = None) -> list[SweepRow]:
    if status is None:
        rows = await db.fetchall(f"SELECT {_SWEEP_COLS} FROM sweeps {_SWEEP_ORDER}")
    else:
        rows = await db.fetchall(
            f"SELECT {_SWEEP_COLS} FROM sweeps WHERE status = ? {_SWEEP_ORDER}", (status,)
        )
    return [_sweep(r) for r in rows]


async def unfinished_sweep_ids(db: Database) -> list[str]:
    rows = await db.fetchall(
        f"SELECT id FROM sweeps WHERE status NOT IN {_FINISHED_SWEEPS_SQL} {_SWEEP_ORDER}"
    )
    return [r[0] for r in rows]


async def get_trial(db: Database, trial_id: str) -> TrialRow | None:
    row = await db.fetchone(f"SELECT {_TRIAL_COLS} FROM trials WHERE id = ?", (trial_id,))
    return None if row is None else _trial(row)


async def list_trials(
    db: Database,
    sweep_id: str,
    *,
    status: str | None = None,
    bracket: int | None = None,
    rung: int | None = None,
) -> list[TrialRow]:
    where: list[str] = ["sweep_id = ?"]
    params: list[str | int] = [sweep_id]
    for column, value in (("status", status), ("bracket", bracket), ("rung", rung)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = await db.fetchall(
        f"SELECT {_TRIAL_COLS} FROM trials WHERE {' AND '.join(where)} {_TRIAL_ORDER}", params
    )
    return [_trial(r) for r in rows]


async def open_trial_metrics(db: Database, sweep_id: str) -> dict[str, tuple[int, list[str], int]]:
    """For each unfinished trial of a sweep: (last logged metrics seq, metric keys, run).

    The seq is of the trial's latest run with lines (``run``, 1 if none).
    """
    rows = await db.fetchall(
        "SELECT t.id, t.metrics, m.run, m.seq FROM trials AS t"
        " LEFT JOIN metrics_lines AS m ON m.trial_id = t.id AND (m.run, m.seq) = ("
        "  SELECT run, seq FROM metrics_lines WHERE trial_id = t.id"
        "  ORDER BY run DESC, seq DESC LIMIT 1)"
        f" WHERE t.sweep_id = ? AND t.{_NOT_FINISHED}",
        (sweep_id,),
    )
    return {r[0]: (int(r[3] or 0), list(_loads_obj(r[1])), int(r[2] or 1)) for r in rows}


async def trial_counts(db: Database, sweep_id: str) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT status, count(*) FROM trials WHERE sweep_id = ? GROUP BY status ORDER BY status",
        (sweep_id,),
    )
    return {r[0]: r[1] for r in rows}


async def planned_iterations(db: Database, sweep_id: str, asked: int) -> int:
    """Hyperband iterations a sweep plans: the spec's ``asked`` and those ``hbd extend``
    added (its sweep.extended events), as its scheduler counts them. Only an integer
    count is taken (the log's own, never junk), and never more than the limit."""
    row = await db.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN json_valid(payload) THEN"
        " CASE WHEN json_type(payload, '$.iterations') = 'integer'"
        " THEN json_extract(payload, '$.iterations') END END), 0)"
        " FROM events WHERE sweep_id = ? AND type = ?",
        (sweep_id, EventType.SWEEP_EXTENDED),
    )
    extended = int(row[0]) if row is not None else 0
    return min(MAX_HYPERBAND_ITERATIONS, asked + extended)


async def bracket_order(db: Database, sweep_id: str) -> BracketOrder:
    """The order a sweep runs its brackets in, as its ``sweep.submitted`` recorded it
    (``search.opening.order``); a log without it ran Hyperband's."""
    row = await db.fetchone(
        "SELECT CASE WHEN json_valid(payload)"
        " THEN json_extract(payload, '$.search.opening.order') END"
        " FROM events WHERE sweep_id = ? AND type = ? ORDER BY seq LIMIT 1",
        (sweep_id, EventType.SWEEP_SUBMITTED),
    )
    if row is not None and row[0] == "ascending-after-first":
        return "ascending-after-first"
    return "hyperband"


async def checkpoint_summary(db: Database, sweep_id: str) -> dict[str, int]:
    """Checkpoints retention deleted (``checkpoint.deleted`` events) and the bytes freed."""
    rows = await db.fetchall(
        # total(), not sum(): a float that never overflows, whatever the log holds.
        "SELECT count(*), total(json_extract(payload, '$.freed_bytes'))"
        " FROM events WHERE sweep_id = ? AND type = ?",
        (sweep_id, EventType.CHECKPOINT_DELETED),
    )
    deleted, freed = rows[0] if rows else (0, 0)
    return {"deleted": int(deleted), "freed_bytes": int(freed)}


async def rung_progress(db: Database, sweep_id: str) -> list[dict[str, Any]]:
    """Per (iteration, bracket, rung): total trials and counts by status; iterations
    in order, brackets high to low."""
    rows = await db.fetchall(
        "SELECT iteration, bracket, rung, status, count(*) FROM trials WHERE sweep_id = ?"
        " GROUP BY iteration, bracket, rung, status"
        " ORDER BY iteration, bracket DESC, rung, status",
        (sweep_id,),
    )
    out: list[dict[str, Any]] = []
    for iteration, bracket, rung, status, n in rows:
        key = (iteration, bracket, rung)
        if not out or (out[-1]["iteration"], out[-1]["bracket"], out[-1]["rung"]) != key:
            out.append(
                {
                    "iteration": iteration,
                    "bracket": bracket,
                    "rung": rung,
                    "total": 0,
                    "by_status": {},
                }
            )
        out[-1]["total"] += n
        out[-1]["by_status"][status] = n
    return out
