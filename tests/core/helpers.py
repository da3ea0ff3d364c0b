"""A two-party harness: the sweep machine on one side, a fake in-memory executor on the other."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hbd.core.events import (
    Begin,
    CancelTrials,
    Decision,
    Observation,
    StartTrial,
    StopRequested,
    SweepFinished,
    TrialCancelled,
    TrialFailed,
    TrialInterrupted,
    TrialSucceeded,
)
from hbd.core.spec import SweepSpec, parse_spec
from hbd.core.sweep import SweepMachine

# BOHB's own defaults, as sweeps submitted before hbd changed two of them
# recorded their settings (``sweep.submitted``): what old logs replay with.
BOHB_OLD_DEFAULTS: dict[str, object] = {
    "min_points_in_model": None,
    "top_n_percent": 15,
    "num_samples": 64,
    "random_fraction": 1 / 3,
    "bandwidth_factor": 3.0,
    "min_bandwidth": 0.001,
    "multivariate": True,
}
# hbd's second defaults (one density per parameter, the 0.02 floor), recorded
# by sweeps submitted before the good set shrank to BOHBSettings' today.
BOHB_SECOND_DEFAULTS: dict[str, object] = {
    **BOHB_OLD_DEFAULTS,
    "min_bandwidth": 0.02,
    "multivariate": False,
}
# hbd's third defaults (the best 10%, at least 4, of 24 candidates; a fifth
# random), recorded by sweeps with the opening rule (tests/golden).
BOHB_THIRD_DEFAULTS: dict[str, object] = {
    "min_points_in_model": 4,
    "top_n_percent": 10,
    "num_samples": 24,
    "random_fraction": 0.2,
    "bandwidth_factor": 3.0,
    "min_bandwidth": 0.02,
    "multivariate": False,
}


def spec_dict(
    *,
    max_iterations: int = 9,
    eta: float = 3,
    direction: str = "minimize",
    resume: bool = False,
    early_stopping: list[dict[str, Any]] | None = None,
    resource_type: str = "int",
    max_retries: int = 0,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``search``: matrix keys of the search (tuner, promotion, iterations)."""
    termination = {"termination": {"maxRetries": max_retries}} if max_retries else {}
    return termination | {
        "version": 1.1,
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "maxIterations": max_iterations,
            "eta": eta,
            "resource": {"name": "steps", "type": resource_type},
            "metric": {"name": "loss", "optimization": direction},
            "resume": resume,
            "params": {
                "x": {"kind": "uniform", "value": [0, 1]},
                "y": {"kind": "choice", "value": [1, 2, 3]},
            },
            "earlyStopping": early_stopping or [],
            **(search or {}),
        },
        "component": {
            "inputs": [
                {"name": "x", "type": "float"},
                {"name": "y", "type": "int"},
                {"name": "steps", "type": resource_type},
            ],
            "container": {"command": ["python3", "-c", "pass"], "args": ["{{ x }}", "{{ steps }}"]},
        },
    }


def make_spec(**kwargs: Any) -> SweepSpec:
    return parse_spec(spec_dict(**kwargs))


def make_machine(seed: int = 7, sweep_id: str = "sw", **kwargs: Any) -> SweepMachine:
    return SweepMachine.for_spec(make_spec(**kwargs), sweep_id=sweep_id, seed=seed)


Outcome = Callable[[StartTrial], Observation]


def quadratic(start: StartTrial) -> Observation:
    """A smooth objective that improves with resource; deterministic per config."""
    x = float(start.config["x"])
    return TrialSucceeded(
        trial_id=start.trial_id, metrics={"loss": (x - 0.3) ** 2 + 1.0 / float(start.resource)}
    )


@dataclass
class Run:
    decisions: list[Decision] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    steps: list[list[Decision]] = field(default_factory=list)  # decisions of each observation
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # state after each observation

    @property
    def starts(self) -> list[StartTrial]:
        return [d for d in self.decisions if isinstance(d, StartTrial)]

    @property
    def finished(self) -> SweepFinished:
        done = [d for d in self.decisions if isinstance(d, SweepFinished)]
        assert len(done) == 1, done
        return done[0]


def drive(
    machine: SweepMachine,
    outcome: Outcome = quadratic,
    *,
    rng: random.Random | None = None,
    stop_after: int | None = None,
    record: bool = False,
) -> Run:
    """Run the sweep to its end; ``rng`` shuffles which pending trial completes next."""
    run = Run()

    def feed(obs: Observation) -> list[Decision]:
        run.observations.append(obs)
        out = machine.handle(obs)
        run.decisions.extend(out)
        run.steps.append(out)
        if record:
            run.snapshots.append(copy.deepcopy(machine.snapshot()))
        return out

    pending: dict[str, StartTrial] = {}
    cancelled: set[str] = set()

    def absorb(out: list[Decision]) -> None:
        for d in out:
            if isinstance(d, StartTrial):
                pending[d.trial_id] = d
            elif isinstance(d, CancelTrials):
                cancelled.update(d.trial_ids)

    absorb(feed(Begin()))
    while pending:
        ids = sorted(pending)
        tid = rng.choice(ids) if rng else ids[0]
        start = pending.pop(tid)
        if tid in cancelled:
            obs: Observation = TrialCancelled(trial_id=tid, reason="cancelled")
        else:
            obs = outcome(start)
        absorb(feed(obs))
        if isinstance(obs, TrialInterrupted):
            pending[tid] = start  # the same trial runs again
        if (
            stop_after is not None
            and len(run.observations) == stop_after
            and machine.state.value == "running"
        ):
            absorb(feed(StopRequested(reason="test stop")))
    return run


def interrupted_once_every(k: int, base: Outcome = quadratic) -> Outcome:
    """Every k-th index's first run is interrupted (hbd stopped under it), then runs to ``base``."""
    seen: set[str] = set()

    def outcome(start: StartTrial) -> Observation:
        if start.index % k == 0 and start.trial_id not in seen:
            seen.add(start.trial_id)
            return TrialInterrupted(trial_id=start.trial_id, reason="interrupted")
        return base(start)

    return outcome


def failing_every(k: int, base: Outcome = quadratic) -> Outcome:
    def outcome(start: StartTrial) -> Observation:
        if start.index % k == 0:
            return TrialFailed(trial_id=start.trial_id, reason="boom")
        return base(start)

    return outcome


def canonical(decisions: list[Decision]) -> list[str]:
    """Decisions as sortable strings, for comparing runs regardless of order."""
    return sorted(repr(d) for d in decisions)


def by_type(decisions: list[Decision], cls: type) -> list[Any]:
    return [d for d in decisions if isinstance(d, cls)]


def config_of(run: Run) -> Mapping[str, Mapping[str, Any]]:
    return {s.trial_id: s.config for s in run.starts}
