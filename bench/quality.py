"""Search quality: hbd (random, bohb) against textbook Hyperband and Optuna's TPE + Hyperband.

Two multi-fidelity problems, both minimised, resource 1..81 (maxIterations=81, eta=3):

- ``hartmann6``: the 6-d Hartmann function with a fidelity s = r / 81 (BoTorch's
  AugmentedHartmann: alpha_1 is biased by -0.1 (1 - s)), plus Gaussian noise of
  sd 0.2 (1 - s) + 0.01, so low resources are both biased and noisy.
  Regret: Hartmann6(x) at full fidelity, noise-free, minus its minimum -3.32237.
- ``curves``: a learning-curve surrogate with 7 hyperparameters of 5 kinds
  (log-uniform lr and weight decay, uniform momentum, quantized dropout, an
  integer width range, categorical batch size and optimizer). The loss falls
  from 2.3 to an asymptote a(θ) that is exactly reached at r = 81, at a speed
  that grows with the learning rate and shrinks with dropout and batch size,
  so curves cross: what is best early is not best at the end. Too large an
  effective learning rate diverges (a failed run, no metric). Noise sd
  0.01 + 0.05 / sqrt(r). Regret: a(θ) minus its minimum 0.05.

Methods, each on one worker, trials in the order the method runs them:

- ``hbd-random``, ``hbd-bohb``, ``hbd-rnd-async``, ``hbd-bohb-async``: hbd's
  own core, ``SweepMachine`` with the spec's ``tuner`` and ``promotion``
  (``run_hbd`` below): trial runs in the daemon's dispatch order (deeper rungs
  first), brackets of a learning sampler opened lazily by the spec's opening
  rule and shown the rungs it says (``tuner.params.lag``, docs/search.md),
  iterations as ``matrix.iterations``. ``--bohb`` sets bohb's ``tuner.params``.
  ``--slots N`` runs them on N simulated workers instead (``run_hbd_on_slots``:
  results arrive out of order, as asynchronous promotion meets them on a
  cluster), ``--stragglers K`` sets the async rows' ``matrix.stragglers``.
- ``hyperband``: Li et al. 2018, Algorithm 1, written out here with float
  arithmetic and numpy's random sampling (a reference independent of hbd).
  With hbd's draws instead it evaluates exactly what ``hbd-random`` does
  (tests/core/test_textbook.py), so a gap between the two is sampling noise:
  over 150 seeds their medians are within 3% at every budget.
- ``optuna-tpe``: Optuna's HyperbandPruner(1, 81, 3) with TPESampler (defaults),
  reporting at the rung resources 1, 3, 9, 27, 81 through ask/tell.

Budget is counted in resource units consumed, with checkpoint resume for
every method (a configuration continued from resource r to r' costs r' - r,
as an Optuna trial that is not pruned does, and as hbd with ``resume: true``).
One Hyperband iteration is what one full iteration of hbd's plan costs that
way (1581 units for 81/3). A method's incumbent at a budget is the
configuration with the best observed loss among the runs at the highest
resource reached within that budget (HpBandSter's convention); its regret is
the noise-free, full-resource loss of that configuration minus the optimum.

    .venv/bin/python bench/quality.py                 # 10 seeds, both problems (~3 min)
    .venv/bin/python bench/quality.py --seeds 3       # a quick check
    .venv/bin/python bench/quality.py --first-seed 10 # another 10 seeds (medians are noisy)
    .venv/bin/python bench/quality.py --seeds 100     # the README's table (~10 min); decide on this
    .venv/bin/python bench/quality.py --methods hbd-rnd-async,hbd-bohb-async --slots 16 --stragglers 1

Not part of the test suite. Needs the test extra (Optuna).
"""

from __future__ import annotations

import argparse
import heapq
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from hbd.core import geometry
from hbd.core.events import Begin, StartTrial, TrialFailed, TrialSucceeded
from hbd.core.params import Param
from hbd.core.space import JSONValue
from hbd.core.spec import HyperbandMatrix
from hbd.core.sweep import SweepMachine
from hbd.core.tunerparams import BOHBParams

MAX_ITERATIONS, ETA = 81, 3
BOHB_PARAMS: dict[str, Any] = {}  # tuner.params of bohb sweeps (none: the defaults); --bohb
BUDGET_POINTS = (0.5, 1.0, 5.0)  # in Hyperband iterations
SLOTS = 1  # hbd's rows on this many simulated workers (--slots)
STRAGGLERS = 0  # matrix.stragglers of hbd's asynchronous rows (--stragglers)
PARAM: TypeAdapter[Any] = TypeAdapter(Param)

Config = Mapping[str, JSONValue]


# ---------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    name: str
    params: dict[str, Any]  # hbd parameters
    # (config, resource, noise generator) -> observed loss, None when the run fails
    observe: Callable[[Config, float, np.random.Generator], float | None]
    regret: Callable[[Config], float]  # the incumbent's true full-resource regret
    optuna_space: Callable[[Any], dict[str, Any]]  # an Optuna trial -> config


def p(kind: str, value: Any) -> Any:
    return PARAM.validate_python({"kind": kind, "value": value})


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
H_MIN = -3.32237


def hartmann6(x: Sequence[float], fidelity: float = 1.0) -> float:
    alpha = _H_ALPHA.copy()
    alpha[0] -= 0.1 * (1 - fidelity)  # BoTorch's AugmentedHartmann
    inner = (_H_A * (np.asarray(x) - _H_P) ** 2).sum(axis=1)
    return float(-(alpha * np.exp(-inner)).sum())


H_NAMES = [f"x{i}" for i in range(6)]


def _h_observe(config: Config, r: float, noise: np.random.Generator) -> float:
    s = r / MAX_ITERATIONS
    x = [float(config[n]) for n in H_NAMES]  # type: ignore[arg-type]
    return hartmann6(x, s) + float(noise.normal(0, 0.2 * (1 - s) + 0.01))


HARTMANN = Problem(
    name="hartmann6",
    params={n: p("uniform", [0, 1]) for n in H_NAMES},
    observe=_h_observe,
    regret=lambda c: hartmann6([float(c[n]) for n in H_NAMES]) - H_MIN,  # type: ignore[arg-type]
    optuna_space=lambda t: {n: t.suggest_float(n, 0, 1) for n in H_NAMES},
)

LR_OPT = {"adam": -3.0, "rmsprop": -3.3, "sgd": -1.7}  # best log10(lr) per optimizer
OPT_OFFSET = {"adam": 0.0, "rmsprop": 0.02, "sgd": 0.01}
BATCHES = [16, 32, 64, 128, 256]
L0, A_MIN = 2.3, 0.05


def _asymptote(c: Config) -> float:
    opt = str(c["optimizer"])
    lr, mom, wd = float(c["lr"]), float(c["momentum"]), float(c["wd"])  # type: ignore[arg-type]
    drop, width, batch = float(c["dropout"]), float(c["width"]), float(c["batch"])  # type: ignore[arg-type]
    return (
        A_MIN
        + OPT_OFFSET[opt]
        + 0.15 * (math.log10(lr) - LR_OPT[opt]) ** 2
        + (0.3 if opt == "sgd" else 0.03) * (mom - 0.9) ** 2
        + 0.6 * (drop - 0.3) ** 2
        + 0.02 * (math.log10(wd) + 4) ** 2
        + 0.01 * (math.log2(width) - 9) ** 2
        + 0.01 * (math.log2(batch) - 6) ** 2
    )


def _speed(c: Config) -> float:
    """Inverse time constant of the curve: fast with a large lr, slow with dropout and batch."""
    lr, drop, batch = float(c["lr"]), float(c["dropout"]), float(c["batch"])  # type: ignore[arg-type]
    return 0.2 * (lr / 1e-3) ** 0.5 * (64 / batch) ** 0.5 / (1 + 3 * drop)


def _c_observe(config: Config, r: float, noise: np.random.Generator) -> float | None:
    lr, mom = float(config["lr"]), float(config["momentum"])  # type: ignore[arg-type]
    effective = lr / (1 - mom) if config["optimizer"] == "sgd" else lr * 30
    if effective > 3.0:
        return None  # diverged
    a, k = _asymptote(config), _speed(config)
    # Exactly a at r = R: the curve is normalised between r = 0 (L0) and R.
    shape = (1 / (1 + k * r) - 1 / (1 + k * MAX_ITERATIONS)) / (1 - 1 / (1 + k * MAX_ITERATIONS))
    return a + (L0 - a) * shape + float(noise.normal(0, 0.01 + 0.05 / math.sqrt(r)))


def _c_regret(c: Config) -> float:
    lr, mom = float(c["lr"]), float(c["momentum"])  # type: ignore[arg-type]
    effective = lr / (1 - mom) if c["optimizer"] == "sgd" else lr * 30
    return (L0 if effective > 3.0 else _asymptote(c)) - A_MIN


CURVES = Problem(
    name="curves",
    params={
        "lr": p("loguniform", [math.log(1e-5), math.log(1.0)]),
        "momentum": p("uniform", [0, 0.99]),
        "wd": p("loguniform", [math.log(1e-7), math.log(1e-1)]),
        "dropout": p("quniform", [0, 0.7, 0.05]),
        "width": p("range", [32, 1025, 32]),
        "batch": p("choice", BATCHES),
        "optimizer": p("choice", ["sgd", "adam", "rmsprop"]),
    },
    observe=_c_observe,
    regret=_c_regret,
    optuna_space=lambda t: {
        "lr": t.suggest_float("lr", 1e-5, 1.0, log=True),
        "momentum": t.suggest_float("momentum", 0, 0.99),
        "wd": t.suggest_float("wd", 1e-7, 1e-1, log=True),
        "dropout": t.suggest_float("dropout", 0, 0.7, step=0.05),
        "width": t.suggest_int("width", 32, 1024, step=32),
        "batch": t.suggest_categorical("batch", BATCHES),
        "optimizer": t.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"]),
    },
)
PROBLEMS = {pr.name: pr for pr in (HARTMANN, CURVES)}


def noise_rng(seed: int, config: Config, resource: float) -> np.random.Generator:
    """The observation noise is a function of (seed, config, resource): every method
    that evaluates the same configuration at the same resource sees the same value."""
    key = zlib.crc32(repr(sorted(config.items())).encode())
    return np.random.default_rng([seed, key, int(resource * 1000)])


# ---------------------------------------------------------------- bookkeeping


@dataclass(frozen=True)
class Observation:
    spent: float  # resource units consumed when this run finished (cumulative)
    config: Config
    resource: float
    loss: float | None


class Ledger:
    """Runs in the order they finish, with the budget consumed so far."""

    def __init__(self, problem: Problem, seed: int, budget: float) -> None:
        self.problem, self.seed, self.budget = problem, seed, budget
        self.spent = 0.0
        self.runs: list[Observation] = []

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget

    def run(self, config: Config, resource: float, cost: float) -> float | None:
        self.spent += cost
        loss = self.problem.observe(config, resource, noise_rng(self.seed, config, resource))
        self.runs.append(Observation(self.spent, config, resource, loss))
        return loss

    def regret_at(self, budget: float) -> float:
        seen = [o for o in self.runs if o.spent <= budget + 1e-9 and o.loss is not None]
        if not seen:
            return math.nan
        top = max(o.resource for o in seen)
        best = min((o for o in seen if o.resource == top), key=lambda o: o.loss or 0.0)
        return self.problem.regret(best.config)


def iteration_cost(plan: Sequence[geometry.Bracket]) -> float:
    """One Hyperband iteration's resource units, with resume (a promotion pays the increment)."""
    total = 0.0
    for b in plan:
        previous = 0.0
        for rung in b.rungs:
            total += rung.configs * (float(rung.resource) - previous)
            previous = float(rung.resource)
    return total


# ---------------------------------------------------------------- hbd


def hbd_matrix(problem: Problem, tuner: str, promotion: str, iterations: int) -> HyperbandMatrix:
    return HyperbandMatrix.model_validate(
        {
            "kind": "hyperband",
            "params": problem.params,
            "maxIterations": MAX_ITERATIONS,
            "eta": ETA,
            "resource": {"name": "r", "type": "int"},
            "metric": {"name": "loss", "optimization": "minimize"},
            "tuner": {"hubRef": tuner, **({"params": BOHB_PARAMS} if tuner == "bohb" else {})},
            "promotion": promotion,
            **({"stragglers": STRAGGLERS} if promotion == "asynchronous" and STRAGGLERS else {}),
            "iterations": iterations,
        }
    )


def run_hbd(
    problem: Problem, ledger: Ledger, seed: int, *, tuner: str, promotion: str = "synchronous"
) -> None:
    """hbd's own core (``SweepMachine``, its scheduler and sampler) on one worker.

    Each trial run is taken in the order the daemon's dispatcher takes them
    (``StartTrial.priority``: deeper rungs first, then first in first out) and
    charged its resource minus its parent's (resume). ``--bohb`` settings
    replace the sampler's defaults.
    """
    iterations = math.ceil(max(BUDGET_POINTS)) + 1  # more than the budget needs
    matrix = hbd_matrix(problem, tuner, promotion, iterations)
    machine = SweepMachine(matrix, sweep_id="q", seed=seed)
    if SLOTS > 1:
        run_hbd_on_slots(machine, problem, ledger, seed, SLOTS)
        return
    pending: list[tuple[int, int, StartTrial]] = []
    order = 0

    def take(decisions: Sequence[Any]) -> None:
        nonlocal order
        for d in decisions:
            if isinstance(d, StartTrial):
                heapq.heappush(pending, (-d.priority, order, d))
                order += 1

    take(machine.handle(Begin()))
    while pending and not ledger.exhausted:
        start = heapq.heappop(pending)[2]
        previous = float(machine.trials[start.parent].resource) if start.parent else 0.0
        resource = float(start.resource)
        loss = ledger.run(start.config, resource, resource - previous)
        if loss is None:
            take(machine.handle(TrialFailed(trial_id=start.trial_id, reason="diverged")))
        else:
            take(machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss})))


def run_hbd_on_slots(
    machine: SweepMachine, problem: Problem, ledger: Ledger, seed: int, slots: int
) -> None:
    """``run_hbd`` on ``slots`` simulated workers (``--slots``): a trial run takes its
    resource increment x LogNormal(0, 1) seconds, a function of the seed and the
    trial id (bench/utilisation.py's durations), so results arrive out of order and
    an asynchronous rule decides on what has ended, as it does on a cluster. The
    budget is charged as runs end; runs still going when it is spent do not count."""
    pending: list[tuple[int, int, StartTrial]] = []
    running: list[tuple[float, int, StartTrial, float]] = []  # (end, seq, trial, parent's r)
    seq = 0
    now = 0.0

    def take(decisions: Sequence[Any]) -> None:
        nonlocal seq
        for d in decisions:
            if isinstance(d, StartTrial):
                heapq.heappush(pending, (-d.priority, seq, d))
                seq += 1

    def unit(trial_id: str, salt: str) -> float:
        return (zlib.crc32(f"{seed}:{salt}:{trial_id}".encode()) + 0.5) / 2**32

    take(machine.handle(Begin()))
    while (pending or running) and not ledger.exhausted:
        while pending and len(running) < slots:
            start = heapq.heappop(pending)[2]
            previous = float(machine.trials[start.parent].resource) if start.parent else 0.0
            u1, u2 = unit(start.trial_id, "a"), unit(start.trial_id, "b")
            z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller
            took = (float(start.resource) - previous) * math.exp(z)
            heapq.heappush(running, (now + took, seq, start, previous))
            seq += 1
        now, _, start, previous = heapq.heappop(running)
        resource = float(start.resource)
        loss = ledger.run(start.config, resource, resource - previous)
        if loss is None:
            take(machine.handle(TrialFailed(trial_id=start.trial_id, reason="diverged")))
        else:
            take(machine.handle(TrialSucceeded(trial_id=start.trial_id, metrics={"loss": loss})))


# ---------------------------------------------------------------- textbook Hyperband


def run_textbook(problem: Problem, ledger: Ledger, seed: int) -> None:
    """Li et al. 2018, Algorithm 1, with float arithmetic and one numpy stream."""
    rng = np.random.default_rng(seed + 7919)
    R, eta = MAX_ITERATIONS, ETA
    s_max = math.floor(math.log(R) / math.log(eta) + 1e-9)
    B = (s_max + 1) * R
    while not ledger.exhausted:
        for s in range(s_max, -1, -1):
            if ledger.exhausted:
                return
            n = math.ceil(B / R * eta**s / (s + 1))
            r = R * eta ** (-s)
            configs = [_random_config(problem, rng) for _ in range(n)]
            previous = 0.0
            for i in range(s + 1):
                n_i, r_i = int(n * eta ** (-i)), r * eta**i
                losses = [ledger.run(c, r_i, r_i - previous) for c in configs]
                previous = r_i
                order = sorted(
                    range(len(configs)), key=lambda j: math.inf if losses[j] is None else losses[j]
                )
                configs = [configs[j] for j in order[: int(n_i / eta)] if losses[j] is not None]


def _random_config(problem: Problem, rng: np.random.Generator) -> dict[str, JSONValue]:
    # hbd's value kinds, from the method's own stream (not hbd's keyed sampling).
    from hbd.core.space import sample_value

    return {name: sample_value(param, rng) for name, param in problem.params.items()}


# ---------------------------------------------------------------- Optuna


def run_optuna(problem: Problem, ledger: Ledger, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        # The pruner assigns trials to brackets by a hash of the study's name:
        # a fixed name makes a seed's run repeatable (a random one is not).
        study_name=f"quality-{seed}",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=MAX_ITERATIONS, reduction_factor=ETA
        ),
    )
    rungs = [ETA**i for i in range(5)]
    while not ledger.exhausted:
        trial = study.ask()
        config = problem.optuna_space(trial)
        previous, state, value = 0.0, optuna.trial.TrialState.COMPLETE, None
        for r in rungs:
            loss = ledger.run(config, r, r - previous)
            previous = r
            if loss is None:
                state = optuna.trial.TrialState.FAIL
                break
            trial.report(loss, r)
            value = loss
            if r < MAX_ITERATIONS and trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        if state is optuna.trial.TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)


# ---------------------------------------------------------------- main


METHODS: dict[str, Callable[[Problem, Ledger, int], None]] = {
    "hbd-random": lambda pr, led, seed: run_hbd(pr, led, seed, tuner="random"),
    "hbd-bohb": lambda pr, led, seed: run_hbd(pr, led, seed, tuner="bohb"),
    "hbd-rnd-async": lambda pr, led, seed: run_hbd(
        pr, led, seed, tuner="random", promotion="asynchronous"
    ),
    "hbd-bohb-async": lambda pr, led, seed: run_hbd(
        pr, led, seed, tuner="bohb", promotion="asynchronous"
    ),
    "hyperband": run_textbook,
    "optuna-tpe": run_optuna,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+seeds-1")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--bohb", default="{}", help="bohb's tuner.params as JSON (model settings, lag)"
    )
    ap.add_argument("--slots", type=int, default=1, help="hbd's rows on this many workers")
    ap.add_argument("--stragglers", type=int, default=0, help="hbd async: matrix.stragglers")
    args = ap.parse_args(argv)
    global BOHB_PARAMS, SLOTS, STRAGGLERS
    SLOTS, STRAGGLERS = args.slots, args.stragglers
    BOHB_PARAMS = BOHBParams.model_validate_json(args.bohb).model_dump(
        by_alias=True, exclude_unset=True
    )
    plan = geometry.brackets(MAX_ITERATIONS, ETA)
    unit = iteration_cost(plan)
    budgets = [b * unit for b in BUDGET_POINTS]
    methods = args.methods.split(",")
    print(
        f"maxIterations={MAX_ITERATIONS} eta={ETA}; one Hyperband iteration = {unit:g} "
        f"resource units (with resume); seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; "
        "median simple regret"
    )
    for name in args.problems.split(","):
        problem = PROBLEMS[name]
        table: dict[str, list[list[float]]] = {}
        for method in methods:
            t0 = time.perf_counter()
            rows = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                ledger = Ledger(problem, seed, budgets[-1])
                METHODS[method](problem, ledger, seed)
                rows.append([ledger.regret_at(b) for b in budgets])
            table[method] = rows
            print(f"  [{name} {method}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
        print(f"\n{name}")
        head = "".join(f"{f'{b:g} it':>10}" for b in BUDGET_POINTS)
        print(f"{'method':<12}{head}   ratio to optuna-tpe")
        medians = {
            m: [statistics.median(r[k] for r in table[m]) for k in range(len(budgets))]
            for m in methods
        }
        for m in methods:
            ref = medians.get("optuna-tpe")
            ratios = (
                "  ".join(
                    f"{a / b:5.2f}" if b > 0 else "  inf"
                    for a, b in zip(medians[m], ref, strict=True)
                )
                if ref
                else ""
            )
            cells = "".join(f"{v:10.4f}" for v in medians[m])
            print(f"{m:<12}{cells}   {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
