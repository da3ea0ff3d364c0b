"""Review: operator mistakes and hostile listings against checkpoint stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbd.checkpoints import CHECKPOINTS_DIR, open_store

from .helpers import running_agent

pytestmark = pytest.mark.anyio

TOKEN = "t" * 32


@pytest.mark.parametrize("spelling", ["{}", "{}/", "{}/../checkpoints"])
def test_a_file_url_naming_the_executors_own_directory_keeps_the_checkpoint(
    tmp_path: Path, spelling: str
) -> None:
    # Bug: an operator sets checkpoints = file://<workdir>/checkpoints (the
    # executor's own directory, the staging area of a URL store): publish
    # first removed "the earlier run's files" at the remote path, which was
    # the trial's directory itself, and the checkpoint was lost.
    workdir = tmp_path / "agent"
    local = workdir / CHECKPOINTS_DIR
    url = "file://" + spelling.format(local)
    store = open_store(url, workdir)
    directory = store.trial_dir("t1")
    directory.mkdir(parents=True)
    (directory / "weights.bin").write_bytes(b"w" * 100)
    store.publish("t1", 10**6)
    assert (directory / "weights.bin").read_bytes() == b"w" * 100
    # A child resuming from it finds it (here, or by download elsewhere).
    assert (store.resume_dir("t1") / "weights.bin").read_bytes() == b"w" * 100


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"p")
    return outside


def _deep(root: Path, trial_id: str, depth: int, outside: Path) -> None:
    """A checkpoint nested ``depth`` directories deep, a file at the bottom and links on the way."""
    top = os.open(root, os.O_RDONLY)
    os.mkdir(trial_id, dir_fd=top)
    fd = os.open(trial_id, os.O_RDONLY, dir_fd=top)
    os.close(top)
    for i in range(depth):
        if i % 100 == 0:
            os.symlink(outside, "up", dir_fd=fd)
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = below
    with os.fdopen(os.open("w.bin", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
        f.write(b"w" * 7)
    os.close(fd)


async def test_a_checkpoint_nested_deeper_than_pythons_recursion_is_deleted(
    tmp_path: Path,
) -> None:
    # Bug: removal walked with os.fwalk, a recursive generator: a trial that
    # nested its checkpoint 1500 directories deep (a loop bug suffices) made
    # DELETE raise RecursionError, answered 500, and the checkpoint could
    # never be deleted.
    work = (tmp_path / "work").resolve()
    (work / CHECKPOINTS_DIR).mkdir(parents=True)
    outside = _outside(tmp_path)
    _deep(work / CHECKPOINTS_DIR, "t1", 1500, outside)
    async with running_agent(work, token=TOKEN) as client:
        response = await client.delete(
            "/v1/trials/t1/checkpoint", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"trial_id": "t1", "freed_bytes": 7}
    assert not (work / CHECKPOINTS_DIR / "t1").exists()
    assert (outside / "precious").read_bytes() == b"p"  # links were not followed


def test_a_deep_shared_store_checkpoint_is_deleted_by_the_daemons_store(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    outside = _outside(tmp_path)
    _deep(shared, "t1", 1500, outside)
    (shared / "t2").mkdir()
    assert open_store(str(shared)).delete("t1") == 7
    assert (outside / "precious").read_bytes() == b"p"
    assert sorted(p.name for p in shared.iterdir()) == ["t2"]


def test_a_stale_local_copy_of_an_earlier_failed_run_is_not_resumed_from(tmp_path: Path) -> None:
    # Run 1 of p ran on this executor and was interrupted (nothing uploaded);
    # run 2 ran on another executor and succeeded (uploaded). A child placed
    # here must resume from run 2's checkpoint, not run 1's leftovers.
    remote = tmp_path / "bucket"
    url = f"file://{remote}"
    here = open_store(url, tmp_path / "a")
    stale = here.trial_dir("p")
    stale.mkdir(parents=True)
    (stale / "epoch").write_text("1 (interrupted)")
    there = open_store(url, tmp_path / "b")
    there.trial_dir("p").mkdir(parents=True)
    (there.trial_dir("p") / "epoch").write_text("9")
    there.publish("p", 10**6)
    here.fetch("p", 10**6)
    assert (here.resume_dir("p") / "epoch").read_text() == "9"
