"""Level-triggered reconciliation: what the log says should be, against what executors report.

At start, every unfinished sweep is rebuilt from its log and each of its open
trials converges: never dispatched -> send it (same id, so a send that did
arrive before the crash is the same trial); dispatched -> ask its executor:
finished -> take the result; running -> adopt; unknown -> send again. Then, on
a period, trials not heard from for a while are polled, which is also the
safety net for lost callbacks; a trial whose executor stays unreachable past
``lost_after`` (default ``LOST_AFTER``) is failed as lost, once, and a result that arrives later is
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

from typing import TYPE_CHECKING

import anyio
import structlog

from hbd.core.bracket import SweepState
from hbd.core.errors import CoreError
from hbd.core.events import StartTrial, TrialFailed, TrialInterrupted
from hbd.daemon.executors import Executor
from hbd.daemon.runner import REPLAY_TYPES, Note, Observe, SweepRunner, replay, sweep_spec
from hbd.errors import ExecutorError, ExecutorUnavailable, NotFound
from hbd.protocol import TrialStatus

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

log = structlog.get_logger(__name__)

RESUME_TYPES = REPLAY_TYPES | {"trial.dispatched"}

# How often executors' health (and so their slots) is refreshed.
HEALTH_INTERVAL = 2.0
# The most one executor's health check may take (one attempt; the client's own
# HEALTH_TIMEOUT normally ends it first): a dead executor must not hold up
# start-up or the checks of the others.
HEALTH_DEADLINE = 3.0
# How often the reconciler looks for trials it has not heard from.
POLL_INTERVAL = 2.0
# A running trial silent for this long is polled; callbacks normally arrive first.
SILENCE = 5.0
# A trial whose executor has been unreachable this long is failed as lost.
LOST_AFTER = 60.0

# What a sweep's log can hold that makes it impossible to resume: a spec this
# hbd no longer accepts, events the machine refuses, a malformed payload.
UNRESUMABLE = (CoreError, KeyError, ValueError, IndexError, TypeError)


class Reconciler:
    def __init__(self, daemon: Daemon, *, lost_after: float = LOST_AFTER) -> None:
        self.daemon = daemon
        self.lost_after = lost_after  # the grace period before an unreachable trial is lost
        self._declared_lost: set[str] = set()  # lost, until the failure is committed

    def forget(self, trial_id: str) -> None:
        """The trial ended: nothing more to track for it."""
        self._declared_lost.discard(trial_id)

    async def run(self) -> None:
        clock = self.daemon.clock
        next_health = clock.monotonic() + HEALTH_INTERVAL
        while True:
            await clock.sleep(POLL_INTERVAL)
            if clock.monotonic() >= next_health:
                await self.check_health()
                next_health = clock.monotonic() + HEALTH_INTERVAL
            await self.poll_silent()

    async def check_health(self) -> None:
        async with anyio.create_task_group() as tg:
            for executor in list(self.daemon.pool.executors.values()):
                tg.start_soon(self._check, executor)
        self.daemon.dispatcher.wake()

    async def _check(self, executor: Executor) -> None:
        pool = self.daemon.pool
        health = None
        error = f"no answer within {HEALTH_DEADLINE:g} s"
        with anyio.move_on_after(HEALTH_DEADLINE):
            try:
                health = await executor.client.health(single=True)
            except ExecutorError as exc:
                error = str(exc)
        if health is None:
            if executor.healthy:
                log.warning("executor unreachable", executor=executor.name, error=error)
            pool.mark_unreachable(executor)
            return
        if not executor.healthy:
            log.info("executor available", executor=executor.name, slots=health.slots)
        # Not mark_ok: an executor that answers health checks but fails submits
        # keeps its cooldown until a submit succeeds.
        pool.mark_reachable(executor, health)
        if executor.lost and self.daemon.running:
            lost, executor.lost = executor.lost, set()
            for trial_id in sorted(lost):
                self.daemon.send_cancel(executor, trial_id, None)

    # ---- resume ----

    async def resume_all(self) -> None:
        for sweep_id in await self.daemon.store.unfinished_sweep_ids():
            try:
                await self.resume(sweep_id)
            except UNRESUMABLE as exc:
                # ReplayDiverged among them: the log is the truth, so a sweep
                # whose replay re-derives other decisions stops here, loudly.
                error = f"{type(exc).__name__}: {exc}"
                log.error("cannot resume sweep; skipped", sweep_id=sweep_id, error=error)
                self.daemon.broken_sweeps.append(sweep_id)
                self.daemon.broken_reasons[sweep_id] = error

    async def resume(self, sweep_id: str) -> None:
        # The machine's inputs, plus where each trial was sent.
        events = await self.daemon.store.sweep_events(sweep_id, types=RESUME_TYPES)
        spec, _ = sweep_spec(events)
        machine = replay(sweep_id, events)
        runner = SweepRunner(self.daemon, spec, machine)
        executor_of = {
            e.trial_id: str(e.payload["executor"])
            for e in events
            if e.type == "trial.dispatched" and e.trial_id
        }
        # Trials whose last run was interrupted after (or before) it was dispatched:
        # the next run is to be sent, whatever the executor says of the last one.
        rerun_ids: set[str] = set()
        for e in events:
            if e.trial_id and e.type == TrialInterrupted.TYPE:
                rerun_ids.add(e.trial_id)
            elif e.trial_id and e.type == "trial.dispatched":
                rerun_ids.discard(e.trial_id)
        starts = {
            tid: runner.start_of(tid) for tid, t in machine.trials.items() if not t.state.ended
        }
        log.info("resuming sweep", sweep_id=sweep_id, events=len(events), open_trials=len(starts))
        dispatcher = self.daemon.dispatcher
        for trial_id, sent_to in executor_of.items():
            dispatcher.remember(trial_id, sent_to)  # a resumed promotion goes where its parent ran
        self.daemon.start_runner(runner)
        unsent: list[StartTrial] = []
        rerun: list[StartTrial] = []
        moved: list[tuple[StartTrial, str]] = []  # sent to an executor no longer configured
        for trial_id, start in starts.items():
            name = executor_of.get(trial_id)
            executor = self.daemon.pool.executors.get(name) if name else None
            if trial_id in rerun_ids:
                rerun.append(start)
            elif name is None:
                unsent.append(start)
            elif executor is None:
                moved.append((start, name))
            else:
                dispatcher.adopt(sweep_id, trial_id, executor)
                if executor.healthy:
                    self.daemon.tg.start_soon(self._converge, runner, start, executor)
                # else: known down; poll_silent asks once it answers, or declares it lost
        if unsent:
            self.daemon.tg.start_soon(self._find_unsent, runner, unsent)
        if moved:
            self.daemon.tg.start_soon(self._find_moved, runner, moved)
        if rerun:
            log.info("running interrupted trials again", sweep_id=sweep_id, trials=len(rerun))
            self.daemon.tg.start_soon(self._rerun, runner, rerun)

    async def _rerun(self, runner: SweepRunner, starts: list[StartTrial]) -> None:
        """Interrupted trials: a run that succeeded before the interruption stands; else run again.

        The executor is sent the trial's next run number (``TrialSubmission.run``),
        so it starts the trial afresh instead of answering with the stopped run.
        """
        for start in starts:
            found = await self._probe(start.trial_id)
            if found is not None and found[1].state == "succeeded":
                await self._adopt_found(runner, start.trial_id, *found)
                continue
            self.daemon.dispatcher.enqueue(runner, start)

    async def _find_unsent(self, runner: SweepRunner, starts: list[StartTrial]) -> None:
        """Scheduled, never recorded as dispatched: adopt it where it is, else send it."""
        for start in starts:
            found = await self._probe(start.trial_id)
            if found is None:
                # Stopping sweep: enqueue records the cancel instead.
                self.daemon.dispatcher.enqueue(runner, start)
                continue
            log.info(
                "a trial sent before the crash was found on an executor; adopted",
                trial_id=start.trial_id,
                executor=found[0].name,
            )
            await self._adopt_found(runner, start.trial_id, *found)

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
                executor=found[0].name,
            )
            await self._adopt_found(runner, start.trial_id, *found)

    async def _adopt_found(
        self, runner: SweepRunner, trial_id: str, executor: Executor, status: TrialStatus
    ) -> None:
        self.daemon.dispatcher.adopt(runner.sweep_id, trial_id, executor)
        self.daemon.heard_from(trial_id)
        await runner.put(
            Note("trial.dispatched", {"trial_id": trial_id, "executor": executor.name})
        )
        await self._settle(runner, trial_id, status)

    async def _probe(self, trial_id: str) -> tuple[Executor, TrialStatus] | None:
        """The healthy executor that has the trial, asked all at once; None if none has it."""
        found: list[tuple[Executor, TrialStatus]] = []

        async def ask(executor: Executor) -> None:
            try:
                found.append((executor, await executor.client.status(trial_id)))
            except NotFound:
                pass
            except ExecutorError as exc:
                log.warning(
                    "cannot ask an executor about a resumed trial",
                    trial_id=trial_id,
                    executor=executor.name,
                    error=str(exc),
                )

        async with anyio.create_task_group() as tg:
            for executor in self.daemon.pool.executors.values():
                if executor.healthy:
                    tg.start_soon(ask, executor)
        return min(found, key=lambda f: f[0].name) if found else None

    async def _settle(self, runner: SweepRunner, trial_id: str, status: TrialStatus) -> None:
        if status.finished:
            await self.daemon.on_status(runner, status)
            return
        await self._catch_up_metrics(runner, status)
        if runner.machine.state is not SweepState.RUNNING:
            self.daemon.cancel_on_executor(runner, trial_id)

    async def _catch_up_metrics(self, runner: SweepRunner, status: TrialStatus) -> None:
        """Lines a still-running trial wrote while we were down: log them now, not at its end."""
        await self.daemon.metricsync.deliver(
            runner, status.id, [], upto=status.metrics_seq, run=status.run
        )

    async def _converge(self, runner: SweepRunner, start: StartTrial, executor: Executor) -> None:
        try:
            status = await executor.client.status(start.trial_id)
        except NotFound:
            # The executor never got it (or lost it before starting): send it again
            # (or, for a stopping sweep, enqueue records its cancel).
            self.daemon.dispatcher.trial_ended(start.trial_id)
            self.daemon.dispatcher.enqueue(runner, start, front=True)
            return
        except ExecutorError as exc:
            if isinstance(exc, ExecutorUnavailable):
                self.daemon.pool.mark_unreachable(executor)
            log.warning(
                "cannot reach executor of a resumed trial; will poll",
                trial_id=start.trial_id,
                executor=executor.name,
                error=str(exc),
            )
            return  # adopted; poll_silent keeps asking and declares it lost after lost_after
        self.daemon.heard_from(start.trial_id)
        await self._settle(runner, start.trial_id, status)

    # ---- polling ----

    async def poll_silent(self) -> None:
        pool = self.daemon.pool
        for runner in list(self.daemon.runners.values()):
            for trial_id in sorted(self.daemon.dispatcher.inflight(runner.sweep_id)):
                if self.daemon.dispatcher.sending(trial_id) or trial_id in self._declared_lost:
                    continue  # its POST is on its way: a 404 now would only mean "not yet"
                name = self.daemon.dispatcher.executor_of(trial_id)
                executor = pool.executors.get(name) if name else None
                if executor is None:
                    continue
                if not executor.healthy:
                    await self._check_lost(runner, trial_id, executor, "no answer")
                    continue  # known down: no request until it answers a health check
                now = self.daemon.clock.monotonic()
                if now - self.daemon.last_heard(trial_id) >= SILENCE:
                    await self._poll(runner, trial_id, executor)

    async def _poll(self, runner: SweepRunner, trial_id: str, executor: Executor) -> None:
        try:
            status = await executor.client.status(trial_id)
        except NotFound:
            # Reachable but it never got the trial: sending it again cannot run it twice
            # (a stopping sweep's trial is cancelled by enqueue instead).
            log.warning(
                "executor does not know a dispatched trial; sending it again",
                trial_id=trial_id,
                executor=executor.name,
            )
            self.daemon.dispatcher.trial_ended(trial_id)
            self.daemon.dispatcher.enqueue(runner, runner.start_of(trial_id), front=True)
            return
        except ExecutorUnavailable as exc:
            self.daemon.pool.mark_unreachable(executor)  # its other trials skip this round
            await self._check_lost(runner, trial_id, executor, str(exc))
            return
        except ExecutorError as exc:
            log.warning("bad status from executor", trial_id=trial_id, error=str(exc))
            return
        self.daemon.pool.mark_reachable(executor)
        self.daemon.heard_from(trial_id)
        await self.daemon.on_status(runner, status)

    async def _check_lost(
        self, runner: SweepRunner, trial_id: str, executor: Executor, error: str
    ) -> None:
        since = executor.unreachable_since
        now = self.daemon.clock.monotonic()
        if since is None or now - since < self.lost_after:
            return
        reason = f"lost: executor {executor.name} unreachable for {now - since:.0f} s ({error})"
        self._declared_lost.add(trial_id)
        executor.lost.add(trial_id)  # a best-effort cancel once it answers again
        log.warning("trial lost", sweep_id=runner.sweep_id, trial_id=trial_id, reason=reason)
        await runner.put(Note("trial.lost", {"trial_id": trial_id, "reason": reason}))
        await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=reason)))
