"""One trial as a Ray job: the job's entrypoint on the cluster node.

    python -m hbd.executor.ray_runner

The Ray backend (``hbd.daemon.ray_backend``) submits one Ray job per trial
run whose entrypoint is this module. It keeps the agent's trial contract by
running the trial under the agent's own code:

- the submission arrives in ``HBD_RAY_SUBMISSION`` (JSON), the node's work
  directory in ``HBD_RAY_WORKDIR``, the daemon's callback token (if any) in
  ``HBD_RAY_CALLBACK_TOKEN``; all three are removed from the trial's
  environment like every ``HBD_*`` variable the agent does not set itself;
- argv, environment (``HBD_TRIAL_DIR``, ``HBD_METRICS_FILE``,
  ``HBD_CHECKPOINT_DIR``, ``HBD_RESUME_FROM``, the resource variable...),
  working directory, capped stdout/stderr, timeout and the stop of the whole
  process tree are the agent's: ``hbd.executor.supervisor.Supervisor`` runs
  in this process (it becomes the subreaper of the trial's tree);
- metrics lines are read with ``hbd.executor.metrics.MetricsTail`` (same
  bounds, same numbering) and printed to the job's log as
  ``@hbd-metrics SEQ {json}``; the verdict (the agent's rules) is printed
  last as ``@hbd-status {TrialStatus json}``. The trial's own output goes to
  its directory, never to the job log, so only this process writes lines
  with these prefixes;
- the same updates are pushed to the submission's ``callback_url`` (best
  effort, as the agent does); the backend reads the log when polled.

Ray's ``stop_job`` sends SIGTERM to this process and its descendants, then
SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S`` (3 s by default): the supervisor
takes the SIGTERM as a stop and ends the tree within RAY_STOP_GRACE_SECONDS.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from hbd import checkpoints
from hbd.executor import results
from hbd.executor import supervisor as sup
from hbd.executor.metrics import Line, MetricsTail
from hbd.executor.trialenv import trial_argv, trial_env
from hbd.executor.trialfiles import read_tail
from hbd.protocol import (
    MAX_METRICS_PAGE_LINES,
    AgentTrialState,
    MetricsLine,
    TrialStatus,
    TrialSubmission,
    TrialUpdate,
)

SUBMISSION_ENV = "HBD_RAY_SUBMISSION"
WORKDIR_ENV = "HBD_RAY_WORKDIR"
CALLBACK_TOKEN_ENV = "HBD_RAY_CALLBACK_TOKEN"
METRICS_PREFIX = "@hbd-metrics "
STATUS_PREFIX = "@hbd-status "

# Below Ray's default RAY_JOB_STOP_WAIT_TIME_S (3 s): a stopped job's trial
# gets SIGTERM, this long, then SIGKILL, before Ray kills us and the record.
RAY_STOP_GRACE_SECONDS = 2.0
# How often the metrics file is read while the trial runs (the agent's pace).
METRICS_POLL_SECONDS = 0.1
# The metrics file bytes parsed per trial. Lower than the agent's 64 MiB: each
# line is also a line of the Ray job log, which the daemon reads back whole.
RAY_MAX_METRICS_FILE_BYTES = 8 * 1024 * 1024
# A failed trial's status carries this much of its stderr (the agent's figure).
STDERR_TAIL_BYTES = 4096
# One callback POST: the daemon answers on loopback or LAN in milliseconds.
CALLBACK_TIMEOUT_SECONDS = 5.0
# Tries of the terminal status callback (metrics lines get one: the daemon
# pages what it missed); then the daemon's polling finds the verdict.
STATUS_CALLBACK_ATTEMPTS = 5

CANCEL_REASON = results.CANCEL_REASON
STOPPED_REASON = "the Ray job was stopped while the trial ran"
LOST_REASON = "the trial's supervisor did not record how it ended"
UPLOAD_FAILED_REASON = "checkpoint upload failed"  # the agent's words


def node_env(sub: TrialSubmission, workdir: Path, directory: Path) -> dict[str, str]:
    """The agent's trial environment (hbd.executor.trialenv), on this node."""
    # Where checkpoints live is the daemon's `checkpoints` (the submission's
    # checkpoint_store), as on the agent: this node's workdir, a shared path
    # or a URL staged under the workdir.
    store = checkpoints.open_store(sub.checkpoint_store, workdir)
    checkpoint = Path(sub.checkpoint_dir) if sub.checkpoint_dir else store.trial_dir(sub.id)
    results.make_private_dir(checkpoint)
    resume: Path | None = None
    if sub.resume_dir is not None:
        resume = Path(sub.resume_dir)
    elif sub.resume_from is not None:
        resume = store.resume_dir(sub.resume_from)
    # Ray hands the job the GPUs it reserved in CUDA_VISIBLE_DEVICES.
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = (
        {"HBD_GPUS": gpus} if sub.resources is not None and sub.resources.gpus and gpus else {}
    )
    return trial_env(sub, directory, checkpoint=checkpoint, resume=resume, devices=devices)


def verdict(
    sub: TrialSubmission, record: results.ExitRecord | None, metrics: dict[str, float]
) -> tuple[AgentTrialState, str | None]:
    """The agent's rules (hbd.executor.results.verdict) on the supervisor's record."""
    if record is None:
        return "failed", LOST_REASON
    # Only Ray's stop_job stops a job's supervisor otherwise.
    return results.verdict(
        record,
        metric=sub.metric,
        metrics=metrics,
        stopped=("cancelled", STOPPED_REASON),
        lost=LOST_REASON,
    )


class Reporter:
    """Metrics lines to the job log (always) and to the callback URL (best effort)."""

    def __init__(self, sub: TrialSubmission, token: str | None) -> None:
        self.sub = sub
        self.metrics: dict[str, float] = {}
        self.seq = 0
        self._lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = (
            httpx.Client(headers=headers, timeout=CALLBACK_TIMEOUT_SECONDS)
            if sub.callback_url
            else None
        )

    def lines(self, lines: list[Line]) -> None:
        if not lines:
            return
        with self._lock:
            out = sys.stdout
            for line in lines:
                out.write(f"{METRICS_PREFIX}{line.seq} {json.dumps(line.metrics)}\n")
                self.metrics.update(line.metrics)
                self.seq = line.seq
            out.flush()
        for i in range(0, len(lines), MAX_METRICS_PAGE_LINES):
            batch = lines[i : i + MAX_METRICS_PAGE_LINES]
            self._post(
                TrialUpdate(
                    kind="metrics",
                    trial_id=self.sub.id,
                    sweep_id=self.sub.sweep_id,
                    run=self.sub.run,
                    seq=batch[-1].seq,
                    lines=[MetricsLine(seq=x.seq, metrics=x.metrics) for x in batch],
                ),
                attempts=1,
            )

    def status(self, status: TrialStatus) -> None:
        with self._lock:
            sys.stdout.write(f"{STATUS_PREFIX}{status.model_dump_json()}\n")
            sys.stdout.flush()
        update = TrialUpdate(
            kind="status",
            trial_id=status.id,
            sweep_id=status.sweep_id,
            run=status.run,
            seq=status.metrics_seq,
            metrics=status.metrics,
            status=status,
        )
        self._post(update, attempts=STATUS_CALLBACK_ATTEMPTS)

    def _post(self, update: TrialUpdate, *, attempts: int) -> None:
        if self._http is None or self.sub.callback_url is None:
            return
        body = update.model_dump_json().encode()
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt))
            try:
                response = self._http.post(self.sub.callback_url, content=body)
            except httpx.HTTPError:
                continue
            if response.is_success or 400 <= response.status_code < 500:
                return  # delivered, or refused for good: the daemon polls anyway

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _tail_until(tail: MetricsTail, reporter: Reporter, done: threading.Event) -> None:
    while not done.wait(METRICS_POLL_SECONDS):
        while True:
            lines, more = tail.read_batch()
            reporter.lines(lines)
            if not more:
                break


def run(sub: TrialSubmission, workdir: Path, token: str | None) -> TrialStatus:
    """Run the trial once under hbd's supervisor; its final status (also printed)."""
    started_at = time.time()
    # A new run of a trial starts afresh (as on the agent): the backend starts
    # run N+1 only once run N's job has ended.
    results.remove_trial(workdir, sub.id)
    directory = results.write_submission(workdir, sub)
    store = checkpoints.open_store(sub.checkpoint_store, workdir)
    if sub.resume_from is not None and sub.resume_dir is None:
        # A URL store: the parent's checkpoint downloaded here first (as the agent does).
        store.fetch(sub.resume_from, checkpoints.DEFAULT_MAX_CHECKPOINT_COPY_BYTES)
    argv = trial_argv(workdir, sub)
    launch = {
        "argv": argv,
        "env": node_env(sub, workdir, directory),
        "cwd": sub.working_dir or os.getcwd(),
        "trial_dir": str(directory),
        "log_cap_bytes": 64 * 1024 * 1024,
        "grace_seconds": RAY_STOP_GRACE_SECONDS,
        "timeout_seconds": sub.timeout_seconds,
    }
    results.write_state_file(
        workdir, sub.id, sup.LAUNCH_FILE, json.dumps(launch, ensure_ascii=False).encode()
    )
    state_fd = os.open(results.state_dir(workdir, sub.id), os.O_RDONLY | os.O_DIRECTORY)
    supervisor = sup.Supervisor(state_fd, launch)
    sup.become_subreaper()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: setattr(supervisor, "signalled", True))
    reporter = Reporter(sub, token)
    tail = MetricsTail(
        directory / results.METRICS_FILE,
        metric=sub.metric,
        max_file_bytes=RAY_MAX_METRICS_FILE_BYTES,
    )
    done = threading.Event()
    tailer = threading.Thread(target=_tail_until, args=(tail, reporter, done), daemon=True)
    tailer.start()
    try:
        supervisor.run()
    finally:
        done.set()
        tailer.join()
        os.close(state_fd)
    while True:
        lines, more = tail.read_batch(final=True)
        reporter.lines(lines)
        if not more:
            break
    record = results.read_exit(workdir, sub.id)
    state, reason = verdict(sub, record, reporter.metrics)
    if state == "succeeded" and sub.checkpoint_dir is None:
        try:  # a URL store: uploaded once the run succeeded (as the agent does)
            store.publish(sub.id, checkpoints.DEFAULT_MAX_CHECKPOINT_COPY_BYTES)
        except Exception as exc:
            state, reason = "failed", f"{UPLOAD_FAILED_REASON}: {exc}"
    stderr_tail = None
    if state != "succeeded":
        stderr_tail = read_tail(directory / results.STDERR_FILE, STDERR_TAIL_BYTES)
    status = TrialStatus(
        id=sub.id,
        sweep_id=sub.sweep_id,
        run=sub.run,
        state=state,
        metrics=reporter.metrics,
        reason=reason,
        exit_code=None if record is None else record.returncode,
        stderr_tail=stderr_tail,
        started_at=started_at,
        ended_at=(record.ended_at if record is not None else None) or time.time(),
        metrics_seq=tail.seq,
    )
    results.write_result(workdir, status)
    reporter.status(status)
    reporter.close()
    return status


def main(argv: list[str] | None = None) -> int:
    del argv
    raw = os.environ.get(SUBMISSION_ENV)
    workdir = os.environ.get(WORKDIR_ENV)
    if not raw or not workdir:
        print(f"hbd ray runner: {SUBMISSION_ENV} and {WORKDIR_ENV} must be set", file=sys.stderr)
        return 2
    sub = TrialSubmission.model_validate_json(raw)
    token = os.environ.get(CALLBACK_TOKEN_ENV) or None
    run(sub, Path(workdir).resolve(), token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
