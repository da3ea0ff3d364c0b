"""One supervisor per trial: owns the trial process and records how it ended.

    python -m hbd.executor.supervisor STATE_DIR LOCK_FD

The agent starts this in a session of its own, so that it outlives the agent
(a kill -9, a restart, an upgrade), and hands it an ``flock``-ed file
descriptor on ``STATE_DIR/lock``. The supervisor holds that lock for its
whole life; the kernel drops it when the process dies, however it dies. A
restarted agent therefore knows without trusting any pid:

- lock busy: a supervisor is alive; adopt it (watch the lock);
- lock free and ``exit.json`` present: the trial ended; that is its outcome;
- lock free, ``started`` present, no ``exit.json``: the supervisor was
  killed; the outcome is lost (the trial is failed, never run twice);
- lock free, no ``started``: the trial never ran: start it now, once.

Theory of operation, in order:

1. read ``launch.json`` (argv, env, cwd, trial directory, caps, timeout);
2. become a child subreaper (``PR_SET_CHILD_SUBREAPER``): every descendant
   orphaned by a double fork or a ``setsid`` is re-parented here, so the
   whole tree stays below this process and can be stopped;
3. write ``started`` durably, *then* start the trial (at most once: a crash
   between the two leaves a trial that never ran, recorded failed);
4. copy the trial's stdout/stderr pipes into ``stdout.log``/``stderr.log``
   of its directory, each capped (head and tail kept, the middle dropped);
5. until the trial's leader exits: honour a stop request (``stop``, written
   by the agent: ``cancel`` or ``shutdown``) and the timeout, each as
   SIGTERM to every descendant, ``grace`` seconds, then SIGKILL;
6. when the leader has exited, SIGKILL whatever descendants remain, reap
   them, and write ``exit.json`` (temp file, fsync, rename, fsync of the
   directory); then exit, which releases the lock.

Only the standard library is imported: this runs once per trial and must
start fast. Files in STATE_DIR are the agent's (the trial is never told
where it is); files in the trial's directory are opened without following
links (``O_NOFOLLOW``, relative to a directory descriptor).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LAUNCH_FILE = "launch.json"
STARTED_FILE = "started"
CHILD_FILE = "child"
EXIT_FILE = "exit.json"
STOP_FILE = "stop"
LOCK_FILE = "lock"

# Stop reasons (contents of STOP_FILE, and EXIT_FILE's "stopped").
STOP_CANCEL = "cancel"
STOP_SHUTDOWN = "shutdown"
STOPPED_TIMEOUT = "timeout"
STOPPED_SIGNAL = "signal"  # the supervisor itself got SIGTERM/SIGINT/SIGHUP

# How often the stop file and the deadline are checked: bounds how late a
# cancel or a timeout takes effect (a few wake-ups a second cost nothing).
# The leader's exit wakes the wait at once (a pidfd), so a trial's end is
# not delayed by this; without pidfds (Linux < 5.3) it is polled as often.
POLL_INTERVAL = 0.05
# Bytes read from a pipe at once; bounds the supervisor's buffer per stream.
PIPE_READ_BYTES = 64 * 1024
# After the tree got SIGKILL its pipes close at once; a process stuck in the
# kernel (D state) must not keep the record from being written.
PIPE_DRAIN_SECONDS = 5.0
# Rounds of "list descendants, SIGKILL them, reap": a tree that forks while
# it is killed needs a few; a fork bomb must not keep us here forever.
MAX_KILL_ROUNDS = 50

_PR_SET_CHILD_SUBREAPER = 36
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


# ----------------------------------------------------------------- durable files


def write_file_at(dir_fd: int, name: str, data: bytes) -> None:
    """Replace ``name`` in ``dir_fd`` atomically and durably, never following a link.

    The temporary file is unlinked first (a link planted under its name is
    removed, not followed) and created with ``O_EXCL``; ``rename`` replaces
    whatever is at ``name``, a link included, without following it.
    """
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, _NEW_FILE_FLAGS | os.O_EXCL, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


# The largest state file (submission, launch, result) read back: it bounds the
# memory a state directory can cost the agent and the supervisor. The agent
# refuses a submission whose files would be larger (422), so that whatever it
# accepted can be read back, by the supervisor and after a restart.
MAX_STATE_FILE_BYTES = 1 << 20


class StateFileTooLarge(OSError):
    """A state file is larger than it may be read (never silently truncated)."""


def read_file_at(dir_fd: int, name: str, limit: int = MAX_STATE_FILE_BYTES) -> bytes | None:
    """A small regular file of ``dir_fd`` (no links, no FIFOs), None if absent.

    Raises StateFileTooLarge past ``limit`` bytes: a truncated JSON file would
    only fail later, further from its cause.
    """
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return None
    try:
        if not _is_regular(fd):
            raise OSError(f"{name} is not a regular file")
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
        raise StateFileTooLarge(f"{name} is larger than the limit of {limit} bytes")
    finally:
        os.close(fd)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


# ------------------------------------------------------------------- capped logs


class CappedLog:
    """A log file that never grows beyond ``cap`` bytes: its head and its tail.

    The first ``cap // 2`` bytes are kept as written. After them comes, once
    anything was dropped, a fixed-width marker saying how many bytes were
    omitted, then the most recent output. When the file would pass ``cap``,
    its last ``tail`` bytes are moved right behind the marker and the rest is
    cut: each byte is copied at most about once more, with a bounded buffer,
    and the file is readable (head, marker, tail) at every moment.
    """

    MARKER = "\n[hbd: output capped; {:>20} bytes omitted]\n"

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.head = cap // 2
        self.marker_len = len(self.MARKER.format(0).encode())
        # Room after head and marker holds two tails: one kept, one filling.
        self.tail = max(1, (cap - self.head - self.marker_len) // 2)
        self.size = 0
        self.omitted = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.cap - self.size
            if room <= 0:
                self._compact()
                continue
            piece = view[:room]
            written = os.pwrite(self.fd, piece, self.size)
            self.size += written
            view = view[written:]

    @classmethod
    def layout(cls, cap: int) -> tuple[int, int]:
        """(where the marker starts, where the kept tail starts) in a log capped at ``cap``."""
        head = cap // 2
        return head, head + len(cls.MARKER.format(0).encode())

    @classmethod
    def read_omitted(cls, fd: int, cap: int) -> int:
        """How many bytes the log at ``fd`` has dropped so far (0: none, or no marker)."""
        head, tail_start = cls.layout(cap)
        found = re.fullmatch(
            rb"\n\[hbd: output capped; +(\d+) bytes omitted\]\n",
            os.pread(fd, tail_start - head, head),
        )
        return int(found.group(1)) if found else 0

    def _compact(self) -> None:
        region = self.head + (self.marker_len if self.omitted else 0)
        keep_from = self.size - self.tail
        self.omitted += keep_from - region
        os.pwrite(self.fd, self.MARKER.format(self.omitted).encode(), self.head)
        target = self.head + self.marker_len
        for offset in range(0, self.tail, PIPE_READ_BYTES):
            chunk = os.pread(self.fd, min(PIPE_READ_BYTES, self.tail - offset), keep_from + offset)
            os.pwrite(self.fd, chunk, target + offset)
        self.size = target + self.tail
        os.ftruncate(self.fd, self.size)


def _copy(pipe: int, log: CappedLog) -> None:
    """Copy ``pipe`` into ``log`` until every writer has closed it."""
    failed = False
    try:
        while True:
            data = os.read(pipe, PIPE_READ_BYTES)
            if not data:
                return
            try:
                log.write(data)
            except OSError as exc:
                # Disk full, say: keep draining so the trial never blocks on a
                # full pipe; say it once in supervisor.log.
                if not failed:
                    print(f"hbd supervisor: log write failed: {exc}", file=sys.stderr)
                failed = True
    finally:
        os.close(pipe)


# ------------------------------------------------------------- the process tree


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to us, not to init (Linux >= 3.4)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    table: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # gone meanwhile
        # The command name is parenthesised and may hold anything: split after it.
        fields = raw.rsplit(b")", 1)[-1].split()
        if len(fields) > 1:
            table[int(name)] = int(fields[1])
    return table


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (a snapshot of /proc)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def signal_tree(sig: int) -> int:
    """Send ``sig`` to every descendant of this process; how many there were.

    Only processes below us are signalled: as a subreaper we are an ancestor
    of everything the trial started. A pid of the snapshot could be reaped
    and reused between the snapshot and the kill only if the pid space
    wrapped within those microseconds; our own children (the leader, adopted
    orphans) are not reaped before we reap them.
    """
    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(pids)


# ----------------------------------------------------------------- supervision


class Supervisor:
    def __init__(self, state_fd: int, launch: dict[str, Any]) -> None:
        self.state_fd = state_fd
        self.launch = launch
        self.leader: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.stopped: str | None = None
        self.kill_at: float | None = None
        self.signalled = False

    def exit_record(self, **fields: Any) -> None:
        record = {"returncode": None, "stopped": None, "error": None, "ended_at": time.time()}
        record.update(fields)
        write_file_at(self.state_fd, EXIT_FILE, json.dumps(record).encode())

    def stop_requested(self) -> str | None:
        if self.signalled:
            return STOPPED_SIGNAL
        try:
            raw = read_file_at(self.state_fd, STOP_FILE, 64)
        except OSError:
            return None  # a link or a FIFO: not the agent's (its stop is a regular file)
        if raw is None:
            return None
        text = raw.decode(errors="replace").strip()
        return text if text in (STOP_CANCEL, STOP_SHUTDOWN) else None

    def open_logs(self) -> tuple[int, int]:
        """Create stdout.log and stderr.log afresh in the trial's directory.

        Whatever is at those names (a link planted there, a FIFO, an old log)
        is unlinked, never followed, and the new files are created exclusively.
        """
        trial_fd = os.open(self.launch["trial_dir"], _DIR_FLAGS)
        fds: list[int] = []
        try:
            for name in ("stdout.log", "stderr.log"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=trial_fd)
                # Read-write: capping moves the tail back behind the head.
                flags = (_NEW_FILE_FLAGS & ~os.O_WRONLY) | os.O_RDWR | os.O_EXCL
                fds.append(os.open(name, flags, 0o600, dir_fd=trial_fd))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        finally:
            os.close(trial_fd)
        return fds[0], fds[1]

    def run(self) -> int:
        stop = self.stop_requested()
        if stop is not None:  # cancelled before it could start
            self.exit_record(stopped=stop)
            return 0
        write_file_at(self.state_fd, STARTED_FILE, json.dumps({"at": time.time()}).encode())
        argv: list[str] = self.launch["argv"]
        cap = int(self.launch["log_cap_bytes"])
        readers: list[threading.Thread] = []
        try:
            out_log, err_log = self.open_logs()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            try:
                self.leader = subprocess.Popen(
                    argv,
                    cwd=self.launch["cwd"],
                    env=self.launch["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    process_group=0,  # its own group: a group signal never reaches us
                    close_fds=True,  # the lock stays ours alone
                )
            finally:
                os.close(out_w)
                os.close(err_w)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.exit_record(error=f"could not start {argv[0]!r}: {exc}")
            return 0
        started = time.monotonic()
        record = {"pid": self.leader.pid, "start_time": _start_time(self.leader.pid)}
        with contextlib.suppress(OSError):
            write_file_at(self.state_fd, CHILD_FILE, json.dumps(record).encode())
        for pipe, fd in ((out_r, out_log), (err_r, err_log)):
            reader = threading.Thread(target=_copy, args=(pipe, CappedLog(fd, cap)), daemon=True)
            reader.start()
            readers.append(reader)
        timeout = self.launch.get("timeout_seconds")
        deadline = None if timeout is None else started + float(timeout)
        self._wait_leader(deadline)
        self._kill_rest()
        for reader in readers:
            reader.join(PIPE_DRAIN_SECONDS)
        for fd in (out_log, err_log):
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        self.exit_record(returncode=self.returncode, stopped=self.stopped)
        return 0

    def _begin_stop(self, why: str) -> None:
        self.stopped = why
        self.kill_at = time.monotonic() + float(self.launch["grace_seconds"])
        signal_tree(signal.SIGTERM)

    def _wait_leader(self, deadline: float | None) -> None:
        assert self.leader is not None
        exit_fd = exit_notifier(self.leader.pid)
        try:
            self._wait_leader_loop(deadline, exit_fd)
        finally:
            if exit_fd is not None:
                os.close(exit_fd)

    def _wait_leader_loop(self, deadline: float | None, exit_fd: int | None) -> None:
        while True:
            self._reap()
            if self.returncode is not None:
                return
            now = time.monotonic()
            if self.stopped is None:
                why = self.stop_requested()
                if why is None and deadline is not None and now >= deadline:
                    why = STOPPED_TIMEOUT
                if why is not None:
                    self._begin_stop(why)
            elif self.kill_at is not None and now >= self.kill_at:
                signal_tree(signal.SIGKILL)
                self.kill_at = now + POLL_INTERVAL * 10  # again, for what forked since
            wait_exit(exit_fd, POLL_INTERVAL)

    def _reap(self) -> None:
        """Reap every exited child (ours are the leader and adopted orphans)."""
        assert self.leader is not None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.leader.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.leader.returncode = self.returncode  # Popen must not wait for it again

    def _kill_rest(self) -> None:
        """SIGKILL and reap every descendant the leader left behind."""
        for _ in range(MAX_KILL_ROUNDS):
            if not signal_tree(signal.SIGKILL):
                break
            time.sleep(POLL_INTERVAL / 5)
            self._reap()
        self._reap()


def exit_notifier(pid: int) -> int | None:
    """A pidfd of ``pid`` (a child not yet reaped, so the pid cannot be reused):
    it turns readable when the process exits. None where pidfds are missing."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_exit(exit_fd: int | None, timeout: float) -> None:
    """Sleep ``timeout`` seconds, or less if ``exit_fd``'s process exits meanwhile."""
    if exit_fd is None:
        time.sleep(timeout)
    else:
        select.select([exit_fd], [], [], timeout)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None


def _on_signal(supervisor: Supervisor) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        supervisor.signalled = True

    return handler


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hbd.executor.supervisor STATE_DIR LOCK_FD", file=sys.stderr)
        return 2
    state_dir, lock_fd = args[0], int(args[1])
    os.set_inheritable(lock_fd, False)  # held here, never passed to the trial
    state_fd = os.open(state_dir, _DIR_FLAGS)
    raw = read_file_at(state_fd, LAUNCH_FILE)
    if raw is None or exists_at(state_fd, STARTED_FILE) or exists_at(state_fd, EXIT_FILE):
        # No launch, or a trial that already started once: never start it twice.
        return 1
    supervisor = Supervisor(state_fd, json.loads(raw))
    become_subreaper()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal(supervisor))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
