"""The daemon: the composition root, and one root task group holding the runners,
the dispatcher and the reconciler.

``Daemon`` builds the parts and hands each only what it needs (see the package
docstring, ``hbd/daemon/__init__.py``); the API sees ``submit``, ``cancel``,
``on_update`` and read-only views (``pool``, ``runners``, ``dispatcher.queued``).
``Daemon.run`` resumes every unfinished sweep from the log, then serves
submissions until it is cancelled. Cancelling it (SIGTERM) leaves trials
running on their executors; the next start adopts them (see reconciler.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from hbd.core.codec import SUBMITTED, Record, observation_record
from hbd.core.errors import SpecError
from hbd.core.events import Begin, Decision, StartTrial, StopRequested, TrialInterrupted
from hbd.core.limits import DEFAULT_SPEC_LIMITS, SpecLimits
from hbd.core.retention import Keep
from hbd.core.spec import SweepSpec, load_spec, parse_spec, spec_warnings
from hbd.core.sweep import FIRST_FAILURES_STOP, SweepMachine
from hbd.core.trialcommand import trial_command
from hbd.daemon.backend import ExecutorBackend
from hbd.daemon.bus import EventBus
from hbd.daemon.capacity import CapacityWatch
from hbd.daemon.clock import Clock, RealClock
from hbd.daemon.dispatcher import Dispatcher, trial_resources
from hbd.daemon.lifecycle import decision_records
from hbd.daemon.metricsync import MetricsSync
from hbd.daemon.placement import LOST_AFTER, ExecutorSlots, Placement
from hbd.daemon.reconciler import Reconciler
from hbd.daemon.retention import Retention
from hbd.daemon.runner import (
    REPLAY_TYPES,
    Observe,
    SweepRunner,
    observation_from_status,
    replay,
)
from hbd.errors import (
    HbdError,
    NotFound,
    NotReady,
    StoreError,
)
from hbd.protocol import (
    ResourceValue,
    TrialStatus,
    TrialSubmission,
    TrialUpdate,
)
from hbd.store.log import Store, StoredEvent

log = structlog.get_logger(__name__)

# A sweep id becomes part of every trial id, which executors use as a
# directory name: keep it short and in the protocol's alphabet.
SWEEP_ID_BYTES = 5
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


# While the event log cannot be written, a write is tried this often, so that
# the daemon notices (and /healthz says) it has healed without waiting for a
# sweep to need a write; the runners retry on their own backoff meanwhile.
STORE_PROBE_INTERVAL = 2.0
# How often the WAL is checkpointed by hand (SQLite also does so itself every
# 1000 pages): the result tells whether checkpoints make progress.
CHECKPOINT_INTERVAL = 60.0
# WAL frames a checkpoint could not copy back that are worth a warning: SQLite's
# own autocheckpoint threshold. More means a reader holds an old snapshot (an
# open sqlite3 shell, a backup) and the WAL grows until it lets go.
WAL_STUCK_FRAMES = 1000


def _canonical(spec_json: Any) -> Any:
    try:
        return parse_spec(spec_json).to_json()
    except SpecError:
        return spec_json


def new_sweep_id() -> str:
    return "sw" + secrets.token_hex(SWEEP_ID_BYTES)


def _start(
    spec: SweepSpec, sweep_id: str, seed: int, first_failures_stop: int
) -> tuple[SweepMachine, list[Decision], list[Record]]:
    """A new sweep's machine, its first decisions and their log records (pure, CPU-bound)."""
    machine = SweepMachine.for_spec(
        spec, sweep_id=sweep_id, seed=seed, first_failures_stop=first_failures_stop
    )
    decisions = machine.handle(Begin())
    return machine, decisions, decision_records(decisions, set())


class SweepChanged(HbdError):
    """A submission reused a sweep id with a different spec (HTTP 409); nothing was stored."""


@dataclass(frozen=True, slots=True)
class ExecutorView:
    """One executor, read-only, for the API and ``/metrics``: its backend and its slots."""

    name: str
    client: ExecutorBackend
    _slots: ExecutorSlots

    @property
    def healthy(self) -> bool:
        return self._slots.healthy

    @property
    def slots(self) -> int:
        return self._slots.slots

    @property
    def free(self) -> int:
        return self._slots.free

    @property
    def used(self) -> int:
        return len(self._slots.running)

    @property
    def gpus(self) -> int:
        return self._slots.gpus

    @property
    def free_gpus(self) -> int:
        return self._slots.free_gpus


class PoolView:
    """The configured executors as the API may see them (nothing here changes placement)."""

    def __init__(self, placement: Placement, backends: Mapping[str, ExecutorBackend]) -> None:
        self._placement = placement
        self._backends = backends

    @property
    def executors(self) -> dict[str, ExecutorView]:
        return {
            name: ExecutorView(name, backend, self._placement.executors[name])
            for name, backend in self._backends.items()
        }


class Daemon:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        callback_url: str | None = None,
        lost_after: float = LOST_AFTER,
        first_failures_stop: int = FIRST_FAILURES_STOP,
        spec_limits: SpecLimits = DEFAULT_SPEC_LIMITS,
        checkpoints: str | None = None,
        checkpoints_keep: Keep = "all",
    ) -> None:
        self.store = store
        # Where checkpoints live (None: each executor's own directory) and which
        # are kept (hbd.core.retention); settings ``checkpoints``, ``checkpoints_keep``
        # (whose default, "resumable", `hbd serve` passes; built bare: keep all).
        self.checkpoints = checkpoints
        self.checkpoints_keep: Keep = checkpoints_keep
        self.first_failures_stop = first_failures_stop  # recorded in each sweep.submitted
        self.spec_limits = spec_limits
        self._spec_workers = anyio.CapacityLimiter(SPEC_WORKERS)
        self.clock = clock or RealClock()
        self.runners: dict[str, SweepRunner] = {}
        # Composition: placement owns every in-flight trial's state; the shells
        # around it get the capabilities they need, never the daemon.
        self.placement = Placement(
            lost_after=lost_after, shared_checkpoints=checkpoints is not None
        )
        self.backends: dict[str, ExecutorBackend] = {}
        self.pool = PoolView(self.placement, self.backends)
        self.metricsync = MetricsSync(self.executor_running)
        self.dispatcher = Dispatcher(
            self.placement,
            self.backends,
            self.runners,
            self.clock,
            submission=self.submission,
            on_status=self.on_status,
            capacity=CapacityWatch(self.placement),
        )
        self.reconciler = Reconciler(
            self.placement,
            self.dispatcher,
            self.backends,
            self.clock,
            store,
            self,
            on_status=self.on_status,
            metricsync=self.metricsync,
            running=lambda: self.running,
        )
        self.bus = EventBus()
        # Deletes checkpoints nothing can resume from any more, in its own task.
        self.retention = Retention(
            store,
            self.backends,
            self.clock,
            checkpoints=checkpoints,
            keep=checkpoints_keep,
            executor_of=self.placement.executor_of,
            published=self.bus.publish,
        )
        self.callback_url = callback_url
        self._tg: TaskGroup | None = None
        self._ready = False  # sweeps resumed and not shutting down: submissions are taken
        self._interrupted = False  # see interrupt(): results from executors are no longer taken
        self._stopped = anyio.Event()  # run() has left its task group
        self._submit_lock = anyio.Lock()  # check-and-append of a sweep id is atomic
        self.broken_sweeps: list[str] = []  # unfinished sweeps whose log cannot be resumed
        self.broken_reasons: dict[str, str] = {}  # why, by sweep id (hbd status shows it)

    # ---- lifecycle ----

    def add_executor(self, name: str, backend: ExecutorBackend) -> None:
        """Run trials on ``backend`` too (built by ``backend_for``), known as ``name``."""
        self.backends[name] = backend
        self.placement.add_executor(name)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.dispatcher.attach(tg)
                await self.probe_store()  # a read-only log shows in /healthz from the start
                tg.start_soon(self._watch_store)
                await self.reconciler.check_health()
                tg.start_soon(self.dispatcher.run)
                await self.reconciler.resume_all()
                tg.start_soon(self.reconciler.run)
                if self.retention.enabled:
                    # What the last run left undeleted (a failure, a stop mid-pass).
                    for sweep in await self.store.list_sweeps():
                        self.retention.due(sweep.id)
                    tg.start_soon(self.retention.run)
                self._ready = True
                task_status.started()
        finally:
            self._ready = False
            self._tg = None
            self.dispatcher.attach(None)
            self._stopped.set()
            self.bus.close()  # event streams end now, so the HTTP server can stop without waiting
            with anyio.CancelScope(shield=True):
                for backend in self.backends.values():
                    await backend.aclose()

    async def probe_store(self) -> None:
        """Try a write that changes nothing; log the failure, or the recovery."""
        health = self.store.write_health
        was_ok = health.ok
        try:
            await self.store.probe_write()
        except StoreError as exc:  # a read too fails while no connection can be opened
            if was_ok:
                log.error("cannot write the event log; retrying", error=str(exc))
            return
        if not was_ok:
            log.info("the event log can be written again", failures=health.failures_total)

    async def _watch_store(self) -> None:
        clock = self.clock
        next_checkpoint = clock.monotonic() + CHECKPOINT_INTERVAL
        while True:
            await clock.sleep(STORE_PROBE_INTERVAL)
            if not self.store.write_health.ok:
                await self.probe_store()
            if clock.monotonic() >= next_checkpoint:
                next_checkpoint = clock.monotonic() + CHECKPOINT_INTERVAL
                await self.checkpoint_wal()

    async def checkpoint_wal(self) -> None:
        """A passive checkpoint; logs a WAL that cannot be copied back into the database."""
        try:
            busy, frames, done = await self.store.checkpoint()
        except StoreError as exc:
            log.warning("WAL checkpoint failed", error=str(exc))
            return
        if frames - done >= WAL_STUCK_FRAMES:
            log.warning(
                "the WAL cannot be checkpointed; it grows until the reader holding it lets go",
                wal_frames=frames,
                checkpointed=done,
                busy=bool(busy),
                hint="an open sqlite3 shell or a backup reading the database",
            )

    async def interrupt(self, reason: str) -> dict[str, list[str]]:
        """Stop as an interrupted ``hbd run`` does; returns {sweep id: trials interrupted}.

        The trials are about to be stopped under their sweeps (the embedded
        agent stops them when the command exits): that is not their failure.
        So, in this order: take no more results (from now on a failure is the
        kill's doing), stop the runners, dispatcher and reconciler, then write
        ``trial.interrupted`` for every open trial of every unfinished sweep,
        from the log (what the runners committed is all there is). On the next
        start those trials run again as the same trials, and the sweep ends as
        an uninterrupted one would.
        """
        self._interrupted = True
        self._ready = False
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._stopped.wait()
        interrupted: dict[str, list[str]] = {}
        for sweep_id in await self.store.unfinished_sweep_ids():
            if sweep_id in self.broken_sweeps:
                continue
            machine = replay(sweep_id, await self.store.sweep_events(sweep_id, types=REPLAY_TYPES))
            records = []
            for trial_id in machine.running_trial_ids():
                observation = TrialInterrupted(trial_id=trial_id, reason=reason)
                machine.handle(observation)
                records.append(observation_record(observation))
            if records:
                self.published(await self.store.append(sweep_id, records, at=self.clock.wall()))
                interrupted[sweep_id] = machine.running_trial_ids()
                log.info("trials interrupted", sweep_id=sweep_id, trials=len(records))
        return interrupted

    @property
    def running(self) -> bool:
        """Whether the root task group is up (background work can be started)."""
        return self._tg is not None

    @property
    def tg(self) -> TaskGroup:
        if self._tg is None:
            raise RuntimeError("the daemon is not running")
        return self._tg

    def new_runner(self, spec: SweepSpec, machine: SweepMachine) -> SweepRunner:
        return SweepRunner(self, spec, machine)

    def start_runner(self, runner: SweepRunner) -> None:
        self.runners[runner.sweep_id] = runner
        self.dispatcher.open(runner)

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
        sweep_id, created, _ = await self.submit_spec(text, sweep_id=sweep_id)
        return sweep_id, created

    async def submit_spec(
        self, text: str, *, sweep_id: str | None = None
    ) -> tuple[str, bool, list[str]]:
        """``submit``, also returning the spec's warnings (logged once, for a new sweep)."""
        # Off the event loop: a spec at the limits takes a while to parse.
        spec = await anyio.to_thread.run_sync(
            partial(load_spec, text, limits=self.spec_limits), limiter=self._spec_workers
        )
        warnings = spec_warnings(spec)
        sweep_id, created = await self._submit(spec, text, sweep_id)
        if created:
            for line in warnings:
                log.warning("spec warning", sweep_id=sweep_id, warning=line)
        return sweep_id, created, warnings

    async def _submit(self, spec: SweepSpec, text: str, sweep_id: str | None) -> tuple[str, bool]:
        async with self._submit_lock:
            if not self._ready:
                raise NotReady("the daemon is starting or shutting down; try again shortly")
            if sweep_id is not None:
                existing = await self.store.get_sweep(sweep_id)
                if existing is not None:
                    # Compared as parsed now: a log written by an older hbd may
                    # spell the same spec differently.
                    if _canonical(existing.spec_json) == spec.to_json():
                        return sweep_id, False
                    raise SweepChanged(
                        f"sweep {sweep_id} exists with a different spec; use a new id"
                    )
            sweep_id = sweep_id or new_sweep_id()
            seed = spec.matrix.seed if spec.matrix.seed is not None else secrets.randbelow(2**31)
            # Planning the first rungs (up to max_trial_runs trials) takes seconds
            # at the limit: in a worker thread too, so /healthz keeps answering.
            machine, decisions, started = await anyio.to_thread.run_sync(
                partial(_start, spec, sweep_id, seed, self.first_failures_stop),
                limiter=self._spec_workers,
            )
            submitted = {
                "name": spec.name or "",
                "spec": text,
                "spec_json": spec.to_json(),
                "seed": seed,
                # what replay needs to rebuild the same machine (SweepMachine.for_submitted)
                "first_failures_stop": self.first_failures_stop,
                "search": machine.search.to_json(),
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
        runner = self.new_runner(spec, machine)
        self.start_runner(runner)
        for i, decision in enumerate(decisions, 1):
            await runner.act(decision)
            if i % ACTS_PER_CHECKPOINT == 0:
                await anyio.lowlevel.checkpoint()  # a large first rung must not hold the loop
        return sweep_id, True

    async def unfinished_with_spec(self, text: str) -> str | None:
        """The latest unfinished sweep running here with ``text``'s spec, to resume; else None.

        ``hbd run FILE`` run again after an interruption continues that sweep
        instead of starting a different one. Raises SpecError for a bad spec.
        """
        wanted = load_spec(text).to_json()
        found = [
            s
            for s in await self.store.list_sweeps()
            if not s.finished and s.id in self.runners and s.spec_json == wanted
        ]
        return max(found, key=lambda s: (s.created_at or 0.0, s.id)).id if found else None

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

    def submission(self, runner: SweepRunner, start: StartTrial) -> TrialSubmission:
        """The trial run as an executor receives it, every daemon-side template rendered."""
        spec: SweepSpec = runner.spec
        matrix, container = spec.matrix, spec.component.container
        command = trial_command(
            spec,
            start.config,
            start.resource,
            trial_id=start.trial_id,
            bracket=start.bracket,
            rung=start.rung,
        )
        return TrialSubmission(
            id=start.trial_id,
            sweep_id=runner.sweep_id,
            command=command.argv,
            params=command.params,
            env=command.env,
            resource=ResourceValue(name=matrix.resource.name, value=start.resource),
            metric=matrix.metric.name,
            resume_from=start.resume_from,
            callback_url=self.callback_url,
            run=runner.machine.trials[start.trial_id].runs,
            timeout_seconds=spec.timeout_seconds,
            working_dir=container.working_dir,
            resources=trial_resources(spec),
            checkpoint_store=self.checkpoints,
        )

    # ---- what runners ask of the daemon (runner.SweepHost) ----

    def place(self, runner: SweepRunner, start: StartTrial) -> None:
        self.dispatcher.enqueue(runner, start)

    def unplace(self, runner: SweepRunner, trial_id: str) -> bool:
        if self.dispatcher.dequeue(trial_id):
            return True
        self.dispatcher.cancel(trial_id)
        return False

    def trial_ended(self, trial_id: str) -> None:
        """A trial's terminal event is committed: free its slot, forget what was kept for it."""
        self.dispatcher.ended(trial_id)
        self.metricsync.forget(trial_id)

    def sweep_stopped(self, runner: SweepRunner) -> None:
        self.dispatcher.stopped(runner)

    def sweep_finished(self, runner: SweepRunner) -> None:
        self.dispatcher.forget_sweep(runner.sweep_id, runner.machine.trials)

    async def on_update(self, update: TrialUpdate) -> bool:
        """A callback from an executor; False if no running sweep wants it."""
        runner = self.runners.get(update.sweep_id)
        if self._interrupted or runner is None or update.trial_id not in runner.machine.trials:
            return False
        self.placement.heard(update.trial_id, self.clock.monotonic())
        if update.kind == "metrics":
            # A batch of lines; a gap before it (a dropped callback, a restart) is fetched.
            lines = update.metrics_lines()
            await self.metricsync.deliver(
                runner, update.trial_id, lines, upto=update.seq, run=update.run
            )
        elif update.status is not None:
            await self.on_status(runner, update.status, seq=update.seq)
        return True

    async def on_status(self, runner: SweepRunner, status: TrialStatus, *, seq: int = 0) -> None:
        if self._interrupted:
            return  # the trial is being stopped under its sweep: see interrupt()
        trial = runner.machine.trials.get(status.id)
        # An ended trial's lines are not wanted (a poll in flight crossed its terminal
        # commit): fetching them again would count verdict holds from zero. Its late
        # result still goes on, for the machine to refuse and the log to say so.
        if trial is not None and not trial.state.ended:
            # Metrics lines the executor has and the log lacks come first, so they
            # are logged before the verdict (the log drops lines of ended trials).
            upto = max(seq, status.metrics_seq)
            missing = await self.metricsync.deliver(
                runner, status.id, [], upto=upto, run=status.run
            )
            if missing and status.finished and self.metricsync.hold_verdict(status.id, missing):
                # No later status of a finished trial comes by itself: the reconciler
                # polls the still in-flight trial, and that status fetches the lines again.
                return
        result = observation_from_status(status, runner.spec.matrix.metric.name)
        if result is not None:
            await runner.put(result)

    def executor_running(self, trial_id: str) -> ExecutorBackend | None:
        """The backend of the configured executor the trial was sent to, if any."""
        name = self.placement.executor_of(trial_id)
        return self.backends.get(name) if name else None

    # ---- events ----

    def published(self, events: Iterable[StoredEvent]) -> None:
        events = list(events)
        self.bus.publish(events)
        self.retention.on_events(events)
