"""Keep ``HBD_TOKEN`` out of the service's environment block, where trials could read it.

Removing the token from ``os.environ`` stops children from inheriting it, but
the kernel still shows the environment the process was started with in
``/proc/<pid>/environ``, readable by every process of the same user: every
trial the service starts (issue 10.12). So a service started with
``HBD_TOKEN`` re-executes itself once, at once, without it, handing the token
over through an inherited pipe (``HBD_TOKEN_FD``); the pipe is read and
closed at start, and ``HBD_TOKEN_FD`` names only a closed descriptor. The
pid stays the same (``execve``), so systemd's MainPID and readiness are
unaffected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hbd.settings import MAX_TOKEN_FILE_BYTES, TOKEN_ENV

__all__ = ["TOKEN_FD_ENV", "hide_token_from_environ"]

TOKEN_FD_ENV = "HBD_TOKEN_FD"
# Names the process has when started as a program (`hbd ...`, `python -m hbd ...`).
_PROGRAM_NAMES = frozenset({"hbd", "__main__.py"})


def hide_token_from_environ(command: str) -> None:
    """Called first by ``hbd serve`` / ``hbd executor``; may not return (re-exec).

    After the re-exec the token is back in ``os.environ`` (not in the
    process's original environment block) for the settings to read; the
    service removes it from there once read, as before.
    """
    fd = os.environ.pop(TOKEN_FD_ENV, None)
    if fd is not None:
        os.environ[TOKEN_ENV] = _read_token(int(fd))
        return
    if not os.environ.get(TOKEN_ENV):
        return
    if Path(sys.argv[0]).name not in _PROGRAM_NAMES or command not in sys.argv[1:]:
        return  # called in-process (tests, embedding): not ours to re-exec
    read, write = os.pipe()
    try:
        # A token is at most MAX_TOKEN_FILE_BYTES, far below a pipe's buffer:
        # the write cannot block with nobody reading yet.
        os.write(write, os.environ[TOKEN_ENV].encode()[:MAX_TOKEN_FILE_BYTES])
    finally:
        os.close(write)
    os.set_inheritable(read, True)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env[TOKEN_FD_ENV] = str(read)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "hbd", *sys.argv[1:]], env)


def _read_token(fd: int) -> str:
    try:
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")
