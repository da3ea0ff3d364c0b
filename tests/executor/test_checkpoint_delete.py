"""DELETE /v1/trials/{id}/checkpoint: real agent, real trials, hostile checkpoint dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbd.checkpoints import remove_entry

from .helpers import running_agent, submission, wait_for

pytestmark = pytest.mark.anyio

TOKEN = "t" * 32


def _outside(tmp_path: Path) -> Path:
    """A directory outside the workdir that no deletion may touch."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "precious.bin").write_bytes(b"p" * 1000)
    (outside / "deep" / "more.bin").write_bytes(b"m" * 10)
    return outside


def _fill(checkpoint: Path, outside: Path) -> int:
    """A checkpoint tree with links planted to the outside; its regular bytes."""
    (checkpoint / "sub" / "subsub").mkdir(parents=True, exist_ok=True)
    (checkpoint / "model.pt").write_bytes(b"x" * 300)
    (checkpoint / "sub" / "opt.pt").write_bytes(b"y" * 20)
    (checkpoint / "sub" / "subsub" / "z").write_bytes(b"z" * 4)
    os.symlink(outside, checkpoint / "escape")  # a link to a directory
    os.symlink(outside / "precious.bin", checkpoint / "sub" / "file-link")
    os.symlink(outside / "deep", checkpoint / "sub" / "subsub" / "dir-link")
    os.mkfifo(checkpoint / "fifo")
    return 324


def _intact(outside: Path) -> None:
    assert (outside / "precious.bin").read_bytes() == b"p" * 1000
    assert (outside / "deep" / "more.bin").read_bytes() == b"m" * 10


@pytest.mark.slow
async def test_a_finished_trials_checkpoint_is_deleted_links_never_followed(
    tmp_path: Path,
) -> None:
    work = (tmp_path / "work").resolve()
    outside = _outside(tmp_path)
    async with running_agent(work, token=TOKEN) as client:
        assert (
            await client.post("/v1/trials", json=submission(tmp_path, "done", "--mode=ok"))
        ).status_code == 201
        await wait_for(client, "done")
        checkpoint = work / "checkpoints" / "done"
        assert checkpoint.is_dir()  # the agent made it for the trial
        size = _fill(checkpoint, outside)

        no_token = await client.delete("/v1/trials/done/checkpoint", headers={"Authorization": ""})
        assert no_token.status_code == 401 and checkpoint.exists()

        response = await client.delete("/v1/trials/done/checkpoint")
        assert response.status_code == 200, response.text
        assert response.json() == {"trial_id": "done", "freed_bytes": size}
        assert not checkpoint.exists() and not os.path.lexists(checkpoint)
        _intact(outside)

        again = await client.delete("/v1/trials/done/checkpoint")  # idempotent
        assert again.status_code == 200 and again.json()["freed_bytes"] == 0
        forgotten = await client.delete("/v1/trials/never-here/checkpoint")
        assert forgotten.status_code == 200 and forgotten.json()["freed_bytes"] == 0
        bad = await client.delete("/v1/trials/a%20b/checkpoint")
        assert bad.status_code == 422


@pytest.mark.slow
async def test_a_running_trial_or_its_resuming_child_keeps_the_checkpoint(
    tmp_path: Path,
) -> None:
    work = (tmp_path / "work").resolve()
    async with running_agent(work) as client:
        body = submission(tmp_path, "live", "--mode=sleep", "--seconds=60")
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        await wait_for(client, "live", finished=False)
        (work / "checkpoints" / "live" / "w").write_bytes(b"w")
        busy = await client.delete("/v1/trials/live/checkpoint")
        assert busy.status_code == 409 and "running" in busy.text
        assert (work / "checkpoints" / "live" / "w").exists()

        parent = work / "checkpoints" / "parent"
        parent.mkdir(parents=True)
        (parent / "w").write_bytes(b"w")
        child = submission(tmp_path, "child", "--mode=sleep", "--seconds=60", resume_from="parent")
        assert (await client.post("/v1/trials", json=child)).status_code == 201
        busy = await client.delete("/v1/trials/parent/checkpoint")
        assert busy.status_code == 409 and "child" in busy.text
        assert (parent / "w").exists()

        await client.post("/v1/trials/live/cancel")
        await wait_for(client, "live")
        freed = await client.delete("/v1/trials/live/checkpoint")
        assert freed.status_code == 200 and freed.json()["freed_bytes"] == 1
        await client.post("/v1/trials/child/cancel")


async def test_a_checkpoint_dir_that_is_itself_a_link_is_unlinked_not_followed(
    tmp_path: Path,
) -> None:
    work = (tmp_path / "work").resolve()
    outside = _outside(tmp_path)
    async with running_agent(work) as client:
        (work / "checkpoints").mkdir()
        os.symlink(outside, work / "checkpoints" / "linked")
        response = await client.delete("/v1/trials/linked/checkpoint")
        assert response.status_code == 200 and response.json()["freed_bytes"] == 0
        assert not os.path.lexists(work / "checkpoints" / "linked")
        _intact(outside)

        # The checkpoints directory itself replaced by a link: refused, nothing touched.
        (work / "checkpoints").rmdir()
        os.symlink(outside, work / "checkpoints")
        response = await client.delete("/v1/trials/deep/checkpoint")
        assert response.status_code == 409 and "link" in response.text
        _intact(outside)


def test_remove_entry_refuses_names_that_are_not_one_entry(tmp_path: Path) -> None:
    for name in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            remove_entry(tmp_path, name)
    assert remove_entry(tmp_path / "missing", "x") == 0
