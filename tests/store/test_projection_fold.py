"""Property: the projection equals a pure-Python fold of the committed events.

Random batches of lifecycle events for a few trials (in any order, with
repeats, late arrivals and events for unknown trials) are appended; a batch
with a repeat must fail whole. Afterwards every trial row must equal what the
fold below computes from the events the store reports as committed, and seqs
must be gap-free.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hbd.core.vocabulary import TERMINAL_EVENT_TYPES, TERMINAL_TRIAL_STATUSES
from hbd.errors import ConflictError
from hbd.store import Store, open_store

from .conftest import SWEEP, submitted

TRIALS = ["t0", "t1", "t2"]
# Weighted by repetition: mid-life events are common, so that trials live long
# enough for merges and late arrivals to matter.
TYPES = [
    "trial.scheduled",
    "trial.dispatched",
    "trial.running",
    "trial.running",
    "trial.metrics",
    "trial.metrics",
    "trial.metrics",
    "trial.succeeded",
    "trial.failed",
    "trial.cancelled",
    "trial.lost",
    "trial.cancel_requested",
    "capacity.idle",
]

values = (
    st.none()
    | st.integers(-10, 10)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
metrics = st.dictionaries(st.sampled_from(["loss", "acc", "step"]), values, max_size=3)
reasons = st.none() | st.text(max_size=4)
executors = st.none() | st.sampled_from(["e1", "e2"])


@st.composite
def event(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(TYPES))
    tid = draw(st.sampled_from(TRIALS))
    if kind == "trial.scheduled":
        return kind, {
            "trial_id": tid,
            "bracket": draw(st.integers(0, 2)),
            "rung": draw(st.integers(0, 2)),
            "index": draw(st.integers(0, 5)),
            "config": {"x": draw(values)},
            "resource": draw(st.floats(0.5, 81)),
            "parent": None,
            "resume_from": draw(st.none() | st.just("c")),
        }
    if kind in ("trial.dispatched", "trial.running"):
        return kind, {"trial_id": tid, "executor": draw(executors)}
    if kind == "trial.metrics":
        return kind, {"trial_id": tid, "metrics": draw(metrics), "seq": draw(st.integers(0, 9))}
    if kind in TERMINAL_EVENT_TYPES:
        return kind, {
            "trial_id": tid,
            "metrics": draw(metrics),
            "reason": draw(reasons),
            "metric": draw(st.none() | st.floats(-1e6, 1e6)),
        }
    if kind == "trial.lost":
        return kind, {"trial_id": tid, "reason": draw(reasons)}
    if kind == "trial.cancel_requested":
        return kind, {"trial_ids": [tid], "reason": draw(reasons)}
    return kind, {"free": draw(st.integers(0, 4))}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 for flat objects: last value per key, null removes the key."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def would_conflict(
    history: list[tuple[str, dict[str, Any]]], batch: list[tuple[str, dict[str, Any]]]
) -> bool:
    seen: set[tuple[str, str]] = set()
    for kind, payload in history + batch:
        group = "terminal" if kind in TERMINAL_EVENT_TYPES else kind
        if group in ("terminal", "trial.scheduled"):
            key = (group, payload["trial_id"])
            if key in seen:
                return True
            seen.add(key)
        if kind == "trial.metrics":  # one event per (trial, metrics line)
            line = ("metrics", f"{payload['trial_id']}:{payload['seq']}")
            if line in seen:
                return True
            seen.add(line)
    return False


def fold(events: list[tuple[str, dict[str, Any], float]]) -> dict[str, dict[str, Any]]:
    trials: dict[str, dict[str, Any]] = {}
    for kind, p, at in events:
        tid = p.get("trial_id")
        if kind == "trial.scheduled":
            trials[p["trial_id"]] = {
                "status": "scheduled",
                "bracket": p["bracket"],
                "rung": p["rung"],
                "idx": p["index"],
                "config": p["config"],
                "resource": p["resource"],
                "resume_from": p["resume_from"],
                "executor": None,
                "metrics": {},
                "metric": None,
                "reason": None,
                "scheduled_at": at,
                "started_at": None,
                "ended_at": None,
            }
            continue
        t = trials.get(tid) if isinstance(tid, str) else None
        if t is None or t["status"] in TERMINAL_TRIAL_STATUSES:
            continue
        if kind == "trial.dispatched":
            t.update(status="dispatched", executor=p["executor"])
        elif kind == "trial.running":
            t.update(status="running", started_at=at)
            if p["executor"] is not None:
                t["executor"] = p["executor"]
        elif kind == "trial.metrics":
            t["metrics"] = merge_patch(t["metrics"], p["metrics"])
        elif kind in TERMINAL_EVENT_TYPES:
            t.update(
                status=TERMINAL_EVENT_TYPES[kind],
                ended_at=at,
                metric=p["metric"],
                reason=p["reason"],
            )
            t["metrics"] = merge_patch(t["metrics"], p["metrics"])
        elif kind == "trial.lost":
            t["reason"] = p["reason"]
    return trials


async def check(store: Store, batches: list[list[tuple[str, dict[str, Any]]]]) -> None:
    await store.append(SWEEP, [submitted()], at=0.0)
    history: list[tuple[str, dict[str, Any]]] = []
    for n, batch in enumerate(batches, start=1):
        expect_conflict = would_conflict(history, batch)
        try:
            await store.append(SWEEP, batch, at=float(n))
        except ConflictError:
            assert expect_conflict
        else:
            assert not expect_conflict
            history += batch

    log = await store.sweep_events(SWEEP)
    assert [e.seq for e in log] == list(range(1, len(history) + 2))
    assert [(e.type, e.payload) for e in log[1:]] == history
    expected = fold([(e.type, e.payload, e.at) for e in log])
    rows = {t.id: t for t in await store.list_trials(SWEEP)}
    assert rows.keys() == expected.keys()
    for tid, want in expected.items():
        got = rows[tid]
        assert {k: getattr(got, k) for k in want} == want, tid
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None and sweep.last_seq == len(history) + 1


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    schedule_first=st.sets(st.sampled_from(TRIALS)),
    batches=st.lists(st.lists(event(), min_size=1, max_size=4), min_size=1, max_size=12),
)
def test_projection_is_a_fold_of_the_log(
    schedule_first: set[str], batches: list[list[tuple[str, dict[str, Any]]]]
) -> None:
    # Usually start with some trials already scheduled, so later events find them.
    first = [
        (
            "trial.scheduled",
            {
                "trial_id": tid,
                "bracket": 1,
                "rung": 0,
                "index": i,
                "config": {},
                "resource": 3.0,
                "parent": None,
                "resume_from": None,
            },
        )
        for i, tid in enumerate(sorted(schedule_first))
    ]
    if first:
        batches = [first, *batches]

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with await open_store(Path(tmp) / "fold.sqlite3") as store:
                await check(store, batches)

    anyio.run(run)
