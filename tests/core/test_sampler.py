"""The sampler seam: the machine asks a Sampler for every new configuration."""

from __future__ import annotations

from collections.abc import Sequence

from hbd.core.events import StartTrial
from hbd.core.sampler import RandomSampler, RunResult
from hbd.core.space import JSONValue, sample_config
from tests.core.helpers import drive, make_machine, make_spec


class RecordingSampler:
    """Fixed configs, and a record of every call (key and history it was shown)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, tuple[RunResult, ...]]] = []

    def propose(
        self, *, bracket: int, index: int, history: Sequence[RunResult]
    ) -> dict[str, JSONValue]:
        self.calls.append((bracket, index, tuple(history)))
        return {"x": 0.5 + index / 1000, "y": 2.0}  # 2.0: cast to the int input


def test_random_sampler_is_todays_keyed_draw() -> None:
    params = make_spec().matrix.params
    sampler = RandomSampler(params, seed=11)
    for bracket, index in [(0, 0), (2, 5), (1, 3)]:
        assert sampler.propose(bracket=bracket, index=index, history=()) == sample_config(
            params, seed=11, bracket=bracket, index=index
        )


def test_default_sampler_gives_the_same_sweep_as_an_explicit_random_sampler() -> None:
    spec = make_spec(max_iterations=27)
    explicit = make_machine(max_iterations=27)
    explicit.sampler = RandomSampler(spec.matrix.params, seed=7)
    assert drive(make_machine(max_iterations=27)).decisions == drive(explicit).decisions


def test_the_machine_asks_its_sampler_once_per_new_config_and_casts_the_answer() -> None:
    sampler = RecordingSampler()
    machine = make_machine(max_iterations=9)
    machine.sampler = sampler
    run = drive(machine)
    first_rungs = [s for s in run.starts if s.rung == 0]
    assert sorted((b, i) for b, i, _ in sampler.calls) == sorted(
        (s.bracket, s.index) for s in first_rungs
    )
    # Promotions reuse their parent's configuration: the sampler is not asked again.
    assert len(sampler.calls) < len(run.starts)
    start = first_rungs[0]
    assert isinstance(start, StartTrial)
    assert start.config["y"] == 2 and isinstance(start.config["y"], int)
    # Every bracket opens at Begin: nothing is decided yet, so no history.
    assert all(h == () for _, _, h in sampler.calls)


def test_history_holds_closed_first_rungs_by_trial_id_with_loss_oriented_lower_is_better() -> None:
    machine = make_machine(max_iterations=9, direction="maximize")
    drive(machine)
    expected = [
        RunResult(config=t.sampled or {}, resource=float(t.resource), loss=-t.metrics["loss"])
        for _, t in sorted(machine.trials.items())
    ]
    assert expected and machine.history() == expected
