"""The API's JSON shapes computed from store rows: the best per resource."""

from __future__ import annotations

from hbd.api.views import best_per_resource
from hbd.store.projections import TrialRow


def row(tid: str, resource: float, metric: float | None) -> TrialRow:
    return TrialRow(
        id=tid,
        sweep_id="sw",
        bracket=0,
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
    )


def test_the_best_per_resource_ends_with_the_best_at_the_highest_resource() -> None:
    rows = [row("a", 1, 0.1), row("b", 9, 0.5), row("c", 9, 0.4), row("d", 3, None)]
    assert [t.id for t in best_per_resource(rows, "minimize")] == ["a", "c"]
    # The resource-1 run has the lowest loss, and is still not the sweep's best.
    assert [t.id for t in best_per_resource(rows, "maximize")] == ["a", "b"]
    tie = [row("z", 9, 0.4), row("c", 9, 0.4)]
    assert [t.id for t in best_per_resource(tie, "minimize")] == ["c"]
    assert best_per_resource([], "minimize") == []
