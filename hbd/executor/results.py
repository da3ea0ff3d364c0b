"""Durable trial files under ``<workdir>/trials/<id>/``.

``submission.json`` is written before the process starts, ``pid`` right after,
``result.json`` (a TrialStatus) when it ends. Every write is atomic and
durable: temp file, fsync, ``os.replace``, fsync of the directory. On start
the agent reads them back with :func:`load_trials`, so neither an agent
restart nor a daemon restart loses a finished result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import ValidationError

from hbd.protocol import TrialStatus, TrialSubmission

log = structlog.get_logger(__name__)

SUBMISSION_FILE = "submission.json"
RESULT_FILE = "result.json"
PID_FILE = "pid"
METRICS_FILE = "metrics.jsonl"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"


@dataclass(frozen=True, slots=True, kw_only=True)
class PidRecord:
    pid: int
    start_time: str | None  # kernel start time, guards against pid reuse


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTrial:
    submission: TrialSubmission
    result: TrialStatus | None
    pid: PidRecord | None
    started_at: float  # mtime of submission.json: when it was accepted


def trials_root(workdir: Path) -> Path:
    return workdir / "trials"


def trial_dir(workdir: Path, trial_id: str) -> Path:
    return trials_root(workdir) / trial_id


def default_checkpoint_dir(workdir: Path, trial_id: str) -> Path:
    return workdir / "checkpoints" / trial_id


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_submission(workdir: Path, submission: TrialSubmission) -> Path:
    """Create the trial directory and record what was asked; returns the directory."""
    directory = trial_dir(workdir, submission.id)
    directory.mkdir(parents=True, exist_ok=True)
    fsync_dir(directory.parent)
    atomic_write(directory / SUBMISSION_FILE, submission.model_dump_json().encode())
    return directory


def write_pid(workdir: Path, trial_id: str, record: PidRecord) -> None:
    body = json.dumps({"pid": record.pid, "start_time": record.start_time})
    atomic_write(trial_dir(workdir, trial_id) / PID_FILE, body.encode())


def write_result(workdir: Path, status: TrialStatus) -> None:
    atomic_write(trial_dir(workdir, status.id) / RESULT_FILE, status.model_dump_json().encode())


def _read_pid(path: Path) -> PidRecord | None:
    try:
        raw = json.loads(path.read_text())
        start = raw.get("start_time")
        return PidRecord(pid=int(raw["pid"]), start_time=None if start is None else str(start))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("trial pid file unreadable", path=str(path), error=str(exc))
        return None


def clear_run(workdir: Path, trial_id: str) -> None:
    """Forget a finished run of a trial that is to run again (hbd was interrupted under it).

    The result goes first: a crash midway leaves a trial with no result, which
    a restarted agent records as failed, and the daemon's next run number starts
    it again. Its reported metrics go too, so the new run's are not mixed with them.
    """
    directory = trial_dir(workdir, trial_id)
    if not directory.is_dir():
        return
    for name in (RESULT_FILE, PID_FILE, METRICS_FILE):
        (directory / name).unlink(missing_ok=True)
    fsync_dir(directory)


def load_trial(directory: Path) -> StoredTrial | None:
    """Read one trial directory; None (logged) if it holds no usable submission."""
    submission_path = directory / SUBMISSION_FILE
    try:
        submission = TrialSubmission.model_validate_json(submission_path.read_bytes())
        started_at = submission_path.stat().st_mtime
    except FileNotFoundError:
        return None  # crashed between mkdir and the first write: nothing was started
    except (OSError, ValidationError) as exc:
        log.warning(
            "trial submission unreadable; ignored", path=str(submission_path), error=str(exc)
        )
        return None
    if submission.id != directory.name:
        log.warning(
            "trial submission id does not match its directory; ignored", path=str(directory)
        )
        return None
    result: TrialStatus | None = None
    result_path = directory / RESULT_FILE
    try:
        result = TrialStatus.model_validate_json(result_path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ValidationError) as exc:
        log.warning(
            "trial result unreadable; treated as missing", path=str(result_path), error=str(exc)
        )
    return StoredTrial(
        submission=submission,
        result=result,
        pid=_read_pid(directory / PID_FILE),
        started_at=started_at,
    )


def load_trials(workdir: Path) -> list[StoredTrial]:
    """Every trial recorded under ``workdir``, in directory-name order."""
    root = trials_root(workdir)
    if not root.is_dir():
        return []
    found = (load_trial(d) for d in sorted(root.iterdir()) if d.is_dir())
    return [t for t in found if t is not None]
