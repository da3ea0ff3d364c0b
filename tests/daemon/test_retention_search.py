"""Checkpoint retention under asynchronous promotion and iterations: a rung is
decided for retention when it closes, per bracket of each iteration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hbd.core.events import Begin, RungDecided, StartTrial
from hbd.daemon.retention import _plan
from tests.core.helpers import Run, by_type, make_machine
from tests.core.test_search import ASYNC, log_of, noisy, submitted


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    payload: dict[str, Any]
    trial_id: str | None


def events_of(run: Run, payload: dict[str, Any]) -> list[Any]:
    return [
        Event(e.seq, e.type, e.payload, e.payload.get("trial_id")) for e in log_of(run, payload)
    ]


def test_an_open_asynchronous_rung_keeps_its_checkpoints_until_it_closes() -> None:
    search = {**ASYNC, "iterations": 2}
    machine = make_machine(max_iterations=9, resume=True, search=search)
    run = Run()
    pending = by_type(machine.handle(Begin()), StartTrial)
    run.observations.append(Begin())
    run.steps.append([*pending])
    # Bracket s=2, iteration 0: six of its nine first-rung trials end, best first,
    # so ASHA promotes two before the rung closes.
    first = [s for s in pending if s.bracket == 2 and s.iteration == 0][:6]
    for start in first:
        obs = noisy(start)
        run.observations.append(obs)
        run.steps.append(machine.handle(obs))
    assert any(d.promoted for step in run.steps for d in by_type(step, RungDecided))
    payload = submitted(machine, max_iterations=9, resume=True, search=search)
    plan = _plan("sw", events_of(run, payload), "resumable")
    assert plan is not None
    ids = plan[0]
    assert not set(ids) & {s.trial_id for s in first}  # the rung is open: nothing goes
