"""Run a whole sweep in-process against a Python objective: ``hbd simulate``.

The sweep machine is driven exactly as the daemon drives it, with the
objective ``f(config, resource) -> float | dict[str, float]`` standing in for
executors. Trials run one at a time, deeper rungs first (``StartTrial.priority``,
as the daemon's dispatcher orders its queue: full-resource results come early),
then in the order they were started; so a spec, a seed and an objective always
give the same simulation, bit for bit.

A bad objective *reference* (no such module, attribute, not callable) is the
user's mistake and raises ``ObjectiveError`` before anything runs. A bad
objective *result* (an exception, a non-number, a missing metric, NaN) fails
that one trial with the reason, as a crashing trial process would under the
daemon; the sweep goes on.
"""

from __future__ import annotations

import copy
import heapq
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hbd.core.events import (
    Begin,
    BestTrial,
    CancelTrials,
    EarlyStopped,
    Observation,
    RungDecided,
    StartTrial,
    SweepFinished,
    TrialCancelled,
    TrialFailed,
    TrialSucceeded,
)
from hbd.core.ranking import metric_value
from hbd.core.spec import SweepSpec
from hbd.core.sweep import FIRST_FAILURES_STOP, SweepMachine
from hbd.core.vocabulary import TrialStatus
from hbd.errors import HbdError

__all__ = [
    "DEFAULT_SEED",
    "SIMULATION_SWEEP_ID",
    "Objective",
    "ObjectiveError",
    "RungOutcome",
    "SeedSource",
    "Simulation",
    "TrialOutcome",
    "evaluate",
    "load_objective",
    "objective_path",
    "resolve_seed",
    "simulate",
]

Objective = Callable[[dict[str, Any], int | float], object]
SeedSource = Literal["--seed", "spec", "default"]

# The seed when neither --seed nor matrix.seed is given: a fixed one, so that
# two simulations of the same spec agree unless asked not to.
DEFAULT_SEED = 0
# Trial ids are "<sweep id>-s<bracket>-r<rung>-c<index>" (hbd.core.sweep.trial_id).
SIMULATION_SWEEP_ID = "sim"
# An exception's text can be anything (a whole tensor repr); keep a failure
# reason readable and the JSON output bounded.
MAX_REASON_CHARS = 500


class ObjectiveError(HbdError):
    """``--objective`` does not name a usable function; nothing was run."""


# ---------------------------------------------------------------- the objective


@contextmanager
def objective_path(dirs: Sequence[str | Path]) -> Iterator[None]:
    """Put ``dirs`` in front of ``sys.path`` for the duration (imports done lazily by
    the objective need them too), then restore it."""
    saved = list(sys.path)
    sys.path[:0] = [str(Path(d).resolve()) for d in dirs]
    importlib.invalidate_caches()  # the module may have been written a moment ago
    try:
        yield
    finally:
        sys.path[:] = saved


def _import(module: str, search: Sequence[str | Path]) -> Any:
    where = ", ".join(str(d) for d in search) or "sys.path"
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ObjectiveError(f"objective file {module} does not exist")
        name = f"_hbd_objective_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always load
            raise ObjectiveError(f"cannot load objective file {module}")
        mod = importlib.util.module_from_spec(spec)
        try:
            with objective_path([path.parent, *search]):
                spec.loader.exec_module(mod)
        except Exception as exc:
            raise ObjectiveError(
                f"importing objective file {module} failed: {_describe(exc)}"
            ) from exc
        return mod
    try:
        with objective_path(search):
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise ObjectiveError(f"no module named {module!r} (searched {where})") from exc
        raise ObjectiveError(
            f"importing objective module {module!r} failed: {_describe(exc)}"
        ) from exc
    except Exception as exc:  # SyntaxError, or whatever its top level raises
        raise ObjectiveError(
            f"importing objective module {module!r} failed: {_describe(exc)}"
        ) from exc


def load_objective(ref: str, search: Sequence[str | Path] = ()) -> Objective:
    """Resolve ``module:function`` (or ``path/to/file.py:function``); raise ``ObjectiveError``.

    ``search`` directories are put in front of ``sys.path`` for the import only.
    The function may be dotted (``module:Class.method``).
    """
    module, sep, attr = ref.rpartition(":")
    if not sep or not module or not attr:
        raise ObjectiveError(
            f"--objective must be MODULE:FUNCTION (e.g. objective:loss), got {ref!r}"
        )
    obj: Any = _import(module, search)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ObjectiveError(f"objective module {module!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ObjectiveError(f"objective {ref!r} is a {type(obj).__name__}, not a function")
    if inspect.iscoroutinefunction(obj):
        raise ObjectiveError(
            f"objective {ref!r} is async; simulate calls a plain function f(config, resource)"
        )
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # some builtins have none; find out when called
        return obj  # type: ignore[no-any-return]
    try:
        signature.bind({}, 1)
    except TypeError:
        raise ObjectiveError(
            f"objective {ref!r} has signature {signature}; simulate calls f(config, resource)"
        ) from None
    return obj  # type: ignore[no-any-return]


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _metrics(value: object, metric: str) -> tuple[dict[str, float] | None, str]:
    """The metrics an objective's return value stands for, or None and why not."""
    if isinstance(value, Mapping):
        out: dict[str, float] = {}
        for k, v in value.items():
            x = _number(v)
            if not isinstance(k, str):
                return None, f"objective returned a dict with non-string key {k!r}"
            if x is None:
                return (
                    None,
                    f"objective returned {k}={v!r} ({type(v).__name__}); metrics must be numbers",
                )
            if not math.isfinite(x):
                return None, f"objective returned {k}={x!r}; metrics must be finite"
            out[k] = x
        if metric not in out:
            got = ", ".join(sorted(out)) or "none"
            return None, f"objective returned no {metric!r}, the spec's metric (got: {got})"
        return out, ""
    x = _number(value)
    if x is None:
        return None, (
            f"objective returned {type(value).__name__} {_short(value)}; "
            f"expected a number (the {metric!r}) or a dict of metrics"
        )
    if not math.isfinite(x):
        return None, f"objective returned {x!r}; {metric!r} must be finite"
    return {metric: x}, ""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def evaluate(objective: Objective, start: StartTrial, metric: str) -> TrialSucceeded | TrialFailed:
    """Run one trial: call the objective and turn what happens into a result event."""
    config = copy.deepcopy(dict(start.config))  # the objective must not change the machine's copy
    try:
        value = objective(config, start.resource)
    except (Exception, SystemExit) as exc:
        return TrialFailed(trial_id=start.trial_id, reason=f"objective raised {_describe(exc)}")
    metrics, why = _metrics(value, metric)
    if metrics is None:
        return TrialFailed(trial_id=start.trial_id, reason=why)
    return TrialSucceeded(trial_id=start.trial_id, metrics=metrics)


# ---------------------------------------------------------------- the simulation


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    trial_id: str
    bracket: int
    rung: int
    index: int
    config: Mapping[str, Any]
    resource: int | float
    parent: str | None
    status: TrialStatus  # one of TERMINAL_TRIAL_STATUSES
    metric: float | None  # the spec's metric, when the trial succeeded with a finite one
    reason: str | None  # why it failed or was cancelled
    iteration: int = 0  # the Hyperband iteration

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.trial_id,
            "iteration": self.iteration,
            "bracket": self.bracket,
            "rung": self.rung,
            "config": dict(self.config),
            "resource": self.resource,
            "metric": self.metric,
            "status": self.status,
            "parent": self.parent,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RungOutcome:
    bracket: int
    rung: int
    size: int  # trials in the rung
    promoted: tuple[str, ...]
    cutoff: float | None
    reason: str
    iteration: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "bracket": self.bracket,
            "rung": self.rung,
            "size": self.size,
            "promoted": list(self.promoted),
            "cutoff": self.cutoff,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    seed: int
    seed_source: SeedSource
    metric: str
    direction: str
    status: str
    reason: str
    early_stopped: EarlyStopped | None
    best: BestTrial | None
    trials: tuple[TrialOutcome, ...]  # in the order they were started (and completed)
    # Decided rungs, brackets in the order they opened (s_max..0 in Hyperband's), then rung.
    rungs: tuple[RungOutcome, ...]

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {
                "trial_id": self.best.trial_id,
                "config": dict(self.best.config),
                "metric": self.best.metric,
                "bracket": self.best.bracket,
                "rung": self.best.rung,
                "resource": self.best.resource,
            }
        early = None
        if self.early_stopped is not None:
            early = {"condition": self.early_stopped.condition, "reason": self.early_stopped.reason}
        return {
            "seed": self.seed,
            "seed_source": self.seed_source,
            "metric": self.metric,
            "optimization": self.direction,
            "status": self.status,
            "reason": self.reason,
            "early_stopping": early,
            "best": best,
            "trials": [t.to_json() for t in self.trials],
            "rungs": [r.to_json() for r in self.rungs],
        }


def resolve_seed(cli_seed: int | None, spec: SweepSpec) -> tuple[int, SeedSource]:
    """--seed, else the spec's ``matrix.seed``, else ``DEFAULT_SEED``."""
    if cli_seed is not None:
        return cli_seed, "--seed"
    if spec.matrix.seed is not None:
        return spec.matrix.seed, "spec"
    return DEFAULT_SEED, "default"


def simulate(
    spec: SweepSpec, objective: Objective, *, seed: int, seed_source: SeedSource = "--seed"
) -> Simulation:
    """Run the sweep to its end with ``objective`` as the only executor."""
    machine = SweepMachine.for_spec(
        spec, sweep_id=SIMULATION_SWEEP_ID, seed=seed, first_failures_stop=FIRST_FAILURES_STOP
    )
    metric = spec.matrix.metric.name
    # (-priority, order started, trial): deeper rungs first, FIFO among equals.
    queue: list[tuple[int, int, StartTrial]] = []
    started: list[StartTrial] = []
    cancel_reason: dict[str, str] = {}
    decided: list[RungDecided] = []
    early: EarlyStopped | None = None

    def feed(event: Observation) -> None:
        nonlocal early
        for d in machine.handle(event):
            if isinstance(d, StartTrial):
                heapq.heappush(queue, (-d.priority, len(started), d))
                started.append(d)
            elif isinstance(d, CancelTrials):
                for tid in d.trial_ids:
                    cancel_reason.setdefault(tid, d.reason)
            elif isinstance(d, RungDecided):
                decided.append(d)
            elif isinstance(d, EarlyStopped):
                early = d

    feed(Begin())
    while queue:
        start = heapq.heappop(queue)[2]
        if start.trial_id in cancel_reason:
            feed(TrialCancelled(trial_id=start.trial_id, reason=cancel_reason[start.trial_id]))
        else:
            feed(evaluate(objective, start, metric))

    finished: SweepFinished | None = machine.finished
    if finished is None:  # pragma: no cover - the machine finishes once every trial has ended
        raise RuntimeError("the sweep machine did not finish although no trial is pending")

    trials = []
    for s in started:
        t = machine.trials[s.trial_id]
        trials.append(
            TrialOutcome(
                trial_id=t.trial_id,
                bracket=t.bracket,
                rung=t.rung,
                index=t.index,
                config=t.config,
                resource=t.resource,
                parent=t.parent,
                status=TrialStatus(t.state.value),  # every trial has ended
                metric=metric_value(t.metrics, metric)
                if t.state.value == TrialStatus.SUCCEEDED
                else None,
                reason=t.reason,
                iteration=t.iteration,
            )
        )
    sizes: dict[tuple[int, int, int], int] = {}
    for s in started:
        key = (s.iteration, s.bracket, s.rung)
        sizes[key] = sizes.get(key, 0) + 1
    # One outcome per rung: an asynchronous rung is decided at each promotion
    # and when it closes; its outcome has every promotion and the last reason.
    merged: dict[tuple[int, int, int], RungOutcome] = {}
    worst = max if spec.matrix.metric.optimization == "minimize" else min
    for d in decided:
        key = (d.iteration, d.bracket, d.rung)
        held = merged.get(key)
        cutoffs = [c for c in (held.cutoff if held else None, d.cutoff) if c is not None]
        merged[key] = RungOutcome(
            bracket=d.bracket,
            rung=d.rung,
            size=sizes[key],
            promoted=(held.promoted if held else ()) + d.promoted,
            cutoff=worst(cutoffs) if cutoffs else None,
            reason=d.reason,
            iteration=d.iteration,
        )
    position = machine.scheduler.position  # a bohb sweep's later iterations ascend
    rungs = sorted(merged.values(), key=lambda r: (position(r.bracket, r.iteration), r.rung))
    return Simulation(
        seed=seed,
        seed_source=seed_source,
        metric=metric,
        direction=spec.matrix.metric.optimization,
        status=finished.status,
        reason=finished.reason,
        early_stopped=early,
        best=finished.best,
        trials=tuple(trials),
        rungs=tuple(rungs),
    )
