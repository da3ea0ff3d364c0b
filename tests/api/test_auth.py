"""Bearer tokens on the daemon's API, its executors and their callbacks."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from hbd import logs
from hbd.api.server import DaemonOptions, Running, serve_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-" + "0123456789abcdef" * 2
WRONG = "wrong-token-" + "fedcba9876543210" * 2


@dataclass
class Guarded:
    running: Running
    http: httpx.AsyncClient  # no credentials
    log: io.StringIO
    tmp: Path


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Guarded]:
    out = io.StringIO()
    logs.configure("debug", "json", stream=out, secrets=[TOKEN])
    try:
        async with anyio.create_task_group() as tg:
            opts = DaemonOptions(db=tmp_path / "hbd.db", port=0, local_slots=2, token=TOKEN)
            running = await tg.start(serve_daemon, opts)
            async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
                yield Guarded(running, http, out, tmp_path)
            tg.cancel_scope.cancel()
    finally:
        logs.reset()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_is_open_everything_else_needs_the_token(guarded: Guarded) -> None:
    assert (await guarded.http.get("/healthz")).status_code == 200
    for method, path in [
        ("GET", "/v1/sweeps"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/callbacks"),
        ("GET", "/nowhere"),
    ]:
        r = await guarded.http.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
        r = await guarded.http.request(method, path, headers=bearer(WRONG))
        assert r.status_code == 401, (method, path)
    assert (await guarded.http.get("/v1/sweeps", headers=bearer(TOKEN))).status_code == 200
    assert (await guarded.http.get("/metrics", headers=bearer(TOKEN))).status_code == 200


async def test_unauthenticated_submit_changes_nothing(guarded: Guarded) -> None:
    spec = sweep_yaml(guarded.tmp / "trials.jsonl")
    for headers in (
        {},
        bearer(WRONG),
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        r = await guarded.http.post("/v1/sweeps", content=spec, headers=headers)
        assert r.status_code == 401
    store = guarded.running.daemon.store
    assert await store.list_sweeps() == [] and await store.event_count() == 0
    r = await guarded.http.post("/v1/sweeps", content=spec, headers=bearer(TOKEN))
    assert r.status_code == 201
    assert len(await store.list_sweeps()) == 1


async def test_a_full_sweep_with_tokens_never_logs_the_token(guarded: Guarded) -> None:
    # The daemon sends the token to its executor, the executor sends it back
    # with every callback; refused requests are logged; none of it shows the token.
    await guarded.http.get("/v1/sweeps", headers=bearer(WRONG))
    await guarded.http.get(f"/v1/sweeps?token={TOKEN}", headers=bearer(TOKEN + "x"))
    r = await guarded.http.post(
        "/v1/sweeps", content=sweep_yaml(guarded.tmp / "trials.jsonl"), headers=bearer(TOKEN)
    )
    sweep_id = r.json()["id"]
    with anyio.fail_after(60):
        while True:
            detail = (
                await guarded.http.get(f"/v1/sweeps/{sweep_id}", headers=bearer(TOKEN))
            ).json()
            if detail["status"] not in ("running", "stopping"):
                break
            await anyio.sleep(0.1)
    assert detail["status"] == "succeeded"
    executor = guarded.running.daemon.pool.executors["local"]
    # The executor itself refuses requests without the token.
    async with httpx.AsyncClient(base_url=executor.client.url) as raw:
        assert (await raw.get("/v1/trials")).status_code == 401
        assert (await raw.get("/v1/trials", headers=bearer(WRONG))).status_code == 401
        assert (await raw.get("/v1/health")).status_code == 200

    text = guarded.log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any("refused" in line["event"] for line in lines)
    assert any(
        line.get("logger") == "uvicorn.access" and "callbacks" in line["event"] for line in lines
    )
    assert TOKEN not in text
    assert TOKEN[:24] not in text
    for line in lines:  # every line about a trial names its sweep
        if "trial_id" in line:
            assert line["sweep_id"] == line["trial_id"].rsplit("-", 3)[0]


async def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a bearer token"):
        await serve_daemon(DaemonOptions(db=tmp_path / "hbd.db", host="0.0.0.0", port=0))
    assert not (tmp_path / "hbd.db").exists()  # refused before anything was opened


async def test_without_a_token_loopback_is_open(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, DaemonOptions(db=tmp_path / "hbd.db", port=0))
        async with httpx.AsyncClient(base_url=running.url) as http:
            assert (await http.get("/v1/sweeps")).status_code == 200
        tg.cancel_scope.cancel()


async def test_oversized_bodies_are_refused_before_the_route(tmp_path: Path) -> None:
    opts = DaemonOptions(db=tmp_path / "hbd.db", port=0, token=TOKEN, max_request_bytes=2048)
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, headers=bearer(TOKEN)) as http:
            r = await http.post("/v1/sweeps", content=b"x" * 4096)
            assert r.status_code == 413
        assert await running.daemon.store.event_count() == 0
        tg.cancel_scope.cancel()
