"""When lazily opened brackets open (``scheduler.Opening``) and what their sampler is shown.

The promise: whatever order trials end in, the rungs a bracket is shown
(``Opening.visible``) are exactly the ones closed by the time it opens, so a
learning sampler's history is a function of the results. Checked here from the
outside (the closed rungs the machine reports after every observation) for the
default rule, the legacy one and other lags, with failures that end brackets
early (rungs that are settled without ever closing).
"""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import pytest
import yaml
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from hbd.core.errors import ReplayDiverged, SpecError
from hbd.core.events import Begin, StartTrial, SweepExtended
from hbd.core.limits import MAX_OPENING_LAG
from hbd.core.replay import replay
from hbd.core.scheduler import DEFAULT_OPENING, LEGACY_OPENING, Opening
from hbd.core.search import Search
from hbd.core.spec import load_spec
from hbd.core.sweep import SweepMachine
from tests.core.helpers import (
    Outcome,
    by_type,
    canonical,
    drive,
    make_machine,
    make_spec,
    spec_dict,
)
from tests.core.test_replay_properties import random_outcome
from tests.core.test_search import BOHB, log_of, noisy, submitted

FAST = (Phase.explicit, Phase.reuse, Phase.generate)
RULES = [
    DEFAULT_OPENING,
    LEGACY_OPENING,
    Opening(lag=0, slope=1, first=0),
    Opening(lag=2, slope=1, first=0),
    Opening(lag=2, slope=1, first=2, order="ascending-after-first"),
    Opening(lag=3, slope=0, first=1, order="ascending-after-first"),
]


def machine_with(rule: Opening, *, search: dict[str, Any], **spec: Any) -> SweepMachine:
    """A BOHB machine (``search`` as spec keys) that opens brackets by ``rule``."""
    parsed = make_spec(search={**BOHB, **search}, **spec)
    chosen = replace(Search.of(parsed.matrix), opening=rule)
    return SweepMachine.for_spec(parsed, sweep_id="sw", seed=7, search=chosen)


def openings(
    machine: SweepMachine, outcome: Outcome, rng: random.Random
) -> tuple[dict[int, set[tuple[int, int]]], set[tuple[int, int]]]:
    """Run to the end in a random order: the closed rungs when each bracket
    position opened, and the rungs closed at the end."""
    at_open: dict[int, set[tuple[int, int]]] = {}
    pending: dict[str, StartTrial] = {}

    def absorb(out: list[Any]) -> None:
        for s in by_type(out, StartTrial):
            pending[s.trial_id] = s
            position = machine.scheduler.position(s.bracket, s.iteration)
            if s.rung == 0 and position not in at_open:
                at_open[position] = set(machine.closed_rungs())

    absorb(machine.handle(Begin()))
    while pending:
        start = pending.pop(rng.choice(sorted(pending)))
        absorb(machine.handle(outcome(start)))
    assert machine.finished is not None
    return at_open, machine.closed_rungs()


@settings(max_examples=30, deadline=None, phases=FAST)
@given(
    rule=st.sampled_from(RULES),
    order=st.integers(0, 10**6),
    salt=st.integers(0, 10**6),
    fail_share=st.sampled_from([0.0, 0.3, 0.9]),
    iterations=st.sampled_from([1, 2]),
    promotion=st.sampled_from(["synchronous", "asynchronous"]),
)
def test_the_visible_rungs_are_exactly_those_closed_when_the_bracket_opens(
    rule: Opening, order: int, salt: int, fail_share: float, iterations: int, promotion: str
) -> None:
    machine = machine_with(
        rule, max_iterations=27, search={"iterations": iterations, "promotion": promotion}
    )
    at_open, final = openings(machine, random_outcome(salt, fail_share), random.Random(order))
    assert sorted(at_open) == list(range(4 * iterations))  # every bracket opened
    for p, closed in at_open.items():
        shown = {(j, k) for j, k in final if rule.visible(p, j, k)}
        # Every rung it is shown had closed already: none closes after it opened
        # (a rung of the rule that never closes ended with its bracket).
        assert shown <= closed, (p, shown - closed)
        assert shown == {(j, k) for j, k in closed if rule.visible(p, j, k)}
        # And what it waits for: the first rung of every bracket before it (lag ``first``).
        assert {(j, 0) for j in range(p - rule.first)} <= closed


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"lag{r.lag}-slope{r.slope}-first{r.first}")
def test_the_history_a_sampler_gets_is_the_visible_part(rule: Opening) -> None:
    machine = machine_with(rule, max_iterations=27, search={"iterations": 2})
    seen: dict[int, list[Any]] = {}
    propose = machine.sampler.propose

    def recording(*, bracket: int, index: int, history: Any) -> Any:
        seen.setdefault(bracket, list(history))
        return propose(bracket=bracket, index=index, history=history)

    machine.sampler.propose = recording  # type: ignore[method-assign]
    drive(machine, noisy, rng=random.Random(1))
    scheduler = machine.scheduler
    for key, history in seen.items():
        iteration, bracket = divmod(key, 4)
        p = scheduler.position(bracket, iteration)
        assert history == machine.history(p)
    # The first bracket learns nothing, the next iteration's first does.
    assert seen[3] == [] and len(seen[4]) > 0


@settings(max_examples=15, deadline=None, phases=FAST)
@given(
    rule=st.sampled_from(RULES[2:]),
    order_a=st.integers(0, 10**6),
    order_b=st.integers(0, 10**6),
    iterations=st.sampled_from([1, 2]),
)
def test_with_any_lag_configurations_and_decisions_do_not_depend_on_the_order(
    rule: Opening, order_a: int, order_b: int, iterations: int
) -> None:
    search = {"iterations": iterations}
    a = drive(
        machine_with(rule, max_iterations=27, search=search), noisy, rng=random.Random(order_a)
    )
    b = drive(
        machine_with(rule, max_iterations=27, search=search), noisy, rng=random.Random(order_b)
    )
    assert {s.trial_id: s.config for s in a.starts} == {s.trial_id: s.config for s in b.starts}
    assert canonical(a.decisions) == canonical(b.decisions)
    assert a.finished == b.finished


@pytest.mark.parametrize(
    ("rule", "overlaps"),
    # Lag 0 waits for every rung of the diagonal, the last rung of every bracket.
    [(Opening(lag=1, slope=1, first=1), True), (DEFAULT_OPENING, False)],
)
def test_a_lag_opens_the_next_iteration_before_the_last_is_done_and_extends(
    rule: Opening, overlaps: bool
) -> None:
    machine = machine_with(rule, max_iterations=27, search={})
    pending = by_type(machine.handle(Begin()), StartTrial)
    assert not by_type(machine.handle(SweepExtended(iterations=1)), StartTrial)  # not yet
    overlapped: bool | None = None
    rng = random.Random(0)
    while pending:
        start = pending.pop(rng.randrange(len(pending)))
        step = by_type(machine.handle(noisy(start)), StartTrial)
        if overlapped is None and any(s.iteration == 1 for s in step):
            # Iteration 1 opens while trials of iteration 0 are still to end.
            overlapped = any(s.iteration == 0 for s in pending)
        pending += step
    assert overlapped is overlaps
    assert machine.finished is not None and machine.finished.status == "succeeded"
    assert machine.scheduler.done and machine.scheduler.iterations == 2


# ---------------------------------------------------------------- the lag a spec sets


def test_tuner_params_lag_sets_a_diagonal_and_is_recorded() -> None:
    for lag in (0, 2, MAX_OPENING_LAG):
        spec = make_spec(search={"tuner": {"hubRef": "bohb", "params": {"lag": lag}}})
        search = Search.of(spec.matrix)
        assert search.opening == Opening(lag=lag, slope=1, first=lag, order="ascending-after-first")
        assert "lag" not in (search.settings or {})  # the sampler's settings stay its own
        assert Search.from_json(search.to_json()) == search
    assert Search.of(make_spec(search=BOHB).matrix).opening == DEFAULT_OPENING


def test_tuner_params_order_sets_the_bracket_order_and_is_recorded() -> None:
    for order in ("hyperband", "ascending-after-first"):
        spec = make_spec(search={"tuner": {"hubRef": "bohb", "params": {"order": order}}})
        search = Search.of(spec.matrix)
        assert search.opening is not None and search.opening.order == order
        assert "order" not in (search.settings or {})  # the sampler's settings stay its own
        assert Search.from_json(search.to_json()) == search
    assert DEFAULT_OPENING.order == "ascending-after-first"


@pytest.mark.parametrize("order", ["sideways", 1, True, None, ["hyperband"]])
def test_a_bad_order_is_one_problem_naming_its_path(order: object) -> None:
    text = yaml.safe_dump(
        spec_dict(search={"tuner": {"hubRef": "bohb", "params": {"order": order}}})
    )
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    (problem,) = caught.value.problems
    assert problem.loc == "matrix.tuner.params.order" and "\n" not in problem.msg


@pytest.mark.parametrize("lag", [-1, MAX_OPENING_LAG + 1, True, "2", 1.5])
def test_a_bad_lag_is_one_problem_naming_its_path(lag: object) -> None:
    text = yaml.safe_dump(spec_dict(search={"tuner": {"hubRef": "bohb", "params": {"lag": lag}}}))
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    (problem,) = caught.value.problems
    assert problem.loc == "matrix.tuner.params.lag" and "\n" not in problem.msg


def test_a_log_without_the_rule_replays_with_the_rule_of_its_time() -> None:
    recorded = Search.of(make_spec(search=BOHB).matrix).to_json()
    del recorded["opening"]  # as main wrote it (tests/golden/r27-bohb-*.jsonl replay it)
    assert Search.from_json(recorded).opening == LEGACY_OPENING
    assert Search.from_json({**recorded, "lazy": False}).opening is None


@pytest.mark.parametrize("lag", [0, 2])
def test_a_sweep_with_a_lag_replays_from_its_log(lag: int) -> None:
    search = {"tuner": {"hubRef": "bohb", "params": {"lag": lag}}, "iterations": 2}
    machine = make_machine(max_iterations=27, search=search)
    run = drive(machine, noisy, rng=random.Random(4), record=True)
    payload = submitted(machine, max_iterations=27, search=search)
    assert payload["search"]["opening"] == {
        "lag": lag,
        "slope": 1,
        "first": lag,
        "order": "ascending-after-first",
    }
    assert replay("sw", log_of(run, payload)).snapshot() == run.snapshots[-1]
    # Read as a log without the order (Hyperband's in every iteration), or
    # without the rule, the same events diverge: both matter.
    for missing in ("order", None):
        changed = copy.deepcopy(payload)
        if missing is None:
            del changed["search"]["opening"]
        else:
            del changed["search"]["opening"][missing]
        with pytest.raises(ReplayDiverged):
            replay("sw", log_of(run, changed))


def test_a_log_without_the_order_replays_with_hyperbands() -> None:
    recorded = Search.of(make_spec(search=BOHB).matrix).to_json()
    del recorded["opening"]["order"]  # as a log of stop 18's main has it
    assert Search.from_json(recorded).opening == Opening(lag=0, slope=1, first=0)
    recorded["opening"]["order"] = "sideways"
    with pytest.raises(ValueError, match="sideways"):
        Search.from_json(recorded)


@pytest.mark.parametrize("rule", [DEFAULT_OPENING, replace(DEFAULT_OPENING, order="hyperband")])
def test_after_the_first_iteration_brackets_ascend_and_learn_within_the_iteration(
    rule: Opening,
) -> None:
    """In Hyperband's order every full-resource rung of an iteration is on one
    diagonal (j + k the same), so no bracket sees a full-resource result of its
    own iteration. Ascending after the first iteration, the later brackets of an
    iteration see those of the short brackets before them."""
    machine = machine_with(rule, max_iterations=27, search={"iterations": 3})
    seen: dict[tuple[int, int], list[Any]] = {}
    propose = machine.sampler.propose

    def recording(*, bracket: int, index: int, history: Any) -> Any:
        iteration, s = divmod(bracket, 4)
        seen.setdefault((iteration, s), list(history))
        return propose(bracket=bracket, index=index, history=history)

    machine.sampler.propose = recording  # type: ignore[method-assign]
    drive(machine, noisy, rng=random.Random(2))
    order = [
        next(s for s in range(4) if machine.scheduler.position(s, it) == it * 4 + p)
        for it in range(3)
        for p in range(4)
    ]
    ascending = rule.order == "ascending-after-first"
    assert order == [3, 2, 1, 0] + ([0, 1, 2, 3] * 2 if ascending else [3, 2, 1, 0] * 2)
    full = {
        (it, s): sum(1 for r in seen[it, s] if r.resource == 27)
        for it in range(3)
        for s in range(4)
    }
    for it in (1, 2):
        # Full-resource results shown to this iteration's brackets, in position order.
        counts = [full[it, s] for s in (order[it * 4 : it * 4 + 4])]
        if ascending:
            assert counts[0] < counts[-1], counts  # learnt within the iteration
        else:
            assert len(set(counts)) == 1, counts  # shown once per iteration


@pytest.mark.parametrize(
    ("key", "value"),
    [("topNPercent", True), ("numSamples", True), ("minBandwidth", True), ("multivariate", 1)],
)
def test_a_bool_for_a_number_in_tuner_params_is_one_problem_naming_its_path(
    key: str, value: object
) -> None:
    params = {key: value}
    text = yaml.safe_dump(spec_dict(search={"tuner": {"hubRef": "bohb", "params": params}}))
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    (problem,) = caught.value.problems
    assert problem.loc.startswith("matrix.tuner.params.") and "\n" not in problem.msg
