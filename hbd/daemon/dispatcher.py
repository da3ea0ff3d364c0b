"""Send scheduled trials to executors, within the sweep's and the executors' limits.

Trials wait in one queue in the order they were scheduled. A trial leaves the
queue when its sweep is under its ``concurrency`` and some executor has a free
slot. A promoted trial of a ``resume: true`` sweep goes only to its parent's
executor (that is where the parent's checkpoint is), waiting for a slot there;
it falls back to any executor, with a warning, only when that executor is no
longer configured. A slot is held from the POST until the trial's terminal
event is committed.

Unreachable executors: a POST that never got past connecting puts the trial
back at the head of the queue for any executor; one that may have arrived (a
read timeout, a dropped connection, a 5xx) is pinned to the same executor, so
a trial never runs on two. Either way the executor enters a cooldown that
doubles per consecutive failure; a trial that could not be placed after
``MAX_DISPATCH_ATTEMPTS`` tries is failed with the reason. An executor that
answers 429 is busy, not failing: the trial waits at the head of the queue for
a slot there to free (or the next health check), and no attempt is counted.
An executor that answers with a refusal (409, 422) fails the trial at once:
sending it again would be refused again.

A trial of a sweep that is no longer running (stopping, finished) is never
queued or placed: it is cancelled where it stands. A cancel that arrives while
a trial's POST is in flight is sent once the POST returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup

from hbd.core.bracket import SweepState
from hbd.core.events import StartTrial, TrialCancelled, TrialFailed
from hbd.daemon.capacity import CapacityWatch
from hbd.daemon.executors import Executor
from hbd.daemon.runner import Note, Observe, SweepRunner, observation_from_status
from hbd.errors import ExecutorBusy, ExecutorRejected, ExecutorUnavailable

if TYPE_CHECKING:
    from hbd.daemon.app import Daemon

log = structlog.get_logger(__name__)

# Tries to place one trial before failing it: with the executor cooldown
# doubling from 0.5 s to 30 s this is several minutes of trying.
MAX_DISPATCH_ATTEMPTS = 12


@dataclass(slots=True)
class Queued:
    runner: SweepRunner
    start: StartTrial
    attempts: int = 0
    only: str | None = None  # the one executor it may go to (resume affinity, maybe-sent)
    since: float = 0.0  # clock.monotonic() when first queued: the start of dispatch latency


class Dispatcher:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._queue: OrderedDict[str, Queued] = OrderedDict()
        self._inflight: dict[str, set[str]] = {}  # sweep id -> trial ids sent and not ended
        self._executor_of: dict[str, str] = {}  # trial id -> executor name, for affinity and cancel
        self._wake = anyio.Event()
        self._sending: set[str] = set()  # trial ids whose submission is on its way
        self._cancel_after_send: set[str] = set()  # cancelled while their POST was in flight
        # Called with the seconds from queueing to an executor's acceptance (metrics).
        self.on_dispatched: Callable[[float], None] | None = None
        self.capacity = CapacityWatch(daemon)  # capacity.idle notes: why slots stand idle

    # ---- called by runners and the reconciler ----

    def enqueue(
        self,
        runner: SweepRunner,
        start: StartTrial,
        *,
        front: bool = False,
        only: str | None = None,
        attempts: int = 0,
        since: float | None = None,
    ) -> None:
        """Queue a trial to send; cancels it instead when its sweep is no longer running."""
        trial_id = start.trial_id
        if self._stopped(runner) or trial_id in self._cancel_after_send:
            self._cancel_after_send.discard(trial_id)
            self._cancel_unplaced(runner, trial_id)
            return
        if only is None:
            only = self._affinity(start)
        self._queue[trial_id] = Queued(
            runner,
            start,
            attempts=attempts,
            only=only,
            since=self.daemon.clock.monotonic() if since is None else since,
        )
        if front:
            self._queue.move_to_end(trial_id, last=False)
        self.wake()

    def _affinity(self, start: StartTrial) -> str | None:
        """A resumed trial's parent's executor: its checkpoint is there."""
        if start.resume_from is None or start.parent is None:
            return None
        name = self._executor_of.get(start.parent)
        if name is not None and name in self.daemon.pool.executors:
            return name
        log.warning(
            "the executor of a resumed trial's parent is unknown or no longer configured; "
            "the trial may start without its checkpoint",
            trial_id=start.trial_id,
            parent=start.parent,
            executor=name,
        )
        return None

    @staticmethod
    def _stopped(runner: SweepRunner) -> bool:
        return runner.machine.state is not SweepState.RUNNING

    def _cancel_unplaced(self, runner: SweepRunner, trial_id: str) -> None:
        """Record the cancel of a trial that is not (and will not be) on any executor."""
        cancelled = Observe(TrialCancelled(trial_id=trial_id, reason="sweep stopping"))
        try:
            self.daemon.tg.start_soon(runner.put, cancelled)
        except RuntimeError:
            pass  # the daemon is stopping; the next start sees the stop in the log

    def dequeue(self, trial_id: str) -> bool:
        """Take a trial out of the queue if it was never sent; True if it was there."""
        return self._queue.pop(trial_id, None) is not None

    def adopt(self, sweep_id: str, trial_id: str, executor: Executor) -> None:
        """A trial already on an executor (found by the reconciler) holds its slots."""
        self._inflight.setdefault(sweep_id, set()).add(trial_id)
        self._executor_of[trial_id] = executor.name
        executor.running.add(trial_id)

    def remember(self, trial_id: str, executor: str) -> None:
        """Where a trial was sent, from the log (resume affinity after a restart)."""
        self._executor_of[trial_id] = executor

    def sending(self, trial_id: str) -> bool:
        """Whether a submission of the trial is on its way (the poller leaves it alone)."""
        return trial_id in self._sending

    def cancel_after_send(self, trial_id: str) -> None:
        """Cancel a trial whose POST is in flight as soon as it returns."""
        self._cancel_after_send.add(trial_id)

    def executor_of(self, trial_id: str) -> str | None:
        return self._executor_of.get(trial_id)

    def inflight(self, sweep_id: str) -> set[str]:
        return self._inflight.get(sweep_id, set())

    def trial_ended(self, trial_id: str) -> None:
        for trials in self._inflight.values():
            trials.discard(trial_id)
        self._cancel_after_send.discard(trial_id)
        self.daemon.pool.release(trial_id)
        self.wake()

    def forget_sweep(self, sweep_id: str, trial_ids: Iterable[str] = ()) -> None:
        for trial_id in [t for t, q in self._queue.items() if q.runner.sweep_id == sweep_id]:
            del self._queue[trial_id]
        self._inflight.pop(sweep_id, None)
        for trial_id in trial_ids:
            self._executor_of.pop(trial_id, None)
            self._cancel_after_send.discard(trial_id)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def queued(self) -> int:
        return len(self._queue)

    # ---- the loop ----

    async def run(self, tg: TaskGroup) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self._place_all(tg)

    def _place_all(self, tg: TaskGroup) -> None:
        pool = self.daemon.pool
        full = False  # no executor has a free slot for a trial that may go anywhere
        for trial_id in list(self._queue):
            item = self._queue[trial_id]
            if self._stopped(item.runner):
                del self._queue[trial_id]
                self._cancel_unplaced(item.runner, trial_id)
                continue
            if full and item.only is None:
                continue
            limit = item.runner.spec.matrix.concurrency
            inflight = self._inflight.setdefault(item.runner.sweep_id, set())
            if limit is not None and len(inflight) >= limit:
                continue
            executor = pool.available(only=item.only)
            if executor is None:
                # a freed slot or a health check wakes us
                full = full or item.only is None
                continue
            del self._queue[trial_id]
            inflight.add(trial_id)
            executor.running.add(trial_id)
            self._executor_of[trial_id] = executor.name
            self._sending.add(trial_id)
            tg.start_soon(self._send, item, executor)
        queued: dict[str, int] = {}
        for q in self._queue.values():
            queued[q.runner.sweep_id] = queued.get(q.runner.sweep_id, 0) + 1
        self.capacity.check(queued, tg)

    async def _send(self, item: Queued, executor: Executor) -> None:
        start, runner = item.start, item.runner
        trial_id = start.trial_id
        try:
            submission = self.daemon.submission(runner, start)
        except Exception as exc:  # any error building it fails this trial, never the daemon
            self._unsent(item, executor)
            reason = f"cannot build the trial's submission: {exc}"
            log.error("bad submission", trial_id=trial_id, error=str(exc))
            await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=reason)))
            return
        try:
            status = await executor.client.submit(submission)
        except ExecutorBusy:
            # No free slot there: not a failure. Wait at the head of the queue for
            # a slot to free (or the next health check); other executors may take it.
            self._unsent(item, executor)
            executor.busy = True
            self._requeue(item, only=item.only, attempts=item.attempts)
            return
        except ExecutorUnavailable as exc:
            self._unsent(item, executor)
            self.daemon.pool.mark_failed(executor)
            attempts = item.attempts + 1
            # It may have arrived: sending it elsewhere could run it twice.
            only = executor.name if exc.maybe_sent else item.only
            if attempts >= MAX_DISPATCH_ATTEMPTS:
                if exc.maybe_sent:
                    executor.lost.add(trial_id)  # cancelled when it answers again
                reason = f"no executor took the trial after {attempts} attempts; last: {exc}"
                await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=reason)))
            else:
                log.warning(
                    "dispatch failed; will retry",
                    trial_id=trial_id,
                    executor=executor.name,
                    maybe_sent=exc.maybe_sent,
                    error=str(exc),
                )
                self._requeue(item, only=only, attempts=attempts)
            return
        except ExecutorRejected as exc:
            self._unsent(item, executor)
            await runner.put(Observe(TrialFailed(trial_id=trial_id, reason=str(exc))))
            return
        self._sending.discard(trial_id)
        self.daemon.pool.mark_ok(executor)
        self.daemon.heard_from(trial_id)
        if self.on_dispatched is not None:
            self.on_dispatched(self.daemon.clock.monotonic() - item.since)
        await runner.put(
            Note("trial.dispatched", {"trial_id": trial_id, "executor": executor.name})
        )
        result = observation_from_status(status, runner.spec.matrix.metric.name)
        if result is not None:  # it had already finished there (a resend after a restart)
            await runner.put(result)
        else:
            await runner.put(
                Note("trial.running", {"trial_id": trial_id, "executor": executor.name})
            )
        if trial_id in self._cancel_after_send:
            self._cancel_after_send.discard(trial_id)
            if result is None:
                self.daemon.cancel_on_executor(runner, trial_id)

    def _requeue(self, item: Queued, *, only: str | None, attempts: int) -> None:
        self.enqueue(
            item.runner, item.start, front=True, only=only, attempts=attempts, since=item.since
        )

    def _unsent(self, item: Queued, executor: Executor) -> None:
        trial_id = item.start.trial_id
        self._sending.discard(trial_id)
        executor.running.discard(trial_id)
        self._inflight.get(item.runner.sweep_id, set()).discard(trial_id)
        self._executor_of.pop(trial_id, None)
        self.wake()
