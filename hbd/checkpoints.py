"""Where checkpoints live, and how they are removed without following links.

A trial writes its checkpoint into a local directory (``HBD_CHECKPOINT_DIR``)
and a promoted trial resumes from its parent's (``HBD_RESUME_FROM``). By
default that directory is ``<workdir>/checkpoints/<trial>`` on the executor
that ran it (hbd.executor.results.default_checkpoint_dir). This module also
removes such a directory safely: the trial wrote it, so it is untrusted; a
link planted in it (``escape -> /home``) is removed, never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# The directory of the agent's workdir holding one checkpoint directory per trial.
CHECKPOINTS_DIR = "checkpoints"


class UnsafeCheckpointPath(Exception):
    """A directory on the way to the checkpoints is a link or not a directory: nothing removed."""


def remove_entry(parent: Path, name: str) -> int:
    """Remove ``parent/name`` (a tree, a file or a link) without following any link.

    ``parent`` is opened without following a link in its last component (its
    own parents are the operator's). Returns the bytes of regular files
    removed; 0 if it did not exist. Raises UnsafeCheckpointPath if
    ``parent`` is a link or not a directory, OSError on other failures.
    """
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"{name!r} is not one directory entry")
    try:
        parent_fd = os.open(parent, _DIR_FLAGS)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeCheckpointPath(f"{parent} is a link or not a directory") from None
        raise
    try:
        return _remove_at(parent_fd, name)
    finally:
        os.close(parent_fd)


def _remove_at(dir_fd: int, name: str) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    freed = 0
    # fwalk with follow_symlinks=False never descends a link; bottom-up, each
    # entry is removed relative to its directory's descriptor.
    for _, dirnames, filenames, fd in os.fwalk(
        name, dir_fd=dir_fd, topdown=False, follow_symlinks=False
    ):
        for entry in (*filenames, *dirnames):
            try:
                est = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(est.st_mode):
                os.rmdir(entry, dir_fd=fd)
            else:
                os.unlink(entry, dir_fd=fd)
                if stat.S_ISREG(est.st_mode):
                    freed += est.st_size
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
    return freed


def remove_local(workdir: Path, trial_id: str) -> int:
    """Remove ``<workdir>/checkpoints/<trial_id>``; the bytes freed (0 if absent)."""
    return remove_entry(workdir / CHECKPOINTS_DIR, trial_id)


__all__ = ["CHECKPOINTS_DIR", "UnsafeCheckpointPath", "remove_entry", "remove_local"]
