"""Where checkpoints live: one interface over a local directory, a shared path and an fsspec URL.

A trial writes its checkpoint into a local directory (``HBD_CHECKPOINT_DIR``)
and a promoted trial resumes from its parent's (``HBD_RESUME_FROM``). Where
those directories come from is the submission's ``checkpoint_store``:

- ``None``: the executor's own ``<workdir>/checkpoints/<trial>`` (so a child
  resumes only on the executor its parent ran on);
- an absolute path: a directory every executor mounts (NFS, a shared disk);
  trials write to ``<path>/<trial>`` directly and resume from any executor;
- a URL (``s3://bucket/run``, ``gs://…``, ``file://``, ``memory://`` in tests):
  an fsspec filesystem (the optional extra ``hbd[checkpoints]``, imported only
  then). The trial writes to the local ``<workdir>/checkpoints/<trial>``; the
  agent uploads it once the trial run has succeeded, and downloads a parent's
  before a trial resuming from it starts.

Every copy is bounded (``max_bytes``, the executor's
``max_checkpoint_copy_bytes``) and copies regular files only: a link the
trial planted (``escape -> /home``) is neither followed nor copied. Removal
(:func:`remove_entry`, :meth:`CheckpointStore.delete`) never follows a link.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# The directory of the agent's workdir holding one checkpoint directory per trial.
CHECKPOINTS_DIR = "checkpoints"
# Bytes of one checkpoint copied to or from a store (upload after a trial run,
# download before a resumed one): room for the weights and optimizer state of
# any model one host trains, and a bound on what a trial writing in a loop
# can push into a bucket or pull onto a disk. max_checkpoint_copy_bytes.
DEFAULT_MAX_CHECKPOINT_COPY_BYTES = 256 * 1024**3
# Files in one checkpoint copied: the listing is kept in memory while copying.
MAX_CHECKPOINT_FILES = 100_000
# Copied in chunks of this size: memory stays flat whatever the file size.
COPY_CHUNK_BYTES = 4 * 1024 * 1024
# A store URL's scheme (fsspec protocol names: s3, gs, gcs, abfs, file, memory...).
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_incoming = itertools.count()


class CheckpointError(Exception):
    """A checkpoint could not be copied (the message says why)."""


class CheckpointTooLarge(CheckpointError):
    """A checkpoint is over the copy limit: nothing (more) is copied."""


class UnsafeCheckpointPath(CheckpointError):
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
    top = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        freed = _empty_tree(top)
    finally:
        os.close(top)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
    return freed


def _empty_tree(top: int) -> int:
    """Remove everything below the directory ``top``; the bytes of regular files removed.

    Iterative with two descriptors open, whatever the depth (a trial may nest
    thousands of directories: os.fwalk recurses and keeps one per level):
    each directory below ``top`` is moved up into ``top`` under a fresh name,
    emptied, removed. Links are entries like files: unlinked, never followed.
    """
    freed = 0
    fresh = itertools.count()
    pending: list[str | None] = [None]  # None: top itself; else a name in top
    while pending:
        current = pending.pop()
        fd = top if current is None else os.open(current, _DIR_FLAGS, dir_fd=top)
        try:
            for entry in os.listdir(fd):
                try:
                    est = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(est.st_mode):
                    os.unlink(entry, dir_fd=fd)
                    freed += est.st_size if stat.S_ISREG(est.st_mode) else 0
                elif current is None:
                    pending.append(entry)
                else:
                    moved = _unused_name(top, fresh)
                    os.rename(entry, moved, src_dir_fd=fd, dst_dir_fd=top)
                    pending.append(moved)
        finally:
            if fd != top:
                os.close(fd)
        if current is not None:
            os.rmdir(current, dir_fd=top)
    return freed


def _unused_name(dir_fd: int, fresh: Iterator[int]) -> str:
    while True:
        name = f".hbd-removing-{next(fresh)}"
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return name


def remove_local(workdir: Path, trial_id: str) -> int:
    """Remove ``<workdir>/checkpoints/<trial_id>``; the bytes freed (0 if absent)."""
    return remove_entry(workdir / CHECKPOINTS_DIR, trial_id)


def check_store(value: str) -> str:
    """A ``checkpoint_store`` value: an absolute path or a URL; ValueError otherwise."""
    if _URL.match(value):
        return value
    if os.path.isabs(value):
        return value
    raise ValueError("must be an absolute path or a URL like s3://bucket/prefix")


# ---------------------------------------------------------------- stores


class CheckpointStore(ABC):
    """Where trials' checkpoints live, seen from one executor (``workdir``) or the daemon."""

    @abstractmethod
    def trial_dir(self, trial_id: str) -> Path:
        """The local directory the trial writes its checkpoint to (HBD_CHECKPOINT_DIR)."""

    @abstractmethod
    def resume_dir(self, parent_id: str) -> Path:
        """The local directory a trial resuming from ``parent_id`` reads (HBD_RESUME_FROM)."""

    def fetch(self, parent_id: str, max_bytes: int) -> int:
        """Make the parent's checkpoint available at resume_dir; the bytes copied."""
        return 0

    def publish(self, trial_id: str, max_bytes: int) -> int:
        """Store the checkpoint of a trial run that succeeded; the bytes copied."""
        return 0

    @abstractmethod
    def delete(self, trial_id: str) -> int:
        """Remove the trial's checkpoint; the bytes freed (0 if none). Idempotent."""


class DirectoryStore(CheckpointStore):
    """Checkpoints in ``<root>/<trial>``: the executor's own directory, or a shared mount."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / trial_id

    def resume_dir(self, parent_id: str) -> Path:
        return self.root / parent_id

    def delete(self, trial_id: str) -> int:
        return remove_entry(self.root, trial_id)


class FsspecStore(CheckpointStore):
    """Checkpoints under an fsspec URL, staged in a local directory on each executor."""

    def __init__(self, url: str, staging: Path | None) -> None:
        try:
            from fsspec.core import url_to_fs  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise CheckpointError(
                f"checkpoint store {url}: fsspec is not installed (pip install 'hbd[checkpoints]')"
            ) from None
        try:
            fs, root = url_to_fs(url)
        except (ImportError, ValueError) as exc:  # an unknown protocol, a missing driver
            raise CheckpointError(f"checkpoint store {url}: {exc}") from None
        self.url = url
        self.fs: Any = fs
        self.root = str(root).rstrip("/")
        self.staging = staging

    def _remote(self, trial_id: str) -> str:
        return f"{self.root}/{trial_id}"

    def _local(self, trial_id: str) -> Path:
        if self.staging is None:
            raise CheckpointError("this store has no local staging directory")
        return self.staging / trial_id

    def trial_dir(self, trial_id: str) -> Path:
        return self._local(trial_id)

    def resume_dir(self, parent_id: str) -> Path:
        return self._local(parent_id)

    def publish(self, trial_id: str, max_bytes: int) -> int:
        source = self._local(trial_id)
        files = list(_local_files(source))
        _check_total(trial_id, sum(size for _, size in files), len(files), max_bytes)
        remote = self._remote(trial_id)
        if self._is_local_copy(source, remote):
            return 0  # file://<the staging directory>: already stored (deleting would lose it)
        self.delete(trial_id)  # an earlier run's files must not mix with this one's
        copied = 0
        dir_fd = os.open(source, _DIR_FLAGS)
        try:
            for rel, _ in files:
                copied = _copy_out(dir_fd, rel, self.fs, f"{remote}/{rel}", copied, max_bytes)
        finally:
            os.close(dir_fd)
        return copied

    def _is_local_copy(self, source: Path, remote: str) -> bool:
        """Whether ``remote`` is ``source`` itself (a file:// URL naming the staging directory)."""
        protocol = self.fs.protocol
        protocols = set(protocol) if isinstance(protocol, (tuple, list)) else {protocol}
        if not protocols & {"file", "local"}:
            return False
        try:
            return os.path.samefile(source, remote)
        except (OSError, ValueError):
            return False

    def fetch(self, parent_id: str, max_bytes: int) -> int:
        """The stored copy, downloaded over any local one.

        A local directory is not proof of the stored run: an earlier run of the
        parent may have failed here after writing some files, and a later run
        succeeded elsewhere and stored its own. So the store wins whenever it
        holds the parent (one download per resume); a local copy is used only
        when the store has none.
        """
        target = self._local(parent_id)
        remote = self._remote(parent_id)
        if not self.fs.isdir(remote) or self._is_local_copy(target, remote):
            return 0  # nothing stored (the trial starts afresh), or the store is this directory
        listing = self.fs.find(remote, detail=True)
        files = []
        for path, info in itertools.islice(listing.items(), MAX_CHECKPOINT_FILES + 1):
            if info.get("type") != "file":
                continue
            rel = _safe_relative(str(path), remote)
            files.append((rel, int(info.get("size") or 0)))
        _check_total(parent_id, sum(size for _, size in files), len(files), max_bytes)
        assert self.staging is not None
        _make_dirs(self.staging)
        # Downloaded aside, then renamed: a directory at resume_dir is complete.
        incoming = self.staging / f".incoming-{parent_id}-{os.getpid()}-{next(_incoming)}"
        os.mkdir(incoming, 0o700)
        try:
            copied = 0
            for rel, _ in files:
                copied = _copy_in(self.fs, f"{remote}/{rel}", incoming, rel, copied, max_bytes)
            stale = self.staging / f".stale-{parent_id}-{os.getpid()}-{next(_incoming)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, stale)
            try:
                os.rename(incoming, target)
            except OSError:
                if not target.is_dir():
                    raise
                remove_entry(incoming.parent, incoming.name)  # a concurrent fetch won
                copied = 0
            with contextlib.suppress(OSError):
                remove_entry(stale.parent, stale.name)
        except BaseException:
            with contextlib.suppress(OSError):
                remove_entry(incoming.parent, incoming.name)
            raise
        return copied

    def delete(self, trial_id: str) -> int:
        remote = self._remote(trial_id)
        if not self.fs.exists(remote):
            return 0
        freed = int(self.fs.du(remote))
        self.fs.rm(remote, recursive=True)
        return freed


def open_store(spec: str | None, workdir: Path | None = None) -> CheckpointStore:
    """The store a ``checkpoint_store`` value names, seen from an executor's ``workdir``.

    ``None`` is the executor's own directory (needs ``workdir``). The daemon,
    which has no workdir, opens shared and URL stores only (to delete).
    """
    local = None if workdir is None else workdir / CHECKPOINTS_DIR
    if spec is None:
        if local is None:
            raise CheckpointError("an executor's own checkpoints are deleted through the executor")
        return DirectoryStore(local)
    check_store(spec)
    if _URL.match(spec):
        return FsspecStore(spec, local)
    return DirectoryStore(Path(spec))


# ---------------------------------------------------------------- copying


def _check_total(trial_id: str, total: int, count: int, max_bytes: int) -> None:
    if count > MAX_CHECKPOINT_FILES:
        raise CheckpointTooLarge(
            f"checkpoint of {trial_id} has more than {MAX_CHECKPOINT_FILES} files "
            "(MAX_CHECKPOINT_FILES)"
        )
    if total > max_bytes:
        raise CheckpointTooLarge(
            f"checkpoint of {trial_id} is {total} bytes, over the limit of {max_bytes} "
            "(max_checkpoint_copy_bytes)"
        )


def _local_files(root: Path) -> Iterator[tuple[str, int]]:
    """Regular files under ``root`` (relative POSIX paths, sizes); links never followed."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeCheckpointPath(f"{root} is a link or not a directory") from None
        raise
    try:
        count = 0
        for dirpath, _, filenames, fd in os.fwalk(".", dir_fd=root_fd, follow_symlinks=False):
            for name in filenames:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue  # links, FIFOs, sockets: not part of a checkpoint
                count += 1
                if count > MAX_CHECKPOINT_FILES:
                    yield "", 0  # _check_total reports the count
                    return
                yield str(PurePosixPath(dirpath, name)).removeprefix("./"), st.st_size
    finally:
        os.close(root_fd)


def _open_below(dir_fd: int, rel: str) -> int:
    """Open the regular file ``rel`` below ``dir_fd``, no link followed on the way."""
    parts = rel.split("/")
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise CheckpointError(f"{rel} is not a regular file")
    return file_fd


def _copy_out(dir_fd: int, rel: str, fs: Any, dest: str, copied: int, max_bytes: int) -> int:
    fd = _open_below(dir_fd, rel)
    # Object stores have no directories (a no-op there); file:// needs them.
    fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
    with os.fdopen(fd, "rb") as src, fs.open(dest, "wb") as out:
        while chunk := src.read(COPY_CHUNK_BYTES):
            copied += len(chunk)
            if copied > max_bytes:  # it grew while being copied
                raise CheckpointTooLarge(
                    f"checkpoint passed {max_bytes} bytes while copied (max_checkpoint_copy_bytes)"
                )
            out.write(chunk)
    return copied


def _copy_in(fs: Any, source: str, root: Path, rel: str, copied: int, max_bytes: int) -> int:
    target = root / rel
    _make_dirs(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with fs.open(source, "rb") as src, os.fdopen(fd, "wb") as out:
        while chunk := src.read(COPY_CHUNK_BYTES):
            copied += len(chunk)
            if copied > max_bytes:
                raise CheckpointTooLarge(
                    f"checkpoint passed {max_bytes} bytes while copied (max_checkpoint_copy_bytes)"
                )
            out.write(chunk)
    return copied


def _safe_relative(path: str, remote: str) -> str:
    """The path of a listed remote file below ``remote``; refuses ``..`` and absolute names."""
    base = remote.strip("/") + "/"
    full = path.lstrip("/")
    if not full.startswith(base):
        raise CheckpointError(f"stored file {path!r} is not under {remote!r}")
    rel = full[len(base) :]
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in rel:
        raise CheckpointError(f"unsafe file name in the stored checkpoint: {path!r}")
    return rel


def _make_dirs(path: Path) -> None:
    if path.is_dir():
        return
    _make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


__all__ = [
    "CHECKPOINTS_DIR",
    "DEFAULT_MAX_CHECKPOINT_COPY_BYTES",
    "MAX_CHECKPOINT_FILES",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointTooLarge",
    "DirectoryStore",
    "FsspecStore",
    "UnsafeCheckpointPath",
    "check_store",
    "open_store",
    "remove_entry",
    "remove_local",
]
