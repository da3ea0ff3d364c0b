"""hbd with random sampling is textbook Hyperband (Li et al. 2018, Algorithm 1), exactly.

Written out here independently of hbd's plan (float arithmetic, the paper's
loop) and fed hbd's keyed draws, Algorithm 1 must evaluate the same
configurations at the same resources and end with the same best as the sweep
machine. The quality benchmark compares hbd with a textbook Hyperband that
draws from its own stream; this test is why a difference there is sampling
noise and not the algorithm (bench/quality.py, docs/search.md).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from hbd.core.events import Observation, StartTrial, TrialFailed, TrialSucceeded
from hbd.core.space import sample_config

from .helpers import drive, make_machine, make_spec

R, ETA = 81, 3


def loss(config: dict[str, Any], resource: float) -> float | None:
    """Crossing learning curves with failures at larger resources, deterministic."""
    x, y = float(config["x"]), int(config["y"])
    if x > 0.85 and resource >= 9:
        return None  # diverges late: never promoted past it
    return (x - 0.3 * y / 2) ** 2 + (1.0 + x * y) / resource


def outcome(start: StartTrial) -> Observation:
    value = loss(dict(start.config), float(start.resource))
    if value is None:
        return TrialFailed(trial_id=start.trial_id, reason="diverged")
    return TrialSucceeded(trial_id=start.trial_id, metrics={"loss": value})


def textbook(seed: int, iterations: int) -> tuple[Counter[tuple[Any, ...]], float]:
    """Algorithm 1 of Li et al., its outer loop repeated; hbd's draw for (bracket key, index)."""
    params = make_spec(max_iterations=R).matrix.params
    s_max = math.floor(math.log(R) / math.log(ETA) + 1e-9)
    budget = (s_max + 1) * R
    runs: Counter[tuple[Any, ...]] = Counter()
    best = math.inf
    for it in range(iterations):
        for s in range(s_max, -1, -1):
            n = math.ceil(budget / R * ETA**s / (s + 1))
            r = R * ETA ** (-s)
            key = s + it * (s_max + 1)
            configs = [sample_config(params, seed=seed, bracket=key, index=i) for i in range(n)]
            for i in range(s + 1):
                n_i, r_i = int(n * ETA ** (-i)), round(r * ETA**i)
                losses = [loss(c, r_i) for c in configs]
                runs.update((s, i, r_i, tuple(sorted(c.items()))) for c in configs)
                if i == s:
                    best = min([best, *(v for v in losses if v is not None)])
                ranked = sorted(
                    range(len(configs)),
                    key=lambda j: math.inf if losses[j] is None else losses[j],
                )
                configs = [configs[j] for j in ranked[: int(n_i / ETA)] if losses[j] is not None]
    return runs, best


@pytest.mark.parametrize(("seed", "iterations"), [(0, 1), (7, 1), (3, 2)])
def test_random_hbd_evaluates_exactly_what_algorithm_1_evaluates(
    seed: int, iterations: int
) -> None:
    machine = make_machine(seed=seed, max_iterations=R, search={"iterations": iterations})
    run = drive(machine, outcome)
    hbd_runs = Counter(
        (s.bracket, s.rung, s.resource, tuple(sorted(s.config.items()))) for s in run.starts
    )
    expected, best = textbook(seed, iterations)
    assert hbd_runs == expected
    top = [
        t
        for t in machine.trials.values()
        if t.resource == R and t.metrics and t.metrics.get("loss") is not None
    ]
    assert min(float(t.metrics["loss"]) for t in top) == pytest.approx(best, rel=0, abs=0)
