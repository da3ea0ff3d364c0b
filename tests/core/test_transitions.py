"""Every state change goes through the tables: each class of illegal move is refused."""

from __future__ import annotations

import itertools

import pytest

from hbd.core.bracket import (
    ALL_DONE,
    EARLY_STOPPED,
    IDLE,
    MACHINE_TRANSITIONS,
    SWEEP_MOVES,
    SWEEP_TRANSITIONS,
    TRIAL_TRANSITIONS,
    SweepState,
    Trial,
    TrialState,
    fire,
)
from hbd.core.errors import CoreError, InvalidTransition
from hbd.core.events import Begin, StartTrial, TrialSucceeded
from tests.core.helpers import by_type, make_machine

TRIAL_EVENTS = sorted({e for _, e in TRIAL_TRANSITIONS})
SWEEP_EVENTS = sorted({e for _, e in SWEEP_TRANSITIONS})
CONDITIONS = [EARLY_STOPPED, ALL_DONE, IDLE]


def _trial(state: TrialState) -> Trial:
    return Trial(
        trial_id="sw-s0-r0-c0",
        bracket=0,
        rung=0,
        index=0,
        config={},
        resource=1,
        parent=None,
        state=state,
    )


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s, e in itertools.product(TrialState, TRIAL_EVENTS)
        if (s, e) not in TRIAL_TRANSITIONS
    ],
)
def test_an_ended_trial_cannot_move_and_is_left_as_it_was(state: TrialState, event: str) -> None:
    trial = _trial(state)
    with pytest.raises(InvalidTransition, match=f"{event}.*trial {state.value}.*sw-s0-r0-c0"):
        trial.fire(event, sweep_id="sw")
    assert trial.state is state


def test_an_unknown_trial_event_is_refused_in_every_state() -> None:
    for state in TrialState:
        with pytest.raises(CoreError):
            _trial(state).fire("trial.teleported", sweep_id="sw")


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s, e in itertools.product(SweepState, SWEEP_EVENTS)
        if (s, e) not in SWEEP_TRANSITIONS
    ],
)
def test_a_sweep_event_outside_the_table_is_refused(state: SweepState, event: str) -> None:
    with pytest.raises(InvalidTransition, match=f"{event} is not allowed in state '{state.value}'"):
        fire(SWEEP_MOVES, state, event, sweep_id="sw")


@pytest.mark.parametrize(
    ("state", "condition"),
    [
        (s, c)
        for s, c in itertools.product(SweepState, CONDITIONS)
        if (s, c) not in MACHINE_TRANSITIONS
    ],
)
def test_a_machine_move_outside_the_table_is_refused(state: SweepState, condition: str) -> None:
    # e.g. a finished sweep cannot finish again, a running one is not "idle".
    with pytest.raises(InvalidTransition, match=condition):
        fire(SWEEP_MOVES, state, condition, sweep_id="sw")


def test_a_condition_is_not_an_event_and_an_event_is_not_a_condition() -> None:
    with pytest.raises(InvalidTransition):  # only the machine moves on conditions
        fire(SWEEP_TRANSITIONS, SweepState.RUNNING, ALL_DONE, sweep_id="sw")
    with pytest.raises(InvalidTransition):
        fire(MACHINE_TRANSITIONS, SweepState.RUNNING, "sweep.stop_requested", sweep_id="sw")


def test_every_table_entry_is_a_legal_move() -> None:
    for (state, trigger), nxt in SWEEP_MOVES.items():
        assert fire(SWEEP_MOVES, state, trigger, sweep_id="sw") is nxt
    for (state, event), nxt in TRIAL_TRANSITIONS.items():
        trial = _trial(state)
        assert trial.fire(event, sweep_id="sw") is nxt and trial.state is nxt


def test_a_sweep_moves_created_running_finished_and_then_not_at_all() -> None:
    """Begin, results, finish: the states a plain sweep passes through, all table moves."""
    m = make_machine(max_iterations=3, eta=3)
    seen = [m.state]
    pending = by_type(m.handle(Begin()), StartTrial)
    seen.append(m.state)
    while pending:
        start = pending.pop(0)
        out = m.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": 1.0}))
        pending += by_type(out, StartTrial)
        if m.state is not seen[-1]:
            seen.append(m.state)
    assert seen == [SweepState.CREATED, SweepState.RUNNING, SweepState.FINISHED]
    assert all(t.state is TrialState.SUCCEEDED for t in m.trials.values())
    # A finished sweep cannot be moved by anything but more iterations.
    for trigger in [*SWEEP_EVENTS, *CONDITIONS]:
        if trigger == "sweep.extended":
            assert fire(SWEEP_MOVES, m.state, trigger, sweep_id="sw") is SweepState.RUNNING
            continue
        with pytest.raises(InvalidTransition):
            fire(SWEEP_MOVES, m.state, trigger, sweep_id="sw")
