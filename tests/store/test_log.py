"""The event log and its projections: lifecycle, reads, idempotence, append-only."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from hbd.errors import ConflictError
from hbd.store import Store

from .conftest import SWEEP, scheduled, submitted

pytestmark = pytest.mark.anyio


async def test_full_trial_lifecycle_projects_each_step(store: Store) -> None:
    await store.append(SWEEP, [submitted()], at=10.0)
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None
    assert (sweep.status, sweep.name, sweep.seed, sweep.created_at) == ("running", "demo", 7, 10.0)
    assert sweep.spec.startswith("matrix:") and sweep.spec_json == {"kind": "hyperband"}
    assert await store.unfinished_sweep_ids() == [SWEEP]

    await store.append(SWEEP, [scheduled("t1", resume_from="ckpt/t0")], at=11.0)
    t = await store.get_trial("t1")
    assert t is not None
    assert (t.status, t.bracket, t.rung, t.idx, t.resource) == ("scheduled", 2, 0, 0, 9.0)
    assert (t.config, t.metrics, t.scheduled_at, t.resume_from) == (
        {"lr": 0.01, "layers": 3},
        {},
        11.0,
        "ckpt/t0",
    )

    await store.append(
        SWEEP, [("trial.dispatched", {"trial_id": "t1", "executor": "gpu-a"})], at=12.0
    )
    t = await store.get_trial("t1")
    assert t is not None and (t.status, t.executor) == ("dispatched", "gpu-a")

    await store.append(
        SWEEP,
        [
            ("trial.running", {"trial_id": "t1", "executor": "gpu-a"}),
            ("trial.metrics", {"trial_id": "t1", "metrics": {"loss": 2.0, "acc": 0.1}, "seq": 1}),
            ("trial.metrics", {"trial_id": "t1", "metrics": {"loss": 1.5}, "seq": 2}),
        ],
        at=13.0,
    )
    t = await store.get_trial("t1")
    assert t is not None
    assert (t.status, t.started_at, t.metrics) == ("running", 13.0, {"loss": 1.5, "acc": 0.1})

    await store.append(
        SWEEP,
        [("trial.succeeded", {"trial_id": "t1", "metrics": {"acc": 0.9}, "metric": 0.9})],
        at=14.0,
    )
    t = await store.get_trial("t1")
    assert t is not None and t.finished
    assert (t.status, t.ended_at, t.metric, t.metrics) == (
        "succeeded",
        14.0,
        0.9,
        {"loss": 1.5, "acc": 0.9},
    )

    # Late status from a poll that crossed the callback: logged, projection untouched.
    await store.append(
        SWEEP,
        [
            ("trial.running", {"trial_id": "t1", "executor": "gpu-b"}),
            ("trial.metrics", {"trial_id": "t1", "metrics": {"acc": 0.1}, "seq": 3}),
            ("trial.lost", {"trial_id": "t1", "reason": "agent restarted"}),
        ],
        at=15.0,
    )
    assert await store.get_trial("t1") == t

    await store.append(
        SWEEP,
        [
            ("rung.decided", {"bracket": 2, "rung": 0, "promoted": ["t1"]}),
            (
                "sweep.finished",
                {
                    "status": "succeeded",
                    "reason": "all brackets done",
                    "best": {"trial_id": "t1", "config": {"lr": 0.01}, "metric": 0.9},
                },
            ),
        ],
        at=16.0,
    )
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None and sweep.finished
    assert (
        sweep.status,
        sweep.finished_at,
        sweep.best_trial_id,
        sweep.best_metric,
        sweep.reason,
    ) == (
        "succeeded",
        16.0,
        "t1",
        0.9,
        "all brackets done",
    )
    assert sweep.last_seq == await store.last_seq() == 12
    assert await store.unfinished_sweep_ids() == []
    assert [s.id for s in await store.list_sweeps("succeeded")] == [SWEEP]
    assert await store.list_sweeps("running") == []


async def test_failed_and_cancelled_keep_reason(store: Store) -> None:
    await store.append(SWEEP, [submitted(), scheduled("a"), scheduled("b", index=1)], at=1.0)
    await store.append(
        SWEEP,
        [
            ("trial.lost", {"trial_id": "a", "reason": "no heartbeat"}),
            ("trial.failed", {"trial_id": "a", "reason": "exit 1", "stderr_tail": "oops"}),
            ("trial.cancelled", {"trial_id": "b", "reason": "sweep stopping"}),
        ],
        at=2.0,
    )
    a, b = await store.get_trial("a"), await store.get_trial("b")
    assert a is not None and (a.status, a.reason, a.metric, a.ended_at) == (
        "failed",
        "exit 1",
        None,
        2.0,
    )
    assert b is not None and (b.status, b.reason) == ("cancelled", "sweep stopping")
    assert await store.trial_counts(SWEEP) == {"cancelled": 1, "failed": 1}


async def test_sweep_finished_with_no_best(store: Store) -> None:
    await store.append(SWEEP, [submitted(), ("sweep.stop_requested", {"reason": "user"})], at=1.0)
    await store.append(
        SWEEP, [("sweep.finished", {"status": "stopped", "reason": "user", "best": None})], at=2.0
    )
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None
    assert (sweep.status, sweep.best_trial_id, sweep.best_metric) == ("stopped", None, None)


async def test_list_trials_order_filters_and_rung_progress(store: Store) -> None:
    await store.append(
        SWEEP,
        [
            submitted(),
            scheduled("b0r0i1", bracket=0, rung=0, index=1),
            scheduled("b0r0i0", bracket=0, rung=0, index=0),
            scheduled("b2r1i0", bracket=2, rung=1, index=0),
            scheduled("b2r0i0", bracket=2, rung=0, index=0),
            scheduled("b2r0i1", bracket=2, rung=0, index=1),
            ("trial.dispatched", {"trial_id": "b2r0i1", "executor": "e"}),
        ],
        at=1.0,
    )
    ids = [t.id for t in await store.list_trials(SWEEP)]
    assert ids == ["b2r0i0", "b2r0i1", "b2r1i0", "b0r0i0", "b0r0i1"]
    assert [t.id for t in await store.list_trials(SWEEP, status="dispatched")] == ["b2r0i1"]
    assert [t.id for t in await store.list_trials(SWEEP, bracket=2, rung=0)] == ["b2r0i0", "b2r0i1"]
    assert await store.list_trials("other") == []
    assert await store.get_trial("nope") is None and await store.get_sweep("nope") is None
    assert await store.rung_progress(SWEEP) == [
        {
            "iteration": 0,
            "bracket": 2,
            "rung": 0,
            "total": 2,
            "by_status": {"dispatched": 1, "scheduled": 1},
        },
        {"iteration": 0, "bracket": 2, "rung": 1, "total": 1, "by_status": {"scheduled": 1}},
        {"iteration": 0, "bracket": 0, "rung": 0, "total": 2, "by_status": {"scheduled": 2}},
    ]


async def test_read_after_orders_filters_and_pages(store: Store) -> None:
    await store.append("A", [submitted()], at=1.0)
    await store.append("B", [submitted()], at=1.0)
    await store.append("A", [scheduled("a1"), ("capacity.idle", {"free": 3})], at=2.0)
    await store.append("B", [scheduled("b1"), ("x.custom", {"anything": [1, 2]})], at=3.0)

    everything = await store.read_after(0)
    assert [e.seq for e in everything] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in await store.read_after(4)] == [5, 6]
    assert [e.seq for e in await store.read_after(0, sweep_id="A")] == [1, 3, 4]
    assert [e.type for e in await store.read_after(0, types={"trial.scheduled"})] == [
        "trial.scheduled",
        "trial.scheduled",
    ]
    assert [
        e.trial_id for e in await store.read_after(0, sweep_id="B", types=["trial.scheduled"])
    ] == ["b1"]
    assert await store.read_after(0, types=[]) == []
    assert [e.seq for e in await store.read_after(1, limit=2)] == [2, 3]
    assert await store.read_after(6) == []
    assert await store.sweep_events("B") == [e for e in everything if e.sweep_id == "B"]
    custom = everything[-1]
    assert (custom.type, custom.payload, custom.trial_id, custom.at) == (
        "x.custom",
        {"anything": [1, 2]},
        None,
        3.0,
    )
    with pytest.raises(ValueError):
        await store.read_after(0, limit=0)


async def test_append_returns_what_readers_see(store: Store) -> None:
    stored = await store.append(SWEEP, [submitted(), scheduled("t1")], at=5.0)
    assert stored == await store.read_after(0)
    assert stored[1].trial_id == "t1" and stored[0].trial_id is None
    assert await store.append(SWEEP, [], at=6.0) == []


async def test_payload_json_is_canonical(store: Store) -> None:
    await store.append(SWEEP, [("note", {"b": 1, "a": [1.5, "x"]})], at=1.0)
    rows = await store.db.fetchall("SELECT payload FROM events")
    assert rows[0][0] == json.dumps({"a": [1.5, "x"], "b": 1}, separators=(",", ":"))


@pytest.mark.parametrize(
    "event",
    [
        ("trial.scheduled", {"trial_id": "t"}),  # lacks bracket, rung, ...
        ("trial.running", {"executor": "e"}),  # lacks trial_id
        ("trial.succeeded", {"trial_id": "t", "metric": math.nan}),  # not JSON
        ("note", ["not", "an", "object"]),
        ("note", {"when": object()}),
    ],
)
async def test_bad_payload_is_refused_before_any_write(
    store: Store, event: tuple[str, Any]
) -> None:
    await store.append(SWEEP, [submitted()], at=1.0)
    with pytest.raises((ValueError, TypeError)):
        await store.append(SWEEP, [scheduled("ok"), event], at=2.0)
    assert await store.event_count() == 1


@pytest.mark.parametrize(
    "duplicate",
    [
        ("trial.failed", {"trial_id": "t1", "reason": "late poll"}),
        ("trial.succeeded", {"trial_id": "t1", "metric": 0.5}),
        ("trial.cancelled", {"trial_id": "t1", "reason": "stop"}),
    ],
)
async def test_second_terminal_event_rolls_back_whole_batch(
    store: Store, duplicate: tuple[str, dict[str, Any]]
) -> None:
    await store.append(SWEEP, [submitted(), scheduled("t1")], at=1.0)
    await store.append(SWEEP, [("trial.succeeded", {"trial_id": "t1", "metric": 0.9})], at=2.0)
    count, trial, sweep = (
        await store.event_count(),
        await store.get_trial("t1"),
        await store.get_sweep(SWEEP),
    )

    batch = [
        scheduled("t2", index=1),
        ("trial.dispatched", {"trial_id": "t2", "executor": "e"}),
        duplicate,
    ]
    with pytest.raises(ConflictError):
        await store.append(SWEEP, batch, at=3.0)

    assert await store.event_count() == count
    assert await store.get_trial("t2") is None
    assert await store.get_trial("t1") == trial
    assert await store.get_sweep(SWEEP) == sweep
    # The log continues without a gap.
    assert [e.seq for e in await store.append(SWEEP, batch[:2], at=4.0)] == [count + 1, count + 2]


async def test_duplicates_within_one_batch_and_other_uniques(store: Store) -> None:
    await store.append(SWEEP, [submitted()], at=1.0)
    with pytest.raises(ConflictError):
        await store.append(SWEEP, [scheduled("t1"), scheduled("t1")], at=2.0)
    with pytest.raises(ConflictError):
        await store.append(SWEEP, [submitted()], at=2.0)
    finished = ("sweep.finished", {"status": "failed", "reason": "x", "best": None})
    await store.append(SWEEP, [finished], at=3.0)
    with pytest.raises(ConflictError):
        await store.append(SWEEP, [finished], at=4.0)
    with pytest.raises(ConflictError):  # foreign key: no such sweep
        await store.append("ghost", [scheduled("g1")], at=5.0)
    assert await store.event_count() == 2
    # An extension (hbd extend) reopens the sweep: one more finish, and only one.
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None and sweep.finished
    await store.append(SWEEP, [("sweep.extended", {"iterations": 1})], at=6.0)
    sweep = await store.get_sweep(SWEEP)
    assert sweep is not None and not sweep.finished and sweep.finished_at is None
    await store.append(SWEEP, [finished], at=7.0)
    with pytest.raises(ConflictError):
        await store.append(SWEEP, [finished], at=8.0)
    assert await store.event_count() == 4


async def test_finished_trial_row_cannot_change(store: Store) -> None:
    await store.append(SWEEP, [submitted(), scheduled("t1")], at=1.0)
    await store.append(SWEEP, [("trial.failed", {"trial_id": "t1", "reason": "oom"})], at=2.0)
    before = await store.get_trial("t1")
    with pytest.raises(ConflictError, match="finished trial"):
        async with store.db.transaction() as tx:
            await tx.execute("UPDATE trials SET status = 'running' WHERE id = 't1'")
    assert await store.get_trial("t1") == before


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'x' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 1",
        "DELETE FROM events",
    ],
)
async def test_events_are_append_only(store: Store, sql: str) -> None:
    stored = await store.append(SWEEP, [submitted()], at=1.0)
    with pytest.raises(ConflictError, match="append-only"):
        async with store.db.transaction() as tx:
            await tx.execute(sql)
    assert await store.read_after(0) == stored
