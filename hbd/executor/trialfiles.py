"""Reading files a trial can touch, safely: every such file is hostile.

A trial runs as the agent's user in a directory it can write, so it can
replace ``metrics.jsonl`` or ``stderr.log`` with a FIFO (a plain ``open()``
blocks forever waiting for a writer), a symlink to ``/dev/zero`` (endless
data) or to another user-readable file, a directory, a socket. Every read
here therefore:

- opens with ``O_NOFOLLOW`` (a symlink in the last component is refused with
  ``ELOOP``) and ``O_NONBLOCK`` (opening a FIFO returns at once instead of
  waiting for a writer);
- accepts only regular files (``fstat`` on the opened descriptor, so the check
  and the read are of the same file);
- reads a bounded number of bytes per call.

These functions block on disk I/O, so the agent calls them through
``anyio.to_thread`` (see ``read_tail_async``), never on its event loop.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import anyio

# Flags for every open of a trial-written file (see the module docstring).
# O_CLOEXEC: a trial started later must not inherit the descriptor.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegularFile(OSError):
    """The path is a FIFO, device, directory, socket or symlink: refused unread."""


def open_regular(path: Path | str, *, dir_fd: int | None = None) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (not through a symlink).

    ``dir_fd``: ``path`` is relative to that open directory (``os.open``'s).
    Raises FileNotFoundError when it does not exist, NotRegularFile when it is
    anything but a regular file, another OSError when it cannot be opened.
    The caller closes the descriptor.
    """
    try:
        fd = os.open(path, OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise NotRegularFile(exc.errno, "is a symbolic link", str(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(
                0, f"is not a regular file (mode {stat.filemode(mode)})", str(path)
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """At most ``limit`` bytes of ``path`` from ``offset``, and the file's current size.

    Missing file: ``(b"", 0)``. Raises NotRegularFile / OSError as
    :func:`open_regular` does.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return b"", 0
    try:
        size = os.fstat(fd).st_size
        if offset >= size or limit <= 0:
            return b"", size
        return os.pread(fd, min(limit, size - offset), offset), size
    finally:
        os.close(fd)


def read_tail(path: Path, limit: int) -> str | None:
    """The last ``limit`` bytes of a regular file, decoded leniently; None if empty or refused."""
    try:
        fd = open_regular(path)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, min(limit, size), max(0, size - limit)) if size else b""
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace") or None


async def read_tail_async(path: Path, limit: int) -> str | None:
    """:func:`read_tail` on a worker thread, for callers on the event loop."""
    return await anyio.to_thread.run_sync(read_tail, path, limit)


__all__ = [
    "OPEN_FLAGS",
    "NotRegularFile",
    "open_regular",
    "read_at",
    "read_tail",
    "read_tail_async",
]
