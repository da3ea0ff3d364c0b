"""The Ray backend's own rules, without a cluster (httpx MockTransport at the HTTP seam)."""

from __future__ import annotations

import json

import httpx
import pytest

from hbd.daemon.backend import backend_for
from hbd.daemon.ray_backend import (
    MAX_RAY_SUBMISSION_BYTES,
    RayBackend,
    _Job,
    cpu_quantity,
    job_name,
)
from hbd.errors import ConfigError, ExecutorRejected, ExecutorUnavailable, NotFound
from hbd.protocol import ResourceValue, TrialResources, TrialSubmission
from hbd.settings import DaemonSettings

pytestmark = pytest.mark.anyio


def sub(**kw: object) -> TrialSubmission:
    fields: dict[str, object] = {
        "id": "t1",
        "sweep_id": "s",
        "command": ["true"],
        "resource": ResourceValue(name="epochs", value=1),
        **kw,
    }
    return TrialSubmission(**fields)  # type: ignore[arg-type]


def recording(answers: dict[str, httpx.Response]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        seen.append(key)
        return answers.get(key, httpx.Response(404, text="no such job"))

    return httpx.MockTransport(handle), seen


@pytest.mark.parametrize(("text", "cores"), [("2", 2.0), ("0.5", 0.5), ("500m", 0.5)])
def test_cpu_quantities(text: str, cores: float) -> None:
    assert cpu_quantity(text) == cores


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "lots", "m"])
def test_bad_cpu_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        cpu_quantity(text)


def test_a_ray_url_needs_a_host() -> None:
    with pytest.raises(ConfigError, match="ray://HOST:PORT"):
        backend_for("ray://")


def test_settings_take_ray_urls_and_still_refuse_others() -> None:
    settings = DaemonSettings(executors=["ray://head:8265?python=/v/bin/python"])
    assert settings.executors == ["ray://head:8265?python=/v/bin/python"]
    with pytest.raises(
        ValueError, match=r"is not an executor URL \(use http://, https://, ray://\)"
    ):
        DaemonSettings(executors=["ftp://x"])


async def test_an_oversized_submission_is_refused_before_anything_is_sent() -> None:
    transport, seen = recording({})
    backend = RayBackend("ray://127.0.0.1:8265", transport=transport)
    try:
        big = sub(env={"BLOB": "x" * MAX_RAY_SUBMISSION_BYTES})
        with pytest.raises(ExecutorRejected, match="MAX_RAY_SUBMISSION_BYTES"):
            await backend.submit(big)
        assert not [s for s in seen if s.startswith("POST")]
    finally:
        await backend.aclose()


async def test_the_job_asks_ray_for_the_trials_cpus_and_gpus() -> None:
    posted: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posted.append(json.loads(request.content))
            return httpx.Response(200, json={"submission_id": "x"})
        if request.url.path == f"/api/jobs/{job_name('t1', 1)}" and posted:
            return httpx.Response(
                200, json={"status": "PENDING", "metadata": posted[0]["metadata"]}
            )
        return httpx.Response(404)

    backend = RayBackend("ray://127.0.0.1:8265", transport=httpx.MockTransport(handle))
    try:
        limits = {"cpu": "1500m", "nvidia.com/gpu": "2"}
        status = await backend.submit(sub(resources=TrialResources(limits=limits)))
    finally:
        await backend.aclose()
    assert status.state == "running" and status.id == "t1"
    (body,) = posted
    assert body["entrypoint_num_cpus"] == 1.5 and body["entrypoint_num_gpus"] == 2
    assert body["submission_id"] == "hbd-t1-run1"


async def test_an_unreachable_cluster_is_unavailable_not_unknown() -> None:
    backend = backend_for("ray://127.0.0.1:1")
    try:
        with pytest.raises(ExecutorUnavailable):
            await backend.status("t1")
    finally:
        await backend.aclose()


async def test_a_cluster_without_the_trial_says_not_found() -> None:
    transport, _ = recording({"GET /api/jobs/": httpx.Response(200, json=[])})
    backend = RayBackend("ray://127.0.0.1:8265", transport=transport)
    try:
        with pytest.raises(NotFound):
            await backend.status("t1")
        assert await backend.cancel("t1") is None
    finally:
        await backend.aclose()


def test_log_lines_count_once_in_order_and_garbage_is_skipped() -> None:
    job = _Job(name="j", trial_id="t", run=1)
    for line in [
        "Running entrypoint for job j",
        '@hbd-metrics 1 {"loss": 1.0}',
        '@hbd-metrics 1 {"loss": 9.0}',  # again: ignored
        '@hbd-metrics 3 {"loss": 3.0}',  # a gap: ignored
        "@hbd-metrics x {}",
        '@hbd-metrics 2 {"loss": "NaN-ish"}',
        '@hbd-metrics 2 {"loss": 2.0}',
        "@hbd-status {not json",
    ]:
        RayBackend._parse_line(job, line)
    assert [(x.seq, x.metrics) for x in job.lines] == [(1, {"loss": 1.0}), (2, {"loss": 2.0})]
    assert job.metrics == {"loss": 2.0} and job.final is None
