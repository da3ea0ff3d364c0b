"""Durable trial files: the agent's under ``<workdir>/state/<id>/``, the trial's under ``<workdir>/trials/<id>/``.

The trial is given only its own directory (``HBD_TRIAL_DIR``: metrics,
stdout, stderr, anything it likes). Everything the agent and the trial's
supervisor write lives in the state directory, which the trial is never
told about:

``submission.json``  what was asked, written before anything starts
``launch.json``      argv, env and limits for the supervisor (0600: env may hold secrets)
``lock``             flock-ed by the trial's supervisor for its whole life
``started``          written by the supervisor right before it starts the trial
``child``            the trial leader's pid (diagnostics only)
``stop``             a stop request from the agent (``cancel`` or ``shutdown``)
``exit.json``        how the trial ended, written by the supervisor
``result.json``      the TrialStatus the agent serves, written last
``taken``            the daemon has the result (retention may drop the trial)

Every write goes through :func:`hbd.executor.supervisor.write_file_at`:
relative to a directory descriptor opened without following links, to a
temp file created exclusively, fsync, rename, fsync of the directory. Files
are 0600 and directories 0700 whatever the umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import ValidationError

from hbd.checkpoints import CHECKPOINTS_DIR
from hbd.executor import supervisor as sup
from hbd.executor.process import describe_exit
from hbd.protocol import TIMEOUT_REASON, AgentTrialState, TrialStatus, TrialSubmission

log = structlog.get_logger(__name__)

SUBMISSION_FILE = "submission.json"
RESULT_FILE = "result.json"
TAKEN_FILE = "taken"
METRICS_FILE = "metrics.jsonl"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"

DIR_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitRecord:
    """What the supervisor wrote when the trial ended."""

    returncode: int | None
    stopped: str | None  # cancel, shutdown, timeout, signal
    error: str | None  # the trial could not be started
    ended_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTrial:
    submission: TrialSubmission
    result: TrialStatus | None
    started_at: float  # mtime of submission.json: when it was accepted
    taken: bool


def trials_root(workdir: Path) -> Path:
    return workdir / "trials"


def state_root(workdir: Path) -> Path:
    return workdir / "state"


def trial_dir(workdir: Path, trial_id: str) -> Path:
    """The trial's own directory (HBD_TRIAL_DIR)."""
    return trials_root(workdir) / trial_id


def state_dir(workdir: Path, trial_id: str) -> Path:
    """The agent's directory for one trial (never given to the trial)."""
    return state_root(workdir) / trial_id


def default_checkpoint_dir(workdir: Path, trial_id: str) -> Path:
    """The executor's own checkpoint directory of a trial (hbd.checkpoints' local store)."""
    return workdir / CHECKPOINTS_DIR / trial_id


def make_private_dir(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for what it creates (umask can only remove bits)."""
    if path.is_dir():
        return
    make_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def write_state_file(workdir: Path, trial_id: str, name: str, data: bytes) -> None:
    """Atomically replace one file of a trial's state directory."""
    with _open_dir(state_dir(workdir, trial_id)) as fd:
        sup.write_file_at(fd, name, data)


def read_state_file(workdir: Path, trial_id: str, name: str) -> bytes | None:
    try:
        with _open_dir(state_dir(workdir, trial_id)) as fd:
            return sup.read_file_at(fd, name)
    except FileNotFoundError:
        return None


def state_file_exists(workdir: Path, trial_id: str, name: str) -> bool:
    try:
        with _open_dir(state_dir(workdir, trial_id)) as fd:
            return sup.exists_at(fd, name)
    except FileNotFoundError:
        return False


def submission_bytes(submission: TrialSubmission) -> bytes:
    """What ``submission.json`` holds (UTF-8, non-ASCII unescaped)."""
    return submission.model_dump_json().encode()


def write_submission(workdir: Path, submission: TrialSubmission) -> Path:
    """Create both directories and record what was asked; returns the trial's directory."""
    make_private_dir(state_dir(workdir, submission.id))
    make_private_dir(trial_dir(workdir, submission.id))
    data = submission_bytes(submission)
    # Already there (a trial started after an agent restart): left as it is, so
    # that its mtime stays the time the trial was accepted.
    try:
        unchanged = read_state_file(workdir, submission.id, SUBMISSION_FILE) == data
    except OSError:
        unchanged = False  # not a regular file: replaced below
    if not unchanged:
        write_state_file(workdir, submission.id, SUBMISSION_FILE, data)
    return trial_dir(workdir, submission.id)


def write_result(workdir: Path, status: TrialStatus) -> None:
    write_state_file(workdir, status.id, RESULT_FILE, status.model_dump_json().encode())


def write_stop(workdir: Path, trial_id: str, reason: str) -> None:
    write_state_file(workdir, trial_id, sup.STOP_FILE, reason.encode())


def mark_taken(workdir: Path, trial_id: str) -> None:
    write_state_file(workdir, trial_id, TAKEN_FILE, b"")


def read_exit(workdir: Path, trial_id: str) -> ExitRecord | None:
    """The supervisor's record of how the trial ended; None if there is none (or it is unusable)."""
    try:
        raw = read_state_file(workdir, trial_id, sup.EXIT_FILE)
        if raw is None:
            return None
        data = json.loads(raw)
        code = data.get("returncode")
        return ExitRecord(
            returncode=None if code is None else int(code),
            stopped=_opt_str(data.get("stopped")),
            error=_opt_str(data.get("error")),
            ended_at=None if data.get("ended_at") is None else float(data["ended_at"]),
        )
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("trial exit record unreadable", trial_id=trial_id, error=str(exc))
        return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def read_child(workdir: Path, trial_id: str) -> tuple[int, str | None] | None:
    """The trial leader's (pid, kernel start time) as its supervisor recorded them."""
    try:
        raw = read_state_file(workdir, trial_id, sup.CHILD_FILE)
        if raw is None:
            return None
        data = json.loads(raw)
        start = data.get("start_time")
        return int(data["pid"]), None if start is None else str(start)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_trial(workdir: Path, trial_id: str) -> None:
    """Forget a trial on disk: its state and its directory (links are removed, not followed)."""
    for path in (state_dir(workdir, trial_id), trial_dir(workdir, trial_id)):
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def load_trial(workdir: Path, trial_id: str) -> StoredTrial | None:
    """Read one trial's state; None (logged) if it holds no usable submission."""
    directory = state_dir(workdir, trial_id)
    try:
        with _open_dir(directory) as fd:
            raw_submission = sup.read_file_at(fd, SUBMISSION_FILE)
            if raw_submission is None:
                return None  # crashed between mkdir and the first write: nothing was started
            started_at = os.stat(SUBMISSION_FILE, dir_fd=fd, follow_symlinks=False).st_mtime
            raw_result = sup.read_file_at(fd, RESULT_FILE)
            taken = sup.exists_at(fd, TAKEN_FILE)
        submission = TrialSubmission.model_validate_json(raw_submission)
    except (OSError, ValidationError) as exc:
        log.warning("trial submission unreadable; ignored", path=str(directory), error=str(exc))
        return None
    if submission.id != trial_id:
        log.warning(
            "trial submission id does not match its directory; ignored", path=str(directory)
        )
        return None
    result: TrialStatus | None = None
    if raw_result is not None:
        try:
            result = TrialStatus.model_validate_json(raw_result)
        except ValidationError as exc:
            log.warning(
                "trial result unreadable; treated as missing", path=str(directory), error=str(exc)
            )
    return StoredTrial(submission=submission, result=result, started_at=started_at, taken=taken)


# Files an agent before the supervisor (one directory per trial) kept beside the trial's own.
LEGACY_PID_FILE = "pid"


def import_legacy(workdir: Path) -> list[tuple[str, tuple[int, str | None] | None]]:
    """Move trials an older agent recorded in ``trials/<id>/`` into ``state/<id>/``.

    Finished results carry over unchanged. A trial without a result was
    started by the older agent and has no supervisor: it is returned with
    the pid its pid file named (the caller fails it and stops that process),
    so that an upgrade never runs a trial twice nor leaves it unaccounted.
    """
    root = trials_root(workdir)
    if not root.is_dir():
        return []
    unfinished: list[tuple[str, tuple[int, str | None] | None]] = []
    for directory in sorted(root.iterdir()):
        trial_id = directory.name
        if directory.is_symlink() or not directory.is_dir():
            continue
        if state_dir(workdir, trial_id).exists():
            continue
        try:
            with _open_dir(directory) as fd:
                submission = sup.read_file_at(fd, SUBMISSION_FILE)
                if submission is None:
                    continue
                result = sup.read_file_at(fd, RESULT_FILE)
                pid = sup.read_file_at(fd, LEGACY_PID_FILE)
        except OSError as exc:
            log.warning("legacy trial unreadable; ignored", path=str(directory), error=str(exc))
            continue
        make_private_dir(state_dir(workdir, trial_id))
        if result is not None:
            write_state_file(workdir, trial_id, RESULT_FILE, result)
        else:
            unfinished.append((trial_id, _legacy_pid(pid)))
        write_state_file(workdir, trial_id, SUBMISSION_FILE, submission)
        log.info("trial recorded by an older agent imported", trial_id=trial_id)
    return unfinished


def _legacy_pid(raw: bytes | None) -> tuple[int, str | None] | None:
    try:
        data = json.loads(raw or b"null")
        start = data.get("start_time")
        return int(data["pid"]), None if start is None else str(start)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_trials(workdir: Path) -> list[StoredTrial]:
    """Every trial recorded under ``workdir``, in id order."""
    root = state_root(workdir)
    if not root.is_dir():
        return []
    found = (
        load_trial(workdir, d.name)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.is_symlink()
    )
    return [t for t in found if t is not None]


# Why a cancelled trial run ended (the agent's and a Ray job's alike).
CANCEL_REASON = "cancelled by request"


def verdict(
    record: ExitRecord,
    *,
    metric: str | None,
    metrics: Mapping[str, float],
    stopped: tuple[AgentTrialState, str],
    lost: str,
) -> tuple[AgentTrialState, str | None]:
    """How a trial run ended, from its supervisor's record: the same rules
    wherever it ran and whether or not its executor restarted meanwhile.

    ``stopped``: the outcome of a run stopped by something other than a cancel
    or its timeout (the executor shutting down, a Ray job stopped); ``lost``:
    the reason when the record holds no exit status.
    """
    if record.error is not None:
        return "failed", record.error
    if record.stopped == sup.STOP_CANCEL:
        return "cancelled", CANCEL_REASON
    if record.stopped == sup.STOPPED_TIMEOUT:
        return "failed", TIMEOUT_REASON
    if record.stopped is not None:
        return stopped
    if record.returncode is None:
        return "failed", lost
    if record.returncode != 0:
        return "failed", describe_exit(record.returncode)
    if metric is not None and metric not in metrics:
        return "failed", f"never reported metric {metric!r}"
    return "succeeded", None
