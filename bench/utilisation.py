"""Slot utilisation: synchronous vs asynchronous promotion with heterogeneous trial durations.

A simulated clock and ``slots`` identical workers drive ``hbd.core``'s
``SweepMachine`` directly (no daemon, no processes): a trial run at resource r
takes r * LogNormal(0, sigma) seconds, a function of the trial id and the seed
(so both schedulers see the same durations for the same trials). A free slot
takes the pending trial with the highest ``StartTrial.priority`` (deeper rungs
first, as the daemon's dispatcher and ``hbd simulate`` do), first in first out
among equals; ``--order`` tries other dispatch orders (ORDERS) to measure them.
The objective is a noisy function of the config and resource.

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

Honesty of "until the last start": a trial that is held back (queued behind
others) and started last keeps the queue non-empty, so no slot counts as idle
before it, and its run falls in the drain, which is not counted. An order that
holds long independent work back (e.g. a bracket's last-rung trials, which no
decision waits for) would look better than it is. So the bench prints, per
row, in how many seeds the last start was a promotion (a trial that had to
wait for a result, which no order could have started earlier) and the
whole-makespan share, which a held-back long run lowers. With one iteration
every seed's last start is a promotion. With several, deeper-rungs-first itself
queues the last iteration's first-rung trials behind promotions, so some of
them start last: the "until the last start" share is then flattered, and the
whole-makespan share is the figure to compare (``--order fifo`` for the
baseline).

Where the idle time is at one iteration: each bracket's rungs are capped at
their planned size, so a rung's last promotion comes only when nearly all its
trials have ended (ASHA promotes the top floor(m / eta) of the m ended, and
floor(n_i / eta) = n_{i+1}). The top rungs (3 trials -> 1) wait for their
slowest, and the chains 1 -> 3 -> 9 -> 27 -> 81 (bracket 4) and 3 -> 9 -> 27 ->
81 (bracket 3) decide when the last trial can start; meanwhile every other
trial run has started and slots fall idle one by one. "chain" is the median
last start with unlimited slots (the same durations, nothing queued; ASHA's
decisions may differ) and "work/slots" the median slot-seconds of work per
slot. When the chain is about as long as the work before it per slot, the
slots run out of startable work before the chain ends whatever the dispatch
order; more iterations (or other sweeps) fill them. ``--stragglers`` adds
asynchronous rows with ``matrix.stragglers``: a rung's last promotions leave
that many running trials behind, so a top rung does not wait for its slowest.

    .venv/bin/python bench/utilisation.py                   # 10 seeds, 16 slots
    .venv/bin/python bench/utilisation.py --slots 32 --sigma 1.5 --iterations 2
    .venv/bin/python bench/utilisation.py --bohb-lags 0,2     # bohb rows with other lags
    .venv/bin/python bench/utilisation.py --stragglers 0,1    # asynchronous with matrix.stragglers

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import heapq
import math
import statistics
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hbd.core.events import Begin, Observation, StartTrial, TrialSucceeded
from hbd.core.spec import parse_spec
from hbd.core.sweep import SweepMachine


def spec(
    max_iterations: int,
    promotion: str,
    iterations: int,
    tuner: str,
    lag: int | None = None,
    stragglers: int = 0,
) -> dict[str, Any]:
    params = {} if lag is None else {"params": {"lag": lag}}  # bohb's opening lag
    # matrix.stragglers, for asynchronous promotion only (the spec refuses it otherwise)
    more = {"stragglers": stragglers} if promotion == "asynchronous" and stragglers else {}
    return {
        "kind": "operation",
        "matrix": {
            "kind": "hyperband",
            "tuner": {"hubRef": tuner, **params},
            "maxIterations": max_iterations,
            "eta": 3,
            "promotion": promotion,
            **more,
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


# Slots enough that no trial run ever queues (the largest bracket has 3**4 = 81
# first-rung trials at the default maxIterations; more iterations add brackets).
UNLIMITED = 100_000

# Dispatch orders to compare (a sort key, higher first; FIFO among equals).
# "rung" is the daemon's and simulate's (StartTrial.priority).
ORDERS: dict[str, Callable[[StartTrial], tuple[float, ...]]] = {
    "rung": lambda d: (d.priority,),  # deeper rungs first (the daemon's)
    "fifo": lambda d: (0,),  # in the order the machine decided them
    "longest": lambda d: (float(d.resource),),  # longest expected run first
    "shortest": lambda d: (-float(d.resource),),  # holds long runs back
    # Trials something waits for (not a bracket's last rung) first: holds
    # independent work back as filler.
    "gating": lambda d: (d.bracket > d.rung, d.priority),
    # Promotions first, then the most rungs left in the bracket (critical path:
    # the longest chain of runs that wait for each other) first.
    "critical": lambda d: (d.rung > 0, d.bracket - d.rung),
    # The most rungs left first, deeper rungs among equals.
    "levels": lambda d: (d.bracket - d.rung, d.priority),
}


@dataclass(frozen=True, slots=True)
class Run:
    until_last_start: float  # share of slot-seconds busy from 0 to the last start
    whole: float  # share busy over the whole makespan
    last_start: float
    last_is_promotion: bool  # the last trial run started had to wait for a result
    work: float  # slot-seconds of work in all


def run(
    *,
    seed: int,
    promotion: str,
    slots: int,
    sigma: float,
    max_iterations: int,
    iterations: int,
    tuner: str,
    order: str = "rung",
    lag: int | None = None,
    stragglers: int = 0,
) -> Run:
    """Drive one sweep on the simulated clock (``lag``: bohb's tuner.params.lag)."""
    key = ORDERS[order]
    machine = SweepMachine.for_spec(
        parse_spec(spec(max_iterations, promotion, iterations, tuner, lag, stragglers)),
        sweep_id="u",
        seed=seed,
    )
    spans: list[tuple[float, float]] = []  # (start, end) of every trial run
    last_start = 0.0
    pending: list[tuple[tuple[float, ...], int, StartTrial]] = []  # (-key, seq, trial)
    running: list[tuple[float, int, StartTrial]] = []  # (end time, seq, trial)
    last = None
    seq = 0
    now = busy = 0.0

    def take(decisions: list[Any]) -> None:
        nonlocal seq
        for d in decisions:
            if isinstance(d, StartTrial):
                heapq.heappush(pending, (tuple(-k for k in key(d)), seq, d))
                seq += 1

    take(machine.handle(Begin()))
    while pending or running:
        while pending and len(running) < slots:
            start = heapq.heappop(pending)[2]
            took = duration(seed, start, sigma)
            busy += took
            spans.append((now, now + took))
            last_start, last = now, start
            heapq.heappush(running, (now + took, seq, start))
            seq += 1
        now, _, done = heapq.heappop(running)
        take(machine.handle(outcome(seed, done)))
    assert machine.finished is not None
    before = sum(max(0.0, min(end, last_start) - begin) for begin, end in spans)
    assert last is not None
    return Run(
        until_last_start=before / (slots * last_start),
        whole=busy / (slots * now),
        last_start=last_start,
        last_is_promotion=last.parent is not None,
        work=busy,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of durations")
    parser.add_argument("--max-iterations", type=int, default=81)
    parser.add_argument("--iterations", type=int, default=1, help="Hyperband iterations")
    parser.add_argument("--order", choices=sorted(ORDERS), default="rung", help="dispatch order")
    parser.add_argument("--tuners", default="random,bohb", help="comma-separated tuners to run")
    parser.add_argument(
        "--bohb-lags", default="", help="bohb rows with these tuner.params.lag, e.g. 0,1,2"
    )
    parser.add_argument(
        "--stragglers", default="0", help="asynchronous rows with these matrix.stragglers, e.g. 0,1"
    )
    args = parser.parse_args(argv)
    print(
        f"maxIterations={args.max_iterations} eta=3, {args.iterations} iteration(s), "
        f"{args.slots} slots, durations resource x LogNormal(0, {args.sigma}), "
        f"{args.seeds} seeds, {args.order} order; median (min-max) share of slot-seconds busy"
    )
    print(
        f"{'tuner':<7} {'promotion':<13} {'until the last start':>22} {'whole makespan':>22}"
        f" {'last=promotion':>14} {'last start':>10} {'chain':>6} {'work/slots':>10}"
    )
    lags = [int(x) for x in args.bohb_lags.split(",") if x.strip()]
    rows = [(tuner, None) for tuner in args.tuners.split(",")] + [("bohb", lag) for lag in lags]
    stragglers = [int(x) for x in args.stragglers.split(",") if x.strip()]
    variants = [("synchronous", 0)] + [("asynchronous", k) for k in stragglers]
    for tuner, lag in rows:
        for promotion, k in variants:
            common = dict(
                promotion=promotion,
                stragglers=k,
                sigma=args.sigma,
                max_iterations=args.max_iterations,
                iterations=args.iterations,
                tuner=tuner,
                order=args.order,
                lag=lag,
            )
            runs = [run(seed=seed, slots=args.slots, **common) for seed in range(args.seeds)]
            # Unlimited slots: nothing queues, so the last start is the chain's.
            chains = [run(seed=seed, slots=UNLIMITED, **common) for seed in range(args.seeds)]
            cells = []
            for xs in ([r.until_last_start for r in runs], [r.whole for r in runs]):
                cells.append(f"{statistics.median(xs):.1%} ({min(xs):.0%}-{max(xs):.0%})".rjust(22))
            promoted = f"{sum(r.last_is_promotion for r in runs)}/{len(runs)}"
            last = statistics.median(r.last_start for r in runs)
            chain = statistics.median(r.last_start for r in chains)
            per_slot = statistics.median(r.work for r in runs) / args.slots
            name = tuner if lag is None else f"bohb{lag}"  # bohb: the default lag
            label = f"async, k={k}" if k else promotion  # k: matrix.stragglers
            print(
                f"{name:<7} {label:<13} {cells[0]} {cells[1]} {promoted:>14}"
                f" {last:>10.0f} {chain:>6.0f} {per_slot:>10.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
