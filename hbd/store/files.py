"""The database's files are private: 0600 files in a 0700 folder, whatever the umask.

The event log holds every spec (commands, paths, parameters) and trial output;
with umask 022 SQLite would create it world-readable. SQLite creates the -wal
and -shm files with the mode of the database file itself (unix
``findCreateFileMode``), so creating the database file 0600 before SQLite
opens it covers all three.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DB_DIR_MODE", "DB_FILE_MODE", "is_private", "private_dir", "private_file"]

# Owner only: the log is the whole history of what ran, and how.
DB_FILE_MODE = 0o600
DB_DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700; an existing folder is left as it is.

    Only the folders hbd creates are made private: an operator's existing
    folder (``/var/lib/hbd`` with its own group) keeps its mode.
    """
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DB_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs
        os.chmod(d, DB_DIR_MODE)  # mkdir's mode is filtered by the umask


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (never follows a link)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, DB_FILE_MODE)
    except FileExistsError:
        return  # an existing database keeps its mode (the operator's choice)
    except OSError:
        return  # no folder, no permission: SQLite's open reports it in its own words
    try:
        os.fchmod(fd, DB_FILE_MODE)  # O_CREAT's mode is filtered by the umask
    finally:
        os.close(fd)


def is_private(path: Path) -> bool:
    """Whether group and others have no access to ``path``."""
    return not stat.S_IMODE(path.stat().st_mode) & 0o077
