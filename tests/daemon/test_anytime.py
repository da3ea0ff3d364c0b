"""Anytime results: the daemon dispatches deeper rungs first; only timing changes."""

from __future__ import annotations

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
