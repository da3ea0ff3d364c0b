"""Send scheduled trials to executors, within the sweep's and the executors' limits.

Trials wait in one queue in the order they were scheduled. A trial leaves the
queue when its sweep is under its ``concurrency`` and some executor has a free
slot; a promoted trial prefers its parent's executor so that ``resume`` finds
the parent's checkpoint on local disk. A slot is held from the POST until the
trial's terminal event is committed.

Unreachable executors: a failed POST puts the trial back at the head of the
queue and the executor in a cooldown that doubles per consecutive failure; a
trial that could not be placed after ``MAX_DISPATCH_ATTEMPTS`` tries is
failed with the reason. An executor that answers with a refusal (409, 422)
fails the trial at once: sending it again would be refused again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup

from hbd.core.events import StartTrial, TrialFailed
from hbd.daemon.capacity import CapacityWatch
from hbd.daemon.executors import Executor
from hbd.daemon.runner import Note, Observe, SweepRunner, observation_from_status
from hbd.errors import ExecutorRejected, ExecutorUnavailable
from hbd.protocol import TrialSubmission

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
    parent_executor: str | None = None
    since: float = 0.0  # clock.monotonic() when first queued: the start of dispatch latency


class Dispatcher:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._queue: OrderedDict[str, Queued] = OrderedDict()
        self._inflight: dict[str, set[str]] = {}  # sweep id -> trial ids sent and not ended
        self._executor_of: dict[str, str] = {}  # trial id -> executor name, for affinity and cancel
        self._wake = anyio.Event()
        self._sending: set[str] = set()  # trial ids whose submission is on its way
        # Called with the seconds from queueing to an executor's acceptance (metrics).
        self.on_dispatched: Callable[[float], None] | None = None
        self.capacity = CapacityWatch(daemon)  # capacity.idle notes: why slots stand idle

    # ---- called by runners and the reconciler ----

    def enqueue(self, runner: SweepRunner, start: StartTrial, *, front: bool = False) -> None:
        parent = self._executor_of.get(start.parent) if start.parent else None
        self._queue[start.trial_id] = Queued(
            runner, start, parent_executor=parent, since=self.daemon.clock.monotonic()
        )
        if front:
            self._queue.move_to_end(start.trial_id, last=False)
        self.wake()

    def dequeue(self, trial_id: str) -> bool:
        """Take a trial out of the queue if it was never sent; True if it was there."""
        return self._queue.pop(trial_id, None) is not None

    def adopt(self, sweep_id: str, trial_id: str, executor: Executor) -> None:
        """A trial already on an executor (found by the reconciler) holds its slots."""
        self._inflight.setdefault(sweep_id, set()).add(trial_id)
        self._executor_of[trial_id] = executor.name
        executor.running.add(trial_id)

    def sending(self, trial_id: str) -> bool:
        """Whether a submission of the trial is on its way (the poller leaves it alone)."""
        return trial_id in self._sending

    def executor_of(self, trial_id: str) -> str | None:
        return self._executor_of.get(trial_id)

    def inflight(self, sweep_id: str) -> set[str]:
        return self._inflight.get(sweep_id, set())

    def trial_ended(self, trial_id: str) -> None:
        for trials in self._inflight.values():
            trials.discard(trial_id)
        self.daemon.pool.release(trial_id)
        self.wake()

    def forget_sweep(self, sweep_id: str) -> None:
        for trial_id in [t for t, q in self._queue.items() if q.runner.sweep_id == sweep_id]:
            del self._queue[trial_id]
        self._inflight.pop(sweep_id, None)
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
        for trial_id in list(self._queue):
            item = self._queue[trial_id]
            limit = item.runner.spec.matrix.concurrency
            inflight = self._inflight.setdefault(item.runner.sweep_id, set())
            if limit is not None and len(inflight) >= limit:
                continue
            executor = pool.available(prefer=item.parent_executor)
            if executor is None:
                break  # nothing is free anywhere; a freed slot or a health check wakes us
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
        start = item.start
        submission = self.daemon.submission(item.runner, start)
        try:
            status = await executor.client.submit(submission)
        except ExecutorUnavailable as exc:
            self._sending.discard(start.trial_id)
            self._unsent(item, executor)
            self.daemon.pool.mark_failed(executor)
            item.attempts += 1
            if item.attempts >= MAX_DISPATCH_ATTEMPTS:
                reason = f"no executor took the trial after {item.attempts} attempts; last: {exc}"
                await item.runner.put(Observe(TrialFailed(trial_id=start.trial_id, reason=reason)))
            else:
                log.warning(
                    "dispatch failed; will retry",
                    trial_id=start.trial_id,
                    executor=executor.name,
                    error=str(exc),
                )
                self.enqueue(item.runner, start, front=True)
                self._queue[start.trial_id].attempts = item.attempts
                self._queue[start.trial_id].since = item.since
            return
        except ExecutorRejected as exc:
            self._sending.discard(start.trial_id)
            self._unsent(item, executor)
            await item.runner.put(Observe(TrialFailed(trial_id=start.trial_id, reason=str(exc))))
            return
        self._sending.discard(start.trial_id)
        self.daemon.pool.mark_ok(executor)
        self.daemon.heard_from(start.trial_id)
        if self.on_dispatched is not None:
            self.on_dispatched(self.daemon.clock.monotonic() - item.since)
        await item.runner.put(
            Note("trial.dispatched", {"trial_id": start.trial_id, "executor": executor.name})
        )
        result = observation_from_status(status, item.runner.spec.matrix.metric.name)
        if result is not None:  # it had already finished there (a resend after a restart)
            await item.runner.put(result)
        else:
            await item.runner.put(
                Note("trial.running", {"trial_id": start.trial_id, "executor": executor.name})
            )

    def _unsent(self, item: Queued, executor: Executor) -> None:
        trial_id = item.start.trial_id
        executor.running.discard(trial_id)
        self._inflight.get(item.runner.sweep_id, set()).discard(trial_id)
        self._executor_of.pop(trial_id, None)
        self.wake()

    def submission_for(self, runner: SweepRunner, start: StartTrial) -> TrialSubmission:
        return self.daemon.submission(runner, start)
