"""The scheduler seam: synchronous Hyperband behind a Protocol, and lazily opened brackets."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from hbd.core.bracket import Trial
from hbd.core.events import Begin, RungDecided, StartTrial, StopRequested, TrialSucceeded
from hbd.core.sampler import RandomSampler, RunResult
from hbd.core.scheduler import LEGACY_OPENING, Slot, Step, SynchronousHyperband
from hbd.core.space import JSONValue
from hbd.core.sweep import SweepMachine
from tests.core.helpers import by_type, canonical, drive, make_machine, make_spec, quadratic


def lazy_machine(**kwargs: Any) -> SweepMachine:
    machine = make_machine(**kwargs)
    machine.scheduler = SynchronousHyperband(
        machine.plan, metric=machine.metric, direction=machine.direction, opening=LEGACY_OPENING
    )
    return machine


class RecordingSampler(RandomSampler):
    def __init__(self) -> None:
        super().__init__(make_spec().matrix.params, seed=7)
        self.seen: dict[int, list[tuple[RunResult, ...]]] = {}

    def propose(
        self, *, bracket: int, index: int, history: Sequence[RunResult]
    ) -> dict[str, JSONValue]:
        self.seen.setdefault(bracket, []).append(tuple(history))
        return super().propose(bracket=bracket, index=index, history=history)


def test_an_explicit_synchronous_hyperband_is_the_default() -> None:
    explicit = make_machine(max_iterations=27)
    explicit.scheduler = SynchronousHyperband(
        explicit.plan, metric=explicit.metric, direction=explicit.direction
    )
    assert drive(explicit).decisions == drive(make_machine(max_iterations=27)).decisions


def test_lazy_brackets_open_when_the_previous_first_rung_and_all_before_are_closed() -> None:
    machine = lazy_machine(max_iterations=27)
    first = machine.handle(Begin())
    assert {d.bracket for d in by_type(first, StartTrial)} == {3}
    for seed in range(5):
        run = drive(lazy_machine(max_iterations=27), rng=random.Random(seed))
        first_closed: set[int] = set()
        done: set[int] = set()
        opened = [3]
        for step in run.steps[1:]:  # after Begin
            for d in by_type(step, RungDecided):
                if d.rung == 0:
                    first_closed.add(d.bracket)
                if not d.promoted:
                    done.add(d.bracket)
            new = {d.bracket for d in step if isinstance(d, StartTrial) and d.rung == 0}
            ready = (
                opened[-1] > 0
                and opened[-1] in first_closed
                and all(b in done for b in range(opened[-1] + 1, 4))
            )
            # Opened exactly when ready: the previous bracket's first rung
            # closed and every bracket before it done.
            assert new == ({opened[-1] - 1} if ready else set()), (seed, step)
            opened += sorted(new)
        assert opened == [3, 2, 1, 0]


def test_with_the_random_sampler_lazy_runs_the_same_trials_and_decisions() -> None:
    eager = drive(make_machine(max_iterations=27))
    lazy = drive(lazy_machine(max_iterations=27))
    assert canonical(eager.decisions) == canonical(lazy.decisions)
    assert eager.finished == lazy.finished


def test_a_lazily_opened_bracket_samples_with_the_decided_rungs_results() -> None:
    machine = lazy_machine(max_iterations=9, direction="minimize")
    sampler = RecordingSampler()
    machine.sampler = sampler
    run = drive(machine, rng=random.Random(3))
    assert sampler.seen[2] == [()] * 9  # the first bracket opens at Begin: no history
    history = sampler.seen[1][0]
    assert sampler.seen[1] == [history] * 5  # one history for the whole bracket
    first_rung = sorted(
        (s for s in run.starts if s.bracket == 2 and s.rung == 0), key=lambda s: s.trial_id
    )
    assert [h.loss for h in history] == [
        machine.trials[s.trial_id].metrics["loss"] for s in first_rung
    ]
    assert all(h.resource == 1.0 for h in history)


def test_a_stop_before_the_next_bracket_opens_finishes_without_opening_it() -> None:
    machine = lazy_machine(max_iterations=27)
    starts = by_type(machine.handle(Begin()), StartTrial)
    machine.handle(TrialSucceeded(trial_id=starts[0].trial_id, metrics={"loss": 1.0}))
    out = machine.handle(StopRequested())
    assert not by_type(out, StartTrial)
    for s in starts[1:]:
        out = machine.handle(TrialSucceeded(trial_id=s.trial_id, metrics={"loss": 1.0}))
        assert not by_type(out, StartTrial)
    assert machine.finished is not None and machine.finished.status == "stopped"


def test_replaying_a_lazy_sweep_gives_the_same_state() -> None:
    run = drive(lazy_machine(max_iterations=27), rng=random.Random(5), record=True)
    again = lazy_machine(max_iterations=27)
    for obs, snapshot in zip(run.observations, run.snapshots, strict=True):
        again.handle(obs)
        assert again.snapshot() == snapshot


class OneRung:
    """A scheduler that is not Hyperband: n random configs at full resource, no promotion.

    It exists to show that an algorithm is a new class, not an edit of the machine.
    """

    def __init__(self, n: int, resource: int) -> None:
        self.n, self.resource = n, resource
        self.open = 0

    def begin(self) -> list[Slot]:
        return [
            Slot(bracket=0, rung=0, index=i, resource=self.resource, parent=None)
            for i in range(self.n)
        ]

    def started(self, trials: Sequence[Trial]) -> None:
        self.open += len(trials)

    def replaced(self, old: Trial, new: Trial) -> None:
        pass

    def ended(self, trial: Trial, *, decide: bool = True) -> Step:
        self.open -= 1
        return Step()

    def extend(self, iterations: int) -> list[Slot]:
        return []

    @property
    def iterations(self) -> int:
        return 1

    @property
    def done(self) -> bool:
        return self.open == 0

    def position(self, bracket: int, iteration: int = 0) -> int:
        return 0

    def sample_key(self, bracket: int, iteration: int = 0) -> int:
        return bracket

    def snapshot(self) -> list[Any]:
        return [self.open]

    def visible(self, opening: int, position: int, rung: int) -> bool:
        return False  # random configurations: nothing to learn from


def test_another_scheduler_plugs_in_without_changing_the_machine() -> None:
    machine = make_machine(max_iterations=9)
    machine.scheduler = OneRung(4, 9)
    run = drive(machine, quadratic)
    assert [(s.bracket, s.rung, s.resource) for s in run.starts] == [(0, 0, 9)] * 4
    assert run.finished.status == "succeeded" and run.finished.best is not None
