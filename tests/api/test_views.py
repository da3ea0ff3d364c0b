"""The API's JSON shapes computed from store rows: the best per resource."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hbd.api.views import best_per_resource
from hbd.core.scheduler import BracketOrder
from hbd.store.projections import SweepRow, TrialRow

SPEC = Path(__file__).parents[2] / "examples" / "reference-fixed.yaml"  # maxIterations 81


def sweep(optimization: str = "minimize") -> SweepRow:
    data = yaml.safe_load(SPEC.read_text())
    data["matrix"]["metric"]["optimization"] = optimization
    return SweepRow(
        id="sw",
        name=None,
        status="running",
        spec="",
        spec_json=data,
        seed=1,
        created_at=None,
        finished_at=None,
        best_trial_id=None,
        best_metric=None,
        reason=None,
        last_seq=None,
    )


def row(
    tid: str, resource: float, metric: float | None, bracket: int = 0, iteration: int = 0
) -> TrialRow:
    return TrialRow(
        id=tid,
        sweep_id="sw",
        bracket=bracket,
        rung=0,
        idx=0,
        config={},
        resource=resource,
        parent=None,
        resume_from=None,
        status="succeeded",
        executor=None,
        metrics={} if metric is None else {"loss": metric},
        metric=metric,
        reason=None,
        scheduled_at=None,
        started_at=None,
        ended_at=None,
        iteration=iteration,
    )


def test_the_best_per_resource_ends_with_the_best_at_the_highest_resource() -> None:
    rows = [row("a", 1, 0.1), row("b", 9, 0.5), row("c", 9, 0.4), row("d", 3, None)]
    assert [t.id for t in best_per_resource(rows, sweep())] == ["a", "c"]
    # The resource-1 run has the lowest loss, and is still not the sweep's best.
    assert [t.id for t in best_per_resource(rows, sweep("maximize"))] == ["a", "b"]
    assert [t.id for t in best_per_resource([row("n", 9, float("nan"))], sweep())] == []
    assert best_per_resource([], sweep()) == []


@pytest.mark.parametrize(
    ("order", "iteration", "winner"),
    [
        ("hyperband", 0, "s4"),  # s_max runs first
        ("ascending-after-first", 0, "s4"),  # the first iteration keeps Hyperband's order
        ("ascending-after-first", 1, "s0"),  # later ones run s = 0 first
        ("hyperband", 1, "s4"),
    ],
)
def test_a_tie_goes_to_the_run_the_machine_ranks_first(
    order: BracketOrder, iteration: int, winner: str
) -> None:
    """As SweepMachine.best breaks ties (bracket position, rung, index), not by
    trial id, so the detail's best per resource and its best trial agree."""
    tie = [
        row("s4", 81, 0.4, bracket=4, iteration=iteration),
        row("s0", 81, 0.4, bracket=0, iteration=iteration),
        row("late", 81, 0.4, bracket=4, iteration=iteration + 1),
    ]
    assert [t.id for t in best_per_resource(tie, sweep(), order)] == [winner]
