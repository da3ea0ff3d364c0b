"""The first-failures rule: a sweep whose first N finished trial runs all failed stops."""

from __future__ import annotations

import random

import pytest

from hbd.core.events import Begin, EarlyStopped, StartTrial, TrialFailed, TrialSucceeded
from hbd.core.sweep import FIRST_FAILURES_STOP, SweepMachine
from tests.core.helpers import drive, failing_every, make_spec, quadratic, spec_dict


def machine(stop: int | None, **spec: object) -> SweepMachine:
    return SweepMachine.for_spec(
        make_spec(max_iterations=27, **spec), sweep_id="sw", seed=3, first_failures_stop=stop
    )


def always_fails(start: StartTrial) -> TrialFailed:
    return TrialFailed(trial_id=start.trial_id, reason="command not found: trian.py")


def test_the_default_is_ten() -> None:
    assert FIRST_FAILURES_STOP == 10


@pytest.mark.parametrize("stop", [1, 3, 10])
def test_a_sweep_whose_first_runs_all_fail_stops_after_exactly_that_many(stop: int) -> None:
    run = drive(machine(stop), always_fails, rng=random.Random(1))
    failed = [o for o in run.observations if isinstance(o, TrialFailed)]
    assert len(failed) == stop
    assert run.finished is not None and run.finished.status == "failed"
    assert f"the first {stop} trial runs all failed" in run.finished.reason
    assert "command not found: trian.py" in run.finished.reason
    stopped = [d for step in run.steps for d in step if isinstance(d, EarlyStopped)]
    assert (
        len(stopped) == 1 and stopped[0].condition == f"failure: the first {stop} trial runs failed"
    )


def test_a_retried_run_counts_once_its_last_attempt_failed() -> None:
    run = drive(machine(4, max_retries=3), always_fails, rng=random.Random(2))
    failed = [o for o in run.observations if isinstance(o, TrialFailed)]
    assert sum(o.trial_id.endswith("-a3") for o in failed) == 4
    assert len(failed) >= 16
    assert run.finished is not None and "the first 4 trial runs all failed" in run.finished.reason


def test_a_flaky_first_attempt_with_retries_does_not_stop_the_sweep() -> None:
    def flaky(start: StartTrial) -> TrialFailed | TrialSucceeded:
        if start.trial_id.endswith("-a1"):
            ok = quadratic(start)
            assert isinstance(ok, TrialSucceeded)
            return ok
        return TrialFailed(trial_id=start.trial_id, reason="exit code 75")

    run = drive(machine(2, max_retries=1), flaky, rng=random.Random(5))
    assert run.finished is not None and run.finished.status == "succeeded"


def test_one_success_among_the_first_runs_keeps_the_sweep_going() -> None:
    m = machine(2)
    starts = [d for d in m.handle(Begin()) if isinstance(d, StartTrial)]
    assert m.handle(TrialFailed(trial_id=starts[0].trial_id, reason="x")) == []
    ok = quadratic(starts[1])
    assert isinstance(ok, TrialSucceeded)
    m.handle(ok)
    # failures after a success never trigger the rule
    for s in starts[2:6]:
        decisions = m.handle(TrialFailed(trial_id=s.trial_id, reason="x"))
        assert not any(isinstance(d, EarlyStopped) for d in decisions)
    assert m.finished is None


@pytest.mark.parametrize("stop", [None, 0])
def test_off_when_not_set_or_zero(stop: int | None) -> None:
    run = drive(machine(stop), failing_every(1), rng=random.Random(3))
    assert sum(isinstance(o, TrialFailed) for o in run.observations) > 10
    assert run.finished is not None
    assert "no trial reported the metric" in run.finished.reason


def test_off_when_the_spec_sets_its_own_failure_early_stopping() -> None:
    own = [{"kind": "failure_early_stopping", "percent": 100}]
    m = machine(1, early_stopping=own)
    assert m.first_failures_stop is None
    run = drive(m, always_fails, rng=random.Random(4))
    # the spec's rule decides (here: 100% of ended failed after the first failure)
    assert run.finished is not None and "100%" in run.finished.reason


def test_for_submitted_reads_the_rule_of_the_log_and_old_logs_have_none() -> None:
    payload = {"spec_json": spec_dict(max_iterations=9), "seed": 1}
    assert SweepMachine.for_submitted(payload, sweep_id="s").first_failures_stop is None
    payload["first_failures_stop"] = 7
    assert SweepMachine.for_submitted(payload, sweep_id="s").first_failures_stop == 7


def test_the_rule_is_deterministic_under_any_completion_order() -> None:
    a = drive(machine(5), always_fails, rng=random.Random(10))
    b = drive(machine(5), always_fails, rng=random.Random(10))
    assert a.steps == b.steps
