"""What a spec will do, before it runs: the bracket table, totals and parameter ranges.

``build_plan`` turns a validated spec into plain data that ``hbd validate`` and
``hbd plan`` show (the CLI does the printing). All arithmetic comes from
``hbd.core.geometry``; totals of resource are summed exactly (``Fraction``)
so a float resource does not drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from hbd.core import geometry
from hbd.core.space import describe
from hbd.core.spec import SweepSpec, spec_warnings

__all__ = ["Plan", "PlanBracket", "PlanParam", "PlanRung", "build_plan"]


@dataclass(frozen=True, slots=True)
class PlanRung:
    rung: int
    configs: int
    resource: int | float

    def to_json(self) -> dict[str, Any]:
        return {"rung": self.rung, "configs": self.configs, "resource": self.resource}


@dataclass(frozen=True, slots=True)
class PlanBracket:
    bracket: int  # s
    rungs: tuple[PlanRung, ...]
    trial_runs: int
    total_resource: int | float

    def to_json(self) -> dict[str, Any]:
        return {
            "bracket": self.bracket,
            "rungs": [r.to_json() for r in self.rungs],
            "trial_runs": self.trial_runs,
            "total_resource": self.total_resource,
        }


@dataclass(frozen=True, slots=True)
class PlanParam:
    name: str
    kind: str
    range: str  # the effective value range, as ``space.describe`` words it


@dataclass(frozen=True, slots=True)
class Plan:
    max_iterations: int
    eta: int | float
    s_max: int
    brackets: tuple[PlanBracket, ...]  # s_max..0, Hyperband's order
    total_trial_runs: int  # over every iteration
    total_resource: int | float  # over every iteration
    params: tuple[PlanParam, ...]  # in declaration order
    metric: str
    direction: str
    resource_name: str
    resource_type: str
    warnings: tuple[str, ...]
    iterations: int = 1  # Hyperband iterations: the brackets run this often
    tuner: str = "random"
    promotion: str = "synchronous"
    stragglers: int = 0  # asynchronous: running trials a rung's last promotions leave behind
    lag: int | None = None  # bohb: when brackets open (docs/search.md); None: all at once
    order: str | None = None  # bohb: the brackets' order within an iteration (docs/search.md)

    def to_json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "tuner": self.tuner,
            "promotion": self.promotion,
            "stragglers": self.stragglers,
            "lag": self.lag,
            "order": self.order,
            "max_iterations": self.max_iterations,
            "eta": self.eta,
            "s_max": self.s_max,
            "brackets": [b.to_json() for b in self.brackets],
            "total_trial_runs": self.total_trial_runs,
            "total_resource": self.total_resource,
            "params": {p.name: {"kind": p.kind, "range": p.range} for p in self.params},
            "warnings": list(self.warnings),
        }


def _total(exact: Fraction, resource_type: str) -> int | float:
    return int(exact) if resource_type == "int" else float(exact)


def build_plan(spec: SweepSpec) -> Plan:
    m = spec.matrix
    rtype = m.resource.type
    plan_brackets = []
    grand = Fraction(0)
    for b in geometry.brackets(m.max_iterations, m.eta, rtype):
        # An int resource is rounded per rung, so sum the rounded values;
        # a float resource sums the exact ones.
        used = sum(
            (
                r.configs * (Fraction(r.resource) if rtype == "int" else r.exact_resource)
                for r in b.rungs
            ),
            Fraction(0),
        )
        grand += used
        plan_brackets.append(
            PlanBracket(
                bracket=b.s,
                rungs=tuple(PlanRung(r.index, r.configs, r.resource) for r in b.rungs),
                trial_runs=b.trial_runs,
                total_resource=_total(used, rtype),
            )
        )
    return Plan(
        max_iterations=m.max_iterations,
        eta=m.eta,
        s_max=plan_brackets[0].bracket,
        brackets=tuple(plan_brackets),
        total_trial_runs=sum(b.trial_runs for b in plan_brackets) * m.iterations,
        total_resource=_total(grand * m.iterations, rtype),
        params=tuple(PlanParam(name, p.kind, describe(p)) for name, p in m.params.items()),
        metric=m.metric.name,
        direction=m.metric.optimization,
        resource_name=m.resource.name,
        resource_type=rtype,
        warnings=tuple(spec_warnings(spec)),
        iterations=m.iterations,
        tuner=m.tuner.hub_ref if m.tuner is not None else "random",
        promotion=m.promotion,
        stragglers=m.stragglers,
        **_opening(spec),
    )


def _opening(spec: SweepSpec) -> dict[str, Any]:
    """bohb's opening lag and bracket order as the sweep will run them (random
    opens every bracket at once, in Hyperband's order: nothing to show)."""
    tuner = spec.matrix.tuner
    if tuner is None or tuner.hub_ref != "bohb":
        return {}
    if tuner.params is not None:
        return {"lag": tuner.params.lag, "order": tuner.params.order}
    from hbd.core.scheduler import DEFAULT_OPENING  # only a bohb spec pays for it

    return {"lag": DEFAULT_OPENING.lag, "order": DEFAULT_OPENING.order}
