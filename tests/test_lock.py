"""hbd.lock: exclusive, names its holder, dies with its descriptor, never inherited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hbd.lock import AlreadyLocked, LockFileError, database_lock, workdir_lock


def test_a_second_lock_in_the_same_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "hbd.db"
    with database_lock(db):
        with pytest.raises(AlreadyLocked) as caught:
            database_lock(db).acquire()
        assert caught.value.holder == os.getpid()
        assert str(db) in str(caught.value) and f"pid {os.getpid()}" in str(caught.value)
    with database_lock(db) as again:  # released on exit: taken again at once
        assert again.held


def test_the_lock_is_not_inherited_by_child_processes(tmp_path: Path) -> None:
    workdir = tmp_path
    lock = workdir_lock(workdir)
    lock.acquire()
    # A child that outlives the holder must not keep the lock alive.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        close_fds=False,
        stdout=subprocess.PIPE,
    )
    try:
        # Between fork and exec the child shares the lock; after exec it must not.
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        lock.release()
        with workdir_lock(workdir):
            pass
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_a_lock_file_holding_junk_still_locks(tmp_path: Path) -> None:
    path = tmp_path / "hbd.db"
    Path(f"{path}.lock").write_bytes(b"\0" * 100_000)
    with database_lock(path):
        with pytest.raises(AlreadyLocked) as caught:
            database_lock(path).acquire()
    assert caught.value.holder == os.getpid()


def test_a_symlinked_lock_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "agent.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockFileError, match=r"agent\.lock"):
        workdir_lock(tmp_path).acquire()


def test_a_fifo_or_a_directory_at_the_lock_path_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "agent.lock")
    with pytest.raises(LockFileError, match="not a regular file"):
        workdir_lock(tmp_path).acquire()  # and does not block on the FIFO
    (tmp_path / "hbd.db.lock").mkdir()
    with pytest.raises(LockFileError, match=r"hbd\.db\.lock"):
        database_lock(tmp_path / "hbd.db").acquire()
