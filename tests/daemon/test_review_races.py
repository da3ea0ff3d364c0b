"""Review of placement: dispatch races the first tables missed, as pure table tests."""

from __future__ import annotations

from hbd.daemon.placement import LOST_AFTER
from tests.daemon.test_placement import SWEEP, machine, run, short, start


def test_cancel_while_sending_then_a_timeout_cancels_it_where_it_may_have_arrived() -> None:
    # The submit may have reached b (a read timeout) while a cancel was pending:
    # the trial is recorded cancelled and its slot freed, so b must be told to
    # cancel it once it answers, or it runs there untracked (past concurrency).
    run(
        machine({"a": (1, 0), "b": (2, 0)}),
        [
            (0, "enqueue", {"start": start("t1")}, []),
            (0, "place", {}, [("Send", "t1", "b")]),
            (0, "cancel", {"trial_id": "t1"}, []),
            (
                1,
                "send_failed",
                {"trial_id": "t1", "maybe_sent": True, "error": "timeout"},
                [("CancelUnsent", "t1")],
            ),
            (2, "health", {"name": "b", "h": (2, 0)}, [("CancelOn", "t1", "b")]),
            (3, "health", {"name": "b", "h": (2, 0)}, []),
        ],
    )


def test_cancel_while_sending_then_connect_refused_needs_no_cancel() -> None:
    # It never left: nothing to cancel anywhere.
    p = machine({"a": (1, 0), "b": (2, 0)})
    p.enqueue(SWEEP, start("t1"), 0)
    assert [short(a) for a in p.place(0)] == [("Send", "t1", "b")]
    p.cancel("t1")
    got = p.send_failed("t1", 1, maybe_sent=False, error="refused")
    assert [short(a) for a in got] == [("CancelUnsent", "t1")]
    assert p.executors["b"].lost == set() and p.executors["b"].running == set()


def test_a_trial_pinned_to_an_executor_that_never_comes_back_is_lost_not_queued_for_ever() -> None:
    # A read timeout pins the trial to b (it may be running there); b then stops
    # answering for good. Without an end the trial's rung waits for ever: like a
    # sent trial, it is lost once b has been away lost_after (and cancelled there
    # if b ever answers).
    run(
        machine({"a": (1, 0), "b": (2, 0)}),
        [
            (0, "enqueue", {"start": start("t1")}, []),
            (0, "place", {}, [("Send", "t1", "b")]),
            (0, "send_failed", {"trial_id": "t1", "maybe_sent": True, "error": "timeout"}, []),
            (1, "health", {"name": "b", "h": (None, 0)}, []),
            (2, "place", {}, []),
            (1 + LOST_AFTER - 1, "polls", {}, []),
            (1 + LOST_AFTER, "polls", {}, [("Lost", "t1")]),
            (1 + LOST_AFTER, "place", {}, []),
            (1 + LOST_AFTER + 5, "polls", {}, []),  # once
            (200, "health", {"name": "b", "h": (2, 0)}, [("CancelOn", "t1", "b")]),
            (200, "place", {}, []),
            (200, "ended", {"trial_id": "t1"}, None),
        ],
    )
