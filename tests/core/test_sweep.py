"""The sweep machine driven by a fake executor: promotions, failures, stops, illegal events."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict

import pytest

from hbd.core.errors import DuplicateEvent, InvalidTransition
from hbd.core.events import (
    Begin,
    CancelTrials,
    EarlyStopped,
    RungDecided,
    StartTrial,
    StopRequested,
    TrialCancelled,
    TrialFailed,
    TrialSucceeded,
)
from hbd.core.geometry import brackets
from tests.core.helpers import by_type, drive, failing_every, make_machine, quadratic


def test_full_sweep_runs_exactly_the_planned_trials() -> None:
    m = make_machine(max_iterations=81, eta=3)
    run = drive(m)
    starts = run.starts
    assert len(starts) == 206
    plan = {b.s: b for b in brackets(81, 3)}
    for s, b in plan.items():
        for rung in b.rungs:
            got = [t for t in starts if t.bracket == s and t.rung == rung.index]
            assert len(got) == rung.configs
            assert {t.resource for t in got} == {rung.resource}
    assert run.finished.status == "succeeded"
    assert m.state.value == "finished"


def test_promotions_are_the_top_of_each_rung_by_metric() -> None:
    m = make_machine(max_iterations=27, eta=3)
    run = drive(m)
    starts = {s.trial_id: s for s in run.starts}
    for decision in by_type(run.decisions, RungDecided):
        losses = [r.metric for r in decision.ranking]
        assert losses == sorted(losses)
        if decision.promoted:
            k = len(decision.promoted)
            assert decision.promoted == tuple(r.trial_id for r in decision.ranking[:k])
            assert decision.cutoff == decision.ranking[k - 1].metric
            children = [s for s in run.starts if s.parent in decision.promoted]
            assert {c.parent for c in children} == set(decision.promoted)
            for c in children:
                parent = starts[c.parent]  # type: ignore[index]
                assert c.config == parent.config and c.index == parent.index
                assert c.rung == parent.rung + 1 and c.resource > parent.resource


def test_maximize_promotes_the_largest() -> None:
    run = drive(make_machine(direction="maximize"))
    first = by_type(run.decisions, RungDecided)[0]
    values = [r.metric for r in first.ranking]
    assert values == sorted(values, reverse=True)


def test_best_is_the_minimum_over_all_trials() -> None:
    m = make_machine(max_iterations=27)
    run = drive(m)
    best = run.finished.best
    assert best is not None
    all_losses = [quadratic(s).metrics["loss"] for s in run.starts]  # type: ignore[union-attr]
    assert best.metric == min(all_losses)


def test_resume_from_is_the_parent_only_when_resume_is_on() -> None:
    on = drive(make_machine(resume=True)).starts
    off = drive(make_machine(resume=False)).starts
    assert all(s.resume_from == s.parent for s in on)
    assert any(s.parent for s in on)
    assert all(s.resume_from is None for s in off)


def test_failed_trials_rank_last_and_are_never_promoted() -> None:
    run = drive(make_machine(max_iterations=27), failing_every(3))
    failed = {o.trial_id for o in run.observations if isinstance(o, TrialFailed)}
    assert failed
    for d in by_type(run.decisions, RungDecided):
        statuses = [r.status for r in d.ranking]
        assert statuses == sorted(statuses, key=lambda s: s != "succeeded")
        assert not failed & set(d.promoted)


def test_rung_where_everything_fails_ends_the_bracket() -> None:
    run = drive(make_machine(), lambda s: TrialFailed(trial_id=s.trial_id, reason="oom"))
    assert run.finished.status == "failed"
    assert "loss" in run.finished.reason
    assert all(s.rung == 0 for s in run.starts)
    assert run.finished.best is None


def test_metric_missing_or_nan_counts_as_no_metric() -> None:
    def outcome(s: StartTrial) -> TrialSucceeded:
        return TrialSucceeded(
            trial_id=s.trial_id, metrics={"loss": float("nan")} if s.index % 2 else {"acc": 1.0}
        )

    run = drive(make_machine(), outcome)
    assert run.finished.status == "failed"


def test_metric_early_stopping_cancels_running_and_finishes() -> None:
    early = [
        {
            "kind": "metric_early_stopping",
            "metric": "loss",
            "value": 0.5,
            "optimization": "minimize",
        }
    ]
    m = make_machine(max_iterations=27, early_stopping=early)
    run = drive(m)
    stops = by_type(run.decisions, EarlyStopped)
    assert len(stops) == 1 and "loss" in stops[0].condition
    cancels = by_type(run.decisions, CancelTrials)
    assert cancels and cancels[0].reason == stops[0].reason
    assert run.finished.status == "succeeded"
    assert run.finished.reason.startswith("early stopping")
    # nothing was started after the stop
    stop_at = run.decisions.index(stops[0])
    assert not [d for d in run.decisions[stop_at:] if isinstance(d, StartTrial)]


def test_failure_early_stopping_uses_share_of_ended_trials() -> None:
    early = [{"kind": "failure_early_stopping", "percent": 50}]
    run = drive(make_machine(max_iterations=27, early_stopping=early), failing_every(2))
    assert by_type(run.decisions, EarlyStopped)
    assert run.finished.status == "failed"
    ended = [o for o in run.observations if isinstance(o, TrialSucceeded | TrialFailed)]
    failed = [o for o in ended if isinstance(o, TrialFailed)]
    assert 2 * len(failed) >= len(ended)


def test_stop_request_cancels_everything_running() -> None:
    m = make_machine(max_iterations=27)
    run = drive(m, stop_after=5)
    cancels = by_type(run.decisions, CancelTrials)
    assert len(cancels) == 1 and cancels[0].reason == "test stop"
    assert run.finished.status == "stopped"
    assert all(isinstance(o, TrialCancelled) for o in run.observations[6:])


def test_cancelling_every_first_rung_trial_fails_the_sweep() -> None:
    m = make_machine()
    m.handle(Begin())
    out = []
    for tid in m.running_trial_ids():
        out = m.handle(TrialCancelled(trial_id=tid, reason="executor gone"))
    assert [type(d).__name__ for d in out] == ["RungDecided", "SweepFinished"]
    assert m.finished is not None and m.finished.status == "failed"


# ---- illegal events leave the machine unchanged ----


def _started() -> tuple[object, str]:
    m = make_machine()
    m.handle(Begin())
    return m, m.running_trial_ids()[0]


def _assert_rejected(m, event, cls) -> None:  # type: ignore[no-untyped-def]
    before = copy.deepcopy(m.snapshot())
    with pytest.raises(cls) as info:
        m.handle(event)
    assert m.snapshot() == before
    assert event.TYPE in str(info.value) and m.sweep_id in str(info.value)


def test_result_before_begin_is_rejected() -> None:
    m = make_machine()
    _assert_rejected(m, TrialFailed(trial_id="x", reason="r"), InvalidTransition)


def test_unknown_trial_is_rejected() -> None:
    m, _ = _started()
    _assert_rejected(m, TrialSucceeded(trial_id="nope", metrics={"loss": 1.0}), InvalidTransition)


def test_repeated_result_is_a_duplicate_and_a_conflicting_one_is_invalid() -> None:
    m, tid = _started()
    m.handle(TrialSucceeded(trial_id=tid, metrics={"loss": 1.0}))
    _assert_rejected(m, TrialSucceeded(trial_id=tid, metrics={"loss": 1.0}), DuplicateEvent)
    with pytest.raises(InvalidTransition) as info:
        m.handle(TrialFailed(trial_id=tid, reason="late"))
    assert not isinstance(info.value, DuplicateEvent)
    assert tid in str(info.value)


def test_begin_twice_is_rejected() -> None:
    m, _ = _started()
    _assert_rejected(m, Begin(), InvalidTransition)


def test_non_numeric_metric_is_rejected() -> None:
    m, tid = _started()
    _assert_rejected(m, TrialSucceeded(trial_id=tid, metrics={"loss": "low"}), InvalidTransition)  # type: ignore[dict-item]


def test_events_after_finish_are_rejected() -> None:
    m = make_machine()
    drive(m)
    _assert_rejected(m, StopRequested(), InvalidTransition)


def test_second_stop_request_is_a_duplicate() -> None:
    m, _ = _started()
    m.handle(StopRequested())
    _assert_rejected(m, StopRequested(), DuplicateEvent)


# ---- determinism ----


def _dump(run) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(
        [(type(d).__name__, asdict(d)) for d in run.decisions], sort_keys=True, default=str
    )


def test_same_seed_same_decisions_bit_for_bit() -> None:
    a = drive(make_machine(seed=3, max_iterations=27), rng=random.Random(1))
    b = drive(make_machine(seed=3, max_iterations=27), rng=random.Random(1))
    assert _dump(a) == _dump(b)


def test_other_seed_other_configs() -> None:
    a = drive(make_machine(seed=3)).starts
    b = drive(make_machine(seed=4)).starts
    assert [s.config for s in a] != [s.config for s in b]


def test_brackets_draw_independent_configs() -> None:
    starts = drive(make_machine(max_iterations=27)).starts
    first = [s.config["x"] for s in starts if s.rung == 0 and s.bracket == 3]
    second = [s.config["x"] for s in starts if s.rung == 0 and s.bracket == 2]
    # Polyaxon reuses one seed per bracket, so its brackets are prefixes of each other.
    assert first[: len(second)] != second


def test_the_last_rung_stops_nobody_and_earlier_rungs_stop_the_rest() -> None:
    run = drive(make_machine(max_iterations=27))
    for d in by_type(run.decisions, RungDecided):
        if d.reason == "last rung of the bracket":
            assert d.promoted == () and d.stopped == ()
        else:
            assert set(d.promoted) | set(d.stopped) == {r.trial_id for r in d.ranking}
            assert not set(d.promoted) & set(d.stopped)


# ---- retries (Polyaxon's termination.maxRetries) ----


def flaky(failures: int):  # type: ignore[no-untyped-def]
    """Every third config fails its first ``failures`` attempts, then behaves."""

    def outcome(s: StartTrial) -> TrialSucceeded | TrialFailed:
        attempt = int(s.trial_id.rsplit("-a", 1)[1]) if "-a" in s.trial_id else 0
        if s.index % 3 == 0 and attempt < failures:
            return TrialFailed(trial_id=s.trial_id, reason="preempted")
        return quadratic(s)  # type: ignore[return-value]

    return outcome


def test_a_retried_failure_changes_no_decision() -> None:
    clean = drive(make_machine(max_iterations=27))
    retried = drive(make_machine(max_iterations=27, max_retries=2), flaky(2))
    assert clean.finished == retried.finished
    decided = [
        (d.bracket, d.rung, [r.metric for r in d.ranking])
        for d in by_type(clean.decisions, RungDecided)
    ]
    assert decided == [
        (d.bracket, d.rung, [r.metric for r in d.ranking])
        for d in by_type(retried.decisions, RungDecided)
    ]
    retries = [s for s in retried.starts if "-a" in s.trial_id]
    assert retries and {s.trial_id.rsplit("-", 1)[1] for s in retries} == {"a1", "a2"}
    for r in retries:  # the same run again: config, rung, resource and parent
        first = next(s for s in retried.starts if s.trial_id == r.trial_id.rsplit("-a", 1)[0])
        assert (r.config, r.rung, r.resource, r.parent) == (
            first.config,
            first.rung,
            first.resource,
            first.parent,
        )


def test_retries_are_bounded_and_then_the_trial_fails() -> None:
    run = drive(make_machine(max_iterations=9, max_retries=1), flaky(5))
    retried = [s for s in run.starts if s.trial_id.endswith("-a1")]
    assert retried and not [s for s in run.starts if s.trial_id.endswith("-a2")]
    for d in by_type(run.decisions, RungDecided):
        failed = [r for r in d.ranking if r.status == "failed"]
        assert all(r.trial_id.endswith("-a1") for r in failed)


def test_without_retries_a_failure_is_final() -> None:
    run = drive(make_machine(max_iterations=9), flaky(1))
    assert not [s for s in run.starts if "-a" in s.trial_id]
    assert [o for o in run.observations if isinstance(o, TrialFailed)]


def test_a_stopping_sweep_does_not_retry() -> None:
    m = make_machine(max_retries=3)
    m.handle(Begin())
    first, *_ = m.running_trial_ids()
    m.handle(StopRequested(reason="bye"))
    out = m.handle(TrialFailed(trial_id=first, reason="killed"))
    assert not [d for d in out if isinstance(d, StartTrial)]
    assert not [t for t in m.trials if t.endswith("-a1")]
