"""Slot utilisation: synchronous vs asynchronous promotion with heterogeneous trial durations.

A simulated clock and ``slots`` identical workers drive ``hbd.core``'s
``SweepMachine`` directly (no daemon, no processes): a trial run at resource r
takes r * LogNormal(0, sigma) seconds, a function of the trial id and the seed
(so both schedulers see the same durations for the same trials). A free slot
takes the pending trial with the highest ``StartTrial.priority`` (deeper rungs
first, as the daemon's dispatcher and ``hbd simulate`` do), first in first out
among equals. The objective is a noisy function of the config and resource.

Utilisation is the share of slot-seconds busy while the sweep still had
trials to start: from 0 to the moment its last trial run started. After that
moment the sweep drains (its last, longest runs end one by one) and idle slots
are free for other sweeps whatever the scheduler; before it, an idle slot is
one a rung barrier kept waiting. Synchronous Hyperband leaves slots idle while
a rung waits for its slowest trial and no other bracket has work (brackets
opened lazily, as BOHB needs, wait for what their sampler is shown; the lag,
``tuner.params.lag``, trades that against what it learns, docs/search.md);
ASHA promotes as results arrive. The whole-makespan share (drain included) is
printed too.

    .venv/bin/python bench/utilisation.py                   # 10 seeds, 16 slots
    .venv/bin/python bench/utilisation.py --slots 32 --sigma 1.5 --iterations 2
    .venv/bin/python bench/utilisation.py --bohb-lags 0,2     # bohb rows with other lags

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import heapq
import math
import statistics
import zlib
from typing import Any

from hbd.core.events import Begin, Observation, StartTrial, TrialSucceeded
from hbd.core.spec import parse_spec
from hbd.core.sweep import SweepMachine


def spec(
    max_iterations: int, promotion: str, iterations: int, tuner: str, lag: int | None = None
) -> dict[str, Any]:
    params = {} if lag is None else {"params": {"lag": lag}}  # bohb's opening lag
    return {
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "tuner": {"hubRef": tuner, **params},
            "maxIterations": max_iterations,
            "eta": 3,
            "promotion": promotion,
            "iterations": iterations,
            "resource": {"name": "steps", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "params": {
                "x": {"kind": "uniform", "value": [0, 1]},
                "y": {"kind": "loguniform", "value": [-5, 0]},
            },
        },
        "component": {
            "inputs": [
                {"name": "x", "type": "float"},
                {"name": "y", "type": "float"},
                {"name": "steps", "type": "int"},
            ],
            "container": {"command": ["true"]},
        },
    }


def unit(seed: int, trial_id: str, salt: str) -> float:
    """A uniform number in (0, 1) keyed by the trial, not by when it runs."""
    return (zlib.crc32(f"{seed}:{salt}:{trial_id}".encode()) + 0.5) / 2**32


def duration(seed: int, start: StartTrial, sigma: float) -> float:
    u1, u2 = unit(seed, start.trial_id, "a"), unit(seed, start.trial_id, "b")
    z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller
    return float(start.resource) * math.exp(sigma * z)


def outcome(seed: int, start: StartTrial) -> Observation:
    x, y = float(start.config["x"]), float(start.config["y"])
    noise = (unit(seed, start.trial_id, "n") - 0.5) / math.sqrt(float(start.resource))
    loss = (x - 0.3) ** 2 + abs(math.log(y) + 3) / 10 + noise
    return TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss})


def run(
    *,
    seed: int,
    promotion: str,
    slots: int,
    sigma: float,
    max_iterations: int,
    iterations: int,
    tuner: str,
    lag: int | None = None,
) -> tuple[float, float]:
    """(share busy until the last start, share busy over the whole makespan)."""
    machine = SweepMachine.for_spec(
        parse_spec(spec(max_iterations, promotion, iterations, tuner, lag)), sweep_id="u", seed=seed
    )
    spans: list[tuple[float, float]] = []  # (start, end) of every trial run
    last_start = 0.0
    pending: list[tuple[int, int, StartTrial]] = []  # (-priority, order, trial)
    running: list[tuple[float, int, StartTrial]] = []  # (end time, order, trial)
    order = 0
    now = busy = 0.0

    def take(decisions: list[Any]) -> None:
        nonlocal order
        for d in decisions:
            if isinstance(d, StartTrial):
                heapq.heappush(pending, (-d.priority, order, d))
                order += 1

    take(machine.handle(Begin()))
    while pending or running:
        while pending and len(running) < slots:
            start = heapq.heappop(pending)[2]
            took = duration(seed, start, sigma)
            busy += took
            spans.append((now, now + took))
            last_start = now
            heapq.heappush(running, (now + took, order, start))
            order += 1
        now, _, done = heapq.heappop(running)
        take(machine.handle(outcome(seed, done)))
    assert machine.finished is not None
    before = sum(max(0.0, min(end, last_start) - begin) for begin, end in spans)
    return before / (slots * last_start), busy / (slots * now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of durations")
    parser.add_argument("--max-iterations", type=int, default=81)
    parser.add_argument("--iterations", type=int, default=1, help="Hyperband iterations")
    parser.add_argument(
        "--bohb-lags", default="", help="bohb rows with these tuner.params.lag, e.g. 0,1,2"
    )
    args = parser.parse_args(argv)
    print(
        f"maxIterations={args.max_iterations} eta=3, {args.iterations} iteration(s), "
        f"{args.slots} slots, durations resource x LogNormal(0, {args.sigma}), "
        f"{args.seeds} seeds; median (min-max) share of slot-seconds busy"
    )
    print(f"{'tuner':<7} {'promotion':<13} {'until the last start':>22} {'whole makespan':>22}")
    lags = [int(x) for x in args.bohb_lags.split(",") if x.strip()]
    rows = [("random", None), ("bohb", None)] + [("bohb", lag) for lag in lags]
    for tuner, lag in rows:
        for promotion in ("synchronous", "asynchronous"):
            shares = [
                run(
                    seed=seed,
                    promotion=promotion,
                    slots=args.slots,
                    sigma=args.sigma,
                    max_iterations=args.max_iterations,
                    iterations=args.iterations,
                    tuner=tuner,
                    lag=lag,
                )
                for seed in range(args.seeds)
            ]
            cells = []
            for k in (0, 1):
                xs = [s[k] for s in shares]
                cells.append(f"{statistics.median(xs):.1%} ({min(xs):.0%}-{max(xs):.0%})".rjust(22))
            name = tuner if lag is None else f"bohb{lag}"  # bohb: the default lag
            print(f"{name:<7} {promotion:<13} {cells[0]} {cells[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
