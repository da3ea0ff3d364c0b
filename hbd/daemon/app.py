"""The daemon: one root task group holding the runners, the dispatcher and the reconciler.

``Daemon.run`` resumes every unfinished sweep from the log, then serves
submissions until it is cancelled. Cancelling it (SIGTERM) leaves trials
running on their executors; the next start adopts them (see reconciler.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from hbd.core.codec import SUBMITTED, Record, observation_record
from hbd.core.events import Begin, Decision, StopRequested
from hbd.core.limits import DEFAULT_SPEC_LIMITS, SpecLimits
from hbd.core.spec import SweepSpec, load_spec
from hbd.core.sweep import SweepMachine
from hbd.daemon.bus import EventBus
from hbd.daemon.clock import Clock, RealClock
from hbd.daemon.dispatcher import Dispatcher
from hbd.daemon.executors import Executor, ExecutorClient, ExecutorPool
from hbd.daemon.lifecycle import decision_records
from hbd.daemon.reconciler import LOST_AFTER, Reconciler
from hbd.daemon.runner import Note, Observe, SweepRunner, finite_metrics, observation_from_status
from hbd.errors import ExecutorError, HbdError, NotFound, NotReady
from hbd.protocol import ResourceValue, TrialStatus, TrialSubmission, TrialUpdate
from hbd.store.log import Store, StoredEvent

log = structlog.get_logger(__name__)

# A sweep id becomes part of every trial id, which executors use as a
# directory name: keep it short and in the protocol's alphabet.
SWEEP_ID_BYTES = 5
# Cancel requests in flight per executor. Below the client's connection pool
# (executors.POOL_LIMITS: 4), so stopping a large sweep never takes every
# connection from submits, polls and health checks.
CANCELS_PER_EXECUTOR = 2
# How long a cancel of an unfinished sweep waits for its runner to appear (a
# submit between its commit and its runner's start) before writing the stop
# into the log for the next start to act on.
RUNNER_WAIT = 5.0
# Specs parsed (and sweeps planned) at once, each in a worker thread: parsing
# is bounded (hbd.core.limits) but pure Python, so hostile submits in parallel
# queue here instead of taking every worker thread and the GIL from the API.
SPEC_WORKERS = 2
# Queueing a large first rung yields to other tasks this often (an enqueue is
# microseconds; 1,000 keep each slice of the event loop in the milliseconds).
ACTS_PER_CHECKPOINT = 1_000


def new_sweep_id() -> str:
    return "sw" + secrets.token_hex(SWEEP_ID_BYTES)


def _start(
    spec: SweepSpec, sweep_id: str, seed: int
) -> tuple[SweepMachine, list[Decision], list[Record]]:
    """A new sweep's machine, its first decisions and their log records (pure, CPU-bound)."""
    machine = SweepMachine.for_spec(spec, sweep_id=sweep_id, seed=seed)
    decisions = machine.handle(Begin())
    return machine, decisions, decision_records(decisions, set())


class SweepChanged(HbdError):
    """A submission reused a sweep id with a different spec (HTTP 409); nothing was stored."""


class Daemon:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        callback_url: str | None = None,
        lost_after: float = LOST_AFTER,
        spec_limits: SpecLimits = DEFAULT_SPEC_LIMITS,
    ) -> None:
        self.store = store
        self.spec_limits = spec_limits
        self._spec_workers = anyio.CapacityLimiter(SPEC_WORKERS)
        self.clock = clock or RealClock()
        self.pool = ExecutorPool(self.clock)
        self.dispatcher = Dispatcher(self)
        self.reconciler = Reconciler(self, lost_after=lost_after)
        self.bus = EventBus()
        self.runners: dict[str, SweepRunner] = {}
        self.callback_url = callback_url
        self._tg: TaskGroup | None = None
        self._ready = False  # sweeps resumed and not shutting down: submissions are taken
        self._last_heard: dict[str, float] = {}
        self._submit_lock = anyio.Lock()  # check-and-append of a sweep id is atomic
        self._cancel_limiters: dict[str, anyio.CapacityLimiter] = {}
        self.broken_sweeps: list[str] = []  # unfinished sweeps whose log cannot be resumed

    # ---- lifecycle ----

    def add_executor(self, name: str, client: ExecutorClient) -> Executor:
        executor = Executor(name=name, client=client)
        self.pool.add(executor)
        return executor

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self.reconciler.check_health()
                tg.start_soon(self.dispatcher.run, tg)
                await self.reconciler.resume_all()
                tg.start_soon(self.reconciler.run)
                self._ready = True
                task_status.started()
        finally:
            self._ready = False
            self._tg = None
            self.bus.close()  # event streams end now, so the HTTP server can stop without waiting
            with anyio.CancelScope(shield=True):
                await self.pool.aclose()

    @property
    def running(self) -> bool:
        """Whether the root task group is up (background work can be started)."""
        return self._tg is not None

    @property
    def tg(self) -> TaskGroup:
        if self._tg is None:
            raise RuntimeError("the daemon is not running")
        return self._tg

    def start_runner(self, runner: SweepRunner) -> None:
        self.runners[runner.sweep_id] = runner

        async def run() -> None:
            try:
                await runner.run()
            finally:
                self.runners.pop(runner.sweep_id, None)

        self.tg.start_soon(run)

    # ---- sweeps ----

    async def submit(self, text: str, *, sweep_id: str | None = None) -> tuple[str, bool]:
        """Store a new sweep and start it; returns (id, created).

        Raises SpecError for a bad spec, SweepChanged when ``sweep_id`` exists
        with another spec, and NotReady while the daemon starts or stops; in
        each case nothing is stored.
        """
        # Off the event loop: a spec at the limits takes a while to parse.
        spec = await anyio.to_thread.run_sync(
            partial(load_spec, text, limits=self.spec_limits), limiter=self._spec_workers
        )
        async with self._submit_lock:
            if not self._ready:
                raise NotReady("the daemon is starting or shutting down; try again shortly")
            if sweep_id is not None:
                existing = await self.store.get_sweep(sweep_id)
                if existing is not None:
                    if existing.spec_json == spec.to_json():
                        return sweep_id, False
                    raise SweepChanged(
                        f"sweep {sweep_id} exists with a different spec; use a new id"
                    )
            sweep_id = sweep_id or new_sweep_id()
            seed = spec.matrix.seed if spec.matrix.seed is not None else secrets.randbelow(2**31)
            # Planning the first rungs (up to max_trial_runs trials) takes seconds
            # at the limit: in a worker thread too, so /healthz keeps answering.
            machine, decisions, started = await anyio.to_thread.run_sync(
                partial(_start, spec, sweep_id, seed), limiter=self._spec_workers
            )
            submitted = {
                "name": spec.name or "",
                "spec": text,
                "spec_json": spec.to_json(),
                "seed": seed,
            }
            records = [(SUBMITTED, submitted), *started]
            committed = await self.store.append(sweep_id, records, at=self.clock.wall())
        self.published(committed)
        log.info("sweep submitted", sweep_id=sweep_id, seed=seed, trials=len(decisions))
        if self._tg is None:
            # The daemon stopped while the sweep was being stored: it is in the
            # log, and the next start resumes it.
            log.warning("daemon stopping; the sweep starts at the next start", sweep_id=sweep_id)
            return sweep_id, True
        runner = SweepRunner(self, spec, machine)
        self.start_runner(runner)
        for i, decision in enumerate(decisions, 1):
            await runner.act(decision)
            if i % ACTS_PER_CHECKPOINT == 0:
                await anyio.lowlevel.checkpoint()  # a large first rung must not hold the loop
        return sweep_id, True

    async def cancel(self, sweep_id: str, reason: str = "cancelled by user") -> bool:
        """Ask a sweep to stop; False if it had already finished."""
        runner = self.runners.get(sweep_id)
        waited = 0.0
        while runner is None:
            sweep = await self.store.get_sweep(sweep_id)
            if sweep is None:
                raise NotFound(f"no sweep {sweep_id}")
            if sweep.finished:
                return False
            if waited >= RUNNER_WAIT or sweep_id in self.broken_sweeps:
                # No runner (a sweep that cannot be resumed, or the daemon is not
                # running): the stop goes into the log, for the next start.
                record = observation_record(StopRequested(reason=reason))
                self.published(await self.store.append(sweep_id, [record], at=self.clock.wall()))
                log.warning("stop of a sweep with no runner written to the log", sweep_id=sweep_id)
                return True
            await self.clock.sleep(0.05)
            waited += 0.05
            runner = self.runners.get(sweep_id)
        await runner.put(Observe(StopRequested(reason=reason)))
        return True

    # ---- executors ----

    def submission(self, runner: SweepRunner, start: Any) -> TrialSubmission:
        spec: SweepSpec = runner.spec
        matrix, component = spec.matrix, spec.component
        params: dict[str, Any] = {i.name: i.value for i in component.inputs if i.has_default}
        params.update(start.config)
        params[matrix.resource.name] = start.resource
        return TrialSubmission(
            id=start.trial_id,
            sweep_id=runner.sweep_id,
            command=[*component.container.command, *component.container.args],
            params=params,
            resource=ResourceValue(name=matrix.resource.name, value=start.resource),
            metric=matrix.metric.name,
            resume_from=start.resume_from,
            callback_url=self.callback_url,
        )

    def heard_from(self, trial_id: str) -> None:
        self._last_heard[trial_id] = self.clock.monotonic()

    def last_heard(self, trial_id: str) -> float:
        return self._last_heard.get(trial_id, 0.0)

    def trial_finished(self, trial_id: str) -> None:
        """A trial's terminal event is committed: free its slot, forget what was kept for it."""
        self.dispatcher.trial_ended(trial_id)
        self._last_heard.pop(trial_id, None)
        self.reconciler.forget(trial_id)

    async def on_update(self, update: TrialUpdate) -> bool:
        """A callback from an executor; False if no running sweep wants it."""
        runner = self.runners.get(update.sweep_id)
        if runner is None or update.trial_id not in runner.machine.trials:
            return False
        self.heard_from(update.trial_id)
        if update.kind == "metrics":
            payload = {
                "trial_id": update.trial_id,
                "metrics": finite_metrics(update.metrics),
                "seq": update.seq,
            }
            await runner.put(Note("trial.metrics", payload))
        elif update.status is not None:
            await self.on_status(runner, update.status)
        return True

    async def on_status(self, runner: SweepRunner, status: TrialStatus) -> None:
        result = observation_from_status(status, runner.spec.matrix.metric.name)
        if result is not None:
            await runner.put(result)

    def cancel_on_executor(self, runner: SweepRunner, trial_id: str) -> None:
        if self.dispatcher.sending(trial_id):
            self.dispatcher.cancel_after_send(trial_id)  # sent once its POST returns
            return
        name = self.dispatcher.executor_of(trial_id)
        executor = self.pool.executors.get(name) if name else None
        if executor is None:
            return
        self.send_cancel(executor, trial_id, runner)

    def send_cancel(self, executor: Executor, trial_id: str, runner: SweepRunner | None) -> None:
        """Cancel a trial on an executor in the background; its status goes to ``runner``."""
        limiter = self._cancel_limiters.get(executor.name)
        if limiter is None:
            limiter = self._cancel_limiters[executor.name] = anyio.CapacityLimiter(
                CANCELS_PER_EXECUTOR
            )

        async def cancel() -> None:
            async with limiter:
                try:
                    status = await executor.client.cancel(trial_id)
                except ExecutorError as exc:
                    # The reconciler's polling finds the trial's end (or declares it lost).
                    log.warning(
                        "cancel failed", trial_id=trial_id, executor=executor.name, error=str(exc)
                    )
                    return
            if status is not None and runner is not None:
                await self.on_status(runner, status)

        self.tg.start_soon(cancel)

    # ---- events ----

    def published(self, events: Iterable[StoredEvent]) -> None:
        self.bus.publish(events)
