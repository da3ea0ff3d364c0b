"""The anyio shell around placement: carry out its actions, feed results back.

Every decision of where a trial goes, and what happens when an executor is
busy, unreachable or refuses, is made by :class:`hbd.daemon.placement.Placement`
(read its docstring for the rules). This module only does what it cannot: the
submits and cancels over an :class:`~hbd.daemon.backend.ExecutorBackend`, the
runner inbox items that record the outcome, and the wake-ups of the placement
loop. A slot is held from the submit until the trial's terminal event is
committed (``ended``).

Unreachable executors: a submit that never got past connecting puts the trial
back at the head of the queue for any executor; one that may have arrived (a
read timeout, a dropped connection, a 5xx) is pinned to the same executor, so
a trial never runs on two. An executor that answers 429 is busy, not failing;
a refusal (409, 422) fails the trial at once. A trial of a sweep that is no
longer running is never placed: it is cancelled where it stands; a cancel
that arrives while its submit is in flight is sent once the submit returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from hbd.core.bracket import SweepState
from hbd.core.events import StartTrial, TrialCancelled, TrialFailed
from hbd.core.spec import SweepSpec
from hbd.daemon.backend import ExecutorBackend
from hbd.daemon.capacity import CapacityWatch
from hbd.daemon.clock import Clock
from hbd.daemon.lifecycle import TRIAL_DISPATCHED, TRIAL_LOST, TRIAL_RUNNING, TRIAL_SENDING
from hbd.daemon.placement import (
    Action,
    CancelOn,
    CancelUnsent,
    Dispatched,
    Fail,
    Lost,
    Placement,
    Poll,
    Send,
)
from hbd.daemon.runner import Note, Observe, SweepRunner, observation_from_status
from hbd.errors import ExecutorBusy, ExecutorError, ExecutorRejected, ExecutorUnavailable
from hbd.protocol import TRIAL_RESOURCE_NAMES, TrialResources, TrialStatus, TrialSubmission

log = structlog.get_logger(__name__)

# Cancel requests in flight per executor. Below the client's connection pool
# (executors.POOL_LIMITS: 4), so stopping a large sweep never takes every
# connection from submits, polls and health checks.
CANCELS_PER_EXECUTOR = 2

OnStatus = Callable[[SweepRunner, TrialStatus], Awaitable[None]]
BuildSubmission = Callable[[SweepRunner, StartTrial], TrialSubmission]


def trial_resources(spec: SweepSpec) -> TrialResources | None:
    """The container resources a trial of ``spec`` asks its executor for (ValueError if bad)."""
    resources = spec.component.container.resources
    if resources is None:
        return None
    return TrialResources(
        limits={k: v for k, v in resources.limits.items() if k in TRIAL_RESOURCE_NAMES},
        requests={k: v for k, v in resources.requests.items() if k in TRIAL_RESOURCE_NAMES},
    )


def trial_gpus(spec: SweepSpec) -> int:
    """GPU devices each trial of ``spec`` needs free on its executor (0 if unreadable:
    building the submission then fails the trial with the reason)."""
    try:
        resources = trial_resources(spec)
    except ValueError:
        return 0
    return 0 if resources is None else resources.gpus


class Dispatcher:
    def __init__(
        self,
        placement: Placement,
        backends: Mapping[str, ExecutorBackend],
        runners: Mapping[str, SweepRunner],
        clock: Clock,
        *,
        submission: BuildSubmission,
        on_status: OnStatus,
        capacity: CapacityWatch,
    ) -> None:
        self.placement = placement
        self.backends = backends
        self.runners = runners
        self.clock = clock
        self._submission = submission
        self._on_status = on_status
        self.capacity = capacity  # capacity.idle notes: why slots stand idle
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None
        self._cancel_limiters: dict[str, anyio.CapacityLimiter] = {}
        # Called with the seconds from queueing to an executor's acceptance (metrics).
        self.on_dispatched: Callable[[float], None] | None = None

    # ---- called by runners (through the daemon) and the reconciler ----

    def enqueue(self, runner: SweepRunner, start: StartTrial, *, front: bool = False) -> None:
        """Queue a trial to send; cancels it instead when its sweep is no longer running."""
        if runner.machine.state is not SweepState.RUNNING:
            self.act(self.placement.close_sweep(runner.sweep_id))
        now = self.clock.monotonic()
        self.act(self.placement.enqueue(runner.sweep_id, start, now, front=front))
        self._warn_affinity()
        self.wake()

    def open(self, runner: SweepRunner) -> None:
        """Make the sweep known to placement (its concurrency, the devices a trial asks for)."""
        self.placement.open_sweep(
            runner.sweep_id,
            concurrency=runner.spec.matrix.concurrency,
            gpus=trial_gpus(runner.spec),
        )

    def dequeue(self, trial_id: str) -> bool:
        """Take a trial out of the queue if it was never sent; True if it was there."""
        return self.placement.dequeue(trial_id)

    def cancel(self, trial_id: str) -> None:
        """Cancel a trial on its executor (or once its submit returns)."""
        self.act(self.placement.cancel(trial_id))

    def ended(self, trial_id: str) -> None:
        self.placement.ended(trial_id)
        self.wake()

    def stopped(self, runner: SweepRunner) -> None:
        """The sweep stopped: its queued trials are cancelled, nothing more is placed."""
        self.act(self.placement.close_sweep(runner.sweep_id))

    def forget_sweep(self, sweep_id: str, trial_ids: Iterable[str] = ()) -> None:
        self.placement.forget_sweep(sweep_id, trial_ids)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def queued(self) -> int:
        return self.placement.queued()

    def inflight(self, sweep_id: str) -> set[str]:
        return self.placement.inflight(sweep_id)

    # ---- the loop ----

    def attach(self, tg: TaskGroup | None) -> None:
        """The task group background work runs in (None: the daemon is stopping)."""
        self._tg = tg

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self.act(self.placement.place(self.clock.monotonic()))
            for sweep_id, note in self.capacity.check(self.clock.monotonic()):
                runner = self.runners.get(sweep_id)
                if runner is not None:
                    self.spawn(runner.put, note)

    def act(self, actions: list[Action]) -> None:
        """Carry out placement's actions, each in the background."""
        for action in actions:
            runner = self.runners.get(action.sweep_id) if action.sweep_id else None
            if isinstance(action, CancelOn):
                self._send_cancel(action.executor, action.trial_id, runner)
                continue
            if runner is None:
                continue  # its sweep finished: nothing is left to tell
            if isinstance(action, Send):
                self.spawn(self._send, runner, action)
            elif isinstance(action, CancelUnsent):
                item = Observe(TrialCancelled(trial_id=action.trial_id, reason=action.reason))
                self.spawn(runner.put, item)
            elif isinstance(action, Fail):
                item = Observe(TrialFailed(trial_id=action.trial_id, reason=action.reason))
                self.spawn(runner.put, item)
            elif isinstance(action, Lost):
                self.spawn(self._lost, runner, action)
            elif isinstance(action, Dispatched | Poll):  # pragma: no cover - handled by callers
                raise AssertionError(f"{action!r} is carried out by its caller")

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        if self._tg is None:
            return  # the daemon is stopping; the next start sees the log
        self._tg.start_soon(fn, *args)

    async def _lost(self, runner: SweepRunner, action: Lost) -> None:
        log.warning(
            "trial lost", sweep_id=runner.sweep_id, trial_id=action.trial_id, reason=action.reason
        )
        await runner.put(Note(TRIAL_LOST, {"trial_id": action.trial_id, "reason": action.reason}))
        await runner.put(Observe(TrialFailed(trial_id=action.trial_id, reason=action.reason)))

    def _warn_affinity(self) -> None:
        for start in self.placement.affinity_unknown:
            log.warning(
                "the executor of a resumed trial's parent is unknown or no longer configured; "
                "the trial may start without its checkpoint",
                trial_id=start.trial_id,
                parent=start.parent,
            )
        self.placement.affinity_unknown.clear()

    async def _send(self, runner: SweepRunner, action: Send) -> None:
        trial_id, name = action.start.trial_id, action.executor
        placement = self.placement
        try:
            submission = self._submission(runner, action.start)
        except Exception as exc:  # any error building it fails this trial, never the daemon
            log.error("bad submission", trial_id=trial_id, error=str(exc))
            self.act(
                placement.send_refused(trial_id, f"cannot build the trial's submission: {exc}")
            )
            self.wake()
            return
        # Write-ahead: once the submit may arrive, the log says where, so a daemon
        # restarted after a crash here waits for that executor instead of
        # sending the trial elsewhere too.
        intent = Note(TRIAL_SENDING, {"trial_id": trial_id, "executor": name})
        if not await runner.log_first(intent):
            return  # the trial or its sweep ended meanwhile: nothing to send
        try:
            status = await self.backends[name].submit(submission)
        except ExecutorBusy:
            # No free slot there: not a failure. It waits at the head of the queue.
            self.act(placement.send_busy(trial_id, self.clock.monotonic()))
            self.wake()
            return
        except ExecutorUnavailable as exc:
            log.warning(
                "dispatch failed; will retry",
                trial_id=trial_id,
                executor=name,
                maybe_sent=exc.maybe_sent,
                error=str(exc),
            )
            now = self.clock.monotonic()
            self.act(
                placement.send_failed(trial_id, now, maybe_sent=exc.maybe_sent, error=str(exc))
            )
            self.wake()
            return
        except ExecutorRejected as exc:
            self.act(placement.send_refused(trial_id, str(exc)))
            self.wake()
            return
        result = observation_from_status(status, runner.spec.matrix.metric.name)
        followups: list[Action] = []
        for done in placement.sent(trial_id, self.clock.monotonic(), finished=result is not None):
            if not isinstance(done, Dispatched):
                followups.append(done)
                continue
            if self.on_dispatched is not None:
                self.on_dispatched(done.latency)
            await runner.put(Note(TRIAL_DISPATCHED, {"trial_id": trial_id, "executor": name}))
            if result is not None:  # it had already finished there (a resend after a restart)
                await runner.put(result)
            else:
                await runner.put(Note(TRIAL_RUNNING, {"trial_id": trial_id, "executor": name}))
        self.act(followups)

    def _send_cancel(self, name: str, trial_id: str, runner: SweepRunner | None) -> None:
        """Cancel a trial on an executor in the background; its status goes to ``runner``."""
        backend = self.backends.get(name)
        if backend is None:
            return
        limiter = self._cancel_limiters.get(name)
        if limiter is None:
            limiter = self._cancel_limiters[name] = anyio.CapacityLimiter(CANCELS_PER_EXECUTOR)

        async def cancel() -> None:
            async with limiter:
                try:
                    status = await backend.cancel(trial_id)
                except ExecutorError as exc:
                    # The reconciler's polling finds the trial's end (or declares it lost).
                    log.warning("cancel failed", trial_id=trial_id, executor=name, error=str(exc))
                    self.placement.lost_cancelled(trial_id, name, ok=False)
                    return
            self.placement.lost_cancelled(trial_id, name, ok=True)
            self.wake()  # a trial held back while its old copy was cancelled may go now
            if status is not None and runner is not None:
                await self._on_status(runner, status)

        self.spawn(cancel)
