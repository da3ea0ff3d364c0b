"""The search a spec selects: BOHB sampling (deterministic whatever the order results
arrive in), asynchronous promotion (ASHA), more iterations, and the winner."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from hbd.core.codec import decision_record, observation_record
from hbd.core.errors import InvalidTransition, ReplayDiverged
from hbd.core.events import (
    Begin,
    Observation,
    RungDecided,
    StartTrial,
    StopRequested,
    SweepExtended,
    SweepFinished,
    TrialFailed,
    TrialSucceeded,
)
from hbd.core.limits import MAX_HYPERBAND_ITERATIONS
from hbd.core.replay import replay
from hbd.core.sampler import RandomSampler
from hbd.core.scheduler import AsynchronousHyperband, SynchronousHyperband
from hbd.core.search import Search
from hbd.core.sweep import SweepMachine
from hbd.core.tpe import BOHBSampler
from tests.core.helpers import (
    Run,
    by_type,
    canonical,
    drive,
    make_machine,
    make_spec,
    quadratic,
)
from tests.core.test_replay_properties import random_outcome

BOHB = {"tuner": {"hubRef": "bohb"}}
ASYNC = {"promotion": "asynchronous"}


def noisy(start: StartTrial) -> Observation:
    """A function of the config and resource with many distinct values."""
    x, y = float(start.config["x"]), int(start.config["y"])
    loss = (x - 0.3) ** 2 + 0.1 * (y - 2) ** 2 + 1.0 / float(start.resource)
    return TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss})


# ---------------------------------------------------------------- selection


def test_the_spec_selects_sampler_and_scheduler_and_the_default_is_todays() -> None:
    plain = make_machine(max_iterations=27)
    assert isinstance(plain.sampler, RandomSampler)
    assert isinstance(plain.scheduler, SynchronousHyperband) and not plain.scheduler.lazy
    assert plain.search == Search()
    bohb = make_machine(max_iterations=27, search={**BOHB, **ASYNC, "iterations": 3})
    assert isinstance(bohb.sampler, BOHBSampler)
    assert isinstance(bohb.scheduler, AsynchronousHyperband)
    # A learning sampler opens brackets lazily: it learns from closed first rungs.
    assert bohb.scheduler.lazy and bohb.scheduler.iterations == 3


def test_tuner_params_reach_the_sampler() -> None:
    tuner = {"hubRef": "bohb", "params": {"topNPercent": 30, "numSamples": 8}}
    machine = make_machine(search={"tuner": tuner})
    assert isinstance(machine.sampler, BOHBSampler)
    assert machine.sampler.settings.top_n_percent == 30
    assert machine.sampler.settings.num_samples == 8


def submitted(machine: SweepMachine, **spec: Any) -> dict[str, Any]:
    """The sweep.submitted payload of a machine made by ``make_machine(**spec)``."""
    return {
        "spec_json": make_spec(**spec).to_json(),
        "seed": machine.seed,
        "search": machine.search.to_json(),
    }


def test_for_submitted_reads_the_recorded_search_not_todays_defaults() -> None:
    spec = make_spec(max_iterations=27, search=BOHB)
    recorded = Search.of(spec.matrix)
    assert recorded.settings is not None
    # A log written when BOHB's default differed: the logged value is used.
    old = replace(recorded, settings={**recorded.settings, "num_samples": 5})
    payload = {"spec_json": spec.to_json(), "seed": 7, "search": old.to_json()}
    machine = SweepMachine.for_submitted(payload, sweep_id="sw")
    assert isinstance(machine.sampler, BOHBSampler)
    assert machine.sampler.settings.num_samples == 5


def test_an_older_log_without_a_search_record_runs_as_before() -> None:
    payload = {"spec_json": make_spec(max_iterations=27).to_json(), "seed": 7}
    machine = SweepMachine.for_submitted(payload, sweep_id="sw")
    assert machine.search == Search()
    assert drive(machine).decisions == drive(make_machine(max_iterations=27)).decisions


# ---------------------------------------------------------------- determinism


# No shrinking: a whole sweep per example makes it slow, and the example is printed.
FAST = (Phase.explicit, Phase.reuse, Phase.generate)


@settings(max_examples=20, deadline=None, phases=FAST)
@given(
    order_a=st.integers(0, 10**6),
    order_b=st.integers(0, 10**6),
    iterations=st.sampled_from([1, 2]),
    promotion=st.sampled_from(["synchronous", "synchronous", "asynchronous"]),
)
def test_bohb_configurations_do_not_depend_on_completion_order(
    order_a: int, order_b: int, iterations: int, promotion: str
) -> None:
    search = {**BOHB, "iterations": iterations, "promotion": promotion}
    a = drive(make_machine(max_iterations=27, search=search), noisy, rng=random.Random(order_a))
    b = drive(make_machine(max_iterations=27, search=search), noisy, rng=random.Random(order_b))
    new_a = {s.trial_id: s.config for s in a.starts if s.parent is None}
    new_b = {s.trial_id: s.config for s in b.starts if s.parent is None}
    if promotion == "synchronous":
        assert new_a == new_b  # every sampled configuration, whatever the order
        assert canonical(a.decisions) == canonical(b.decisions)  # and every decision
        assert a.finished == b.finished
    else:
        # ASHA's promotions depend on the order, and so do the promoted runs a
        # later bracket learns from; the first two brackets' never do (the
        # second is shown the first's first rung, a set fixed by the results).
        early = ("sw-s3-", "sw-s2-")
        first = {t: c for t, c in new_a.items() if t.startswith(early)}
        assert first == {t: c for t, c in new_b.items() if t.startswith(early)}


def test_bohb_learns_so_its_configurations_differ_from_random_ones() -> None:
    learned = drive(make_machine(max_iterations=27, search=BOHB), noisy)
    random_ = drive(make_machine(max_iterations=27), noisy)
    first = {s.trial_id: s.config for s in learned.starts if s.bracket == 3}
    assert first == {s.trial_id: s.config for s in random_.starts if s.bracket == 3}
    later = [s for s in learned.starts if s.parent is None and s.bracket < 3]
    same = [s for s in random_.starts if s.parent is None and s.bracket < 3]
    assert sum(a.config != b.config for a, b in zip(later, same, strict=True)) > len(later) // 3


@dataclass(frozen=True)
class Logged:
    seq: int
    type: str
    payload: dict[str, Any]


def log_of(run: Run, payload: dict[str, Any]) -> list[Logged]:
    """The event log the daemon would write for ``run``: each observation, then its decisions."""
    records: list[tuple[str, dict[str, Any]]] = []
    for obs, step in zip(run.observations, run.steps, strict=True):
        records.append(
            ("sweep.submitted", payload) if isinstance(obs, Begin) else observation_record(obs)
        )
        records += [decision_record(d) for d in step]
    return [Logged(seq=i, type=t, payload=p) for i, (t, p) in enumerate(records, 1)]


@pytest.mark.parametrize("promotion", ["synchronous", "asynchronous"])
def test_replay_reproduces_a_bohb_sweep_and_catches_an_altered_config(promotion: str) -> None:
    search = {**BOHB, "promotion": promotion, "iterations": 2}
    machine = make_machine(max_iterations=27, search=search)
    run = drive(machine, noisy, rng=random.Random(5), record=True)
    payload = submitted(machine, max_iterations=27, search=search)
    events = log_of(run, payload)
    replayed = replay("sw", events)
    assert replayed.snapshot() == run.snapshots[-1]
    # A sampled (not promoted) config of a bracket that learned, altered in the log.
    i = next(
        i
        for i, e in enumerate(events)
        if e.type == "trial.scheduled" and e.payload["bracket"] == 1 and not e.payload["parent"]
    )
    altered = {**events[i].payload, "config": {**events[i].payload["config"], "x": 0.5}}
    events[i] = replace(events[i], payload=altered)
    with pytest.raises(ReplayDiverged, match=f"seq {events[i].seq}.*config"):
        replay("sw", events)


# ---------------------------------------------------------------- asynchronous promotion


def async_invariants(run: Run, machine: SweepMachine) -> None:
    plan = {b.s: b for b in machine.plan}
    starts = run.starts
    for (it, s), b in {(t.iteration, t.bracket): plan[t.bracket] for t in starts}.items():
        for rung in b.rungs:
            n = [t for t in starts if (t.iteration, t.bracket, t.rung) == (it, s, rung.index)]
            assert (
                len({t.index for t in n}) <= rung.configs
            )  # never more than the synchronous budget
            assert all(t.resource == rung.resource for t in n)
    promoted = [p for d in by_type(run.decisions, RungDecided) for p in d.promoted]
    assert len(promoted) == len(set(promoted))  # each trial goes on at most once
    parents = sorted({s.parent for s in starts if s.parent})  # retries share a parent
    assert parents == sorted(promoted)


@settings(max_examples=25, deadline=None, phases=FAST)
@given(
    salt=st.integers(0, 10**6),
    order=st.integers(0, 10**6),
    fail_share=st.sampled_from([0.0, 0.3]),
    r=st.sampled_from([9, 27]),
    eta=st.sampled_from([2, 3]),
    stop=st.sampled_from([None, None, 15]),
    stragglers=st.sampled_from([0, 1, 2]),
)
def test_asynchronous_promotion_keeps_the_budget_and_replays(
    salt: int, order: int, fail_share: float, r: int, eta: int, stop: int | None, stragglers: int
) -> None:
    search = {**ASYNC, "stragglers": stragglers}
    machine = make_machine(max_iterations=r, eta=eta, search=search, max_retries=1)
    outcome = random_outcome(salt, fail_share)
    run = drive(machine, outcome, rng=random.Random(order), record=True, stop_after=stop)
    async_invariants(run, machine)
    assert run.finished is not None and (stop is not None or machine.scheduler.done)
    # The same results in the same order: the same decisions (what replay relies on).
    again = drive(
        make_machine(max_iterations=r, eta=eta, search=search, max_retries=1),
        outcome,
        rng=random.Random(order),
        stop_after=stop,
    )
    assert again.decisions == run.decisions
    payload = submitted(machine, max_iterations=r, eta=eta, search=search, max_retries=1)
    replayed = replay("sw", log_of(run, payload))
    assert replayed.snapshot() == run.snapshots[-1]


@settings(max_examples=20, deadline=None, phases=FAST)
@given(
    salt=st.integers(0, 10**6),
    order=st.integers(0, 10**6),
    fail_share=st.sampled_from([0.0, 0.3]),
    eta=st.sampled_from([2, 3]),
    stragglers=st.sampled_from([0, 0, 1, 2]),
)
def test_asynchronous_promotion_withholds_nothing_the_rule_allows(
    salt: int, order: int, fail_share: float, eta: int, stragglers: int
) -> None:
    """No slot waits for a promotion ASHA's rule allows: after every result, each
    rung has promoted its top floor(m / eta) of the m ended (those that reported
    the metric), or the planned size of the next rung if that is fewer. With
    ``stragglers`` k: once the rung below is closed and at most k trials of the
    rung still run, every one ended that reported the metric, up to that size."""
    machine = make_machine(max_iterations=27, eta=eta, search={**ASYNC, "stragglers": stragglers})
    planned = {(b.s, r.index): r.configs for b in machine.plan for r in b.rungs}

    def outcome(s: StartTrial) -> Observation:
        h = zlib.crc32(f"{salt}:{s.trial_id}".encode()) / 2**32
        if h < fail_share:
            return TrialFailed(trial_id=s.trial_id, reason="random failure")
        return TrialSucceeded(trial_id=s.trial_id, metrics={"loss": h})  # distinct: no ties

    run = drive(machine, outcome, rng=random.Random(order))
    starts = {s.trial_id: s for s in run.starts}
    ended: dict[tuple[int, int], list[tuple[str, float | None]]] = {}
    promoted: dict[tuple[int, int], set[str]] = {}
    checked = stragglers_checked = 0

    def closed(b: int, r: int) -> bool:
        return fixed(b, r) and len(ended.get((b, r), [])) == size(b, r)

    def fixed(b: int, r: int) -> bool:  # no more trials can join rung r
        return r == 0 or closed(b, r - 1)

    def size(b: int, r: int) -> int:  # its trials so far (no retries here)
        return planned[(b, 0)] if r == 0 else len(promoted.get((b, r - 1), set()))

    for obs, step in zip(run.observations[1:], run.steps[1:], strict=True):
        t = starts[obs.trial_id]
        loss = obs.metrics["loss"] if isinstance(obs, TrialSucceeded) else None
        ended.setdefault((t.bracket, t.rung), []).append((t.trial_id, loss))
        for d in by_type(step, StartTrial):
            assert d.parent is not None or d.rung == 0
            if d.parent is not None:
                promoted.setdefault((d.bracket, d.rung - 1), set()).add(d.parent)
        for (b, r), results in ended.items():
            if r == b:
                continue  # a bracket's last rung promotes nothing
            room = planned[(b, r + 1)]
            went_on = promoted.get((b, r), set())
            assert len(went_on) <= room
            good = sorted((loss, tid) for tid, loss in results if loss is not None)
            top = {tid for _, tid in good[: len(results) // eta]}
            if stragglers and fixed(b, r) and size(b, r) - len(results) <= stragglers:
                top = {tid for _, tid in good}
                stragglers_checked += 1
            if len(went_on) < room:
                assert top <= went_on, (b, r, len(results))
                checked += 1
            else:
                assert went_on <= {tid for _, tid in good}  # the failed never go on
    assert run.finished is not None and checked > 0
    assert stragglers_checked > 0 or not stragglers


def test_asynchronous_promotion_does_not_wait_for_the_rung() -> None:
    machine = make_machine(max_iterations=9, search=ASYNC)
    pending = by_type(machine.handle(Begin()), StartTrial)
    first_rung = [s for s in pending if s.bracket == 2]
    assert len(first_rung) == 9
    # Three of nine ended, the best first: it goes on at once (top 1/3 of 3).
    out: list[Any] = []
    for start, loss in zip(first_rung[:3], [0.1, 0.5, 0.9], strict=True):
        out += machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss}))
    promoted = by_type(out, StartTrial)
    assert [s.parent for s in promoted] == [first_rung[0].trial_id]
    assert promoted[0].rung == 1 and promoted[0].resource == 3
    decided = by_type(out, RungDecided)
    assert decided[0].promoted == (promoted[0].trial_id.replace("-r1-", "-r0-"),)
    assert "asynchronous" in decided[0].reason
    # Synchronous Hyperband, the same three results: nothing goes on yet.
    sync = make_machine(max_iterations=9)
    pending = [s for s in by_type(sync.handle(Begin()), StartTrial) if s.bracket == 2]
    out = []
    for start, loss in zip(pending[:3], [0.1, 0.5, 0.9], strict=True):
        out += sync.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss}))
    assert not by_type(out, StartTrial)


def test_a_closing_rung_fills_the_promotions_asha_left() -> None:
    # Worst first: ASHA promotes nothing good early, the close fills the rung to plan.
    machine = make_machine(max_iterations=9, search=ASYNC)
    pending = sorted(
        (s for s in by_type(machine.handle(Begin()), StartTrial) if s.bracket == 2),
        key=lambda s: -float(s.config["x"]),
    )
    decisions: list[Any] = []
    for i, start in enumerate(pending):
        decisions += machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": -i}))
    closing = [d for d in by_type(decisions, RungDecided) if d.reason.startswith("rung closed")]
    assert len(closing) == 1 and len(closing[0].stopped) == 9 - 3
    total = [p for d in by_type(decisions, RungDecided) for p in d.promoted]
    assert len(total) == 3  # the planned size of rung 1


STRAGGLERS = {**ASYNC, "stragglers": 1}


def test_stragglers_let_a_rung_go_on_without_its_slowest() -> None:
    # Bracket 2 of 9/3: 9 -> 3 -> 1, best first: 8 of 9 ended, one straggles.
    losses = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    went_on = {}
    for search in (ASYNC, STRAGGLERS):
        machine = make_machine(max_iterations=9, search=search)
        first = [s for s in by_type(machine.handle(Begin()), StartTrial) if s.bracket == 2]
        out: list[Any] = []
        for start, loss in zip(first, losses, strict=False):
            out += machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss}))
        went_on[search["stragglers"] if "stragglers" in search else 0] = [
            s.parent for s in by_type(out, StartTrial)
        ]
        decided = by_type(out, RungDecided)
    ids = [s.trial_id for s in first]
    # ASHA: the top floor(8/3) = 2 of the 8, the third waits for the ninth;
    # with one straggler allowed the top 3 of the 8 go on.
    assert went_on[0] == ids[:2]
    assert went_on[1] == ids[:3]
    assert "still running count as the worst" in decided[-1].reason
    assert not decided[-1].stopped  # the rung is not closed: the straggler may still end


def test_stragglers_decide_when_the_rung_below_closes() -> None:
    """Two of a top rung's three trials ended before the third was even promoted:
    the rung below closing leaves one straggler, so the last rung starts at once."""
    machine = make_machine(max_iterations=9, search=STRAGGLERS)
    first = [s for s in by_type(machine.handle(Begin()), StartTrial) if s.bracket == 2]
    promoted: list[StartTrial] = []
    # Best first: the top two go on at m = 3 and 6, the third at m = 8 (one straggler).
    for i, start in enumerate(first[:8]):
        out = machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": i}))
        promoted += by_type(out, StartTrial)
    assert len(promoted) == 3
    for start, loss in zip(promoted[:2], [0.5, 0.1], strict=True):
        out = machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss}))
        assert not by_type(out, StartTrial)  # rung 0 is open: rung 1 may still grow
    out = machine.handle(TrialSucceeded(trial_id=first[8].trial_id, metrics={"loss": 9}))
    top = by_type(out, StartTrial)
    assert [s.rung for s in top] == [2] and top[0].parent == promoted[1].trial_id


def test_stragglers_are_recorded_and_an_older_log_replays_with_ashas_rule() -> None:
    recorded = Search.of(make_spec(max_iterations=27, search=STRAGGLERS).matrix)
    assert recorded.stragglers == 1 and recorded.to_json()["stragglers"] == 1
    assert Search.from_json(recorded.to_json()) == recorded
    machine = make_machine(max_iterations=27, search=STRAGGLERS)
    assert isinstance(machine.scheduler, AsynchronousHyperband)
    assert machine.scheduler.stragglers == 1
    # A record from before stragglers existed (no key) ran ASHA's rule: 0.
    payload = submitted(
        make_machine(max_iterations=27, search=ASYNC), max_iterations=27, search=ASYNC
    )
    del payload["search"]["stragglers"]
    assert Search.from_json(payload["search"]).stragglers == 0
    rng_a, rng_b = random.Random(3), random.Random(3)
    replayed = drive(SweepMachine.for_submitted(payload, sweep_id="sw"), noisy, rng=rng_a)
    today = drive(make_machine(max_iterations=27, search=ASYNC), noisy, rng=rng_b)
    assert replayed.decisions == today.decisions
    with pytest.raises(ValueError, match="stragglers"):
        AsynchronousHyperband(
            make_machine().plan, metric="loss", direction="minimize", stragglers=True
        )


# ---------------------------------------------------------------- iterations and extension


def test_iterations_repeat_the_plan_with_new_configurations() -> None:
    one = drive(make_machine(max_iterations=9))
    three = drive(make_machine(max_iterations=9, search={"iterations": 3}))
    assert len(three.starts) == 3 * len(one.starts)
    assert len({s.trial_id for s in three.starts}) == len(three.starts)
    first = {s.trial_id: s.config for s in three.starts if s.iteration == 0}
    assert first == {s.trial_id: s.config for s in one.starts}  # iteration 0 is as before
    later = [s.config for s in three.starts if s.iteration == 2 and s.parent is None]
    assert not {repr(c) for c in later} & {repr(c) for c in first.values()}
    assert all("-i2-" in s.trial_id for s in three.starts if s.iteration == 2)


def test_extending_a_running_sweep_plans_more_iterations() -> None:
    machine = make_machine(max_iterations=9)
    machine.handle(Begin())
    out = machine.handle(SweepExtended(iterations=2))
    assert {s.iteration for s in by_type(out, StartTrial)} == {1, 2}  # eager: all at once
    assert machine.scheduler.iterations == 3


def finish(machine: SweepMachine, pending: list[StartTrial]) -> list[Any]:
    out: list[Any] = []
    while pending:
        step = machine.handle(quadratic(pending.pop(0)))
        out += step
        pending += by_type(step, StartTrial)
    return out


def test_extending_a_finished_sweep_reopens_it_and_it_finishes_again() -> None:
    machine = make_machine(max_iterations=9, search=BOHB)
    first = finish(machine, by_type(machine.handle(Begin()), StartTrial))
    assert by_type(first, SweepFinished) and machine.finished is not None
    out = machine.handle(SweepExtended(iterations=1))
    assert machine.state.value == "running" and machine.finished is None
    starts = by_type(out, StartTrial)
    assert starts and {s.iteration for s in starts} == {1}  # lazily: its first bracket
    again = finish(machine, starts)
    assert by_type(again, SweepFinished)[0].status == "succeeded"


def test_a_stopped_sweep_and_too_many_iterations_are_refused_unchanged() -> None:
    machine = make_machine(max_iterations=9)
    machine.handle(Begin())
    before = machine.snapshot()
    with pytest.raises(InvalidTransition, match="more than the limit"):
        machine.handle(SweepExtended(iterations=MAX_HYPERBAND_ITERATIONS))
    with pytest.raises(InvalidTransition, match=">= 1"):
        machine.handle(SweepExtended(iterations=0))
    assert machine.snapshot() == before
    machine.handle(StopRequested())
    with pytest.raises(InvalidTransition):
        machine.handle(SweepExtended(iterations=1))


# ---------------------------------------------------------------- the winner


def test_the_best_is_the_best_at_the_highest_resource_reached() -> None:
    # Low resources look better here (an optimistic metric at resource 1).
    def optimistic(start: StartTrial) -> Observation:
        x = float(start.config["x"])
        return TrialSucceeded(trial_id=start.trial_id, metrics={"loss": x + float(start.resource)})

    machine = make_machine(max_iterations=9)
    run = drive(machine, optimistic)
    best = run.finished.best
    assert best is not None and best.resource == 9
    per = machine.best_per_resource()
    assert [b.resource for b in per] == [1, 3, 9] and per[-1] == best
    assert per[0].metric < best.metric  # the old rule would have picked the resource-1 run


def test_iterations_count_against_the_trial_run_limit() -> None:
    import yaml

    from hbd.core.errors import SpecError
    from hbd.core.spec import load_spec
    from tests.core.helpers import spec_dict

    text = yaml.safe_dump(spec_dict(max_iterations=81, search={"iterations": 1000}))
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    (problem,) = caught.value.problems
    assert problem.loc == "matrix.iterations"
    assert "times 1000 iterations plans 206,000 trial runs" in problem.msg
    assert load_spec(yaml.safe_dump(spec_dict(max_iterations=81, search={"iterations": 400})))
