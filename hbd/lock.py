"""One owner per resource: an exclusive kernel lock held for a process's whole life.

A daemon locks its database and an executor agent its workdir, so that a
second daemon on the same file (two ``hbd run`` in one folder, ``hbd run``
beside ``hbd serve``) or a second agent on the same workdir cannot take over
the first one's trials. The lock is ``flock(2)`` on a sidecar file:

- the kernel releases it when the last descriptor closes, which includes
  every way a process can die (kill -9 too), so a stale lock cannot exist;
- it belongs to the open file, not to the process (unlike POSIX record locks,
  which a second ``open`` in the same process would silently share and any
  ``close`` would drop), so two daemons in one process exclude each other too;
- the descriptor is close-on-exec, so trial processes started by the holder
  never inherit it and cannot keep it alive after the holder dies.

The holder writes its pid into the file after it has the lock, so a refused
second process can name who holds it. The pid is informative only: the lock
is the truth, and a pid file left behind by a dead holder locks nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import Self

from hbd.errors import HbdError

# Suffix of the sidecar lock file beside a database (``hbd.db`` → ``hbd.db.lock``).
# A sidecar, not the database itself: SQLite takes its own POSIX locks on the
# database file, and any close() of a descriptor on that file would drop them.
DB_LOCK_SUFFIX = ".lock"
# Name of the lock file inside an agent's workdir (trial directories live in a
# subdirectory, so it never looks like a trial).
AGENT_LOCK_NAME = "agent.lock"
# The most of a lock file read back for the holder's pid: a pid is a few digits,
# and a lock file someone filled with junk must not be read whole.
MAX_PID_BYTES = 32


class AlreadyLocked(HbdError):
    """Another live process holds the lock; ``holder`` is its pid when known."""

    def __init__(self, message: str, *, path: Path, holder: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class LockFileError(HbdError):
    """The lock file cannot be created or opened (a directory, a symlink, no permission)."""


class ProcessLock:
    """An exclusive lock on ``path``, taken by :meth:`acquire`, dropped by :meth:`release`."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # "database /x/hbd.db", for the refusal message
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`AlreadyLocked`; never waits.

        Raises :class:`LockFileError` when the lock file cannot be created or
        opened, or is not a regular file.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        # O_CLOEXEC: trial processes spawned by the holder must not inherit the lock;
        # O_NOFOLLOW and O_NONBLOCK: a symlink or a FIFO planted there is refused, not followed.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise LockFileError(
                f"cannot open the lock file of {self.what}: {self.path}: {exc.strerror}"
            ) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockFileError(f"the lock file of {self.what} is not a regular file: {self.path}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockFileError(f"cannot lock {self.path}: {exc.strerror}") from exc
            who = f"pid {holder}" if holder is not None else "another process"
            raise AlreadyLocked(
                f"{self.what} is in use by {who} (lock file {self.path}); "
                "stop that process first, or use another path",
                path=self.path,
                holder=holder,
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            # The pid only names the holder in a refusal; the lock is what counts.
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops it). The file stays: removing it
        would let a newcomer lock a fresh file while a waiter holds the unlinked one."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, MAX_PID_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def database_lock(db: Path) -> ProcessLock:
    """The lock a daemon holds on its database file for its whole life."""
    return ProcessLock(Path(f"{db}{DB_LOCK_SUFFIX}"), f"database {db}")


def workdir_lock(workdir: Path) -> ProcessLock:
    """The lock an executor agent holds on its workdir for its whole life."""
    return ProcessLock(workdir / AGENT_LOCK_NAME, f"executor workdir {workdir}")
