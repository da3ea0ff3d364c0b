"""Level-triggered reconciliation: what the log says should be, against what executors report.

At start, every unfinished sweep is rebuilt from its log and each of its open
trials converges: never dispatched -> send it (same id, so a send that did
arrive before the crash is the same trial); dispatched -> ask its executor:
finished -> take the result; running -> adopt; unknown -> send again. Then, on
a period, trials not heard from for a while are polled, which is also the
safety net for lost callbacks; a trial whose executor stays unreachable past
``lost_after`` (default ``placement.LOST_AFTER``) is failed as lost, once, and a result that arrives later is
rejected by the machine and logged; the trial gets a best-effort cancel once
its executor answers again.

Unreachability is tracked per executor: health checks run concurrently, one
attempt each within a deadline, and a trial whose executor is known down is not
polled (N trials on a dead host cost nothing per round); its grace runs from
when the executor stopped answering.

A trial the log says was scheduled but never dispatched may still have reached
an executor (a crash between the POST and the ``trial.dispatched`` commit), so
on resume the healthy executors are asked about it before it is sent anywhere.
The same for a trial dispatched to an executor that is no longer configured
(an agent restarted at a new URL on the same workdir): it is adopted where it
is found, and failed only if no configured executor has it. A trial whose last
run was interrupted (``trial.interrupted``) is sent again as its next run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import anyio
import structlog

from hbd.core.bracket import SweepState
from hbd.core.events import StartTrial, TrialFailed, TrialInterrupted
from hbd.core.spec import SweepSpec
from hbd.core.sweep import SweepMachine
from hbd.core.vocabulary import EventType
from hbd.daemon.backend import ExecutorBackend
from hbd.daemon.clock import Clock
from hbd.daemon.dispatcher import Dispatcher, OnStatus
from hbd.daemon.lifecycle import TRIAL_DISPATCHED
from hbd.daemon.metricsync import MetricsSync
from hbd.daemon.placement import Phase, Placement, Poll
from hbd.daemon.runner import (
    REPLAY_TYPES,
    UNRESUMABLE,
    Note,
    Observe,
    SweepRunner,
    replay,
    sweep_spec,
)
from hbd.errors import ExecutorError, ExecutorUnavailable, NotFound
from hbd.protocol import TrialStatus
from hbd.store.log import Store

log = structlog.get_logger(__name__)

RESUME_TYPES = REPLAY_TYPES | {EventType.TRIAL_SENDING, EventType.TRIAL_DISPATCHED}

# How often executors' health (and so their slots) is refreshed.
HEALTH_INTERVAL = 2.0
# How often a trial that may sit on an unreachable executor (its submit logged
# as sending, its answer never) is looked for there again before it is sent
# elsewhere.
UNSENT_PROBE_INTERVAL = 1.0
# The most one executor's health check may take (one attempt; the client's own
# HEALTH_TIMEOUT normally ends it first): a dead executor must not hold up
# start-up or the checks of the others.
HEALTH_DEADLINE = 3.0
# How often the reconciler looks for trials it has not heard from (which are
# silent and which lost: placement.SILENCE, placement.LOST_AFTER).
POLL_INTERVAL = 2.0


class Sweeps(Protocol):
    """What the reconciler needs of the daemon's sweeps: find, start, mark broken."""

    @property
    def runners(self) -> Mapping[str, SweepRunner]: ...

    @property
    def broken_sweeps(self) -> list[str]: ...

    @property
    def broken_reasons(self) -> dict[str, str]: ...

    def new_runner(self, spec: SweepSpec, machine: SweepMachine) -> SweepRunner: ...

    def start_runner(self, runner: SweepRunner) -> None: ...


class Reconciler:
    def __init__(
        self,
        placement: Placement,
        dispatcher: Dispatcher,
        backends: Mapping[str, ExecutorBackend],
        clock: Clock,
        store: Store,
        sweeps: Sweeps,
        *,
        on_status: OnStatus,
        metricsync: MetricsSync,
        running: Callable[[], bool],
    ) -> None:
        self.placement = placement
        self.dispatcher = dispatcher
        self.backends = backends
        self.clock = clock
        self.store = store
        self.sweeps = sweeps
        self._on_status = on_status
        self.metricsync = metricsync
        self._running = running  # whether background work can be started

    async def run(self) -> None:
        clock = self.clock
        next_health = clock.monotonic() + HEALTH_INTERVAL
        while True:
            await clock.sleep(POLL_INTERVAL)
            if clock.monotonic() >= next_health:
                await self.check_health()
                next_health = clock.monotonic() + HEALTH_INTERVAL
            await self.poll_silent()

    async def check_health(self) -> None:
        async with anyio.create_task_group() as tg:
            for name in list(self.backends):
                tg.start_soon(self._check, name)
        self.dispatcher.wake()

    async def _check(self, name: str) -> None:
        health = None
        error = f"no answer within {HEALTH_DEADLINE:g} s"
        with anyio.move_on_after(HEALTH_DEADLINE):
            try:
                health = await self.backends[name].health(single=True)
            except ExecutorError as exc:
                error = str(exc)
        was_healthy = self.placement.executors[name].healthy
        if health is None:
            if was_healthy:
                log.warning("executor unreachable", executor=name, error=error)
        elif not was_healthy:
            log.info("executor available", executor=name, slots=health.slots)
        # Lost trials there get their best-effort cancel once it answers.
        cancels = self.placement.health(name, health, self.clock.monotonic())
        if self._running():
            self.dispatcher.act(cancels)

    # ---- resume ----

    async def resume_all(self) -> None:
        for sweep_id in await self.store.unfinished_sweep_ids():
            try:
                await self.resume(sweep_id)
            except UNRESUMABLE as exc:
                # ReplayDiverged among them: the log is the truth, so a sweep
                # whose replay re-derives other decisions stops here, loudly.
                error = f"{type(exc).__name__}: {exc}"
                log.error("cannot resume sweep; skipped", sweep_id=sweep_id, error=error)
                self.sweeps.broken_sweeps.append(sweep_id)
                self.sweeps.broken_reasons[sweep_id] = error

    async def resume(self, sweep_id: str) -> None:
        # The machine's inputs, plus where each trial was sent.
        events = await self.store.sweep_events(sweep_id, types=RESUME_TYPES)
        spec, _ = sweep_spec(events)
        machine = replay(sweep_id, events)
        runner = self.sweeps.new_runner(spec, machine)
        executor_of = {
            e.trial_id: str(e.payload["executor"])
            for e in events
            if e.type == EventType.TRIAL_DISPATCHED and e.trial_id
        }
        # Where a never-dispatched trial's submit may have gone (trial.sending).
        attempted: dict[str, set[str]] = {}
        for e in events:
            if e.type == EventType.TRIAL_SENDING and e.trial_id:
                attempted.setdefault(e.trial_id, set()).add(str(e.payload["executor"]))
        # Trials whose last run was interrupted after (or before) it was dispatched:
        # the next run is to be sent, whatever the executor says of the last one.
        rerun_ids: set[str] = set()
        for e in events:
            if e.trial_id and e.type == TrialInterrupted.TYPE:
                rerun_ids.add(e.trial_id)
            elif e.trial_id and e.type == EventType.TRIAL_DISPATCHED:
                rerun_ids.discard(e.trial_id)
        starts = {
            tid: runner.start_of(tid) for tid, t in machine.trials.items() if not t.state.ended
        }
        log.info("resuming sweep", sweep_id=sweep_id, events=len(events), open_trials=len(starts))
        for trial_id, sent_to in executor_of.items():
            self.placement.remember(
                trial_id, sent_to
            )  # a resumed promotion goes where its parent ran
        self.sweeps.start_runner(runner)
        unsent: list[StartTrial] = []
        rerun: list[StartTrial] = []
        moved: list[tuple[StartTrial, str]] = []  # sent to an executor no longer configured
        now = self.clock.monotonic()
        tg = self.dispatcher
        for trial_id, start in starts.items():
            name = executor_of.get(trial_id)
            if trial_id in rerun_ids:
                rerun.append(start)
            elif name is None:
                unsent.append(start)
            elif name not in self.backends:
                moved.append((start, name))
            else:
                self.placement.adopt(sweep_id, start, name, now)
                if self.placement.executors[name].healthy:
                    tg.spawn(self._converge, runner, start, name)
                # else: known down; poll_silent asks once it answers, or declares it lost
        if unsent:
            tg.spawn(self._find_unsent, runner, unsent, attempted)
        if moved:
            tg.spawn(self._find_moved, runner, moved)
        if rerun:
            log.info("running interrupted trials again", sweep_id=sweep_id, trials=len(rerun))
            tg.spawn(self._rerun, runner, rerun)

    async def _rerun(self, runner: SweepRunner, starts: list[StartTrial]) -> None:
        """Interrupted trials: a run that succeeded before the interruption stands; else run again.

        The executor is sent the trial's next run number (``TrialSubmission.run``),
        so it starts the trial afresh instead of answering with the stopped run.
        """
        for start in starts:
            found = await self._probe(start.trial_id)
            if found is not None and found[1].state == "succeeded":
                await self._adopt_found(runner, start, *found)
                continue
            self.dispatcher.enqueue(runner, start)

    async def _find_unsent(
        self, runner: SweepRunner, starts: list[StartTrial], attempted: Mapping[str, set[str]]
    ) -> None:
        """Scheduled, never recorded as dispatched: adopt it where it is, else send it.

        A trial whose submit was logged as sending may sit on that executor even
        if it does not answer now: sending it elsewhere would run it twice. It
        waits until those executors say they do not have it, or until they have
        been away ``lost_after`` (the rule a sent trial is lost by); then it is
        sent, and a silent one cancels its copy once it answers again. A trial
        never logged as sending was never submitted (logs from before that
        record: asked of the executors that answer, as before).
        """
        pending = list(starts)
        deadline = self.clock.monotonic() + self.placement.lost_after
        while pending:
            waiting = []
            for start in pending:
                found, silent = await self._probe_all(start.trial_id)
                silent = [name for name in silent if name in attempted.get(start.trial_id, ())]
                if found is not None:
                    log.info(
                        "a trial sent before the crash was found on an executor; adopted",
                        trial_id=start.trial_id,
                        executor=found[0],
                    )
                    await self._adopt_found(runner, start, *found)
                elif silent and self.clock.monotonic() < deadline:
                    waiting.append(start)
                else:
                    self.placement.cancel_when_back(start.trial_id, silent)
                    # Stopping sweep: enqueue records the cancel instead.
                    self.dispatcher.enqueue(runner, start)
            if waiting:
                log.info(
                    "trials maybe submitted to an unreachable executor wait for it",
                    sweep_id=runner.sweep_id,
                    trials=[s.trial_id for s in waiting],
                )
                await self.clock.sleep(UNSENT_PROBE_INTERVAL)
            pending = waiting

    async def _find_moved(self, runner: SweepRunner, moved: list[tuple[StartTrial, str]]) -> None:
        """Trials on an executor no longer configured: the agent may have moved (a new URL,
        the same workdir), so the configured executors are asked before the trial is failed."""
        for start, name in moved:
            found = await self._probe(start.trial_id)
            if found is None:
                reason = f"executor {name} is no longer configured"
                await runner.put(Observe(TrialFailed(trial_id=start.trial_id, reason=reason)))
                continue
            log.info(
                "a trial of an executor no longer configured was found on another; adopted",
                trial_id=start.trial_id,
                was=name,
                executor=found[0],
            )
            await self._adopt_found(runner, start, *found)

    async def _adopt_found(
        self, runner: SweepRunner, start: StartTrial, name: str, status: TrialStatus
    ) -> None:
        trial_id = start.trial_id
        now = self.clock.monotonic()
        self.placement.adopt(runner.sweep_id, start, name, now)
        self.placement.heard(trial_id, now)
        await runner.put(Note(TRIAL_DISPATCHED, {"trial_id": trial_id, "executor": name}))
        await self._settle(runner, trial_id, status)

    async def _probe(self, trial_id: str) -> tuple[str, TrialStatus] | None:
        """The healthy executor that has the trial, asked all at once; None if none has it."""
        return (await self._probe_all(trial_id))[0]

    async def _probe_all(self, trial_id: str) -> tuple[tuple[str, TrialStatus] | None, list[str]]:
        """The executor that has the trial (or None), and the executors that could
        not say (unhealthy, or failing the question)."""
        found: list[tuple[str, TrialStatus]] = []
        silent: list[str] = []

        async def ask(name: str) -> None:
            try:
                found.append((name, await self.backends[name].status(trial_id)))
            except NotFound:
                pass
            except ExecutorError as exc:
                silent.append(name)
                log.warning(
                    "cannot ask an executor about a resumed trial",
                    trial_id=trial_id,
                    executor=name,
                    error=str(exc),
                )

        async with anyio.create_task_group() as tg:
            for name in self.backends:
                if self.placement.executors[name].healthy:
                    tg.start_soon(ask, name)
                else:
                    silent.append(name)
        return (min(found, key=lambda f: f[0]) if found else None), sorted(silent)

    async def _settle(self, runner: SweepRunner, trial_id: str, status: TrialStatus) -> None:
        if status.finished:
            await self._on_status(runner, status)
            return
        await self._catch_up_metrics(runner, status)
        if runner.machine.state is not SweepState.RUNNING:
            self.dispatcher.cancel(trial_id)

    async def _catch_up_metrics(self, runner: SweepRunner, status: TrialStatus) -> None:
        """Lines a still-running trial wrote while we were down: log them now, not at its end."""
        await self.metricsync.deliver(
            runner, status.id, [], upto=status.metrics_seq, run=status.run
        )

    async def _converge(self, runner: SweepRunner, start: StartTrial, name: str) -> None:
        try:
            status = await self.backends[name].status(start.trial_id)
        except NotFound:
            if not self._still_sent(start.trial_id):
                return  # its result was committed while we asked: it ended
            # The executor never got it (or lost it before starting): send it again
            # (or, for a stopping sweep, enqueue records its cancel).
            self.dispatcher.ended(start.trial_id)
            self.dispatcher.enqueue(runner, start, front=True)
            return
        except ExecutorError as exc:
            if isinstance(exc, ExecutorUnavailable):
                self.placement.unreachable(name, self.clock.monotonic())
            log.warning(
                "cannot reach executor of a resumed trial; will poll",
                trial_id=start.trial_id,
                executor=name,
                error=str(exc),
            )
            return  # adopted; poll_silent keeps asking and declares it lost after lost_after
        self.placement.heard(start.trial_id, self.clock.monotonic())
        await self._settle(runner, start.trial_id, status)

    def _still_sent(self, trial_id: str) -> bool:
        """Whether the trial is still on its executor as placement sees it (not ended,
        not queued again): a 404 about any other is stale."""
        flight = self.placement.flights.get(trial_id)
        return flight is not None and flight.phase is Phase.SENT

    # ---- polling ----

    async def poll_silent(self) -> None:
        for action in self.placement.polls(self.clock.monotonic()):
            if isinstance(action, Poll):
                runner = self.sweeps.runners.get(action.sweep_id)
                if runner is not None and self.placement.poll_due(
                    action.trial_id, self.clock.monotonic()
                ):
                    await self._poll(runner, action.trial_id, action.executor)
            else:
                self.dispatcher.act([action])

    async def _poll(self, runner: SweepRunner, trial_id: str, name: str) -> None:
        placement = self.placement
        try:
            status = await self.backends[name].status(trial_id)
        except NotFound:
            if not self._still_sent(trial_id):
                # Its result was committed while the poll was on its way (and the
                # executor has forgotten the finished trial since): it ended.
                return
            # Reachable but it never got the trial: sending it again cannot run it twice
            # (a stopping sweep's trial is cancelled by enqueue instead).
            log.warning(
                "executor does not know a dispatched trial; sending it again",
                trial_id=trial_id,
                executor=name,
            )
            self.dispatcher.ended(trial_id)
            self.dispatcher.enqueue(runner, runner.start_of(trial_id), front=True)
            return
        except ExecutorUnavailable as exc:
            # Its other trials skip this round; lost once it stays away lost_after.
            self.dispatcher.act(
                placement.poll_unreachable(trial_id, self.clock.monotonic(), str(exc))
            )
            return
        except ExecutorError as exc:
            log.warning("bad status from executor", trial_id=trial_id, error=str(exc))
            return
        placement.reachable(name)
        placement.heard(trial_id, self.clock.monotonic())
        await self._on_status(runner, status)
