"""Placement as a pure state machine: the dispatch races as tables, no loop, no SQLite, no sleeps.

Each scenario is a table of steps: (time, event, expected actions). An event is
a method of ``Placement`` with its arguments; the expected actions are written
as short tuples (kind, trial[, executor]) so that a table reads as the race it
describes.
"""

from __future__ import annotations

from typing import Any

import pytest

from hbd.core.events import StartTrial
from hbd.daemon.placement import (
    COOLDOWN_BASE,
    LOST_AFTER,
    MAX_DISPATCH_ATTEMPTS,
    SILENCE,
    Action,
    CancelOn,
    CancelUnsent,
    Dispatched,
    Fail,
    IdleReason,
    Lost,
    Phase,
    Placement,
    Poll,
    Send,
    idle_slots,
)
from hbd.protocol import Health

SWEEP = "sw1"


def start(trial_id: str, *, parent: str | None = None, resume: bool = False) -> StartTrial:
    return StartTrial(
        trial_id=trial_id,
        bracket=0,
        rung=1 if parent else 0,
        index=0,
        config={},
        resource=1,
        parent=parent,
        resume_from=f"ckpt/{parent}" if resume and parent else None,
    )


def health(slots: int, gpus: int = 0) -> Health:
    ids = [str(i) for i in range(gpus)]
    return Health(version="t", slots=slots, free_slots=slots, running=[], gpus=ids, free_gpus=ids)


def short(action: Action) -> tuple[str, ...]:
    name = type(action).__name__
    if isinstance(action, Send):
        return (name, action.start.trial_id, action.executor)
    if isinstance(action, Dispatched | CancelOn | Poll):
        return (name, action.trial_id, action.executor)
    assert isinstance(action, Fail | Lost | CancelUnsent)
    return (name, action.trial_id)


def machine(
    executors: dict[str, tuple[int, int]], *, concurrency: int | None = None, gpus: int = 0
) -> Placement:
    """Executors name -> (slots, gpus), all healthy at t=0; one open sweep."""
    p = Placement()
    for name, (slots, devices) in executors.items():
        p.add_executor(name)
        p.health(name, health(slots, devices), 0.0)
    p.open_sweep(SWEEP, concurrency=concurrency, gpus=gpus)
    return p


Step = tuple[float, str, dict[str, Any], list[tuple[str, ...]] | None]


def run(p: Placement, steps: list[Step]) -> None:
    for i, (now, method, kwargs, expected) in enumerate(steps):
        args = dict(kwargs)
        if method == "enqueue":
            args.setdefault("sweep_id", SWEEP)
        if method not in (
            "cancel",
            "dequeue",
            "ended",
            "send_refused",
            "remember",
            "close_sweep",
            "cancel_when_back",
            "lost_cancelled",
        ):
            args["now"] = now
        if method == "health":
            slots, devices = args.pop("h")
            args["health"] = health(slots, devices) if slots is not None else None
        got = getattr(p, method)(**args)
        got = [short(a) for a in got] if isinstance(got, list) else got
        assert got == expected, f"step {i}: {method}({kwargs}) at t={now}"


CANCEL_WHILE_SENDING: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "cancel", {"trial_id": "t1"}, []),  # kept: the submit is on its way
    (
        1,
        "sent",
        {"trial_id": "t1", "finished": False},
        [("Dispatched", "t1", "b"), ("CancelOn", "t1", "b")],
    ),
]
CANCEL_WHILE_SENDING_IT_HAD_ENDED: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "cancel", {"trial_id": "t1"}, []),
    (1, "sent", {"trial_id": "t1", "finished": True}, [("Dispatched", "t1", "b")]),
]
CANCEL_WHILE_SENDING_THEN_BUSY: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "cancel", {"trial_id": "t1"}, []),
    (1, "send_busy", {"trial_id": "t1"}, [("CancelUnsent", "t1")]),
    (2, "place", {}, []),
]
RESULT_BEFORE_SEND_RETURNS: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "ended", {"trial_id": "t1"}, None),  # a callback's result committed first
    (1, "sent", {"trial_id": "t1", "finished": False}, []),
    (1, "polls", {}, []),
]
BUSY_429: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "enqueue", {"start": start("t2")}, []),
    (0, "place", {}, [("Send", "t1", "b"), ("Send", "t2", "b")]),
    (1, "send_busy", {"trial_id": "t1"}, []),  # b is busy: no attempt counted
    (1, "place", {}, [("Send", "t1", "a")]),
    (2, "send_busy", {"trial_id": "t1"}, []),
    (2, "place", {}, []),  # both busy: it waits at the head of the queue
    (2, "ended", {"trial_id": "t2"}, None),  # a slot freed on b: not busy any more
    (2, "place", {}, [("Send", "t1", "b")]),
    (2, "send_busy", {"trial_id": "t1"}, []),
    (3, "health", {"name": "b", "h": (2, 0)}, []),
    (3, "place", {}, [("Send", "t1", "b")]),
]
EXECUTOR_LOST_MID_SEND: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    # A read timeout: it may have arrived, so it is pinned to b (never run twice).
    (0, "send_failed", {"trial_id": "t1", "maybe_sent": True, "error": "timeout"}, []),
    (0.1, "place", {}, []),  # b cools down; a is free but not allowed
    (COOLDOWN_BASE, "place", {}, [("Send", "t1", "b")]),
]
CONNECT_FAILED_GOES_ELSEWHERE: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "send_failed", {"trial_id": "t1", "maybe_sent": False, "error": "refused"}, []),
    (0, "place", {}, [("Send", "t1", "a")]),
]
LOST_AFTER_TIMEOUT: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "sent", {"trial_id": "t1", "finished": False}, [("Dispatched", "t1", "b")]),
    (1, "polls", {}, []),  # heard from at 0
    (SILENCE, "polls", {}, [("Poll", "t1", "b")]),
    (10, "health", {"name": "b", "h": (None, 0)}, []),  # b stops answering at 10
    (11, "polls", {}, []),  # known down: not polled
    (10 + LOST_AFTER - 1, "polls", {}, []),
    (10 + LOST_AFTER, "polls", {}, [("Lost", "t1")]),
    (10 + LOST_AFTER + 5, "polls", {}, []),  # once
    (200, "health", {"name": "b", "h": (2, 0)}, [("CancelOn", "t1", "b")]),
    (201, "health", {"name": "b", "h": (2, 0)}, []),
]
POLL_FINDS_EXECUTOR_GONE: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "sent", {"trial_id": "t1", "finished": False}, [("Dispatched", "t1", "b")]),
    (SILENCE, "poll_unreachable", {"trial_id": "t1", "error": "refused"}, []),
    (
        SILENCE + LOST_AFTER,
        "poll_unreachable",
        {"trial_id": "t1", "error": "refused"},
        [("Lost", "t1")],
    ),
]
NOT_FOUND_SENDS_AGAIN: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, [("Send", "t1", "b")]),
    (0, "sent", {"trial_id": "t1", "finished": False}, [("Dispatched", "t1", "b")]),
    (6, "not_found", {"trial_id": "t1"}, []),
    (6, "place", {}, [("Send", "t1", "b")]),
]
STOPPED_SWEEP_CANCELS_QUEUED: list[Step] = [
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "enqueue", {"start": start("t2")}, []),
    (0, "enqueue", {"start": start("t3")}, []),
    (0, "place", {}, [("Send", "t1", "b"), ("Send", "t2", "b"), ("Send", "t3", "a")]),
    (0, "enqueue", {"start": start("t4")}, []),
    (0, "close_sweep", {"sweep_id": SWEEP}, [("CancelUnsent", "t4")]),
    (1, "enqueue", {"start": start("t5")}, [("CancelUnsent", "t5")]),
]

# A restart sent a maybe-submitted trial elsewhere... but b is the only executor:
# when b answers, its old copy is cancelled first and only then is the trial sent
# there, or the cancel could land after the new submit and kill the new run.
RETURNING_EXECUTOR_CANCELS_BEFORE_IT_RUNS_AGAIN: list[Step] = [
    (0, "health", {"name": "b", "h": (None, 0)}, []),
    (0, "cancel_when_back", {"trial_id": "t1", "names": ["b"]}, None),
    (0, "enqueue", {"start": start("t1")}, []),
    (0, "place", {}, []),
    (5, "health", {"name": "b", "h": (2, 0)}, [("CancelOn", "t1", "b")]),
    (5, "place", {}, []),  # its old copy's cancel is on its way
    (6, "lost_cancelled", {"trial_id": "t1", "name": "b", "ok": False}, None),
    (6, "place", {}, []),  # the cancel failed: it is sent again first
    (7, "health", {"name": "b", "h": (2, 0)}, [("CancelOn", "t1", "b")]),
    (8, "lost_cancelled", {"trial_id": "t1", "name": "b", "ok": True}, None),
    (8, "place", {}, [("Send", "t1", "b")]),
]


def test_a_returning_executor_cancels_an_old_copy_before_it_runs_the_trial_again() -> None:
    p = Placement()
    p.add_executor("b")
    p.open_sweep(SWEEP, concurrency=None)
    run(p, RETURNING_EXECUTOR_CANCELS_BEFORE_IT_RUNS_AGAIN)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(CANCEL_WHILE_SENDING, id="cancel-while-sending"),
        pytest.param(CANCEL_WHILE_SENDING_IT_HAD_ENDED, id="cancel-while-sending-already-ended"),
        pytest.param(CANCEL_WHILE_SENDING_THEN_BUSY, id="cancel-while-sending-then-429"),
        pytest.param(RESULT_BEFORE_SEND_RETURNS, id="result-before-send-returns"),
        pytest.param(BUSY_429, id="429-busy"),
        pytest.param(EXECUTOR_LOST_MID_SEND, id="executor-lost-mid-send"),
        pytest.param(CONNECT_FAILED_GOES_ELSEWHERE, id="connect-failed-goes-elsewhere"),
        pytest.param(LOST_AFTER_TIMEOUT, id="lost-after-timeout"),
        pytest.param(POLL_FINDS_EXECUTOR_GONE, id="poll-finds-executor-gone"),
        pytest.param(NOT_FOUND_SENDS_AGAIN, id="not-found-sends-again"),
        pytest.param(STOPPED_SWEEP_CANCELS_QUEUED, id="stopped-sweep"),
    ],
)
def test_dispatch_race(steps: list[Step]) -> None:
    run(machine({"a": (1, 0), "b": (2, 0)}), steps)


def test_a_slot_is_held_from_send_to_end_and_never_twice() -> None:
    p = machine({"a": (1, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    p.enqueue(SWEEP, start("t2"), 0)
    assert [short(a) for a in p.place(0)] == [("Send", "t1", "a")]
    assert p.place(0) == []  # one slot
    assert p.sending("t1")
    p.sent("t1", 1, finished=False)
    assert not p.sending("t1") and p.flights["t1"].phase is Phase.SENT
    assert p.place(2) == []
    p.ended("t1")
    assert "t1" not in p.flights and p.executors["a"].running == set()
    assert [short(a) for a in p.place(3)] == [("Send", "t2", "a")]


def test_a_trial_no_executor_takes_fails_after_max_attempts_and_is_cancelled_later() -> None:
    p = machine({"b": (1, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    now = 0.0
    for attempt in range(1, MAX_DISPATCH_ATTEMPTS + 1):
        now += 100  # past any cooldown
        assert [short(a) for a in p.place(now)] == [("Send", "t1", "b")]
        got = p.send_failed("t1", now, maybe_sent=True, error="read timeout")
        if attempt < MAX_DISPATCH_ATTEMPTS:
            assert got == []
            assert p.flights["t1"].attempts == attempt
    assert [short(a) for a in got] == [("Fail", "t1")]
    assert isinstance(got[0], Fail) and f"after {MAX_DISPATCH_ATTEMPTS} attempts" in got[0].reason
    assert "t1" not in p.flights and p.executors["b"].running == set()
    # It may have arrived: cancelled once b answers a health check.
    assert [short(a) for a in p.health("b", health(1), now)] == [("CancelOn", "t1", "b")]


def test_cooldown_doubles_per_consecutive_failure_and_ends_on_success() -> None:
    p = machine({"a": (1, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    p.place(0)
    p.send_failed("t1", 0, maybe_sent=False, error="x")
    assert p.executors["a"].down_until == COOLDOWN_BASE
    p.place(COOLDOWN_BASE)
    p.send_failed("t1", COOLDOWN_BASE, maybe_sent=False, error="x")
    assert p.executors["a"].down_until == COOLDOWN_BASE + 2 * COOLDOWN_BASE
    p.place(10)
    p.sent("t1", 10, finished=False)
    assert p.executors["a"].down_until == 0.0 and p.executors["a"].failures == 0


def test_refused_trial_fails_at_once_and_frees_its_slot() -> None:
    p = machine({"a": (1, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    p.place(0)
    got = p.send_refused("t1", "422: bad")
    assert [short(a) for a in got] == [("Fail", "t1")]
    assert p.executors["a"].free == 1 and p.inflight(SWEEP) == set()


def test_concurrency_caps_a_sweep_and_says_so() -> None:
    p = machine({"a": (4, 0)}, concurrency=1)
    p.enqueue(SWEEP, start("t1"), 0)
    p.enqueue(SWEEP, start("t2"), 0)
    assert [short(a) for a in p.place(0)] == [("Send", "t1", "a")]
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.CONCURRENCY_CAP}
    p.ended("t1")
    assert [short(a) for a in p.place(1)] == [("Send", "t2", "a")]
    assert p.idle_reasons(1) == {SWEEP: IdleReason.RUNG_BARRIER}


def test_adoption_after_restart_holds_slots_and_keeps_affinity() -> None:
    """A restart: the log says parent p ran on b; b still has child c1 running (adopted)."""
    p = machine({"a": (2, 0), "b": (1, 0)})
    p.remember("p", "b")
    p.adopt(SWEEP, start("c1"), "b", 0)
    assert p.executors["b"].free == 0 and p.inflight(SWEEP) == {"c1"}
    assert p.flights["c1"].phase is Phase.SENT
    # A resumed promotion of p goes only where p's checkpoint is, and waits for a slot there.
    p.enqueue(SWEEP, start("p2", parent="p", resume=True), 0)
    assert p.flights["p2"].only == "b"
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.AFFINITY}
    p.ended("c1")
    assert [short(a) for a in p.place(1)] == [("Send", "p2", "b")]


def test_affinity_to_an_executor_no_longer_configured_falls_back_with_a_warning() -> None:
    p = machine({"a": (1, 0)})
    p.remember("p", "gone")
    p.enqueue(SWEEP, start("p2", parent="p", resume=True), 0)
    assert p.flights["p2"].only is None
    assert [s.trial_id for s in p.affinity_unknown] == ["p2"]
    assert [short(a) for a in p.place(0)] == [("Send", "p2", "a")]


def test_gpu_trials_go_only_where_enough_devices_are_free() -> None:
    p = machine({"cpu": (8, 0), "gpu": (8, 2)}, gpus=2)
    for t in ("t1", "t2"):
        p.enqueue(SWEEP, start(t), 0)
    # The cpu host has more free slots, but no devices.
    assert [short(a) for a in p.place(0)] == [("Send", "t1", "gpu")]
    assert p.executors["gpu"].free_gpus == 0
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.GPU}
    p.sent("t1", 1, finished=False)
    p.ended("t1")
    assert p.executors["gpu"].free_gpus == 2
    assert [short(a) for a in p.place(2)] == [("Send", "t2", "gpu")]


def test_a_trial_asking_more_gpus_than_any_executor_has_waits_with_reason_gpu() -> None:
    p = machine({"a": (8, 2), "b": (8, 1)}, gpus=4)
    p.enqueue(SWEEP, start("t1"), 0)
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.GPU}
    assert p.flights["t1"].phase is Phase.QUEUED


def test_gpu_trials_waiting_do_not_hold_up_cpu_trials_of_another_sweep() -> None:
    p = machine({"a": (4, 1)}, gpus=2)
    p.open_sweep("cpu", concurrency=None, gpus=0)
    p.enqueue(SWEEP, start("g1"), 0)
    p.enqueue("cpu", start("c1"), 0)
    assert [short(a) for a in p.place(0)] == [("Send", "c1", "a")]


def test_no_healthy_executor_is_the_idle_reason_no_executor() -> None:
    p = machine({"a": (1, 0)})
    p.health("a", None, 0)
    p.enqueue(SWEEP, start("t1"), 0)
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.NO_EXECUTOR}


def test_forget_sweep_frees_everything_it_held() -> None:
    p = machine({"a": (2, 1)}, gpus=1)
    p.enqueue(SWEEP, start("t1"), 0)
    p.enqueue(SWEEP, start("t2"), 0)
    p.place(0)
    p.forget_sweep(SWEEP, ["t1", "t2"])
    assert p.flights == {} and p.queued() == 0 and p.sweeps == {}
    assert p.executors["a"].running == set() and p.executors["a"].gpus_held == 0
    assert p.executor_of("t1") is None


@pytest.mark.parametrize(
    ("executors", "sweep_gpus", "queued", "sent", "expected"),
    [
        # nothing runs, nothing waits
        ({"a": (2, 0)}, 0, 0, 0, {IdleReason.NO_WORK: 2}),
        # one runs, nothing waits: the rest of a's slots wait for the rung
        ({"a": (2, 0)}, 0, 0, 1, {IdleReason.RUNG_BARRIER: 1}),
        # a GPU trial waits on a host with slots and no free device
        ({"a": (4, 1)}, 1, 1, 1, {IdleReason.GPU: 3}),
        # down executors' free slots are no_executor whatever waits
        (
            {"a": (2, 0), "down": (3, 0)},
            0,
            0,
            0,
            {IdleReason.NO_EXECUTOR: 3, IdleReason.NO_WORK: 2},
        ),
    ],
)
def test_metrics_idle_slots_use_the_same_classifier(
    executors: dict[str, tuple[int, int]],
    sweep_gpus: int,
    queued: int,
    sent: int,
    expected: dict[IdleReason, int],
) -> None:
    p = machine(executors, gpus=sweep_gpus)
    if "down" in executors:
        p.health("down", None, 0)
    for i in range(sent + queued):
        p.enqueue(SWEEP, start(f"t{i}"), 0)
        if i < sent:
            assert p.place(0)
    got = {r: n for r, n in idle_slots(p, 0).items() if n}
    assert got == expected


def test_a_finished_sweep_places_nothing_and_holds_nothing() -> None:
    p = machine({"a": (2, 0)})
    p.forget_sweep(SWEEP)
    assert [short(a) for a in p.enqueue(SWEEP, start("late"), 1)] == [("CancelUnsent", "late")]
    p.adopt(SWEEP, start("found"), "a", 1)
    assert p.flights == {} and p.executors["a"].free == 2
    assert p.close_sweep(SWEEP) == []


def test_a_poll_decided_earlier_lapses_when_the_trial_was_heard_from_meanwhile() -> None:
    p = machine({"a": (2, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    p.place(0)
    p.sent("t1", 0, finished=False)
    assert [short(a) for a in p.polls(SILENCE)] == [("Poll", "t1", "a")]
    assert p.poll_due("t1", SILENCE)
    p.heard("t1", SILENCE + 0.1)  # a callback while an earlier poll was awaited
    assert not p.poll_due("t1", SILENCE + 0.2)
    p.ended("t1")
    assert not p.poll_due("t1", 100)


def test_placement_is_pure_it_imports_no_io_no_clock_and_no_shell() -> None:
    """Placement takes ``now`` from its caller; the shells import it, never the reverse."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import hbd.daemon.placement as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert not {"time", "os", "random", "asyncio", "anyio"} & imported, imported
    forbidden = ["anyio", "httpx", "aiosqlite", "structlog", "sqlite3", "hbd.daemon.app"]
    forbidden += [f"hbd.daemon.{m}" for m in ("dispatcher", "reconciler", "runner", "executors")]
    code = (
        f"import sys, hbd.daemon.placement; print([m for m in {forbidden!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_devices_an_executor_reports_taken_by_others_are_not_offered() -> None:
    p = machine({"a": (4, 2)}, gpus=2)
    taken = Health(version="t", slots=4, free_slots=4, running=[], gpus=["0", "1"], free_gpus=["1"])
    p.health("a", taken, 0)
    p.enqueue(SWEEP, start("t1"), 0)
    assert p.place(0) == []
    assert p.idle_reasons(0) == {SWEEP: IdleReason.GPU}
    p.health("a", health(4, 2), 1)  # the other user let go
    assert [short(a) for a in p.place(1)] == [("Send", "t1", "a")]
    # Our own trial's devices, reported taken, are not counted twice.
    ours = Health(version="t", slots=4, free_slots=3, running=["t1"], gpus=["0", "1"], free_gpus=[])
    p.health("a", ours, 2)
    assert p.executors["a"].gpus_other == 0
