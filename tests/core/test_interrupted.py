"""An interrupted trial run is not an outcome: the same trial runs again, no retry is used."""

from __future__ import annotations

import copy
import random

import pytest

from hbd.core.codec import observation_from_record, observation_record
from hbd.core.errors import InvalidTransition
from hbd.core.events import Begin, StartTrial, TrialInterrupted, TrialSucceeded
from tests.core.helpers import canonical, drive, failing_every, interrupted_once_every, make_machine


def _outcome_view(snapshot: dict[str, object]) -> dict[str, object]:
    """The snapshot without run counts: what an uninterrupted sweep must equal."""
    view = copy.deepcopy(snapshot)
    trials = view["trials"]
    assert isinstance(trials, dict)
    view["trials"] = {tid: t[:-1] for tid, t in trials.items()}
    return view


@pytest.mark.parametrize("order", [0, 1, 2])
def test_interruptions_change_no_decision_and_no_result(order: int) -> None:
    plain = make_machine(seed=3, max_iterations=27)
    interrupted = make_machine(seed=3, max_iterations=27)
    a = drive(plain, rng=random.Random(order))
    b = drive(interrupted, interrupted_once_every(2), rng=random.Random(order))
    assert any(isinstance(o, TrialInterrupted) for o in b.observations)
    assert canonical(a.decisions) == canonical(b.decisions)
    assert _outcome_view(plain.snapshot()) == _outcome_view(interrupted.snapshot())
    assert plain.finished == interrupted.finished


def test_an_interrupted_run_uses_no_retry() -> None:
    # Every 4th index fails for good; every 3rd is interrupted once first. With one
    # retry allowed, an interruption counted as a failure would exhaust it.
    m = make_machine(seed=4, max_iterations=27, max_retries=1)
    run = drive(m, failing_every(4, interrupted_once_every(3)))
    ids = {d.trial_id for d in run.decisions if isinstance(d, StartTrial)}
    interrupted = {o.trial_id for o in run.observations if isinstance(o, TrialInterrupted)}
    assert interrupted
    for tid in interrupted:
        trial = m.trials[tid]
        assert trial.runs == 2 and trial.attempt == 0
        assert f"{tid}-a1" not in ids and trial.state.value == "succeeded"
    # The failing ones still get their one retry, and only one.
    assert any(i.endswith("-a1") for i in ids) and not any(i.endswith("-a2") for i in ids)
    assert m.finished is not None


def test_an_interruption_keeps_the_rung_barrier_waiting() -> None:
    m = make_machine(seed=5, max_iterations=9)
    starts = [d for d in m.handle(Begin()) if isinstance(d, StartTrial)]
    rung0 = [s for s in starts if s.bracket == 2]
    for s in rung0[1:]:
        assert m.handle(TrialSucceeded(trial_id=s.trial_id, metrics={"loss": 1.0})) == []
    assert m.handle(TrialInterrupted(trial_id=rung0[0].trial_id)) == []
    assert rung0[0].trial_id in m.running_trial_ids()
    decided = m.handle(TrialSucceeded(trial_id=rung0[0].trial_id, metrics={"loss": 0.5}))
    assert decided and decided[0].TYPE == "rung.decided"


def test_an_ended_trial_cannot_be_interrupted_and_nothing_changes() -> None:
    m = make_machine(seed=5, max_iterations=9)
    start = next(d for d in m.handle(Begin()) if isinstance(d, StartTrial))
    m.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": 1.0}))
    before = copy.deepcopy(m.snapshot())
    with pytest.raises(InvalidTransition):
        m.handle(TrialInterrupted(trial_id=start.trial_id))
    assert m.snapshot() == before


def test_an_interruption_round_trips_through_the_log() -> None:
    event = TrialInterrupted(trial_id="sw-s2-r0-c1", reason="hbd run interrupted (SIGINT)")
    assert observation_from_record(*observation_record(event)) == event
