"""Pages of a trial's stdout/stderr for ``GET /v1/trials/{id}/logs`` (``hbd logs``).

The files are written by the trial, so they are untrusted: the trial's
directory and the file are opened with ``O_NOFOLLOW`` (a symlink planted by the
trial is refused, never followed out of the workdir) and ``O_NONBLOCK`` (a FIFO
in its place cannot hang the agent), and only a regular file is read. A page
is at most ``MAX_LOG_PAGE_BYTES``: a caller follows ``next_offset`` for more,
so the agent's memory never grows with a trial's output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from hbd.executor import results
from hbd.executor.supervisor import LAUNCH_FILE, CappedLog
from hbd.executor.trialfiles import OPEN_FLAGS, open_regular

# One page of a log: a screenful or two of text, and small next to a 1 MiB
# request limit; `hbd logs --follow` asks again for the rest.
MAX_LOG_PAGE_BYTES = 64 * 1024
LogStream = Literal["stdout", "stderr"]
FILES: dict[str, str] = {"stdout": results.STDOUT_FILE, "stderr": results.STDERR_FILE}


class LogUnavailable(Exception):
    """The log is not a regular file the agent may read (missing, a symlink, a FIFO)."""


def read_log_page(
    workdir: Path, trial_id: str, stream: LogStream, offset: int, limit: int = MAX_LOG_PAGE_BYTES
) -> dict[str, Any]:
    """Bytes ``offset``.. of the trial's ``stream`` (at most ``limit``), decoded as
    UTF-8 with replacement; ``next_offset`` is where the next page starts and
    ``size`` the file's size when read. A missing file (the trial has not
    started yet) is an empty page at offset 0."""
    limit = max(1, min(limit, MAX_LOG_PAGE_BYTES))
    try:
        dir_fd = os.open(results.trial_dir(workdir, trial_id), OPEN_FLAGS | os.O_DIRECTORY)
    except FileNotFoundError:
        return _page(b"", offset, 0)
    except OSError as exc:
        raise LogUnavailable(f"trial directory: {exc.strerror}") from None
    try:
        try:
            fd = open_regular(FILES[stream], dir_fd=dir_fd)
        except FileNotFoundError:
            return _page(b"", offset, 0)
        except OSError as exc:  # a symlink, a FIFO, a directory, unreadable
            raise LogUnavailable(f"{FILES[stream]}: {exc.strerror}") from None
        try:
            cap = _log_cap(workdir, trial_id)
            # Past its cap the file shrinks (head, marker, most recent tail): the
            # page says how much was dropped so far, and where the kept tail
            # starts, for a follower to find its place again. Read until the
            # count holds still around the data (the supervisor compacts meanwhile).
            for _ in range(5):
                omitted = CappedLog.read_omitted(fd, cap) if cap else 0
                size = os.fstat(fd).st_size
                data = os.pread(fd, limit, offset) if offset < size else b""
                if not cap or CappedLog.read_omitted(fd, cap) == omitted:
                    break
            layout = CappedLog.layout(cap) if cap and omitted else None
            return _page(data, offset, size, omitted, layout)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _log_cap(workdir: Path, trial_id: str) -> int | None:
    """The trial's log cap, from its launch record (None: unknown, then no marker is looked for)."""
    try:
        raw = results.read_state_file(workdir, trial_id, LAUNCH_FILE)
        cap = json.loads(raw or b"null")["log_cap_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cap if isinstance(cap, int) and 0 < cap < 1 << 62 else None


def _page(
    data: bytes,
    offset: int,
    size: int,
    omitted: int = 0,
    layout: tuple[int, int] | None = None,
) -> dict[str, Any]:
    return {
        "offset": offset,
        "next_offset": offset + len(data),
        "size": size,
        "data": data.decode("utf-8", errors="replace"),
        "omitted": omitted,  # bytes dropped so far by the log cap
        # Once anything was dropped: where the cap's marker and the kept recent output start.
        "marker_start": None if layout is None else layout[0],
        "tail_start": None if layout is None else layout[1],
    }
