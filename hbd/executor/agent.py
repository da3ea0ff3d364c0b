"""The executor agent: runs trials as local processes, idempotent by trial id.

``Agent`` holds the trials and owns every background task (one supervisor per
running trial, one callback sender per trial with a callback URL) inside the
task group of :meth:`Agent.run`. Start it with ``await tg.start(agent.run)``;
cancelling that task group terminates running trials (SIGTERM, grace, SIGKILL),
records them as failed and returns. The HTTP face is in ``server.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus

import hbd
from hbd.executor import metricsfeed, results
from hbd.executor.callbacks import CallbackChannel
from hbd.executor.metrics import DEFAULT_MAX_METRICS_FILE_BYTES, MetricsTail
from hbd.executor.process import (
    AdoptedProcess,
    TrialProcess,
    build_env,
    describe_exit,
    find_by_env,
    format_value,
    pid_alive,
    process_start_time,
    render_argv,
    spawn,
    terminate_group,
)
from hbd.executor.trialfiles import read_tail_async
from hbd.protocol import (
    Health,
    MetricsPage,
    TrialState,
    TrialStatus,
    TrialSubmission,
    TrialUpdate,
)

log = structlog.get_logger(__name__)

# SIGTERM -> SIGKILL on cancel: time for a trial to write a checkpoint and
# exit (Kubernetes' terminationGracePeriodSeconds default is 30 s; trials here
# are single processes on one host).
CANCEL_GRACE_SECONDS = 10.0
# How long POST /cancel waits for the trial to be gone before answering with
# its current (still running) status; the kill proceeds in the background.
CANCEL_WAIT_SECONDS = CANCEL_GRACE_SECONDS + 2.0
# Metrics file poll interval: a trial's progress reaches the daemon within this.
METRICS_POLL_INTERVAL = 0.1
# Stderr kept in a failed trial's status: enough for a traceback, small enough
# to travel in every poll.
STDERR_TAIL_BYTES = 4096

CANCEL_REASON = "cancelled by request"
RESTART_REASON = "executor restarted while the trial ran"
LOST_STATUS_REASON = "exit status lost across executor restart"
SHUTDOWN_REASON = "executor shut down while the trial ran"


class AgentError(Exception):
    """Base of the agent's refusals (each maps to one HTTP status)."""


class TrialConflict(AgentError):
    """The trial id is known with a different submission (409)."""


class NoFreeSlot(AgentError):
    """Every slot is busy; nothing was started (429)."""


class AgentNotRunning(AgentError):
    """``Agent.run`` is not active, so no trial can be started (503)."""


@dataclass(eq=False)
class _Trial:
    submission: TrialSubmission
    status: TrialStatus
    done: anyio.Event = field(default_factory=anyio.Event)
    process: TrialProcess | None = None
    channel: CallbackChannel | None = None
    seq: int = 0  # metric lines seen so far
    tail: MetricsTail | None = None  # its metrics file, once read
    cancel_requested: bool = False


# Where results are pushed is routing, not part of what the trial is: a daemon
# restarted on another port re-sends its trials with a new callback URL, and
# that must still be the same trial (200), not a conflict (409).
_ROUTING_FIELDS = {"callback_url"}


def _same_payload(a: TrialSubmission, b: TrialSubmission) -> bool:
    return a.model_dump(mode="json", exclude=_ROUTING_FIELDS) == b.model_dump(
        mode="json", exclude=_ROUTING_FIELDS
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
        max_metrics_file_bytes: int = DEFAULT_MAX_METRICS_FILE_BYTES,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
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
        await anyio.to_thread.run_sync(lambda: self.workdir.mkdir(parents=True, exist_ok=True))
        # The client outlives the task group: callback senders stop first.
        async with (
            httpx.AsyncClient(transport=self._transport) as client,
            anyio.create_task_group() as tg,
        ):
            self._client, self._tg = client, tg
            try:
                for stored in await anyio.to_thread.run_sync(results.load_trials, self.workdir):
                    await self._recover(stored)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None  # refuse new trials; supervisors clean up themselves

    def _require_tg(self) -> TaskGroup:
        if self._tg is None:
            raise AgentNotRunning("executor agent is not running")
        return self._tg

    # -- queries -------------------------------------------------------------

    def running_ids(self) -> list[str]:
        return [t.submission.id for t in self._trials.values() if t.status.state == "running"]

    def health(self) -> Health:
        running = self.running_ids()
        return Health(
            version=hbd.__version__,
            slots=self.slots,
            free_slots=max(0, self.slots - len(running)),
            running=running,
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

    # -- commands ------------------------------------------------------------

    async def submit(self, submission: TrialSubmission) -> tuple[TrialStatus, bool]:
        """Start ``submission``; returns (status, newly started).

        A repeat of a known id with the same payload returns its status (even
        when finished: a trial never runs twice). Raises TrialConflict,
        TemplateError (unknown placeholder), NoFreeSlot or AgentNotRunning.
        """
        async with self._submit_lock:
            known = self._trials.get(submission.id)
            if known is not None:
                if _same_payload(known.submission, submission):
                    if known.channel is not None and submission.callback_url is not None:
                        known.channel.url = submission.callback_url  # the sender's current address
                    return known.status, False
                raise TrialConflict(
                    f"trial {submission.id!r} was already submitted with a different payload"
                )
            argv = render_argv(submission.command, _template_values(submission))
            tg = self._require_tg()
            if len(self.running_ids()) >= self.slots:
                raise NoFreeSlot("no free slot")
            trial = await self._start(tg, submission, argv)
            return trial.status, True

    async def cancel(self, trial_id: str) -> TrialStatus | None:
        """Stop a running trial's process group; None if the id is unknown."""
        trial = self._trials.get(trial_id)
        if trial is None:
            return None
        if trial.status.finished:
            return trial.status
        if not trial.cancel_requested:
            trial.cancel_requested = True
            if trial.process is not None:  # else _start kills it once spawned
                log.info("cancelling trial", trial_id=trial_id, pid=trial.process.pid)
                self._require_tg().start_soon(terminate_group, trial.process, CANCEL_GRACE_SECONDS)
        with anyio.move_on_after(CANCEL_WAIT_SECONDS):
            await trial.done.wait()
        return trial.status

    # -- internals -----------------------------------------------------------

    async def _start(self, tg: TaskGroup, sub: TrialSubmission, argv: list[str]) -> _Trial:
        directory = await anyio.to_thread.run_sync(results.write_submission, self.workdir, sub)
        trial = _Trial(
            submission=sub,
            status=TrialStatus(
                id=sub.id, sweep_id=sub.sweep_id, state="running", started_at=time.time()
            ),
        )
        self._trials[sub.id] = trial
        self._open_channel(tg, trial)
        try:
            env = await anyio.to_thread.run_sync(self._trial_env, sub, directory)
            process = await spawn(
                argv,
                cwd=self.trial_cwd,
                env=env,
                stdout=directory / results.STDOUT_FILE,
                stderr=directory / results.STDERR_FILE,
            )
        except OSError as exc:
            log.warning("trial could not start", trial_id=sub.id, argv=argv, error=str(exc))
            await self._finish(trial, "failed", reason=f"could not start {argv[0]!r}: {exc}")
            return trial
        trial.process = process
        # Supervised first: if the pid file cannot be written the trial still ends
        # (and frees its slot); a restarted agent finds it by HBD_TRIAL_DIR.
        tg.start_soon(self._supervise, trial, self._tail(trial))
        record = results.PidRecord(pid=process.pid, start_time=process_start_time(process.pid))
        try:
            await anyio.to_thread.run_sync(results.write_pid, self.workdir, sub.id, record)
        except OSError as exc:
            log.warning("cannot record the trial's pid", trial_id=sub.id, error=str(exc))
        log.info("trial started", trial_id=sub.id, sweep_id=sub.sweep_id, pid=process.pid)
        if trial.cancel_requested:  # cancelled while it was being spawned
            tg.start_soon(terminate_group, process, CANCEL_GRACE_SECONDS)
        return trial

    def _trial_env(self, sub: TrialSubmission, directory: Path) -> dict[str, str]:
        checkpoint = (
            Path(sub.checkpoint_dir)
            if sub.checkpoint_dir
            else results.default_checkpoint_dir(self.workdir, sub.id)
        )
        checkpoint.mkdir(parents=True, exist_ok=True)
        resource = format_value(sub.resource.value)
        hbd_vars = {
            sub.resource.name: resource,
            sub.resource.name.upper(): resource,
            "HBD_TRIAL_ID": sub.id,
            "HBD_SWEEP_ID": sub.sweep_id,
            "HBD_TRIAL_DIR": str(directory),
            "HBD_RESOURCE": resource,
            "HBD_METRICS_FILE": str(directory / results.METRICS_FILE),
            "HBD_CHECKPOINT_DIR": str(checkpoint),
        }
        resume = self._resume_dir(sub)
        if resume is not None and resume.is_dir():
            hbd_vars["HBD_RESUME_FROM"] = str(resume)
        # The agent's own HBD_* settings (tokens, a stale HBD_RESUME_FROM) are
        # not the trial's business.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
        return build_env(inherited, sub.env, hbd_vars)

    def _resume_dir(self, sub: TrialSubmission) -> Path | None:
        if sub.resume_dir is not None:
            return Path(sub.resume_dir)
        if sub.resume_from is not None:
            return results.default_checkpoint_dir(self.workdir, sub.resume_from)
        return None

    def _open_channel(self, tg: TaskGroup, trial: _Trial) -> None:
        url = trial.submission.callback_url
        if url is not None and self._client is not None:
            trial.channel = CallbackChannel(url, self.callback_token)
            tg.start_soon(trial.channel.run, self._client)

    def _tail(self, trial: _Trial) -> MetricsTail:
        if trial.tail is None:
            sub = trial.submission
            trial.tail = MetricsTail(
                results.trial_dir(self.workdir, sub.id) / results.METRICS_FILE,
                metric=sub.metric,
                max_file_bytes=self.max_metrics_file_bytes,
            )
        return trial.tail

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
        return await metricsfeed.page(trial.tail, trial_id, after, limit)

    async def _supervise(self, trial: _Trial, tail: MetricsTail) -> None:
        """Tail metrics until the leader exits, then record the outcome."""
        process = trial.process
        assert process is not None
        try:
            while not process.exited:
                await self._drain(trial, tail)
                with anyio.move_on_after(METRICS_POLL_INTERVAL):
                    await process.wait()
            await self._drain(trial, tail, final=True)
            process.signal_group(signal.SIGKILL)  # children it left behind
            state, reason = self._outcome(trial, process.returncode)
            tail_text = None
            if state != "succeeded":
                tail_text = await read_tail_async(
                    _stderr_path(self.workdir, trial), STDERR_TAIL_BYTES
                )
            await self._finish(
                trial, state, reason=reason, exit_code=process.returncode, stderr_tail=tail_text
            )
        except anyio.get_cancelled_exc_class():
            if not trial.status.finished and self.keep_trials_on_exit:
                log.info(
                    "executor stopping; trial left running for the next start to adopt",
                    trial_id=trial.submission.id,
                    pid=process.pid,
                )
                process.leave_running()
            elif not trial.status.finished:
                with anyio.CancelScope(shield=True):
                    log.info("stopping trial: executor shutting down", trial_id=trial.submission.id)
                    await self._abandon(trial, tail, SHUTDOWN_REASON)
            raise
        except Exception as exc:
            # One trial's supervision failing must not take the agent down.
            log.exception("trial supervision failed", trial_id=trial.submission.id)
            if not trial.status.finished:
                with anyio.CancelScope(shield=True):
                    await self._abandon(trial, tail, f"executor error: {exc!r}", notify=True)

    async def _abandon(
        self, trial: _Trial, tail: MetricsTail, reason: str, *, notify: bool = False
    ) -> None:
        """Stop the trial's processes and record it as failed with ``reason``."""
        process = trial.process
        assert process is not None
        await terminate_group(process, CANCEL_GRACE_SECONDS)
        with contextlib.suppress(OSError):
            await self._drain(trial, tail, final=True, notify=notify)
        await self._finish(
            trial,
            "failed",
            reason=reason,
            exit_code=process.returncode,
            stderr_tail=await read_tail_async(_stderr_path(self.workdir, trial), STDERR_TAIL_BYTES),
            notify=notify,
        )

    def _outcome(self, trial: _Trial, returncode: int | None) -> tuple[TrialState, str | None]:
        metric = trial.submission.metric
        reported = metric is not None and metric in trial.status.metrics
        if trial.cancel_requested:
            return "cancelled", CANCEL_REASON
        if returncode is None:  # adopted: the exit status went with the old agent
            return ("succeeded", None) if reported else ("failed", LOST_STATUS_REASON)
        if returncode != 0:
            return "failed", describe_exit(returncode)
        if metric is not None and not reported:
            return "failed", f"never reported metric {metric!r}"
        return "succeeded", None

    async def _finish(
        self,
        trial: _Trial,
        state: TrialState,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        stderr_tail: str | None = None,
        notify: bool = True,
    ) -> None:
        update: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "exit_code": exit_code,
            "stderr_tail": stderr_tail,
            "ended_at": time.time(),
        }
        trial.status = status = trial.status.model_copy(update=update)
        try:
            await anyio.to_thread.run_sync(results.write_result, self.workdir, status)
        except OSError as exc:
            log.error("trial result not persisted", trial_id=status.id, error=str(exc))
        trial.done.set()
        log.info("trial finished", trial_id=status.id, state=state, reason=reason)
        if trial.channel is not None:
            if notify:
                await trial.channel.finish(
                    TrialUpdate(
                        kind="status",
                        trial_id=status.id,
                        sweep_id=status.sweep_id,
                        seq=trial.seq,
                        metrics=status.metrics,
                        status=status,
                    )
                )
            else:
                trial.channel.close()

    async def _recover(self, stored: results.StoredTrial) -> None:
        """Rebuild one trial from disk: serve, adopt, or mark it failed."""
        sub = stored.submission
        if stored.result is not None:
            trial = _Trial(submission=sub, status=stored.result)
            trial.done.set()
            self._trials[sub.id] = trial
            return
        trial = _Trial(
            submission=sub,
            status=TrialStatus(
                id=sub.id, sweep_id=sub.sweep_id, state="running", started_at=stored.started_at
            ),
        )
        self._trials[sub.id] = trial
        tail = self._tail(trial)
        await self._drain(trial, tail, notify=False, to_end=True)  # reported before the restart
        tg = self._require_tg()
        self._open_channel(tg, trial)
        pid = stored.pid
        if pid is None:
            # Killed between spawning the trial and recording its pid: look for it.
            found = await anyio.to_thread.run_sync(
                find_by_env, f"HBD_TRIAL_DIR={results.trial_dir(self.workdir, sub.id)}"
            )
            if found is not None:
                pid = results.PidRecord(pid=found, start_time=process_start_time(found))
                await anyio.to_thread.run_sync(results.write_pid, self.workdir, sub.id, pid)
        if pid is not None and pid_alive(pid.pid, pid.start_time):
            log.info("adopting trial still running", trial_id=sub.id, pid=pid.pid)
            trial.process = AdoptedProcess(pid.pid, pid.start_time)
            tg.start_soon(self._supervise, trial, tail)
            return
        await self._drain(trial, tail, final=True, notify=False)
        metric = sub.metric
        if pid is not None and metric is not None and metric in trial.status.metrics:
            # It started, reported its metric and exited while no agent watched:
            # the same verdict an adopted trial gets when its exit status is lost.
            log.info("trial finished while the executor was down", trial_id=sub.id)
            await self._finish(trial, "succeeded")
            return
        log.warning("trial lost in executor restart", trial_id=sub.id)
        await self._finish(trial, "failed", reason=RESTART_REASON)


def _template_values(sub: TrialSubmission) -> dict[str, Any]:
    # The rung's resource is authoritative even if params carries a stale copy.
    return {**sub.params, sub.resource.name: sub.resource.value}


def _stderr_path(workdir: Path, trial: _Trial) -> Path:
    return results.trial_dir(workdir, trial.submission.id) / results.STDERR_FILE


__all__ = [
    "CANCEL_GRACE_SECONDS",
    "Agent",
    "AgentError",
    "AgentNotRunning",
    "NoFreeSlot",
    "TrialConflict",
]
