"""Anytime results: the daemon dispatches deeper rungs first; only timing changes."""

from __future__ import annotations

import zlib
from typing import Any

from hbd.core.events import Begin, StartTrial
from hbd.daemon.placement import Send
from tests.core.helpers import canonical, make_machine
from tests.core.test_search import noisy
from tests.daemon.test_placement import SWEEP, machine


def at(trial_id: str, rung: int) -> StartTrial:
    return StartTrial(
        trial_id=trial_id,
        bracket=2,
        rung=rung,
        index=0,
        config={},
        resource=1,
        parent=None,
        resume_from=None,
    )


def test_promotions_queued_after_first_rung_trials_are_sent_first_deepest_first() -> None:
    p = machine({"e1": (1, 0)})
    for tid, rung in [("a", 0), ("b", 0), ("c", 1), ("d", 2), ("e", 1)]:
        assert p.enqueue(SWEEP, at(tid, rung), 0.0) == []
    sent: list[str] = []
    for t in range(5):  # one slot: each trial is sent, then ends
        sent += [a.start.trial_id for a in p.place(float(t)) if isinstance(a, Send)]
        p.sent(sent[-1], float(t), finished=False)
        p.ended(sent[-1])
    assert sent == ["d", "c", "e", "a", "b"]  # deeper first, FIFO within a rung


def test_dispatching_deeper_rungs_first_changes_no_decision_only_their_timing() -> None:
    """One slot, the core's decisions fed back: FIFO and rung-first decide the same."""
    for seed in range(3):
        runs = []
        for deeper_first in (False, True):
            m = make_machine(max_iterations=27, seed=seed)
            pending = [d for d in m.handle(Begin()) if isinstance(d, StartTrial)]
            decisions, order = [], []
            while pending:
                start = max(pending, key=lambda s: s.priority) if deeper_first else pending[0]
                pending.remove(start)
                order.append(start.trial_id)
                out = m.handle(noisy(start))
                decisions += out
                pending += [d for d in out if isinstance(d, StartTrial)]
            runs.append((canonical(decisions), order))
        (fifo, fifo_order), (deep, deep_order) = runs
        assert fifo == deep  # the same decisions
        assert fifo_order != deep_order  # taken at other times


def test_an_asynchronous_sweep_is_dispatched_deeper_rungs_first_while_it_promotes() -> None:
    """Two slots, an ASHA machine fed back on a simulated clock: every trial the
    placement sends is the first queued of the highest priority (deeper rungs
    first, FIFO among equals), promotions decided while other trials run."""
    p = machine({"e1": (2, 0)})
    m = make_machine(max_iterations=27, seed=3, search={"promotion": "asynchronous"})
    queued: list[StartTrial] = []  # in the order they were enqueued
    running: list[tuple[float, str]] = []  # (end time, trial id)
    starts: dict[str, StartTrial] = {}
    sent_rungs: list[int] = []

    def take(decisions: list[Any], now: float) -> None:
        for d in decisions:
            if isinstance(d, StartTrial):
                starts[d.trial_id] = d
                queued.append(d)
                assert p.enqueue(SWEEP, d, now) == []

    take(m.handle(Begin()), 0.0)
    now = 0.0
    while queued or running:
        for action in p.place(now):
            assert isinstance(action, Send)
            expected = max(queued, key=lambda s: s.priority)  # the first of the highest
            assert action.start.trial_id == expected.trial_id
            queued.remove(expected)
            sent_rungs.append(expected.rung)
            p.sent(expected.trial_id, now, finished=False)
            # A duration that is a function of the trial, not of when it runs.
            took = (zlib.crc32(expected.trial_id.encode()) % 97 + 1) * float(expected.resource)
            running.append((now + took, expected.trial_id))
        running.sort()
        now, done = running.pop(0)
        p.ended(done)
        take(m.handle(noisy(starts[done])), now)
    assert m.finished is not None
    # The order was not FIFO: some promotion overtook a queued first-rung trial.
    first_rung_left = [i for i, r in enumerate(sent_rungs) if r == 0][-1]
    assert any(r > 0 for r in sent_rungs[:first_rung_left])
