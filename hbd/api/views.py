"""JSON shapes of sweeps and trials as the API serves them (and scripts rely on)."""

from __future__ import annotations

import math
from typing import Any

from hbd.core import geometry
from hbd.core.ranking import rank
from hbd.core.scheduler import BracketOrder, run_order
from hbd.core.spec import HyperbandMatrix, parse_spec
from hbd.core.vocabulary import SweepStatus, TrialStatus
from hbd.store.projections import SweepRow, TrialRow


def resource_value(value: float | None, resource_type: str) -> int | float | None:
    if value is None:
        return None
    return int(value) if resource_type == "int" else float(value)


def resource_type(sweep: SweepRow) -> str:
    return str(sweep.spec_json["matrix"]["resource"]["type"])


def trial_view(trial: TrialRow, rtype: str) -> dict[str, Any]:
    return {
        "id": trial.id,
        "sweep_id": trial.sweep_id,
        "iteration": trial.iteration,
        "bracket": trial.bracket,
        "rung": trial.rung,
        "index": trial.idx,
        "config": trial.config,
        "resource": resource_value(trial.resource, rtype),
        "status": trial.status,
        "metric": trial.metric,
        "metrics": trial.metrics,
        "parent": trial.parent,
        "executor": trial.executor,
        "reason": trial.reason,
        "scheduled_at": trial.scheduled_at,
        "started_at": trial.started_at,
        "ended_at": trial.ended_at,
    }


def best_per_resource(
    trials: list[TrialRow], sweep: SweepRow, order: BracketOrder = "hyperband"
) -> list[TrialRow]:
    """The best succeeded trial run at each resource, lowest resource first.

    The last is the sweep's best (the best at the highest resource reached,
    HpBandSter's convention; hbd.core.sweep.SweepMachine.best). Ties go as the
    machine breaks them, to the run first in the canonical order (bracket
    position under ``order``, rung, index), so that this list's last and the
    sweep's best trial are the same run.
    """
    matrix = parse_spec(sweep.spec_json).matrix
    plan = [b.s for b in _plan(matrix)]

    def order_key(t: TrialRow) -> tuple[int, ...]:
        ran = run_order(plan, order, t.iteration)
        place = ran.index(t.bracket) if t.bracket in ran else len(plan)
        return (t.iteration, place, t.rung or 0, t.idx or 0)

    by_resource: dict[float, list[TrialRow]] = {}
    for t in trials:
        if t.resource is not None and t.metric is not None and math.isfinite(t.metric):
            by_resource.setdefault(t.resource, []).append(t)
    return [
        rank(
            by_resource[r],
            value=lambda t: t.metric,
            order_key=order_key,
            direction=matrix.metric.optimization,
        )[0]
        for r in sorted(by_resource)
    ]


def _plan(matrix: HyperbandMatrix) -> tuple[geometry.Bracket, ...]:
    return geometry.brackets(matrix.max_iterations, matrix.eta, matrix.resource.type)


def sweep_summary(
    sweep: SweepRow, live_state: str | None = None, broken: str | None = None
) -> dict[str, Any]:
    """``broken``: why the daemon could not resume this sweep (e.g. ReplayDiverged)."""
    matrix = sweep.spec_json["matrix"]
    return {
        "id": sweep.id,
        "name": sweep.name or None,
        # the projection says running until the end; the live machine knows "stopping"
        "status": SweepStatus.BROKEN
        if broken
        else live_state
        if live_state == SweepStatus.STOPPING
        else sweep.status,
        "seed": sweep.seed,
        "metric": matrix["metric"],
        "created_at": sweep.created_at,
        "finished_at": sweep.finished_at,
        "reason": broken or sweep.reason,
        "best_trial_id": sweep.best_trial_id,
        "best_metric": sweep.best_metric,
    }


def sweep_detail(
    sweep: SweepRow,
    progress: list[dict[str, Any]],
    counts: dict[str, int],
    best: TrialRow | None,
    live_state: str | None,
    broken: str | None = None,
    checkpoints: dict[str, int] | None = None,
    per_resource: list[TrialRow] | None = None,
    iterations: int | None = None,
    order: BracketOrder = "hyperband",
) -> dict[str, Any]:
    """``iterations``: Hyperband iterations planned now (a live sweep may have
    been extended); default the spec's. ``order``: the brackets' order the sweep
    recorded, which ``brackets`` follows within each iteration."""
    matrix = parse_spec(sweep.spec_json).matrix
    plan = _plan(matrix)
    planned = iterations or matrix.iterations
    seen = {(p["iteration"], p["bracket"], p["rung"]): p for p in progress}
    by_s = {b.s: b for b in plan}
    runs = ((it, by_s[s]) for it in range(planned) for s in run_order(list(by_s), order, it))
    brackets = []
    for it, b in runs:
        rungs = []
        for r in b.rungs:
            p = seen.get((it, b.s, r.index), {"total": 0, "by_status": {}})
            rungs.append(
                {
                    "rung": r.index,
                    "planned": r.configs,
                    "resource": r.resource,
                    "trials": p["total"],
                    "by_status": p["by_status"],
                }
            )
        brackets.append({"iteration": it, "bracket": b.s, "rungs": rungs})
    return {
        **sweep_summary(sweep, live_state, broken),
        "resource": {"name": matrix.resource.name, "type": matrix.resource.type},
        "max_iterations": matrix.max_iterations,
        "eta": matrix.eta,
        "concurrency": matrix.concurrency,
        "trials": counts,
        "iterations": planned,
        "bracket_order": order,
        "planned_trial_runs": sum(b.trial_runs for b in plan) * planned,
        "brackets": brackets,
        "best": None if best is None else trial_view(best, matrix.resource.type),
        "checkpoints": _checkpoints(counts, checkpoints),
        "best_per_resource": [trial_view(t, matrix.resource.type) for t in per_resource or ()],
    }


def _checkpoints(counts: dict[str, int], summary: dict[str, int] | None) -> dict[str, int]:
    """Checkpoints deleted by retention and bytes freed; ``kept``: of the trials that ran
    to an end (succeeded or failed), those whose checkpoint was not deleted; ``kept_bytes``
    when the daemon measured them (a shared path or URL store)."""
    summary = summary or {"deleted": 0, "freed_bytes": 0}
    ran = counts.get(TrialStatus.SUCCEEDED, 0) + counts.get(TrialStatus.FAILED, 0)
    return {**summary, "kept": max(0, ran - summary["deleted"])}
