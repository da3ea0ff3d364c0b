"""The executor agent: runs trials as local processes, idempotent by trial id.

Theory of operation. The agent never runs a trial itself: for each trial it
starts a small supervisor process (``hbd.executor.supervisor``, in a session
of its own) that owns the trial's process tree, caps its logs, enforces its
timeout and writes how it ended to disk. So nothing depends on the agent
being alive when a trial ends; a restarted agent rebuilds every trial from
``<workdir>/state/<id>/`` (see ``results.py``):

- ``result.json`` present: finished, served as recorded;
- the supervisor's lock is held: a supervisor runs the trial; adopt it;
- the lock is free and ``exit.json`` present: the trial ended while no agent
  watched; its recorded exit status decides, exactly as if the agent had
  stayed up;
- the lock is free, ``started`` present, no ``exit.json``: the supervisor
  itself was killed; the trial is failed (it is never run twice);
- the lock is free, no ``started``: the agent died before the trial could
  start; it is started now (once).

``Agent`` holds the trials and owns every background task (one watcher per
running trial, one callback sender per trial with a callback URL, the
retention sweep) inside the task group of :meth:`Agent.run`. Start it with
``await tg.start(agent.run)``; cancelling that task group either leaves the
supervisors running for the next agent (``keep_trials_on_exit``) or asks
each to stop its trial and records them as failed. Finished trials are
forgotten, in memory and on disk, once the daemon has their result and the
retention period has passed (or beyond a count cap). The HTTP face is in
``hbd.api.agent_routes``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus

from hbd import checkpoints
from hbd import gpus as gpu_devices
from hbd.executor import metricsfeed, process, results
from hbd.executor import supervisor as sup
from hbd.executor.callbacks import CallbackChannel
from hbd.executor.metrics import DEFAULT_MAX_METRICS_FILE_BYTES, MetricsTail
from hbd.executor.process import (
    SupervisorHandle,
)
from hbd.executor.trialenv import trial_argv, trial_env
from hbd.executor.trialfiles import read_tail_async
from hbd.protocol import (
    AgentTrialState,
    Health,
    MetricsPage,
    TrialStatus,
    TrialSubmission,
    TrialUpdate,
)
from hbd.version import __version__

log = structlog.get_logger(__name__)

# SIGTERM -> SIGKILL on cancel and timeout: time for a trial to write a
# checkpoint and exit (Kubernetes' terminationGracePeriodSeconds default is
# 30 s; trials here are single processes on one host).
CANCEL_GRACE_SECONDS = 10.0
# How long POST /cancel waits for the trial to be gone before answering with
# its current (still running) status; the kill proceeds in the supervisor.
CANCEL_WAIT_SECONDS = CANCEL_GRACE_SECONDS + 2.0
# Metrics file poll interval: a trial's progress reaches the daemon within
# this. Its end is seen at once (the supervisor's exit wakes the watch).
METRICS_POLL_INTERVAL = 0.1
# Stderr kept in a failed trial's status: enough for a traceback, small enough
# to travel in every poll.
STDERR_TAIL_BYTES = 4096
# stdout.log / stderr.log each keep at most this (head and tail): a trial
# printing in a loop must not fill the disk. 64 MiB holds any sane log.
DEFAULT_LOG_CAP_BYTES = 64 * 1024 * 1024
# Smallest cap accepted: room for a head, the "omitted" marker and a tail.
MIN_LOG_CAP_BYTES = 4096
# Finished trials are kept this long after the daemon has their result, so
# that a late re-submission of the same id is answered, not run again.
DEFAULT_RETAIN_SECONDS = 7 * 24 * 3600.0
# At most this many finished trials are kept (about 9 KB of memory each);
# beyond it the oldest are forgotten first, taken ones before untaken ones.
DEFAULT_RETAIN_TRIALS = 10_000
# How often expired trials are looked for.
RETENTION_SWEEP_INTERVAL = 60.0
# After asking a supervisor to stop (shutdown, executor error), how long to
# wait for its record before giving up on it.
STOP_WAIT_SECONDS = CANCEL_GRACE_SECONDS + 5.0

CANCEL_REASON = results.CANCEL_REASON
# A trial an agent of an older hbd (before supervisors) was running when it was
# replaced: nothing recorded its outcome, so it is stopped and failed.
RESTART_REASON = "executor restarted while the trial ran"
SUPERVISOR_LOST_REASON = "the trial's supervisor died; its outcome is unknown"
SHUTDOWN_REASON = "executor shut down while the trial ran"
RECOVERY_FAILED_REASON = "executor could not recover the trial at restart"
# Prefix of the reason a trial run that succeeded is failed with when its
# checkpoint could not be stored (a child could not resume from it).
UPLOAD_FAILED_REASON = "checkpoint upload failed"
# Checkpoint stores kept open (one per sweep's store, normally one or two):
# a bound on what distinct submissions can make the agent hold.
MAX_OPEN_STORES = 64
NO_GPU_AT_RESTART_REASON = (
    "executor restarted before the trial started and has no free GPU for it now"
)

# The GPU devices a trial holds, in its state directory (a JSON list of ids):
# written before its supervisor starts, so that an agent restarted while it
# runs knows which devices are taken.
GPUS_FILE = "gpus.json"

# Test hook for the crash tests (tests/executor/test_crash_windows.py): with
# HBD_TEST_AGENT_CRASH_AT=<point> in the environment the agent SIGKILLs itself
# at that point of starting a trial: ``before-supervisor`` (submission written,
# nothing started) or ``after-supervisor`` (supervisor started, nothing else
# recorded). Read once at import. Never set it in production.
CRASH_AT_ENV = "HBD_TEST_AGENT_CRASH_AT"
_crash_at = os.environ.get(CRASH_AT_ENV) or None


def _crash_point(name: str) -> None:
    if _crash_at == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    """The agent's operator knobs (``ExecutorSettings``)."""

    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    retain_seconds: float = DEFAULT_RETAIN_SECONDS
    retain_trials: int = DEFAULT_RETAIN_TRIALS
    # Bytes of one checkpoint uploaded or downloaded (hbd.checkpoints).
    checkpoint_copy_bytes: int = checkpoints.DEFAULT_MAX_CHECKPOINT_COPY_BYTES

    def __post_init__(self) -> None:
        if self.log_cap_bytes < MIN_LOG_CAP_BYTES:
            raise ValueError(f"log_cap_bytes must be at least {MIN_LOG_CAP_BYTES}")
        if self.retain_seconds < 0 or self.retain_trials < 0:
            raise ValueError("retention must not be negative")
        if self.checkpoint_copy_bytes < 0:
            raise ValueError("checkpoint_copy_bytes must not be negative")


class AgentError(Exception):
    """Base of the agent's refusals (each maps to one HTTP status)."""


class TrialConflict(AgentError):
    """The trial id is known with a different submission (409)."""


class NoFreeSlot(AgentError):
    """Every slot is busy, or not enough GPUs are free; nothing was started (429)."""


class TrialRunning(AgentError):
    """The trial (or one resuming from it) still runs: its checkpoint is in use (409)."""


class AgentNotRunning(AgentError):
    """``Agent.run`` is not active, so no trial can be started (503)."""


class StartFailed(AgentError):
    """The trial could not be recorded or its supervisor not started; nothing runs (503)."""


class InvalidSubmission(AgentError):
    """The rendered command or environment cannot be passed to a process (422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(eq=False)
class _Trial:
    submission: TrialSubmission
    status: TrialStatus
    done: anyio.Event = field(default_factory=anyio.Event)
    handle: SupervisorHandle | None = None
    channel: CallbackChannel | None = None
    seq: int = 0  # metric lines seen so far
    tail: MetricsTail | None = None  # its metrics file, once read
    cancel_requested: bool = False
    taken: bool = False  # the daemon has the finished status
    taken_on_disk: bool = False
    # Failed while its supervisor had not exited (it outlived the stop wait): the
    # slot stays taken, and the id is not started again, until it has.
    lingering: bool = False
    gpus: tuple[str, ...] = ()  # devices it holds while it runs (or lingers)

    @classmethod
    def running(cls, sub: TrialSubmission, started_at: float) -> _Trial:
        """A trial of ``sub`` whose run is under way (or about to be)."""
        status = TrialStatus(
            id=sub.id, sweep_id=sub.sweep_id, run=sub.run, state="running", started_at=started_at
        )
        return cls(submission=sub, status=status)


# Where results are pushed is routing, not part of what the trial is: a daemon
# restarted on another port re-sends its trials with a new callback URL, and
# that must still be the same trial (200), not a conflict (409).
_ROUTING_FIELDS = {"callback_url"}


def _same_payload(a: TrialSubmission, b: TrialSubmission) -> bool:
    return a.model_dump(mode="json", exclude=_ROUTING_FIELDS) == b.model_dump(
        mode="json", exclude=_ROUTING_FIELDS
    )


def _check_no_nul(argv: list[str], env: dict[str, str]) -> None:
    """A NUL byte cannot cross execve: refuse it before anything is written."""
    for i, part in enumerate(argv):
        if "\0" in part:
            raise InvalidSubmission("command", f"argument {i} contains a NUL byte once rendered")
    for name, value in env.items():
        if "\0" in name or "\0" in value or "=" in name:
            raise InvalidSubmission("env", f"environment variable {name!r} is not valid")


def _check_state_size(field: str, what: str, data: bytes) -> None:
    """Refuse what could not be read back from the state directory (supervisor, restart)."""
    if len(data) > sup.MAX_STATE_FILE_BYTES:
        raise InvalidSubmission(
            field,
            f"the {what} would take {len(data)} bytes on disk, over the limit of "
            f"{sup.MAX_STATE_FILE_BYTES} bytes (MAX_STATE_FILE_BYTES)",
        )


class Agent:
    """Runs submitted trials on this host, at most ``slots`` at a time."""

    def __init__(
        self,
        workdir: Path,
        slots: int,
        token: str | None = None,
        callback_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        trial_cwd: Path | None = None,
        keep_trials_on_exit: bool = False,
        limits: AgentLimits | None = None,
        max_metrics_file_bytes: int = DEFAULT_MAX_METRICS_FILE_BYTES,
        gpus: Sequence[str] = (),
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        # The GPU devices trials get (hbd.gpus); () on a host without.
        self.gpus = tuple(gpus)
        # Devices recorded by trials being recovered, held until each is rebuilt:
        # a trial started afresh at recovery must not take one an adopted trial holds.
        self._reserved_gpus: dict[str, tuple[str, ...]] = {}
        self._stores: dict[str | None, checkpoints.CheckpointStore] = {}
        self.workdir = Path(workdir).resolve()
        # Trials run where the agent was started (as a container runs in its image's
        # workdir), so a spec's relative `python3 train.py` finds its script; the
        # trial's own directory is in HBD_TRIAL_DIR.
        self.trial_cwd = (trial_cwd or Path.cwd()).resolve()
        # A service restarted by systemd (an upgrade, a crash) should not kill hours
        # of training: its trials go on and the next agent on this workdir adopts
        # them. One-shot use (hbd run, tests) stops them.
        self.keep_trials_on_exit = keep_trials_on_exit
        self.max_metrics_file_bytes = max_metrics_file_bytes
        self._tail_lock = anyio.Lock()  # one lazy read of a finished trial's metrics at a time
        self.slots = slots
        self.token = token
        self.callback_token = callback_token
        self.limits = limits or AgentLimits()
        self._transport = transport
        self._trials: dict[str, _Trial] = {}
        self._submit_lock = anyio.Lock()  # check-then-start of a submission is atomic
        self._tg: TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load trials from disk, serve until cancelled, then stop every trial (or leave them running)."""
        if self._tg is not None:
            raise RuntimeError("agent is already running")
        await anyio.to_thread.run_sync(results.make_private_dir, self.workdir)
        # The client outlives the task group: callback senders stop first.
        async with (
            httpx.AsyncClient(transport=self._transport) as client,
            anyio.create_task_group() as tg,
        ):
            self._client, self._tg = client, tg
            try:
                legacy = dict(await anyio.to_thread.run_sync(results.import_legacy, self.workdir))
                stored_trials = await anyio.to_thread.run_sync(results.load_trials, self.workdir)
                for stored in stored_trials:
                    if stored.result is None:
                        recorded = await anyio.to_thread.run_sync(
                            _read_gpus, self.workdir, stored.submission.id
                        )
                        self._reserved_gpus[stored.submission.id] = recorded
                for stored in stored_trials:
                    await self._recover_one(stored, legacy)
                    self._reserved_gpus.pop(stored.submission.id, None)
                self._reserved_gpus.clear()
                await self.expire()
                tg.start_soon(self._retention_loop)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None  # refuse new trials; watchers clean up themselves

    def _require_tg(self) -> TaskGroup:
        if self._tg is None:
            raise AgentNotRunning("executor agent is not running")
        return self._tg

    # -- queries -------------------------------------------------------------

    def running_ids(self) -> list[str]:
        return [t.submission.id for t in self._trials.values() if t.status.state == "running"]

    def _supervisor_lingers(self, trial: _Trial) -> bool:
        if not trial.lingering:
            return False
        try:
            gone = trial.handle is None or trial.handle.finished()
        except OSError:
            gone = False  # its lock cannot be read: not proven gone
        trial.lingering = not gone
        return trial.lingering

    def _slots_taken(self) -> int:
        """Running trials and failed ones whose supervisor has not exited yet."""
        return sum(
            1
            for t in self._trials.values()
            if t.status.state == "running" or self._supervisor_lingers(t)
        )

    def _held_gpus(self) -> set[str]:
        """Devices of running trials, of lingering ones, and of trials being recovered."""
        held = {g for gpus in self._reserved_gpus.values() for g in gpus}
        for t in self._trials.values():
            if t.gpus and (t.status.state == "running" or self._supervisor_lingers(t)):
                held.update(t.gpus)
        return held

    def health(self) -> Health:
        running = self.running_ids()
        return Health(
            version=__version__,
            slots=self.slots,
            free_slots=max(0, self.slots - self._slots_taken()),
            running=running,
            gpus=list(self.gpus),
            free_gpus=gpu_devices.free(self.gpus, self._held_gpus()),
        )

    def get(self, trial_id: str) -> TrialStatus | None:
        trial = self._trials.get(trial_id)
        return None if trial is None else trial.status

    def list_trials(self, sweep_id: str | None = None) -> list[TrialStatus]:
        statuses = [
            t.status
            for t in self._trials.values()
            if sweep_id is None or t.submission.sweep_id == sweep_id
        ]
        return sorted(statuses, key=lambda s: (s.started_at, s.id))

    def served(self, statuses: list[TrialStatus]) -> None:
        """These statuses were answered to a client: finished ones are taken."""
        for status in statuses:
            trial = self._trials.get(status.id)
            if trial is not None and status.finished and trial.status.finished:
                trial.taken = True

    # -- commands ------------------------------------------------------------

    async def submit(self, submission: TrialSubmission) -> tuple[TrialStatus, bool]:
        """Start ``submission``; returns (status, newly started).

        A repeat of a known id with the same payload returns its status (even
        when finished: a trial never runs twice). Raises TrialConflict,
        TemplateError (unknown placeholder), InvalidSubmission, NoFreeSlot,
        StartFailed or AgentNotRunning. Whatever fails, no slot stays taken
        without a supervisor.
        """
        await self._prefetch(submission)
        async with self._submit_lock:
            known = self._trials.get(submission.id)
            if known is not None and submission.run > known.submission.run:
                # hbd was interrupted under the earlier run: start this one afresh,
                # unless the earlier one still runs (then it is this run).
                if not known.status.finished:
                    return known.status, False
                # Failed, but its supervisor may still run (it outlived the stop
                # wait): removing its state would free its lock for a second one.
                state = results.state_dir(self.workdir, submission.id)
                if self._supervisor_lingers(known) or await anyio.to_thread.run_sync(
                    _supervisor_alive, state
                ):
                    return known.status, False
                # Forgotten on disk first (result, metrics and logs of the earlier
                # run): a crash midway leaves nothing, and the daemon sends it again.
                await anyio.to_thread.run_sync(results.remove_trial, self.workdir, submission.id)
                del self._trials[submission.id]
                if known.channel is not None:
                    known.channel.close()
                known = None
            if known is not None:
                if _same_payload(known.submission, submission):
                    if known.channel is not None and submission.callback_url is not None:
                        known.channel.url = submission.callback_url  # the sender's current address
                    return known.status, False
                raise TrialConflict(
                    f"trial {submission.id!r} was already submitted with a different payload"
                )
            argv = trial_argv(self.workdir, submission)
            _check_no_nul(argv, dict(submission.env))
            try:
                self._store(submission)  # an fsspec URL this host cannot open: refused now
            except checkpoints.CheckpointError as exc:
                raise InvalidSubmission("checkpoint_store", str(exc)) from None
            need = _gpus_asked(submission)
            if need > len(self.gpus):
                # Never placeable here: a client error, not a wait.
                raise InvalidSubmission(
                    "resources",
                    f"the trial asks for {need} GPU(s) and this executor has {len(self.gpus)}",
                )
            tg = self._require_tg()
            if self._slots_taken() >= self.slots:
                raise NoFreeSlot("no free slot")
            devices = gpu_devices.pick(self.gpus, self._held_gpus(), need)
            if devices is None:
                free = len(gpu_devices.free(self.gpus, self._held_gpus()))
                raise NoFreeSlot(f"no free GPU: the trial asks for {need}, {free} free")
            trial = _Trial.running(submission, time.time())
            trial.gpus = devices
            self._trials[submission.id] = trial  # the slot (and its devices) taken from here on
            await self._start(tg, trial, argv)
            return trial.status, True

    async def cancel(self, trial_id: str) -> TrialStatus | None:
        """Ask the trial's supervisor to stop it; None if the id is unknown."""
        trial = self._trials.get(trial_id)
        if trial is None:
            return None
        if trial.status.finished:
            return trial.status
        if not trial.cancel_requested:
            trial.cancel_requested = True
            if trial.handle is not None:  # else _start asks once the supervisor exists
                log.info("cancelling trial", trial_id=trial_id)
                await self._request_stop(trial, sup.STOP_CANCEL)
        with anyio.move_on_after(CANCEL_WAIT_SECONDS):
            await trial.done.wait()
        return trial.status

    async def delete_checkpoint(self, trial_id: str) -> int:
        """Remove the trial's checkpoint directory here; the bytes freed (0: none was left).

        Idempotent, and also for a trial this agent forgot. Raises TrialRunning
        while the trial, or a trial resuming from it, runs; UnsafeCheckpointPath
        if the checkpoints directory is a link. Links inside are removed, never
        followed.
        """
        async with self._submit_lock:  # no trial starts (or resumes from it) meanwhile
            for t in list(self._trials.values()):
                live = t.status.state == "running" or self._supervisor_lingers(t)
                if live and trial_id in (t.submission.id, t.submission.resume_from):
                    raise TrialRunning(
                        f"trial {t.submission.id!r} is running: the checkpoint of "
                        f"{trial_id!r} is in use"
                    )
            freed = await anyio.to_thread.run_sync(checkpoints.remove_local, self.workdir, trial_id)
        log.info("checkpoint deleted", trial_id=trial_id, freed_bytes=freed)
        return freed

    async def expire(self, now: float | None = None) -> list[str]:
        """Forget finished trials past retention (memory and disk); returns their ids."""
        now = time.time() if now is None else now
        # A snapshot: each disk write below yields to the event loop, where a
        # submission may add a trial (iterating the live dict would then raise
        # and stop the whole agent).
        for trial in list(self._trials.values()):
            if trial.channel is not None and trial.channel.status_delivered:
                trial.taken = True
            if trial.taken and not trial.taken_on_disk and trial.status.finished:
                trial.taken_on_disk = True
                try:
                    await anyio.to_thread.run_sync(
                        results.mark_taken, self.workdir, trial.submission.id
                    )
                except OSError as exc:
                    log.warning(
                        "cannot record a taken result", trial_id=trial.submission.id, error=str(exc)
                    )
        # Not one whose supervisor still runs: removing its state frees its lock.
        candidates = [t for t in self._trials.values() if not self._supervisor_lingers(t)]
        doomed = _expired(candidates, now, self.limits)
        for trial in doomed:
            trial_id = trial.submission.id
            # Disk first: while it is still known it is answered from memory,
            # and once unknown nothing of it remains to be found.
            try:
                await anyio.to_thread.run_sync(results.remove_trial, self.workdir, trial_id)
            except OSError as exc:
                log.warning("cannot remove an expired trial", trial_id=trial_id, error=str(exc))
            self._trials.pop(trial_id, None)
            if trial.channel is not None:
                trial.channel.close()
        if doomed:
            log.info("expired finished trials forgotten", count=len(doomed))
        return [t.submission.id for t in doomed]

    # -- internals -----------------------------------------------------------

    async def _retention_loop(self) -> None:
        while True:
            await anyio.sleep(RETENTION_SWEEP_INTERVAL)
            try:
                await self.expire()
            except Exception:
                # Housekeeping: a bug here must not stop the trials (it once
                # did); the next sweep tries again, and the log says why.
                log.exception("retention sweep failed; trials go on")

    async def _start(self, tg: TaskGroup, trial: _Trial, argv: list[str]) -> None:
        """Record the trial and start its supervisor; undo everything if that fails.

        The supervisor is started inside the worker thread and stored on the
        trial there, so a cancellation of this task can never lose a
        supervisor that did start: then the trial is watched; else it is
        forgotten (memory and disk) and the slot is free.
        """
        sub = trial.submission
        try:
            await anyio.to_thread.run_sync(self._prepare_and_launch, trial, argv, None)
        except BaseException as exc:
            if trial.handle is None:
                self._trials.pop(sub.id, None)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._forget_on_disk, sub.id)
                if isinstance(exc, OSError):
                    log.warning("trial could not start", trial_id=sub.id, error=str(exc))
                    raise StartFailed(f"cannot start trial {sub.id!r}: {exc}") from exc
                raise
            self._watch_soon(tg, trial)
            raise
        self._watch_soon(tg, trial)
        log.info("trial started", trial_id=sub.id, sweep_id=sub.sweep_id)

    def _watch_soon(self, tg: TaskGroup, trial: _Trial) -> None:
        self._open_channel(tg, trial)
        tg.start_soon(self._watch, trial)

    def _forget_on_disk(self, trial_id: str) -> None:
        try:
            results.remove_trial(self.workdir, trial_id)
        except OSError as exc:
            log.error("cannot remove an unstarted trial's files", trial_id=trial_id, error=str(exc))

    def _prepare_and_launch(self, trial: _Trial, argv: list[str], lock_fd: int | None) -> None:
        """(worker thread) Write submission and launch files, then start the supervisor.

        ``lock_fd``: the trial's lock, already taken (recovery); it is closed
        here whatever happens (the supervisor keeps its own copy).
        """
        try:
            self._launch_locked(trial, argv, lock_fd)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    def _launch_locked(self, trial: _Trial, argv: list[str], lock_fd: int | None) -> None:
        sub = trial.submission
        _check_state_size("body", "submission", results.submission_bytes(sub))
        directory = results.write_submission(self.workdir, sub)
        self._fetch_parent_checkpoint(sub)
        if self.gpus or trial.gpus:
            results.write_state_file(
                self.workdir, sub.id, GPUS_FILE, json.dumps(list(trial.gpus)).encode()
            )
        env = self._trial_env(sub, directory, trial.gpus)
        _check_no_nul(argv, env)
        launch = {
            "argv": argv,
            "env": env,
            "cwd": sub.working_dir or str(self.trial_cwd),
            "trial_dir": str(directory),
            "log_cap_bytes": self.limits.log_cap_bytes,
            "grace_seconds": CANCEL_GRACE_SECONDS,
            "timeout_seconds": sub.timeout_seconds,
        }
        # UTF-8 as it is: escaped, CJK text would take twice the room, emoji three times.
        data = json.dumps(launch, ensure_ascii=False).encode()
        _check_state_size("command", "rendered command and environment", data)
        results.write_state_file(self.workdir, sub.id, sup.LAUNCH_FILE, data)
        state = results.state_dir(self.workdir, sub.id)
        fd = lock_fd if lock_fd is not None else process.try_lock(state)
        if fd is None:
            raise OSError(f"a supervisor already holds {state / sup.LOCK_FILE}")
        try:
            _crash_point("before-supervisor")
            popen = process.start_supervisor(state, fd)
            trial.handle = SupervisorHandle(state, popen)
            _crash_point("after-supervisor")
        finally:
            if lock_fd is None:
                os.close(fd)
        if trial.cancel_requested:  # cancelled while it was being started
            results.write_stop(self.workdir, sub.id, sup.STOP_CANCEL)

    def _store(self, sub: TrialSubmission) -> checkpoints.CheckpointStore:
        """The checkpoint store the submission names, opened once."""
        store = self._stores.get(sub.checkpoint_store)
        if store is None:
            if len(self._stores) >= MAX_OPEN_STORES:
                self._stores.clear()
            store = checkpoints.open_store(sub.checkpoint_store, self.workdir)
            self._stores[sub.checkpoint_store] = store
        return store

    async def _prefetch(self, sub: TrialSubmission) -> None:
        """Download a parent's checkpoint before taking the submit lock.

        A download of gigabytes must not hold up every other submission; once
        here, the start under the lock finds it in place (a complete copy is
        never downloaded twice). Skipped when the trial is known or no slot is
        free (it would be answered 409/200/429 anyway).
        """
        if sub.resume_from is None or sub.resume_dir is not None or sub.id in self._trials:
            return
        if self._slots_taken() >= self.slots:
            return
        try:
            self._store(sub)
        except checkpoints.CheckpointError:
            return  # refused with its reason under the lock
        try:
            await anyio.to_thread.run_sync(self._fetch_parent_checkpoint, sub)
        except OSError as exc:
            raise StartFailed(str(exc)) from exc

    def _fetch_parent_checkpoint(self, sub: TrialSubmission) -> None:
        """(worker thread) Bring the parent's checkpoint here before a resuming trial starts."""
        if sub.resume_from is None or sub.resume_dir is not None:
            return
        try:
            copied = self._store(sub).fetch(sub.resume_from, self.limits.checkpoint_copy_bytes)
        except checkpoints.CheckpointTooLarge as exc:
            raise InvalidSubmission("resume_from", str(exc)) from None
        except Exception as exc:  # the store's own errors (network, credentials): retry later
            raise OSError(f"cannot fetch the checkpoint of {sub.resume_from}: {exc}") from exc
        if copied:
            log.info(
                "parent checkpoint fetched", trial_id=sub.id, parent=sub.resume_from, bytes=copied
            )

    async def _publish_checkpoint(self, trial: _Trial) -> str | None:
        """Store a succeeded run's checkpoint; the reason it failed, if it did."""
        sub = trial.submission
        if sub.checkpoint_dir is not None:
            return None  # the submission chose the directory: nothing to copy
        try:
            store = self._store(sub)
            copied = await anyio.to_thread.run_sync(
                store.publish, sub.id, self.limits.checkpoint_copy_bytes
            )
        except Exception as exc:
            log.warning("checkpoint upload failed", trial_id=sub.id, error=str(exc))
            return f"{UPLOAD_FAILED_REASON}: {exc}"
        if copied:
            log.info("checkpoint stored", trial_id=sub.id, bytes=copied)
        return None

    def _trial_env(
        self, sub: TrialSubmission, directory: Path, gpus: tuple[str, ...] = ()
    ) -> dict[str, str]:
        checkpoint = (
            Path(sub.checkpoint_dir) if sub.checkpoint_dir else self._store(sub).trial_dir(sub.id)
        )
        results.make_private_dir(checkpoint)
        devices = {}
        if self.gpus or gpus:
            # Only its own devices; "" (none at all) for a trial that asked for
            # none, so that it cannot grab one another trial holds.
            visible = gpu_devices.visible(gpus)
            devices = {"CUDA_VISIBLE_DEVICES": visible, "HBD_GPUS": visible}
        return trial_env(
            sub, directory, checkpoint=checkpoint, resume=self._resume_dir(sub), devices=devices
        )

    def _resume_dir(self, sub: TrialSubmission) -> Path | None:
        if sub.resume_dir is not None:
            return Path(sub.resume_dir)
        if sub.resume_from is not None:
            return self._store(sub).resume_dir(sub.resume_from)
        return None

    def _open_channel(self, tg: TaskGroup, trial: _Trial) -> None:
        url = trial.submission.callback_url
        if url is not None and self._client is not None and trial.channel is None:
            trial.channel = CallbackChannel(url, self.callback_token)
            tg.start_soon(trial.channel.run, self._client)

    async def _request_stop(self, trial: _Trial, reason: str) -> None:
        try:
            await anyio.to_thread.run_sync(
                results.write_stop, self.workdir, trial.submission.id, reason
            )
        except OSError as exc:
            log.error("cannot ask the trial to stop", trial_id=trial.submission.id, error=str(exc))

    async def _drain(
        self,
        trial: _Trial,
        tail: MetricsTail,
        *,
        final: bool = False,
        notify: bool = True,
        to_end: bool = False,
    ) -> None:
        """New metrics lines, off the loop (see metricsfeed): a chunk, or all with final/to_end."""
        channel = trial.channel if notify else None
        trial.status = await metricsfeed.drain(
            tail, trial.status, channel, trial.submission, final=final, to_end=to_end
        )
        trial.seq = tail.seq

    async def metrics_after(self, trial_id: str, after: int, limit: int) -> MetricsPage | None:
        """The trial's metrics lines with seq > ``after`` (at most ``limit``); None if unknown."""
        trial = self._trials.get(trial_id)
        if trial is None:
            return None
        if trial.tail is None:
            async with self._tail_lock:  # finished before this agent started: number it once
                if trial.tail is None:
                    trial.tail = await metricsfeed.read_all(
                        results.trial_dir(self.workdir, trial_id) / results.METRICS_FILE,
                        trial.submission.metric,
                        self.max_metrics_file_bytes,
                    )
        return await metricsfeed.page(trial.tail, trial_id, after, limit, trial.submission.run)

    def _tail(self, trial: _Trial) -> MetricsTail:
        if trial.tail is None:
            sub = trial.submission
            trial.tail = MetricsTail(
                results.trial_dir(self.workdir, sub.id) / results.METRICS_FILE,
                metric=sub.metric,
                max_file_bytes=self.max_metrics_file_bytes,
            )
        return trial.tail

    async def _watch(self, trial: _Trial, tail: MetricsTail | None = None) -> None:
        """Tail metrics until the supervisor is gone, then record the outcome it wrote."""
        handle = trial.handle
        assert handle is not None
        tail = tail or self._tail(trial)
        try:
            while not await handle.finished_async():
                await self._drain(trial, tail)
                await handle.exited_within(METRICS_POLL_INTERVAL)
            await self._drain(trial, tail, final=True)
            await self._conclude(trial)
        except anyio.get_cancelled_exc_class():
            if not trial.status.finished and self.keep_trials_on_exit:
                log.info(
                    "executor stopping; trial left running for the next start to adopt",
                    trial_id=trial.submission.id,
                )
                handle.leave_running()
            elif not trial.status.finished:
                with anyio.CancelScope(shield=True):
                    log.info("stopping trial: executor shutting down", trial_id=trial.submission.id)
                    await self._stop_and_conclude(trial, tail, notify=False)
            raise
        except Exception as exc:
            # One trial's supervision failing must not take the agent down.
            log.exception("trial supervision failed", trial_id=trial.submission.id)
            if not trial.status.finished:
                reason = f"executor error: {exc!r}"
                with anyio.CancelScope(shield=True):
                    try:
                        await self._stop_and_conclude(trial, tail, notify=True, reason=reason)
                    except Exception as again:
                        log.error(
                            "trial could not be concluded",
                            trial_id=trial.submission.id,
                            error=repr(again),
                        )
                    if not trial.status.finished:  # the slot is freed once the supervisor is gone
                        trial.lingering = True
                        await self._finish(trial, "failed", reason=reason)

    async def _stop_and_conclude(
        self, trial: _Trial, tail: MetricsTail, *, notify: bool, reason: str = SHUTDOWN_REASON
    ) -> None:
        handle = trial.handle
        assert handle is not None
        await self._request_stop(trial, sup.STOP_SHUTDOWN)
        with anyio.move_on_after(STOP_WAIT_SECONDS):
            await handle.wait(METRICS_POLL_INTERVAL)
        try:
            await self._drain(trial, tail, final=True, notify=notify)
        except OSError:
            pass
        if await handle.finished_async():
            await self._conclude(trial, notify=notify)
        else:
            trial.lingering = True
            await self._finish(trial, "failed", reason=reason, notify=notify)

    async def _conclude(self, trial: _Trial, *, notify: bool = True) -> None:
        """Record the outcome the supervisor wrote (the supervisor is gone)."""
        trial_id = trial.submission.id
        record = await anyio.to_thread.run_sync(results.read_exit, self.workdir, trial_id)
        if record is None:
            await self._supervisor_lost(trial, notify=notify)
            return
        state, reason = self._outcome(trial, record)
        if state == "succeeded":
            failed = await self._publish_checkpoint(trial)
            if failed is not None:
                state, reason = "failed", failed
        tail_text = None
        if state != "succeeded":
            tail_text = await read_tail_async(_stderr_path(self.workdir, trial), STDERR_TAIL_BYTES)
        await self._finish(
            trial,
            state,
            reason=reason,
            exit_code=record.returncode,
            stderr_tail=tail_text,
            notify=notify,
            ended_at=record.ended_at,  # when it ended, whichever agent records it
        )

    async def _supervisor_lost(self, trial: _Trial, *, notify: bool) -> None:
        trial_id = trial.submission.id
        started = await anyio.to_thread.run_sync(
            results.state_file_exists, self.workdir, trial_id, sup.STARTED_FILE
        )
        status = trial.handle.exit_status if trial.handle is not None else None
        if not started:
            reason = f"the trial's supervisor exited (status {status}) before starting it; see {process.SUPERVISOR_LOG}"
        else:
            reason = SUPERVISOR_LOST_REASON
            child = await anyio.to_thread.run_sync(results.read_child, self.workdir, trial_id)
            if child is not None and process.kill_group(*child):
                log.warning(
                    "killed the trial its dead supervisor left", trial_id=trial_id, pid=child[0]
                )
        log.warning("trial supervisor lost", trial_id=trial_id, reason=reason)
        await self._finish(
            trial,
            "failed",
            reason=reason,
            stderr_tail=await read_tail_async(_stderr_path(self.workdir, trial), STDERR_TAIL_BYTES),
            notify=notify,
        )

    def _outcome(
        self, trial: _Trial, record: results.ExitRecord
    ) -> tuple[AgentTrialState, str | None]:
        """The verdict from the supervisor's record: the same whether or not the agent restarted."""
        return results.verdict(
            record,
            metric=trial.submission.metric,
            metrics=trial.status.metrics,
            stopped=("failed", SHUTDOWN_REASON),
            lost=SUPERVISOR_LOST_REASON,
        )

    async def _finish(
        self,
        trial: _Trial,
        state: AgentTrialState,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        stderr_tail: str | None = None,
        notify: bool = True,
        ended_at: float | None = None,
    ) -> None:
        update: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "exit_code": exit_code,
            "stderr_tail": stderr_tail,
            "ended_at": time.time() if ended_at is None else ended_at,
        }
        status = trial.status.model_copy(update=update)
        # Written first, served after: a client that saw the finished status
        # gets the same one from the next agent, whatever happens in between.
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(results.write_result, self.workdir, status)
        except OSError as exc:
            log.error("trial result not persisted", trial_id=status.id, error=str(exc))
        trial.status = status
        trial.done.set()
        log.info("trial finished", trial_id=status.id, state=state, reason=reason)
        if trial.channel is not None:
            if notify:
                await trial.channel.finish(
                    TrialUpdate(
                        kind="status",
                        trial_id=status.id,
                        sweep_id=status.sweep_id,
                        run=status.run,
                        seq=trial.seq,
                        metrics=status.metrics,
                        status=status,
                    )
                )
            else:
                trial.channel.close()

    async def _recover_one(
        self,
        stored: results.StoredTrial,
        legacy: dict[str, tuple[int, str | None] | None],
    ) -> None:
        """Recover one trial; one that cannot be (its state dir is hostile, the disk fails)
        is failed with the reason, never stopping the agent from starting."""
        trial_id = stored.submission.id
        try:
            if stored.result is None and trial_id in legacy:
                await self._fail_legacy(stored, legacy[trial_id])
            else:
                await self._recover(stored)
        except Exception as exc:
            log.exception("trial could not be recovered", trial_id=trial_id)
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status.finished:
                return
            if trial is None:
                sub = stored.submission
                trial = _Trial.running(sub, stored.started_at)
                self._trials[trial_id] = trial
            try:
                await self._finish(
                    trial, "failed", reason=f"{RECOVERY_FAILED_REASON}: {exc!r}", notify=False
                )
            except Exception as again:
                log.error("trial skipped at recovery", trial_id=trial_id, error=repr(again))
                if trial.channel is not None:
                    trial.channel.close()
                self._trials.pop(trial_id, None)

    async def _recover(self, stored: results.StoredTrial) -> None:
        """Rebuild one trial from disk: serve it, adopt its supervisor, conclude it or start it."""
        sub = stored.submission
        if stored.result is not None:
            trial = _Trial(
                submission=sub,
                # A result written before statuses carried their run.
                status=stored.result.model_copy(update={"run": sub.run}),
                taken=stored.taken,
                taken_on_disk=stored.taken,
            )
            trial.done.set()
            state = results.state_dir(self.workdir, sub.id)
            if await anyio.to_thread.run_sync(_lock_held, state):
                # Recorded failed while its supervisor outlived the stop wait: it
                # keeps its slot and devices until it exits, across restarts too.
                trial.handle = SupervisorHandle(state, None)
                trial.lingering = True
                trial.gpus = await anyio.to_thread.run_sync(_read_gpus, self.workdir, sub.id)
            self._trials[sub.id] = trial
            return
        trial = _Trial.running(sub, stored.started_at)
        trial.gpus = self._reserved_gpus.pop(sub.id, ())
        self._trials[sub.id] = trial
        tail = self._tail(trial)
        await self._drain(trial, tail, notify=False, to_end=True)  # reported before the restart
        tg = self._require_tg()
        self._open_channel(tg, trial)
        state = results.state_dir(self.workdir, sub.id)
        lock_fd = await anyio.to_thread.run_sync(process.try_lock, state)
        if lock_fd is None:
            log.info("adopting trial still running", trial_id=sub.id)
            trial.handle = SupervisorHandle(state, None)
            tg.start_soon(self._watch, trial, tail)
            return
        started = await anyio.to_thread.run_sync(
            results.state_file_exists, self.workdir, sub.id, sup.STARTED_FILE
        )
        ended = await anyio.to_thread.run_sync(
            results.state_file_exists, self.workdir, sub.id, sup.EXIT_FILE
        )
        if started or ended:
            os.close(lock_fd)
            log.info("trial ended while no agent watched", trial_id=sub.id)
            trial.handle = SupervisorHandle(state, None)
            await self._drain(trial, tail, final=True, notify=False)
            await self._conclude(trial)
            return
        # Accepted, but the agent died before the trial could start: start it now,
        # on the devices it was given if they are still this host's, else on free ones.
        log.info("starting a trial the previous agent never started", trial_id=sub.id)
        need = _gpus_asked(sub)
        recorded, trial.gpus = trial.gpus, ()  # not counted as held while checked
        # The record is a file (the trial's own user can write it): each device
        # once, this host's, and held by no other trial, or picked afresh.
        if (
            len(set(recorded)) == need == len(recorded)
            and set(recorded) <= set(self.gpus)
            and not set(recorded) & self._held_gpus()
        ):
            trial.gpus = recorded
        else:
            devices = gpu_devices.pick(self.gpus, self._held_gpus(), need)
            if devices is None:
                os.close(lock_fd)
                log.warning(
                    "trial could not start", trial_id=sub.id, reason=NO_GPU_AT_RESTART_REASON
                )
                await self._finish(trial, "failed", reason=NO_GPU_AT_RESTART_REASON)
                return
            trial.gpus = devices
        try:
            try:
                argv = trial_argv(self.workdir, sub)
            except BaseException:
                os.close(lock_fd)
                raise
            await anyio.to_thread.run_sync(self._prepare_and_launch, trial, argv, lock_fd)
        except Exception as exc:
            if trial.handle is None:
                log.warning("trial could not start", trial_id=sub.id, error=str(exc))
                await self._finish(trial, "failed", reason=f"could not start: {exc}")
                return
        tg.start_soon(self._watch, trial, tail)

    async def _fail_legacy(
        self, stored: results.StoredTrial, pid: tuple[int, str | None] | None
    ) -> None:
        sub = stored.submission
        trial = _Trial.running(sub, stored.started_at)
        self._trials[sub.id] = trial
        await self._drain(trial, self._tail(trial), final=True, notify=False)
        if pid is not None and process.kill_group(*pid):
            log.warning("stopped a trial an older agent started", trial_id=sub.id, pid=pid[0])
        await self._finish(trial, "failed", reason=RESTART_REASON, notify=False)


def _supervisor_alive(state: Path) -> bool:
    """Whether a supervisor holds this state directory's lock (unreadable: assumed so)."""
    if not state.is_dir():
        return False
    try:
        return process.supervisor_alive(state)
    except OSError:
        return True


def _lock_held(state: Path) -> bool:
    """Whether a supervisor provably holds this state directory's lock (unreadable: no)."""
    try:
        return state.is_dir() and process.supervisor_alive(state)
    except OSError:
        return False


def _expired(trials: list[_Trial], now: float, limits: AgentLimits) -> list[_Trial]:
    """Finished trials to forget: taken and past retention, then the oldest beyond the cap."""
    finished = [t for t in trials if t.status.finished]
    doomed = [
        t
        for t in finished
        if t.taken and now - (t.status.ended_at or t.status.started_at) > limits.retain_seconds
    ]
    over = len(finished) - len(doomed) - limits.retain_trials
    if over > 0:
        chosen = {id(t) for t in doomed}
        rest = sorted(
            (t for t in finished if id(t) not in chosen),
            key=lambda t: (not t.taken, t.status.ended_at or t.status.started_at),
        )
        doomed.extend(rest[:over])
    return doomed


def _gpus_asked(sub: TrialSubmission) -> int:
    return 0 if sub.resources is None else sub.resources.gpus


def _read_gpus(workdir: Path, trial_id: str) -> tuple[str, ...]:
    """(worker thread) The devices recorded for a trial; () if none or unreadable."""
    try:
        raw = results.read_state_file(workdir, trial_id, GPUS_FILE)
        value = json.loads(raw) if raw is not None else []
    except (OSError, ValueError) as exc:
        log.warning("cannot read a trial's GPU devices", trial_id=trial_id, error=str(exc))
        return ()
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        log.warning("a trial's GPU record is not a list of ids; ignored", trial_id=trial_id)
        return ()
    return tuple(value[: gpu_devices.MAX_HOST_GPUS])


def _stderr_path(workdir: Path, trial: _Trial) -> Path:
    return results.trial_dir(workdir, trial.submission.id) / results.STDERR_FILE


__all__ = [
    "CANCEL_GRACE_SECONDS",
    "GPUS_FILE",
    "Agent",
    "AgentError",
    "AgentLimits",
    "AgentNotRunning",
    "InvalidSubmission",
    "NoFreeSlot",
    "StartFailed",
    "TrialConflict",
    "TrialRunning",
]
