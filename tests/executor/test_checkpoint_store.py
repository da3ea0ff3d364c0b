"""Checkpoint stores (hbd.checkpoints): directories, fsspec URLs, bounded copies, real agents."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hbd import checkpoints
from hbd.checkpoints import (
    CheckpointError,
    CheckpointTooLarge,
    DirectoryStore,
    FsspecStore,
    open_store,
)
from hbd.executor.agent import UPLOAD_FAILED_REASON, AgentLimits
from hbd.settings import ExecutorSettings

from .helpers import running_agent, submission, wait_for

pytestmark = pytest.mark.anyio


def _memory_url() -> str:
    # fsspec's memory filesystem is one per process: a fresh prefix per test.
    return f"memory://ckpt-{uuid.uuid4().hex}"


def _checkpoint(root: Path, trial_id: str, outside: Path) -> Path:
    """A trial's checkpoint with a nested file, a planted link and a FIFO."""
    directory = root / trial_id
    (directory / "nested").mkdir(parents=True)
    (directory / "weights.bin").write_bytes(b"w" * 100)
    (directory / "nested" / "opt.bin").write_bytes(b"o" * 10)
    outside.write_text("secret")
    os.symlink(outside, directory / "leak")
    os.mkfifo(directory / "pipe")
    return directory


# ---------------------------------------------------------------- the stores


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_an_fsspec_store_round_trips_regular_files_only(tmp_path: Path, scheme: str) -> None:
    url = _memory_url() if scheme == "memory" else f"file://{tmp_path / 'bucket'}"
    here = FsspecStore(url, tmp_path / "a" / "checkpoints")
    there = FsspecStore(url, tmp_path / "b" / "checkpoints")
    _checkpoint(tmp_path / "a" / "checkpoints", "p", tmp_path / "secret.txt")

    assert here.publish("p", max_bytes=1000) == 110
    assert there.fetch("p", max_bytes=1000) == 110
    got = there.resume_dir("p")
    assert (got / "weights.bin").read_bytes() == b"w" * 100
    assert (got / "nested" / "opt.bin").read_bytes() == b"o" * 10
    assert sorted(p.name for p in got.rglob("*")) == ["nested", "opt.bin", "weights.bin"]
    # The stored copy wins over a local one (which may be a failed run's): fetched again.
    assert there.fetch("p", max_bytes=1000) == 110
    assert sorted(p.name for p in got.rglob("*")) == ["nested", "opt.bin", "weights.bin"]
    assert not [p for p in got.parent.iterdir() if p.name.startswith(".")]  # nothing left aside
    assert there.fetch("never-stored", max_bytes=1000) == 0
    assert not there.resume_dir("never-stored").exists()

    assert there.delete("p") == 110
    assert there.delete("p") == 0  # idempotent
    assert not here.fs.exists(here._remote("p"))


def test_a_republished_run_replaces_the_earlier_runs_files(tmp_path: Path) -> None:
    store = FsspecStore(_memory_url(), tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "t").mkdir(parents=True)
    (tmp_path / "checkpoints" / "t" / "old.bin").write_bytes(b"1")
    store.publish("t", 100)
    (tmp_path / "checkpoints" / "t" / "old.bin").unlink()
    (tmp_path / "checkpoints" / "t" / "new.bin").write_bytes(b"22")
    store.publish("t", 100)
    assert sorted(os.path.basename(p) for p in store.fs.find(store._remote("t"))) == ["new.bin"]


def test_copies_over_the_limit_are_refused_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _memory_url()
    here = FsspecStore(url, tmp_path / "a")
    _checkpoint(tmp_path / "a", "p", tmp_path / "secret.txt")
    with pytest.raises(
        CheckpointTooLarge, match=r"110 bytes, over the limit of 109 .*max_checkpoint_copy_bytes"
    ):
        here.publish("p", max_bytes=109)
    assert not here.fs.exists(here._remote("p"))
    here.publish("p", max_bytes=110)  # exactly the limit is fine

    there = FsspecStore(url, tmp_path / "b")
    with pytest.raises(CheckpointTooLarge):
        there.fetch("p", max_bytes=50)
    assert not (tmp_path / "b").exists()  # refused from the listing: nothing made

    # Files that grow between listing and copy: the count while copying stops it.
    monkeypatch.setattr(checkpoints, "_check_total", lambda *args: None)
    with pytest.raises(CheckpointTooLarge, match="while copied"):
        there.fetch("p", max_bytes=50)
    assert [p.name for p in (tmp_path / "b").iterdir()] == []  # no partial download left
    with pytest.raises(CheckpointTooLarge, match="while copied"):
        here.publish("p", max_bytes=50)


def test_stored_names_that_climb_out_are_refused() -> None:
    assert checkpoints._safe_relative("/root/p/a/b.bin", "/root/p") == "a/b.bin"
    assert checkpoints._safe_relative("bucket/x/p/f", "bucket/x/p") == "f"
    for bad in ("/root/p/../etc/passwd", "/root/p/a//b", "/other/f", "/root/p/./f"):
        with pytest.raises(CheckpointError):
            checkpoints._safe_relative(bad, "/root/p")


def test_open_store_names_each_kind_and_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    assert isinstance(open_store(None, tmp_path), DirectoryStore)
    assert open_store(None, tmp_path).trial_dir("t") == tmp_path / "checkpoints" / "t"
    shared = open_store(str(tmp_path / "shared"), tmp_path)
    assert isinstance(shared, DirectoryStore) and shared.trial_dir("t") == tmp_path / "shared/t"
    assert isinstance(open_store("memory://x", tmp_path), FsspecStore)
    with pytest.raises(CheckpointError, match="nosuchproto"):
        open_store("nosuchproto://bucket", tmp_path)
    with pytest.raises(ValueError, match="absolute path or a URL"):
        open_store("relative/dir", tmp_path)
    with pytest.raises(CheckpointError, match="through the executor"):
        open_store(None, None)


def test_the_copy_limit_is_a_setting_with_the_modules_default() -> None:
    assert (
        ExecutorSettings().max_checkpoint_copy_bytes
        == AgentLimits().checkpoint_copy_bytes
        == checkpoints.DEFAULT_MAX_CHECKPOINT_COPY_BYTES
    )
    with pytest.raises(ValueError):
        AgentLimits(checkpoint_copy_bytes=-1)


# ---------------------------------------------------------------- real agents


@pytest.mark.slow
async def test_a_child_resumes_on_another_executor_from_a_bucket(tmp_path: Path) -> None:
    url = _memory_url()
    parent = submission(tmp_path, "p", "--mode=ok", "--ckpt=hello", checkpoint_store=url)
    read = tmp_path / "read.txt"
    child = submission(
        tmp_path, "c", "--mode=ok", f"--readckpt={read}", resume_from="p", checkpoint_store=url
    )
    async with running_agent(tmp_path / "a") as a, running_agent(tmp_path / "b") as b:
        assert (await a.post("/v1/trials", json=parent)).status_code == 201
        assert (await wait_for(a, "p"))["state"] == "succeeded"
        assert (await b.post("/v1/trials", json=child)).status_code == 201
        assert (await wait_for(b, "c"))["state"] == "succeeded"
    assert read.read_text() == "hello"
    assert (tmp_path / "b" / "checkpoints" / "p" / "state.txt").read_text() == "hello"


@pytest.mark.slow
async def test_a_checkpoint_over_the_copy_limit_fails_the_run_naming_the_limit(
    tmp_path: Path,
) -> None:
    body = submission(
        tmp_path, "big", "--mode=ok", "--ckpt=x", "--ckptbytes=500", checkpoint_store=_memory_url()
    )
    async with running_agent(
        tmp_path / "work", limits=AgentLimits(checkpoint_copy_bytes=100)
    ) as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        status = await wait_for(client, "big")
    assert status["state"] == "failed"
    assert status["reason"].startswith(UPLOAD_FAILED_REASON)
    assert "500 bytes" in status["reason"] and "max_checkpoint_copy_bytes" in status["reason"]


async def test_a_shared_directory_store_is_written_directly(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    dump = tmp_path / "env.json"
    body = submission(
        tmp_path, "s", "--mode=ok", "--ckpt=z", f"--dump={dump}", checkpoint_store=str(shared)
    )
    async with running_agent(tmp_path / "work") as client:
        assert (await client.post("/v1/trials", json=body)).status_code == 201
        assert (await wait_for(client, "s"))["state"] == "succeeded"
    assert (shared / "s" / "state.txt").read_text() == "z"


async def test_a_store_the_executor_cannot_open_is_refused_with_422(tmp_path: Path) -> None:
    async with running_agent(tmp_path / "work") as client:
        body = submission(tmp_path, "x", "--mode=ok", checkpoint_store="nosuchproto://b/p")
        response = await client.post("/v1/trials", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "checkpoint_store"]
        body = submission(tmp_path, "y", "--mode=ok", checkpoint_store="relative/dir")
        response = await client.post("/v1/trials", json=body)
        assert response.status_code == 422 and "absolute path or a URL" in response.text
        assert (await client.get("/v1/health")).json()["free_slots"] == 2


@pytest.mark.slow
async def test_a_slow_download_does_not_hold_up_other_submissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import anyio

    url = _memory_url()
    release, entered = threading.Event(), threading.Event()
    real_fetch = FsspecStore.fetch

    def slow_fetch(self: FsspecStore, parent_id: str, max_bytes: int) -> int:
        entered.set()
        assert release.wait(30), "the test never released the download"
        return real_fetch(self, parent_id, max_bytes)

    monkeypatch.setattr(FsspecStore, "fetch", slow_fetch)
    store = FsspecStore(url, tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "p").mkdir(parents=True)
    (tmp_path / "elsewhere" / "p" / "state.txt").write_text("from the bucket")
    store.publish("p", 1000)

    read = tmp_path / "read.txt"
    child = submission(
        tmp_path, "c", "--mode=ok", f"--readckpt={read}", resume_from="p", checkpoint_store=url
    )
    async with running_agent(tmp_path / "work") as client:
        answers: dict[str, int] = {}

        async def post_child() -> None:
            answers["c"] = (await client.post("/v1/trials", json=child)).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(post_child)
            while not entered.is_set():
                await anyio.sleep(0.01)
            other = await client.post("/v1/trials", json=submission(tmp_path, "o", "--mode=ok"))
            assert other.status_code == 201  # answered while the download hangs
            assert "c" not in answers
            release.set()
        assert answers["c"] == 201
        assert (await wait_for(client, "c"))["state"] == "succeeded"
    assert read.read_text() == "from the bucket"
