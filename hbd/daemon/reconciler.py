"""Level-triggered reconciliation: what the log says should be, against what executors report.

At start, every unfinished sweep is rebuilt from its log and each of its open
trials converges: never dispatched -> send it (same id, so a send that did
arrive before the crash is the same trial); dispatched -> ask its executor:
finished -> take the result; running -> adopt; unknown -> send again. Then, on
a period, trials not heard from for a while are polled, which is also the
safety net for lost callbacks; a trial whose executor stays unreachable past
``lost_after`` (default ``LOST_AFTER``) is failed as lost, once, and a result that arrives later is
rejected by the machine and logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from hbd.core.bracket import SweepState
from hbd.core.events import StartTrial, TrialCancelled, TrialFailed
from hbd.daemon.executors import Executor
from hbd.daemon.runner import REPLAY_TYPES, Note, Observe, SweepRunner, replay, sweep_spec
from hbd.errors import ExecutorError, ExecutorUnavailable, NotFound

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

log = structlog.get_logger(__name__)

RESUME_TYPES = REPLAY_TYPES | {"trial.dispatched"}

# How often executors' health (and so their slots) is refreshed.
HEALTH_INTERVAL = 2.0
# How often the reconciler looks for trials it has not heard from.
POLL_INTERVAL = 2.0
# A running trial silent for this long is polled; callbacks normally arrive first.
SILENCE = 5.0
# A trial whose executor has been unreachable this long is failed as lost.
LOST_AFTER = 60.0


class Reconciler:
    def __init__(self, daemon: Daemon, *, lost_after: float = LOST_AFTER) -> None:
        self.daemon = daemon
        self.lost_after = lost_after  # the grace period before an unreachable trial is lost
        self._unreachable_since: dict[str, float] = {}

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
        pool = self.daemon.pool
        for executor in list(pool.executors.values()):
            try:
                health = await executor.client.health()
            except ExecutorError as exc:
                if executor.healthy:
                    log.warning("executor unreachable", executor=executor.name, error=str(exc))
                executor.healthy = False
                continue
            if not executor.healthy:
                log.info("executor available", executor=executor.name, slots=health.slots)
            pool.mark_ok(executor, health)
        self.daemon.dispatcher.wake()

    # ---- resume ----

    async def resume_all(self) -> None:
        for sweep_id in await self.daemon.store.unfinished_sweep_ids():
            await self.resume(sweep_id)

    async def resume(self, sweep_id: str) -> None:
        # The machine's inputs, plus where each trial was sent.
        events = await self.daemon.store.sweep_events(sweep_id, types=RESUME_TYPES)
        spec, _ = sweep_spec(events)
        machine = replay(sweep_id, events)
        runner = SweepRunner(self.daemon, spec, machine)
        executor_of = {
            e.trial_id: str(e.payload.get("executor"))
            for e in events
            if e.type == "trial.dispatched" and e.trial_id
        }
        starts = {
            tid: runner.start_of(tid) for tid, t in machine.trials.items() if not t.state.ended
        }
        log.info("resuming sweep", sweep_id=sweep_id, events=len(events), open_trials=len(starts))
        self.daemon.start_runner(runner)
        stopping = machine.state is SweepState.STOPPING
        for trial_id, start in starts.items():
            name = executor_of.get(trial_id)
            executor = self.daemon.pool.executors.get(name) if name else None
            if name is None:
                if stopping:
                    await runner.put(
                        Observe(TrialCancelled(trial_id=trial_id, reason="sweep stopping"))
                    )
                else:
                    self.daemon.dispatcher.enqueue(runner, start)
            elif executor is None:
                reason = f"executor {name} is no longer configured"
                await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=reason)))
            else:
                self.daemon.dispatcher.adopt(sweep_id, trial_id, executor)
                self.daemon.tg.start_soon(self._converge, runner, start, executor, stopping)

    async def _converge(
        self, runner: SweepRunner, start: StartTrial, executor: Executor, stopping: bool
    ) -> None:
        try:
            status = await executor.client.status(start.trial_id)
        except NotFound:
            # The executor never got it (or lost it before starting): send it again.
            self.daemon.dispatcher.trial_ended(start.trial_id)
            if stopping:
                await runner.put(
                    Observe(TrialCancelled(trial_id=start.trial_id, reason="sweep stopping"))
                )
            else:
                self.daemon.dispatcher.enqueue(runner, start, front=True)
            return
        except ExecutorError as exc:
            log.warning(
                "cannot reach executor of a resumed trial; will poll",
                trial_id=start.trial_id,
                executor=executor.name,
                error=str(exc),
            )
            return  # adopted; poll_silent keeps asking and declares it lost after LOST_AFTER
        self.daemon.heard_from(start.trial_id)
        if status.finished:
            await self.daemon.on_status(runner, status)
        elif stopping:
            self.daemon.cancel_on_executor(runner, start.trial_id)

    # ---- polling ----

    async def poll_silent(self) -> None:
        now = self.daemon.clock.monotonic()
        for runner in list(self.daemon.runners.values()):
            for trial_id in sorted(self.daemon.dispatcher.inflight(runner.sweep_id)):
                if self.daemon.dispatcher.sending(trial_id):
                    continue  # its POST is on its way: a 404 now would only mean "not yet"
                if now - self.daemon.last_heard(trial_id) >= SILENCE:
                    await self._poll(runner, trial_id)

    async def _poll(self, runner: SweepRunner, trial_id: str) -> None:
        name = self.daemon.dispatcher.executor_of(trial_id)
        executor = self.daemon.pool.executors.get(name) if name else None
        if executor is None:
            return
        now = self.daemon.clock.monotonic()
        try:
            status = await executor.client.status(trial_id)
        except NotFound:
            # Reachable but it never got the trial: sending it again cannot run it twice.
            log.warning(
                "executor does not know a dispatched trial; sending it again",
                trial_id=trial_id,
                executor=executor.name,
            )
            self.daemon.dispatcher.trial_ended(trial_id)
            self.daemon.dispatcher.enqueue(runner, runner.start_of(trial_id), front=True)
            return
        except ExecutorUnavailable as exc:
            since = self._unreachable_since.setdefault(trial_id, now)
            if now - since >= self.lost_after:
                reason = (
                    f"lost: executor {executor.name} unreachable for {now - since:.0f} s ({exc})"
                )
                await self._lost(runner, trial_id, reason)
            return
        except ExecutorError as exc:
            log.warning("bad status from executor", trial_id=trial_id, error=str(exc))
            return
        self._unreachable_since.pop(trial_id, None)
        self.daemon.heard_from(trial_id)
        await self.daemon.on_status(runner, status)

    async def _lost(self, runner: SweepRunner, trial_id: str, reason: str) -> None:
        self._unreachable_since.pop(trial_id, None)
        log.warning("trial lost", sweep_id=runner.sweep_id, trial_id=trial_id, reason=reason)
        await runner.put(Note("trial.lost", {"trial_id": trial_id, "reason": reason}))
        await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=reason)))
