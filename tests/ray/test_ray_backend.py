"""The Ray backend against a real one-node Ray cluster on 127.0.0.1 (see conftest)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hbd.api.server import DaemonOptions, serve_daemon
from hbd.daemon.backend import ExecutorBackend, backend_for
from hbd.daemon.ray_backend import RayBackend, job_name
from hbd.errors import ExecutorRejected, NotFound
from hbd.protocol import ResourceValue, TrialResources, TrialStatus, TrialSubmission
from tests.e2e.conftest import read_log, sweep_yaml
from tests.ray.conftest import Cluster, descendants

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TRIAL = str(Path(__file__).with_name("trial.py"))
# A Ray job's start (runtime env, a Python with hbd imported) took ~2 s idle and
# up to ~15 s on 2 loaded cores: deadlines are generous and polled.
DEADLINE = 120.0


def submission(
    lines: int = 3, sleep: float = 0.0, marks: Path | None = None, **kw: Any
) -> TrialSubmission:
    command = [sys.executable, TRIAL, str(lines), str(sleep)]
    if marks is not None:
        command.append(str(marks))
    fields: dict[str, Any] = {
        "id": f"t-{uuid.uuid4().hex[:10]}",
        "sweep_id": "sw-ray",
        "command": command,
        "resource": ResourceValue(name="epochs", value=3),
        "metric": "loss",
        **kw,
    }
    return TrialSubmission(**fields)


@pytest.fixture
async def backend(ray_cluster: Cluster) -> AsyncIterator[ExecutorBackend]:
    b = backend_for(ray_cluster.url)
    try:
        yield b
    finally:
        await b.aclose()


async def finished(b: ExecutorBackend, trial_id: str) -> TrialStatus:
    with anyio.fail_after(DEADLINE):
        while True:
            status = await b.status(trial_id)
            if status.finished:
                return status
            await anyio.sleep(0.1)


async def ray_job(cluster: Cluster, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer: dict[str, Any] = (await http.get(f"{cluster.dashboard}/api/jobs/{name}")).json()
        return answer


def marks(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def test_the_ray_scheme_is_served_by_the_ray_backend(backend: ExecutorBackend) -> None:
    assert isinstance(backend, RayBackend) and isinstance(backend, ExecutorBackend)
    health = await backend.health(single=True)
    assert health.slots == 2 and health.version.startswith("ray ")


async def test_a_trial_succeeds_with_its_metrics_env_and_resources(
    backend: ExecutorBackend, ray_cluster: Cluster
) -> None:
    sub = submission(lines=3, resources=TrialResources(limits={"cpu": "500m"}))
    first = await backend.submit(sub)
    assert first.id == sub.id and first.run == 1
    status = await finished(backend, sub.id)
    assert status.state == "succeeded", status
    assert status.metrics == {"loss": 1 / 3, "step": 2.0} and status.metrics_seq == 3
    page = await backend.metrics(sub.id, after=1, limit=1)
    assert [(x.seq, x.metrics["step"]) for x in page.lines] == [(2, 1.0)] and page.last_seq == 3
    assert (await backend.metrics(sub.id, after=3, limit=10)).lines == []
    # The agent's trial layout on the node, and Ray was asked for the trial's CPUs.
    trial_dir = ray_cluster.workdir / "trials" / sub.id
    assert (trial_dir / "metrics.jsonl").read_text().count("\n") == 3
    assert "env 3 3" in (trial_dir / "stderr.log").read_text()
    job = await ray_job(ray_cluster, job_name(sub.id, 1))
    assert job["metadata"]["hbd_trial_id"] == sub.id
    # The job's supervisor actor holds what the entrypoint asked for.
    async with httpx.AsyncClient() as http:
        actors = (
            await http.get(f"{ray_cluster.dashboard}/api/v0/actors", params={"detail": "true"})
        ).json()["data"]["result"]["result"]
    (actor,) = [a for a in actors if a.get("name", "").endswith(job_name(sub.id, 1))]
    assert actor["required_resources"].get("CPU") == 0.5, actor


async def test_a_repeated_submit_is_the_same_trial_and_a_changed_one_is_refused(
    backend: ExecutorBackend, tmp_path: Path
) -> None:
    marks_file = tmp_path / "marks"
    sub = submission(lines=2, sleep=0.2, marks=marks_file)
    await backend.submit(sub)
    again = await backend.submit(sub.model_copy(update={"callback_url": "http://127.0.0.1:9/cb"}))
    assert again.id == sub.id
    with pytest.raises(ExecutorRejected, match="different payload"):
        await backend.submit(sub.model_copy(update={"params": {"x": 1}}))
    assert (await finished(backend, sub.id)).state == "succeeded"
    assert (await backend.submit(sub)).state == "succeeded"  # finished: never run again
    assert len(marks(marks_file)) == 1


async def test_a_failing_trial_is_failed_with_its_exit_and_stderr(
    backend: ExecutorBackend,
) -> None:
    sub = submission().model_copy(
        update={"command": [sys.executable, "-c", "import sys; sys.exit('boom')"]}
    )
    await backend.submit(sub)
    status = await finished(backend, sub.id)
    assert status.state == "failed" and status.reason == "exit code 1"
    assert status.stderr_tail is not None and "boom" in status.stderr_tail


async def test_cancel_stops_the_trial_process(backend: ExecutorBackend, tmp_path: Path) -> None:
    marks_file = tmp_path / "marks"
    sub = submission(lines=1000, sleep=0.1, marks=marks_file)
    await backend.submit(sub)
    with anyio.fail_after(DEADLINE):
        while not marks(marks_file):
            await anyio.sleep(0.1)
    status = await backend.cancel(sub.id)
    assert status is not None and status.state == "cancelled"
    (pid,) = marks(marks_file)
    with anyio.fail_after(30):
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            await anyio.sleep(0.1)
    assert (await backend.cancel(sub.id)) == status or (
        await backend.cancel(sub.id)
    ).state == "cancelled"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


async def test_an_unknown_trial_is_not_found(backend: ExecutorBackend) -> None:
    with pytest.raises(NotFound):
        await backend.status("never-submitted")
    with pytest.raises(NotFound):
        await backend.metrics("never-submitted", after=0, limit=10)
    assert await backend.cancel("never-submitted") is None


async def test_a_new_backend_reattaches_to_a_running_trial(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    marks_file = tmp_path / "marks"
    sub = submission(lines=8, sleep=0.3, marks=marks_file)
    first = backend_for(ray_cluster.url)
    try:
        await first.submit(sub)
        with anyio.fail_after(DEADLINE):
            while not marks(marks_file):
                await anyio.sleep(0.1)
    finally:
        await first.aclose()  # the daemon is gone; the trial goes on
    second = backend_for(ray_cluster.url)  # a restarted daemon
    try:
        running = await second.status(sub.id)
        assert running.state == "running" and running.id == sub.id
        assert (await second.submit(sub)).state in ("running", "succeeded")  # adopted, not rerun
        status = await finished(second, sub.id)
        assert status.state == "succeeded" and status.metrics_seq == 8
        assert len((await second.metrics(sub.id, after=0, limit=100)).lines) == 8
    finally:
        await second.aclose()
    assert len(marks(marks_file)) == 1  # started once


async def test_a_later_run_of_a_trial_is_a_new_job(backend: ExecutorBackend) -> None:
    sub = submission(lines=1)
    await backend.submit(sub)
    assert (await finished(backend, sub.id)).run == 1
    rerun = sub.model_copy(update={"run": 2})
    assert (await backend.submit(rerun)).run == 2
    status = await finished(backend, sub.id)
    assert status.run == 2 and status.state == "succeeded"


def _loopback(hex_addr: str) -> bool:
    host = hex_addr.split(":")[0]
    return host in (
        "0100007F",  # 127.0.0.1
        "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
        "00000000000000000000000001000000",  # ::1
    )


def test_every_port_of_the_cluster_listens_on_loopback_only(ray_cluster: Cluster) -> None:
    inodes: set[str] = set()
    for pid in descendants(ray_cluster.pid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_link.startswith("socket:["):
                    inodes.add(with_link[8:-1])
        except OSError:
            continue
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, ours
                listening.append(fields[1])
    port = int(ray_cluster.dashboard.rsplit(":", 1)[1])
    assert any(int(a.rsplit(":", 1)[1], 16) == port for a in listening)
    assert len(listening) >= 5  # gcs, dashboard, raylet, agents...
    assert [a for a in listening if not _loopback(a)] == []


async def _sweep(opts: DaemonOptions, log: Path) -> tuple[list[dict[str, Any]], Any]:
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            r = await client.post("/v1/sweeps", content=sweep_yaml(log, max_iterations=3, seed=7))
            assert r.status_code == 201, r.text
            sweep_id = r.json()["id"]
            with anyio.fail_after(300):
                while True:
                    detail = (await client.get(f"/v1/sweeps/{sweep_id}")).json()
                    if detail["status"] not in ("running", "stopping"):
                        break
                    await anyio.sleep(0.2)
            trials = (await client.get(f"/v1/sweeps/{sweep_id}/trials")).json()
        tg.cancel_scope.cancel()
    # What the sweep decided (configs, resources, promotions, verdicts), not where or when.
    keep = ("id", "config", "resource", "parent", "status", "metric")
    same = json.loads(
        json.dumps([{k: t.get(k) for k in keep} for t in trials]).replace(sweep_id, "SW")
    )
    decisions = json.loads(
        json.dumps(
            [detail["status"], detail["brackets"], {k: detail["best"][k] for k in keep}]
        ).replace(sweep_id, "SW")
    )
    return sorted(same, key=lambda t: t["id"]), decisions


async def test_a_sweep_on_ray_is_the_sweep_on_the_local_agent(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    on_ray = await _sweep(
        DaemonOptions(db=tmp_path / "ray.db", port=0, executors=[ray_cluster.url]),
        tmp_path / "ray.jsonl",
    )
    local = await _sweep(
        DaemonOptions(db=tmp_path / "local.db", port=0, local_slots=2, workdir=tmp_path / "ex"),
        tmp_path / "local.jsonl",
    )
    assert on_ray[1][0] == "succeeded"
    assert on_ray == local
    starts = [e for e in read_log(tmp_path / "ray.jsonl") if e["what"] == "start"]
    assert len(starts) == len(on_ray[0])  # each trial ran once, on Ray
