"""Placement of resumed promotions when checkpoints are shared (issue 14 item 2).

Pure, in the style of test_placement.py: steps of (now, method, kwargs,
expected actions) against a Placement, no sleeps, no I/O. With shared
checkpoints (a path every executor mounts, or a URL) a promotion prefers its
parent's executor and otherwise goes to any free one; without, it waits for
its parent's executor (the ``affinity`` idle reason).
"""

from __future__ import annotations

import pytest

from hbd.daemon.placement import COOLDOWN_BASE, IdleReason, Placement
from tests.daemon.test_placement import SWEEP, Step, health, run, start


def two(shared: bool, a: int = 2, b: int = 1) -> Placement:
    """Executors a and b, healthy at t=0; parent p ran on b; one open sweep."""
    p = Placement(shared_checkpoints=shared)
    for name, slots in (("a", a), ("b", b)):
        p.add_executor(name)
        p.health(name, health(slots), 0.0)
    p.open_sweep(SWEEP, concurrency=None, gpus=0)
    p.remember("p", "b")
    return p


CHILD = start("p2", parent="p", resume=True)

# shared, parent's executor free: it goes there although a has more free slots
PREFERS_PARENT: list[Step] = [
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, [("Send", "p2", "b")]),
]
# shared, parent's executor full: any other free executor
PARENT_FULL_GOES_ELSEWHERE: list[Step] = [
    (0, "enqueue", {"start": start("x")}, []),
    (0, "enqueue", {"start": start("y")}, []),
    (0, "enqueue", {"start": start("z")}, []),
    (0, "place", {}, [("Send", "x", "a"), ("Send", "y", "b"), ("Send", "z", "a")]),
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, []),  # every slot taken: it waits, busy rather than idle
    (1, "ended", {"trial_id": "x"}, None),  # a frees a slot, b is still full
    (1, "place", {}, [("Send", "p2", "a")]),
]
# shared, parent's executor answered 429: the next try goes elsewhere
PARENT_BUSY_GOES_ELSEWHERE: list[Step] = [
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, [("Send", "p2", "b")]),
    (1, "send_busy", {"trial_id": "p2"}, []),
    (1, "place", {}, [("Send", "p2", "a")]),
]
# shared, parent's executor down: elsewhere
PARENT_DOWN_GOES_ELSEWHERE: list[Step] = [
    (0, "health", {"name": "b", "h": (None, 0)}, []),
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, [("Send", "p2", "a")]),
]
# shared, but the submit may have arrived at b: never elsewhere (it could run twice)
MAYBE_SENT_STAYS_PINNED: list[Step] = [
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, [("Send", "p2", "b")]),
    (0, "send_failed", {"trial_id": "p2", "maybe_sent": True, "error": "timeout"}, []),
    (0.1, "place", {}, []),
    (COOLDOWN_BASE, "place", {}, [("Send", "p2", "b")]),
]
# not shared: the child waits for b even with a free
NOT_SHARED_WAITS_FOR_PARENT: list[Step] = [
    (0, "enqueue", {"start": start("y")}, []),
    (0, "place", {}, [("Send", "y", "a")]),
    (0, "enqueue", {"start": start("z")}, []),
    (0, "place", {}, [("Send", "z", "b")]),
    (0, "enqueue", {"start": CHILD}, []),
    (0, "place", {}, []),
    (1, "ended", {"trial_id": "z"}, None),
    (1, "place", {}, [("Send", "p2", "b")]),
]


@pytest.mark.parametrize(
    ("shared", "steps"),
    [
        pytest.param(True, PREFERS_PARENT, id="shared-prefers-parent"),
        pytest.param(True, PARENT_FULL_GOES_ELSEWHERE, id="shared-parent-full"),
        pytest.param(True, PARENT_BUSY_GOES_ELSEWHERE, id="shared-parent-429"),
        pytest.param(True, PARENT_DOWN_GOES_ELSEWHERE, id="shared-parent-down"),
        pytest.param(True, MAYBE_SENT_STAYS_PINNED, id="shared-maybe-sent-pinned"),
        pytest.param(False, PREFERS_PARENT, id="local-parent-free"),
        pytest.param(False, NOT_SHARED_WAITS_FOR_PARENT, id="local-waits-for-parent"),
    ],
)
def test_promotion_placement_with_and_without_shared_checkpoints(
    shared: bool, steps: list[Step]
) -> None:
    run(two(shared), steps)


@pytest.mark.parametrize("shared", [True, False])
def test_idle_reason_affinity_only_without_shared_checkpoints(shared: bool) -> None:
    """b full, a free, a promotion of p waiting: affinity only when it cannot go to a."""
    p = two(shared, a=1, b=1)
    p.enqueue(SWEEP, start("z"), 0)
    assert [a.executor for a in p.place(0)] == ["b"]  # type: ignore[union-attr]
    p.enqueue(SWEEP, CHILD, 0)
    if shared:
        assert p.flights["p2"].only is None and p.flights["p2"].prefer == "b"
        assert [a.executor for a in p.place(0)] == ["a"]  # type: ignore[union-attr]
        assert p.idle_reasons(0) == {SWEEP: None}
    else:
        assert p.flights["p2"].only == "b"
        assert p.place(0) == []
        assert p.idle_reasons(0) == {SWEEP: IdleReason.AFFINITY}


def test_shared_checkpoints_and_an_unknown_parent_executor_is_no_warning() -> None:
    """With shared checkpoints a parent whose executor is gone is not a problem to report."""
    p = Placement(shared_checkpoints=True)
    p.add_executor("a")
    p.health("a", health(1), 0.0)
    p.open_sweep(SWEEP, concurrency=None, gpus=0)
    p.remember("p", "gone")
    p.enqueue(SWEEP, CHILD, 0)
    assert p.affinity_unknown == []
    assert [a.executor for a in p.place(0)] == ["a"]  # type: ignore[union-attr]
