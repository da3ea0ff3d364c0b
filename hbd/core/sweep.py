"""The sweep state machine: observations in, decisions out (sans-I/O, like h11).

``SweepMachine.handle(event)`` is the only way to change a sweep. It validates
the event against the tables in ``bracket.py`` before touching anything, so an
illegal event raises ``InvalidTransition`` and leaves the machine unchanged.

The machine keeps what every algorithm needs: the trial registry, retries,
early stopping, stop and finish. The algorithm is two collaborators it is
given: a ``Scheduler`` (scheduler.py: which trial runs start, when a rung is
decided, what is promoted; synchronous Hyperband by default, every bracket
side by side, promotions independent of arrival order) and a ``Sampler``
(sampler.py: new configurations, keyed by (seed, bracket, index) by default,
shown the results of the rungs closed by construction when their bracket
opens; search.py builds both from the spec). A machine fed the same
observations in the same order makes the same decisions, bit for bit: that is
how the daemon resumes after a restart (replay.py checks it against the log).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hbd.core import geometry
from hbd.core.bracket import (
    ALL_DONE,
    EARLY_STOPPED,
    IDLE,
    SWEEP_MOVES,
    SWEEP_TRANSITIONS,
    TRIAL_TRANSITIONS,
    SweepState,
    Trial,
    TrialState,
    fire,
)
from hbd.core.errors import DuplicateEvent, InvalidTransition
from hbd.core.events import (
    BestTrial,
    CancelTrials,
    Decision,
    EarlyStopped,
    Observation,
    RungDecided,
    StartTrial,
    StopRequested,
    SweepExtended,
    SweepFinished,
    SweepStatus,
    TrialCancelled,
    TrialFailed,
    TrialInterrupted,
    TrialSucceeded,
)
from hbd.core.limits import MAX_HYPERBAND_ITERATIONS
from hbd.core.ranking import Direction, metric_value, rank, reached
from hbd.core.sampler import RunResult, Sampler
from hbd.core.scheduler import Scheduler, Slot
from hbd.core.search import Search
from hbd.core.spec import (
    FailureEarlyStopping,
    HyperbandMatrix,
    MetricEarlyStopping,
    SweepSpec,
    parse_spec,
)

# A sweep whose first this-many finished trial runs all failed stops, failed
# (a run counts once it has no retry left, so termination.maxRetries still
# rides out a flaky host):
# a missing command or a typo fails every run alike, and the reference example
# burned 143 runs before saying so. Ten is enough to ride out a flaky start and
# cheap next to a whole sweep. The daemon's setting (`first_failures_stop`, 0
# turns it off) is written into `sweep.submitted`, so a replay uses the value
# the sweep started with; a spec with its own failure_early_stopping turns it off.
FIRST_FAILURES_STOP = 10


def trial_id(
    sweep_id: str, bracket: int, rung: int, index: int, attempt: int = 0, iteration: int = 0
) -> str:
    """Trial ids are derived, not drawn, so a replay names every trial the same.

    The first Hyperband iteration's ids are spelled as before iterations existed.
    """
    it = f"-i{iteration}" if iteration else ""
    base = f"{sweep_id}{it}-s{bracket}-r{rung}-c{index}"
    return f"{base}-a{attempt}" if attempt else base


@dataclass(frozen=True, slots=True)
class _Stopping:
    status: SweepStatus
    reason: str


class SweepMachine:
    def __init__(
        self,
        matrix: HyperbandMatrix,
        *,
        sweep_id: str,
        seed: int,
        max_retries: int = 0,
        cast: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
        first_failures_stop: int | None = None,
        sampler: Sampler | None = None,
        scheduler: Scheduler | None = None,
        search: Search | None = None,
    ) -> None:
        self.matrix = matrix
        # The sampler, scheduler and their options (default: what the spec says).
        self.search = search or Search.of(matrix)
        # Where new configurations come from (default: the search's sampler).
        self.sampler: Sampler = sampler or self.search.make_sampler(matrix.params, seed=seed)
        # Sampled values as their inputs receive them (3.0 on an int input is 3).
        self._cast = cast
        self.sweep_id = sweep_id
        self.seed = seed
        self.max_retries = max_retries  # a failed trial run is started again this often
        # Stop when the first N finished trial runs all failed (None or 0: never);
        # off when the spec says itself when failures stop the sweep.
        own = any(isinstance(c, FailureEarlyStopping) for c in matrix.early_stopping)
        self.first_failures_stop = None if own or not first_failures_stop else first_failures_stop
        self.metric: str = matrix.metric.name
        self.direction: Direction = matrix.metric.optimization
        self.plan = geometry.brackets(matrix.max_iterations, matrix.eta, matrix.resource.type)
        self.state = SweepState.CREATED
        # Which trial runs start, when rungs are decided, what is promoted.
        self.scheduler: Scheduler = scheduler or self.search.make_scheduler(
            self.plan, metric=self.metric, direction=self.direction
        )
        self._trials: dict[str, Trial] = {}
        # Derived from _trials, kept so that no step scans every trial of a long sweep.
        self._running: dict[str, None] = {}  # scheduled, not ended; an ordered set
        self._ended: Counter[TrialState] = Counter()
        self._final_failures = 0  # failed runs with no retry left (the first-failures rule)
        self._stopping: _Stopping | None = None
        self._finished: SweepFinished | None = None
        # Results of the trials of every closed rung, with the bracket position
        # and rung: a sampler's history is the part ``scheduler.visible`` shows.
        self._decided: dict[str, tuple[int, int, RunResult]] = {}

    @classmethod
    def for_spec(
        cls,
        spec: SweepSpec,
        *,
        sweep_id: str,
        seed: int,
        first_failures_stop: int | None = None,
        sampler: Sampler | None = None,
        scheduler: Scheduler | None = None,
        search: Search | None = None,
    ) -> SweepMachine:
        return cls(
            spec.matrix,
            sweep_id=sweep_id,
            seed=seed,
            max_retries=spec.max_retries,
            cast=spec.cast_config,
            first_failures_stop=first_failures_stop,
            sampler=sampler,
            scheduler=scheduler,
            search=search,
        )

    @classmethod
    def for_submitted(cls, payload: Mapping[str, Any], *, sweep_id: str) -> SweepMachine:
        """The machine a ``sweep.submitted`` payload describes: its spec, seed and
        the rules in force when it was submitted (absent in older logs: off), and
        its search (sampler, scheduler, options; absent in older logs: random,
        synchronous, eager, one iteration)."""
        stop = payload.get("first_failures_stop")
        return cls.for_spec(
            parse_spec(payload["spec_json"]),
            sweep_id=sweep_id,
            seed=int(payload["seed"]),
            first_failures_stop=int(stop) if stop else None,
            search=Search.from_json(payload.get("search")),
        )

    # ---- read-only views ----

    @property
    def trials(self) -> Mapping[str, Trial]:
        return self._trials

    @property
    def finished(self) -> SweepFinished | None:
        return self._finished

    def running_trial_ids(self) -> list[str]:
        """Trials started and not ended, in the order they were started."""
        return list(self._running)

    def best(self) -> BestTrial | None:
        """The best trial run at the highest resource any run reached with the metric.

        HpBandSter's and BOHB's convention: a low-resource run's metric is
        optimistic or noisy and its checkpoint partly trained, so it is not
        compared with full-resource runs (Li et al. return the best over all).
        """
        per = self.best_per_resource()
        return per[-1] if per else None

    def best_per_resource(self) -> list[BestTrial]:
        """The best trial run at each resource reached, lowest resource first."""
        position = self.scheduler.position
        by_resource: dict[float, list[Trial]] = {}
        for t in self._trials.values():
            if t.state is TrialState.SUCCEEDED and metric_value(t.metrics, self.metric) is not None:
                by_resource.setdefault(float(t.resource), []).append(t)
        out = []
        for resource in sorted(by_resource):
            top = rank(
                by_resource[resource],
                value=lambda t: metric_value(t.metrics, self.metric),
                order_key=lambda t: t.order_key(position(t.bracket, t.iteration)),
                direction=self.direction,
            )[0]
            value = metric_value(top.metrics, self.metric)
            assert value is not None  # only runs with the metric are ranked here
            out.append(
                BestTrial(
                    trial_id=top.trial_id,
                    bracket=top.bracket,
                    rung=top.rung,
                    config=top.config,
                    resource=top.resource,
                    metric=value,
                )
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything that determines future decisions, as plain comparable data."""
        return {
            "state": self.state.value,
            "stopping": None
            if self._stopping is None
            else (self._stopping.status, self._stopping.reason),
            "brackets": self.scheduler.snapshot(),
            "trials": {
                tid: (
                    t.state.value,
                    dict(t.metrics),
                    t.reason,
                    dict(t.config),
                    t.resource,
                    t.parent,
                    t.runs,
                )
                for tid, t in sorted(self._trials.items())
            },
        }

    # ---- the one entry point ----

    def handle(self, event: Observation) -> list[Decision]:
        self._check(event)
        if isinstance(event, StopRequested):
            self._move(event.TYPE)
            return self._begin_stop("stopped", event.reason)
        if isinstance(event, TrialSucceeded | TrialFailed | TrialCancelled):
            return self._on_result(event)
        if isinstance(event, TrialInterrupted):
            return self._on_interrupted(event)
        if isinstance(event, SweepExtended):
            return self._on_extended(event)
        self._move(event.TYPE)
        return list(self._start(self.scheduler.begin()))

    # ---- validation: raise before anything changes ----

    def _check(self, event: Observation) -> None:
        trial_id = getattr(event, "trial_id", None)
        if (self.state, event.TYPE) not in SWEEP_TRANSITIONS:
            cls = (
                DuplicateEvent
                if isinstance(event, StopRequested) and self.state is SweepState.STOPPING
                else InvalidTransition
            )
            raise cls(
                event=event.TYPE, state=self.state.value, sweep_id=self.sweep_id, trial_id=trial_id
            )
        if isinstance(event, SweepExtended):
            self._check_extended(event)
        if trial_id is None:
            return
        trial = self._trials.get(trial_id)
        if trial is None:
            raise InvalidTransition(
                event=event.TYPE,
                state=self.state.value,
                sweep_id=self.sweep_id,
                trial_id=trial_id,
                detail="no such trial was scheduled",
            )
        if (trial.state, event.TYPE) not in TRIAL_TRANSITIONS:
            same = TRIAL_TRANSITIONS.get((TrialState.SCHEDULED, event.TYPE)) is trial.state
            cls = DuplicateEvent if same else InvalidTransition
            raise cls(
                event=event.TYPE,
                state=f"trial {trial.state.value}",
                sweep_id=self.sweep_id,
                trial_id=trial_id,
                detail="a finished trial cannot change",
            )
        if isinstance(event, TrialSucceeded):
            bad = [
                k
                for k, v in event.metrics.items()
                if isinstance(v, bool) or not isinstance(v, int | float)
            ]
            if bad:
                raise InvalidTransition(
                    event=event.TYPE,
                    state=trial.state.value,
                    sweep_id=self.sweep_id,
                    trial_id=trial_id,
                    detail=f"non-numeric metrics: {', '.join(sorted(bad))}",
                )

    def _check_extended(self, event: SweepExtended) -> None:
        problem = None
        total = self.scheduler.iterations + event.iterations
        if self._stopping is not None:
            problem = "a stopped sweep is not extended"
        elif event.iterations < 1:
            problem = f"iterations must be >= 1, got {event.iterations}"
        elif total > MAX_HYPERBAND_ITERATIONS:
            problem = (
                f"{total} iterations in all is more than the limit of {MAX_HYPERBAND_ITERATIONS}"
            )
        if problem is not None:
            raise InvalidTransition(
                event=event.TYPE, state=self.state.value, sweep_id=self.sweep_id, detail=problem
            )

    # ---- transitions ----

    def _on_extended(self, event: SweepExtended) -> list[Decision]:
        """More iterations: planned after the others; a finished sweep runs again."""
        self._move(event.TYPE)
        self._finished = None
        return list(self._start(self.scheduler.extend(event.iterations)))

    def _on_result(self, event: TrialSucceeded | TrialFailed | TrialCancelled) -> list[Decision]:
        trial = self._trials[event.trial_id]
        trial.fire(event.TYPE, sweep_id=self.sweep_id)
        del self._running[trial.trial_id]
        self._ended[trial.state] += 1
        if isinstance(event, TrialSucceeded):
            trial.metrics = dict(event.metrics)
        else:
            trial.reason = event.reason
        if isinstance(event, TrialFailed) and trial.attempt >= self.max_retries:
            self._final_failures += 1
        if self.state is SweepState.STOPPING:
            self.scheduler.ended(trial, decide=False)
            return self._finish_if_idle()
        stop = self._early_stop_condition(trial)
        if stop is not None:
            condition, status, reason = stop
            self._move(EARLY_STOPPED)
            self.scheduler.ended(trial, decide=False)
            return [
                EarlyStopped(condition=condition, reason=reason),
                *self._begin_stop(status, reason),
            ]
        if isinstance(event, TrialFailed) and trial.attempt < self.max_retries:
            return [self._retry(trial)]  # the rung waits for the new attempt
        step = self.scheduler.ended(trial)
        # Closed rungs join the history before anything new is sampled (search.py).
        for decision in step.closed:
            self._record_decided(decision)
        decisions: list[Decision] = [*step.decided, *self._start(step.starts)]
        if self.scheduler.done:
            decisions.append(self._finish_all())
        return decisions

    def _on_interrupted(self, event: TrialInterrupted) -> list[Decision]:
        """The same trial runs again: it stays open, nothing is decided, no retry is used.

        No decision is returned because none is new: the trial's StartTrial
        stands (the log already holds it) and the caller starts it again as
        run ``runs``; a rung barrier still waits for it.
        """
        trial = self._trials[event.trial_id]
        trial.fire(event.TYPE, sweep_id=self.sweep_id)
        trial.runs += 1
        return []

    def _retry(self, failed: Trial) -> StartTrial:
        """Start the failed trial's run again: same config, rung and resource, a new id."""
        attempt = failed.attempt + 1
        retry = Trial(
            trial_id=trial_id(
                self.sweep_id,
                failed.bracket,
                failed.rung,
                failed.index,
                attempt,
                failed.iteration,
            ),
            bracket=failed.bracket,
            rung=failed.rung,
            index=failed.index,
            config=failed.config,
            resource=failed.resource,
            parent=failed.parent,
            attempt=attempt,
            sampled=failed.sampled,
            iteration=failed.iteration,
        )
        self.scheduler.replaced(failed, retry)
        self._trials[retry.trial_id] = retry
        self._running[retry.trial_id] = None
        return retry.start(resume=self.matrix.resume)

    def history(self, opening: int | None = None) -> list[RunResult]:
        """What a sampler is shown when the bracket at position ``opening`` opens
        (default: every closed rung): the closed rungs ``scheduler.visible``
        shows it, by trial id.

        Opened lazily (search.py, ``scheduler.Opening``), exactly these rungs are
        closed at that moment whatever order results arrived in; other closed
        rungs are not shown. Eagerly opened brackets are shown nothing.
        """
        return [
            result
            for tid, (position, rung, result) in sorted(self._decided.items())
            if opening is None or self.scheduler.visible(opening, position, rung)
        ]

    def closed_rungs(self) -> set[tuple[int, int]]:
        """The (bracket position, rung) of every closed rung: all its trials ended,
        its promotions made (an asynchronous rung may promote before it closes;
        ``scheduler.position`` tells iterations' brackets apart)."""
        return {(position, rung) for position, rung, _ in self._decided.values()}

    def _record_decided(self, decision: RungDecided) -> None:
        for ranked in decision.ranking:
            t = self._trials[ranked.trial_id]
            value = (
                metric_value(t.metrics, self.metric) if t.state is TrialState.SUCCEEDED else None
            )
            loss = None if value is None else (-value if self.direction == "maximize" else value)
            position = self.scheduler.position(t.bracket, t.iteration)
            self._decided[t.trial_id] = (
                position,
                t.rung,
                RunResult(
                    config=t.sampled if t.sampled is not None else t.config,
                    resource=float(t.resource),
                    loss=loss,
                ),
            )

    def _start(self, slots: Sequence[Slot]) -> list[StartTrial]:
        """Make and register the trials of ``slots`` (sampling new configs), in order."""
        # By the opening bracket's position. An eagerly opened bracket opens
        # whatever the results: it is shown none (what would be closed then
        # depends on arrival order; only the random sampler, which ignores it,
        # runs eagerly, search.py): ``scheduler.visible`` says so.
        histories: dict[int, list[RunResult]] = {}
        trials = []
        for slot in slots:
            sampled: Mapping[str, Any] | None
            config: Mapping[str, Any]
            parent = slot.parent
            if parent is None:
                opening = self.scheduler.position(slot.bracket, slot.iteration)
                if opening not in histories:
                    histories[opening] = self.history(opening)
                proposed = self.sampler.propose(
                    bracket=self.scheduler.sample_key(slot.bracket, slot.iteration),
                    index=slot.index,
                    history=histories[opening],
                )
                sampled, config = proposed, proposed if self._cast is None else self._cast(proposed)
            else:
                sampled, config = parent.sampled, parent.config
            trials.append(
                Trial(
                    trial_id=trial_id(
                        self.sweep_id,
                        slot.bracket,
                        slot.rung,
                        slot.index,
                        iteration=slot.iteration,
                    ),
                    bracket=slot.bracket,
                    rung=slot.rung,
                    index=slot.index,
                    config=config,
                    resource=slot.resource,
                    parent=parent.trial_id if parent else None,
                    sampled=sampled,
                    iteration=slot.iteration,
                )
            )
        self.scheduler.started(trials)
        for t in trials:
            self._trials[t.trial_id] = t
            self._running[t.trial_id] = None
        return [t.start(resume=self.matrix.resume) for t in trials]

    def _early_stop_condition(self, trial: Trial) -> tuple[str, SweepStatus, str] | None:
        for cond in self.matrix.early_stopping:
            if isinstance(cond, MetricEarlyStopping) and trial.state is TrialState.SUCCEEDED:
                value = metric_value(trial.metrics, cond.metric)
                if value is not None and reached(value, cond.value, cond.optimization):
                    op = ">=" if cond.optimization == "maximize" else "<="
                    return (
                        f"metric: {cond.metric} {op} {cond.value:g}",
                        "succeeded",
                        f"early stopping: trial {trial.trial_id} reached {cond.metric}={value:g} ({op} {cond.value:g})",
                    )
            if isinstance(cond, FailureEarlyStopping):
                failed = self._ended[TrialState.FAILED]
                ended = failed + self._ended[TrialState.SUCCEEDED]
                if failed and 100 * failed >= cond.percent * ended:
                    return (
                        f"failure: {cond.percent:g}% of ended trials failed",
                        "failed",
                        f"early stopping: {failed} of {ended} ended trials failed (>= {cond.percent:g}%)",
                    )
        # A failed run that will be retried is not counted yet: a flaky host
        # with termination.maxRetries is not a broken command.
        limit = self.first_failures_stop
        if (
            limit
            and trial.state is TrialState.FAILED
            and not self._ended[TrialState.SUCCEEDED]
            and self._final_failures >= limit
        ):
            return (
                f"failure: the first {limit} trial runs failed",
                "failed",
                f"early stopping: the first {limit} trial runs all failed "
                f"(last: {trial.reason or 'failed'})",
            )
        return None

    def _begin_stop(self, status: SweepStatus, reason: str) -> list[Decision]:
        self._stopping = _Stopping(status, reason)
        running = self.running_trial_ids()
        decisions: list[Decision] = (
            [CancelTrials(trial_ids=tuple(running), reason=reason)] if running else []
        )
        return decisions + self._finish_if_idle()

    def _finish_if_idle(self) -> list[Decision]:
        if self.running_trial_ids():
            return []
        stopping = self._stopping or _Stopping("stopped", "stopped")
        return [self._finish(stopping.status, stopping.reason, IDLE)]

    def _finish_all(self) -> SweepFinished:
        if self.best() is None:
            return self._finish("failed", f"no trial reported the metric {self.metric!r}", ALL_DONE)
        return self._finish("succeeded", "all brackets completed", ALL_DONE)

    def _finish(self, status: SweepStatus, reason: str, condition: str) -> SweepFinished:
        self._move(condition)
        self._finished = SweepFinished(status=status, reason=reason, best=self.best())
        return self._finished

    def _move(self, trigger: str) -> None:
        """Move the sweep by an event or a condition, through the tables in bracket.py."""
        self.state = fire(SWEEP_MOVES, self.state, trigger, sweep_id=self.sweep_id)
