"""Checkpoint retention end to end: the reference demo's 69 trials, a real daemon and agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from hbd.api.server import DaemonOptions, serve_daemon
from hbd.cli import main
from tests.checkpoints.conftest import CHECKPOINT_BYTES, ckpt_spec, lineage, on_disk, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(params=["executor", "shared"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where checkpoints live: the executor's own directory, or a shared path."""
    return (
        tmp_path / "executor" / "checkpoints"
        if request.param == "executor"
        else tmp_path / "shared"
    )


@pytest.fixture
async def daemon(tmp_path: Path, where: Path) -> AsyncIterator[httpx.AsyncClient]:
    shared = where.name == "shared"
    if shared:
        where.mkdir()
    async with anyio.create_task_group() as tg:
        opts = DaemonOptions(
            db=tmp_path / "hbd.db",
            port=0,
            local_slots=4,
            workdir=tmp_path / "executor",
            checkpoints=str(where) if shared else None,
            checkpoints_keep="resumable",  # what `hbd serve` passes by default
        )
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
            yield client
        tg.cancel_scope.cancel()


async def test_the_demo_sweep_keeps_only_the_best_lineage_and_status_shows_the_bytes_freed(
    daemon: httpx.AsyncClient, where: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = where.name == "shared"
    # maxIterations 27, eta 3: the 69 trial runs of examples/sgd.yaml.
    response = await daemon.post("/v1/sweeps", content=ckpt_spec(max_iterations=27))
    assert response.status_code in (200, 201), response.text
    sweep_id = response.json()["id"]
    path = f"/v1/sweeps/{sweep_id}"
    detail = await wait_for(daemon, path, lambda d: d["status"] == "succeeded", within=240)
    trials = (await daemon.get(f"{path}/trials")).json()
    assert len(trials) == 69 and {t["status"] for t in trials} == {"succeeded"}
    # Every promoted trial resumed from its parent's checkpoint (its bytes were there).
    resumed = [t for t in trials if t["parent"] is not None]
    assert resumed and {t["metrics"]["resumed"] for t in resumed} == {CHECKPOINT_BYTES}
    best = detail["best"]["id"]
    assert best.endswith("-s3-r3-c0")  # the trial program's loss makes it so
    keep = lineage(trials, best)
    assert len(keep) == 4  # rungs 3, 2, 1, 0 of bracket 3
    # The last deletions happen when the sweep ends, in the background.
    expected = {"deleted": 65, "freed_bytes": 65 * CHECKPOINT_BYTES, "kept": 4}
    if shared:  # the daemon measures what it can reach
        expected["kept_bytes"] = 4 * CHECKPOINT_BYTES
    detail = await wait_for(daemon, path, lambda d: d["checkpoints"] == expected, within=60)
    disk = on_disk(where)
    assert set(disk) == keep
    assert set(disk.values()) == {CHECKPOINT_BYTES}
    assert detail["checkpoints"] == expected
    # The sweep's own stream still ends at sweep.finished, and a reconnect from
    # there is told that nothing follows (204), deletions after the end or not.
    stream = (await daemon.get(f"{path}/events", params={"follow": "false"})).text
    last = stream.rstrip().rsplit("event: ", 1)[1]
    assert last.startswith("sweep.finished")
    finished_seq = int(stream.rsplit("id: ", 1)[1].split()[0])
    again = await daemon.get(f"{path}/events", headers={"Last-Event-ID": str(finished_seq)})
    assert again.status_code == 204
    # Each deletion is one event, with the bytes it freed.
    events = (
        await daemon.get("/v1/events", params={"type": "checkpoint.deleted", "follow": "false"})
    ).text
    assert events.count("event: checkpoint.deleted") == 65
    metrics = (await daemon.get("/metrics")).text
    assert f"hbd_checkpoint_bytes_freed_total {float(65 * CHECKPOINT_BYTES)}" in metrics
    assert "hbd_checkpoints_deleted_total 65.0" in metrics
    # hbd status says the same, readable.
    url = str(daemon.base_url)
    assert await anyio.to_thread.run_sync(main, ["status", sweep_id, "--url", url]) == 0
    out = capsys.readouterr().out
    kept = "4 kept holding 17.3 kB (17284 bytes)" if shared else "4 kept"
    assert f"checkpoints: {kept}, 65 deleted, 280.9 kB (280865 bytes) freed" in out
    if shared:
        assert "hbd_checkpoint_bytes_kept 17284.0" in metrics
