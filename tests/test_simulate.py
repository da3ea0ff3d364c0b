"""hbd.simulate: a whole sweep in-process against a Python objective."""

from __future__ import annotations

import itertools
import json
import math
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hbd.core.spec import SweepSpec, load_spec, parse_spec
from hbd.planview import build_plan
from hbd.simulate import (
    DEFAULT_SEED,
    ObjectiveError,
    Simulation,
    load_objective,
    resolve_seed,
    simulate,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REFERENCE = EXAMPLES / "reference-fixed.yaml"

_names = itertools.count()


@pytest.fixture(autouse=True)
def _forget_imported_objectives() -> Iterator[None]:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("obj_", "objective", "_hbd_objective_")):
            del sys.modules[name]


def reference_spec(**matrix_changes: Any) -> SweepSpec:
    data = yaml.safe_load(REFERENCE.read_text())
    data["matrix"].update(matrix_changes)
    return parse_spec(data)


def example_objective(name: str = "loss") -> Any:
    return load_objective(f"objective:{name}", [EXAMPLES])


def write_module(tmp_path: Path, body: str) -> str:
    """Write an objective module with a name no other test uses; return the name."""
    name = f"obj_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


# ---------------------------------------------------------------- the sweep


def test_a_clean_run_performs_the_planned_trials_rung_by_rung() -> None:
    spec = reference_spec(earlyStopping=[])
    sim = simulate(spec, example_objective(), seed=0)
    plan = build_plan(spec)

    assert sim.status == "succeeded" and sim.reason == "all brackets completed"
    assert len(sim.trials) == plan.total_trial_runs == 206
    ran = Counter((t.bracket, t.rung) for t in sim.trials)
    planned = {(b.bracket, r.rung): r.configs for b in plan.brackets for r in b.rungs}
    assert ran == planned
    resources = {(b.bracket, r.rung): r.resource for b in plan.brackets for r in b.rungs}
    assert all(t.resource == resources[(t.bracket, t.rung)] for t in sim.trials)
    assert all(t.status == "succeeded" and t.metric is not None for t in sim.trials)


def test_best_is_the_lowest_metric_of_all_succeeded_trials() -> None:
    sim = simulate(reference_spec(earlyStopping=[]), example_objective(), seed=5)
    done = [t for t in sim.trials if t.status == "succeeded"]
    top = min(done, key=lambda t: t.metric if t.metric is not None else math.inf)

    assert sim.best is not None
    assert sim.best.metric == top.metric
    assert sim.best.trial_id == top.trial_id
    assert (sim.best.bracket, sim.best.rung, sim.best.resource) == (
        top.bracket,
        top.rung,
        top.resource,
    )
    assert dict(sim.best.config) == dict(top.config)


def test_maximize_picks_the_highest(tmp_path: Path) -> None:
    name = write_module(
        tmp_path, "def f(config, r):\n    return -abs(config['lr'] - 0.5) + r / 1000\n"
    )
    spec = reference_spec(earlyStopping=[], metric={"name": "score", "optimization": "maximize"})
    sim = simulate(spec, load_objective(f"{name}:f", [tmp_path]), seed=1)
    assert sim.best is not None
    assert sim.best.metric == max(t.metric for t in sim.trials if t.metric is not None)


def test_trials_complete_in_the_order_they_were_started() -> None:
    sim = simulate(reference_spec(earlyStopping=[]), example_objective(), seed=2)
    position = {t.trial_id: i for i, t in enumerate(sim.trials)}
    # Begin starts every bracket's first rung, s_max first.
    first = [(t.bracket, t.rung) for t in sim.trials[:143]]
    assert first == sorted(first, key=lambda k: -k[0]) and all(r == 0 for _, r in first)
    by_id = {t.trial_id: t for t in sim.trials}
    for t in sim.trials:
        if t.parent is not None:
            parent = by_id[t.parent]
            assert position[t.parent] < position[t.trial_id]
            assert dict(parent.config) == dict(t.config)
            assert (parent.bracket, parent.rung + 1) == (t.bracket, t.rung)


def test_each_rung_promotes_its_best_and_reports_the_cutoff() -> None:
    sim = simulate(reference_spec(earlyStopping=[]), example_objective(), seed=3)
    for rung in sim.rungs:
        members = [t for t in sim.trials if (t.bracket, t.rung) == (rung.bracket, rung.rung)]
        assert rung.size == len(members)
        ranked = sorted(members, key=lambda t: (t.metric, t.trial_id))
        if rung.rung == rung.bracket:
            assert rung.promoted == () and rung.cutoff is None
            continue
        k = len(rung.promoted)
        assert {t.trial_id for t in ranked[:k]} == set(rung.promoted)
        assert rung.cutoff == max(t.metric for t in ranked[:k] if t.metric is not None)
    decided = [(r.bracket, r.rung) for r in sim.rungs]
    assert decided == sorted(decided, key=lambda k: (-k[0], k[1]))


def test_the_same_inputs_give_the_same_simulation_and_another_seed_another() -> None:
    spec = reference_spec()
    a = simulate(spec, example_objective(), seed=11)
    b = simulate(spec, example_objective(), seed=11)
    c = simulate(spec, example_objective(), seed=12)

    def dump(s):
        return json.dumps(s.to_json(), allow_nan=False)

    assert dump(a) == dump(b)
    assert [t.config for t in a.trials[:20]] != [t.config for t in c.trials[:20]]


def test_the_objective_cannot_change_the_sweep_through_the_config(tmp_path: Path) -> None:
    name = write_module(
        tmp_path,
        """
        def f(config, r):
            lr = config["lr"]
            config["lr"] = 123.0
            config.clear()
            return lr + 1 / r
        """,
    )
    sim = simulate(
        reference_spec(earlyStopping=[]), load_objective(f"{name}:f", [tmp_path]), seed=0
    )
    assert all(0 <= t.config["lr"] <= 0.9 for t in sim.trials)


# ---------------------------------------------------------------- early stopping


def test_early_stopping_cancels_what_has_not_run(tmp_path: Path) -> None:
    name = write_module(
        tmp_path,
        """
        calls = []
        def f(config, r):
            calls.append(r)
            return 0.01 if r == 81 else 1.0  # the first full-resource trial reaches loss <= 0.05
        """,
    )
    objective = load_objective(f"{name}:f", [tmp_path])
    sim = simulate(reference_spec(), objective, seed=0)

    assert sim.status == "succeeded"
    assert sim.reason.startswith("early stopping:") and "loss" in sim.reason
    assert sim.early_stopped is not None
    cancelled = [t for t in sim.trials if t.status == "cancelled"]
    assert cancelled and all(t.metric is None and t.reason == sim.reason for t in cancelled)
    calls = sys.modules[name].calls
    assert len(calls) == sum(t.status != "cancelled" for t in sim.trials)
    # the stopping trial is the first to reach R: deeper rungs run first, so it is
    # bracket 4's promoted trial, before bracket 0 (which starts at R) runs at all
    assert sim.best is not None and sim.best.metric == 0.01 and sim.best.resource == 81
    assert sim.best.bracket == 4


# ---------------------------------------------------------------- bad results fail one trial


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "raise ValueError('lr too high: ' + str(config['lr']))",
            "objective raised ValueError: lr too high: ",
        ),
        ("return 'fast'", "objective returned str 'fast'; expected a number"),
        ("return None", "objective returned NoneType None; expected a number"),
        ("return True", "objective returned bool True; expected a number"),
        ("return float('nan')", "objective returned nan; 'loss' must be finite"),
        (
            "return {'accuracy': 0.5}",
            "objective returned no 'loss', the spec's metric (got: accuracy)",
        ),
        ("return {'loss': 'x'}", "objective returned loss='x' (str); metrics must be numbers"),
        ("return {'loss': float('inf')}", "objective returned loss=inf; metrics must be finite"),
        ("import sys; sys.exit(3)", "objective raised SystemExit: 3"),
    ],
)
def test_a_bad_result_fails_that_trial_with_a_clear_reason(
    tmp_path: Path, body: str, reason: str
) -> None:
    name = write_module(
        tmp_path,
        f"""
        def f(config, r):
            if config["lr"] > 0.45:
                {body}
            return config["lr"] + 1 / r
        """,
    )
    sim = simulate(
        reference_spec(earlyStopping=[]), load_objective(f"{name}:f", [tmp_path]), seed=0
    )

    failed = [t for t in sim.trials if t.status == "failed"]
    assert failed and all(t.config["lr"] > 0.45 for t in failed)
    assert all(t.reason is not None and t.reason.startswith(reason) for t in failed)
    assert all(t.metric is None for t in failed)
    # the sweep went on with the rest, and failed trials were not promoted
    assert sim.status == "succeeded"
    promoted = {tid for r in sim.rungs for tid in r.promoted}
    assert not promoted & {t.trial_id for t in failed}
    json.dumps(sim.to_json(), allow_nan=False)


def test_a_dict_result_may_carry_other_metrics(tmp_path: Path) -> None:
    name = write_module(
        tmp_path, "def f(config, r):\n    return {'loss': 1 / r, 'accuracy': 0.1, 'n': 3}\n"
    )
    sim = simulate(
        reference_spec(earlyStopping=[]), load_objective(f"{name}:f", [tmp_path]), seed=0
    )
    assert all(t.status == "succeeded" for t in sim.trials)
    assert sim.best is not None and sim.best.metric == 1 / 81


def test_numpy_scalars_are_numbers(tmp_path: Path) -> None:
    name = write_module(
        tmp_path, "import numpy as np\ndef f(config, r):\n    return np.float32(1 / r)\n"
    )
    sim = simulate(
        reference_spec(earlyStopping=[]), load_objective(f"{name}:f", [tmp_path]), seed=0
    )
    assert all(t.status == "succeeded" for t in sim.trials)


def test_when_every_trial_fails_the_sweep_fails(tmp_path: Path) -> None:
    name = write_module(tmp_path, "def f(config, r):\n    raise RuntimeError('no GPU')\n")
    sim = simulate(
        reference_spec(earlyStopping=[]), load_objective(f"{name}:f", [tmp_path]), seed=0
    )
    assert sim.status == "failed" and sim.best is None
    failed = [t for t in sim.trials if t.status == "failed"]
    assert {t.reason for t in failed} == {"objective raised RuntimeError: no GPU"}
    # the first ten runs all failed: the sweep stopped there (FIRST_FAILURES_STOP)
    assert len(failed) == 10
    assert "the first 10 trial runs all failed" in sim.reason
    # only the first rungs ran: nothing could be promoted
    assert {t.rung for t in sim.trials} == {0}


# ---------------------------------------------------------------- seeds


def test_seed_comes_from_the_flag_then_the_spec_then_the_default() -> None:
    assert resolve_seed(5, reference_spec(seed=9)) == (5, "--seed")
    assert resolve_seed(None, reference_spec(seed=9)) == (9, "spec")
    assert resolve_seed(None, reference_spec()) == (DEFAULT_SEED, "default")
    assert resolve_seed(0, reference_spec(seed=9)) == (0, "--seed")


# ---------------------------------------------------------------- loading the objective


def test_load_objective_finds_a_function_in_the_search_path(tmp_path: Path) -> None:
    name = write_module(
        tmp_path, "class K:\n    @staticmethod\n    def f(config, r):\n        return 1.0\n"
    )
    assert load_objective(f"{name}:K.f", [tmp_path])({}, 1) == 1.0
    assert str(tmp_path) not in sys.path  # the search path is only borrowed


def test_load_objective_takes_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "my objective.py"
    path.write_text("def f(config, r):\n    return 2.0\n")
    assert load_objective(f"{path}:f")({}, 1) == 2.0


@pytest.mark.parametrize(
    ("source", "ref", "message"),
    [
        (None, "obj_missing_zz:f", "no module named 'obj_missing_zz'"),
        ("x = 1\n", "{name}:f", "has no attribute 'f'"),
        ("f = 3\n", "{name}:f", "is a int, not a function"),
        (
            "def f(config):\n    return 1.0\n",
            "{name}:f",
            "has signature (config); simulate calls f(config, resource)",
        ),
        ("async def f(config, r):\n    return 1.0\n", "{name}:f", "is async"),
        ("raise RuntimeError('bad import')\n", "{name}:f", "failed: RuntimeError: bad import"),
        (
            "import obj_dependency_zz\n",
            "{name}:f",
            "failed: ModuleNotFoundError: No module named 'obj_dependency_zz'",
        ),
        ("def f(:\n", "{name}:f", "failed: SyntaxError"),
        (None, "nocolon", "must be MODULE:FUNCTION"),
        (None, ":f", "must be MODULE:FUNCTION"),
        (None, "mod:", "must be MODULE:FUNCTION"),
        (None, "missing_file.py:f", "objective file missing_file.py does not exist"),
    ],
)
def test_load_objective_explains_what_is_wrong(
    tmp_path: Path, source: str | None, ref: str, message: str
) -> None:
    name = write_module(tmp_path, source) if source is not None else "unused"
    with pytest.raises(ObjectiveError) as info:
        load_objective(ref.format(name=name), [tmp_path])
    assert message in str(info.value)


def test_simulation_json_is_plain_data() -> None:
    sim: Simulation = simulate(
        load_spec(REFERENCE.read_text()), example_objective("metrics"), seed=3
    )
    data = json.loads(json.dumps(sim.to_json(), allow_nan=False))
    assert set(data) >= {"seed", "status", "reason", "best", "trials", "rungs"}
    assert set(data["trials"][0]) >= {
        "id",
        "bracket",
        "rung",
        "config",
        "resource",
        "metric",
        "status",
        "parent",
    }
    assert set(data["rungs"][0]) >= {"bracket", "rung", "promoted", "cutoff"}


# ---------------------------------------------------------------- anytime order


def test_deeper_rungs_run_first_and_the_decisions_are_those_of_fifo(tmp_path: Path) -> None:
    from hbd.core.events import Begin, StartTrial
    from hbd.core.sweep import SweepMachine
    from hbd.simulate import evaluate

    name = write_module(
        tmp_path,
        """
        calls = []
        def f(config, r):
            calls.append(r)
            return (config["lr"] - 0.3) ** 2 + 1 / r
        """,
    )
    spec = reference_spec(earlyStopping=[])
    sim = simulate(spec, load_objective(f"{name}:f", [tmp_path]), seed=0)
    calls = sys.modules[name].calls
    # A promotion (resource > 1 in bracket 4) runs before the last first-rung trials.
    assert calls.index(81) < len(calls) - 5
    # First in, first out, as before: the same rung decisions and the same winner.
    machine = SweepMachine.for_spec(spec, sweep_id="sim", seed=0)
    objective = load_objective(f"{name}:f", [tmp_path])
    queue = [d for d in machine.handle(Begin()) if isinstance(d, StartTrial)]
    decided = []
    while queue:
        out = machine.handle(evaluate(objective, queue.pop(0), "loss"))
        queue += [d for d in out if isinstance(d, StartTrial)]
        decided += [(d.bracket, d.rung, d.promoted) for d in out if hasattr(d, "promoted")]
    assert sorted(decided) == sorted((r.bracket, r.rung, r.promoted) for r in sim.rungs)
    assert machine.finished is not None and machine.finished.best == sim.best


def test_an_asynchronous_simulation_runs_the_highest_priority_first(tmp_path: Path) -> None:
    """ASHA's promotions depend on the order trials run in, so simulate's order is
    checked against a reference driver: the first queued of the highest
    ``StartTrial.priority`` (deeper rungs first, FIFO among equals) each time."""
    from hbd.core.events import Begin, StartTrial
    from hbd.core.sweep import SweepMachine
    from hbd.simulate import evaluate

    body = """
        calls = []
        def f(config, r):
            calls.append((config["lr"], r))
            return (config["lr"] - 0.3) ** 2 + 1 / r
        """
    name = write_module(tmp_path, body)
    spec = reference_spec(earlyStopping=[], promotion="asynchronous")
    simulate(spec, load_objective(f"{name}:f", [tmp_path]), seed=0)
    calls = list(sys.modules[name].calls)
    machine = SweepMachine.for_spec(spec, sweep_id="sim", seed=0)
    objective = load_objective(f"{name}:f", [tmp_path])
    sys.modules[name].calls.clear()
    queue = [d for d in machine.handle(Begin()) if isinstance(d, StartTrial)]
    while queue:
        start = max(queue, key=lambda s: s.priority)  # the first of the highest
        queue.remove(start)
        out = machine.handle(evaluate(objective, start, "loss"))
        queue += [d for d in out if isinstance(d, StartTrial)]
    assert machine.finished is not None
    assert calls == sys.modules[name].calls
    resources = [r for _, r in calls]
    assert resources.index(81) < len(resources) - 5  # a promotion before the last new trials


def test_the_plan_totals_cover_every_iteration() -> None:
    one = build_plan(reference_spec())
    three = build_plan(
        reference_spec(iterations=3, tuner={"hubRef": "bohb"}, promotion="asynchronous")
    )
    assert three.total_trial_runs == 3 * one.total_trial_runs
    assert three.total_resource == 3 * one.total_resource
    assert three.brackets == one.brackets  # the table shows one iteration
    data = three.to_json()
    assert (data["iterations"], data["tuner"], data["promotion"]) == (3, "bohb", "asynchronous")
    assert data["stragglers"] == 0
    late = build_plan(reference_spec(promotion="asynchronous", stragglers=1))
    assert late.to_json()["stragglers"] == 1 and late.brackets == one.brackets


def test_an_asynchronous_multi_iteration_simulation_has_one_outcome_per_rung(
    tmp_path: Path,
) -> None:
    name = write_module(
        tmp_path, "def f(config, r):\n    return (config['lr'] - 0.3) ** 2 + 1 / r\n"
    )
    spec = reference_spec(earlyStopping=[], promotion="asynchronous", iterations=2)
    sim = simulate(spec, load_objective(f"{name}:f", [tmp_path]), seed=0)
    keys = [(r.iteration, r.bracket, r.rung) for r in sim.rungs]
    assert len(keys) == len(set(keys)) and {k[0] for k in keys} == {0, 1}
    plan = build_plan(spec)
    for r in sim.rungs:  # every promotion of a rung, at most its next rung's plan
        if r.rung < r.bracket:
            planned = next(b for b in plan.brackets if b.bracket == r.bracket).rungs[r.rung + 1]
            assert 0 < len(r.promoted) <= planned.configs
    assert len(sim.trials) == plan.total_trial_runs


def test_a_bohb_simulation_shows_later_iterations_in_the_order_they_ran(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """bohb's brackets ascend after the first iteration (tuner.params.order):
    the rungs, and the tables of ``hbd simulate``, follow the order they ran in."""
    from hbd.cli import main

    name = write_module(
        tmp_path, "def f(config, r):\n    return (config['lr'] - 0.3) ** 2 + 1 / r\n"
    )
    spec = reference_spec(earlyStopping=[], iterations=2, tuner={"hubRef": "bohb"})
    sim = simulate(spec, load_objective(f"{name}:f", [tmp_path]), seed=0)
    top = max(r.bracket for r in sim.rungs)
    brackets = [(r.iteration, r.bracket) for r in sim.rungs if r.rung == 0]
    assert brackets == [(0, s) for s in range(top, -1, -1)] + [(1, s) for s in range(top + 1)]
    data = yaml.safe_load(REFERENCE.read_text())
    data["matrix"].update(earlyStopping=[], iterations=2, tuner={"hubRef": "bohb"})
    path = tmp_path / "bohb.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["simulate", str(path), "--objective", f"{name}:f"])
    out = capsys.readouterr().out
    assert code == 0
    titles = [line.split(":")[0] for line in out.splitlines() if line.startswith("Iteration")]
    assert titles[: top + 1] == [f"Iteration 0, bracket s={s}" for s in range(top, -1, -1)]
    assert titles[top + 1 :] == [f"Iteration 1, bracket s={s}" for s in range(top + 1)]
