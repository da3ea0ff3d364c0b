"""Event streams of a real sweep: real daemon, executor agent and trial processes."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hbd.client import Client, Event, SSEDecoder
from tests.e2e.conftest import Live, sweep_yaml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DISCONNECTS = 50


async def log_of(live: Live, sweep_id: str) -> list[Any]:
    store = live.running.daemon.store
    return await store.read_after(0, sweep_id=sweep_id, limit=10_000)


async def test_fifty_random_disconnects_lose_and_repeat_nothing(live: Live, tmp_path: Path) -> None:
    r = await live.client.post(
        "/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl", max_iterations=27, sleep=0.05)
    )
    sweep_id = r.json()["id"]
    rng = random.Random(5)
    seen: list[int] = []
    last: int | None = None
    reconnects = 0
    finished = False
    with anyio.fail_after(120):
        while not finished:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            # cut after a few events, or after a moment (mid-stream, maybe mid-frame)
            cut_after = rng.randint(1, 8) if reconnects < DISCONNECTS else None
            decoder = SSEDecoder()
            with anyio.move_on_after(rng.uniform(0.01, 0.3) if cut_after else 60):
                async with live.client.stream(
                    "GET", f"/v1/sweeps/{sweep_id}/events", headers=headers
                ) as resp:
                    if resp.status_code == 204:
                        break
                    taken = 0
                    async for line in resp.aiter_lines():
                        frame = decoder.feed(line)
                        if frame is None:
                            continue
                        data = json.loads(frame[2])
                        seen.append(data["seq"])
                        last = data["seq"]
                        taken += 1
                        if data["type"] == "sweep.finished":
                            finished = True
                            break
                        if cut_after is not None and taken >= cut_after:
                            break
            reconnects += 1
    assert reconnects > DISCONNECTS
    log = await log_of(live, sweep_id)
    assert seen == [e.seq for e in log]  # every event exactly once, in log order
    assert log[-1].type == "sweep.finished"


class CuttingTransport(httpx.AsyncBaseTransport):
    """Passes requests through; every response body is cut after a random number of bytes."""

    def __init__(self, rng: random.Random) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rng = rng
        self.cuts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if "/events" not in request.url.path or response.status_code != 200:
            return response
        # above the first event (sweep.submitted carries the spec, ~3 KB), so each
        # connection brings something and the client reconnects at once
        budget = self.rng.randint(4000, 8000)
        transport = self

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                sent = 0
                async for chunk in response.stream:  # type: ignore[union-attr]
                    if sent + len(chunk) > budget:
                        yield chunk[: budget - sent]
                        transport.cuts += 1
                        raise httpx.RemoteProtocolError("cut by the test")
                    sent += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await response.aclose()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Cut(), request=request
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_client_reconnects_by_itself(live: Live, tmp_path: Path) -> None:
    r = await live.client.post("/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl", sleep=0.05))
    sweep_id = r.json()["id"]
    transport = CuttingTransport(random.Random(7))
    got: list[Event] = []
    with anyio.fail_after(60):
        async with Client(live.url, transport=transport) as client:
            async for event in client.events(sweep_id):
                got.append(event)
    assert transport.cuts >= 3
    assert [e.seq for e in got] == [e.seq for e in await log_of(live, sweep_id)]
    assert got[-1].type == "sweep.finished"


async def test_metrics_reported_while_running_reach_the_stream(live: Live, tmp_path: Path) -> None:
    r = await live.client.post(
        "/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl", mode="sleep", concurrency=2)
    )
    sweep_id = r.json()["id"]
    types: list[str] = []
    metrics: list[Event] = []
    with anyio.fail_after(60):
        async with Client(live.url) as client, aclosing(client.events(sweep_id)) as events:
            async for event in events:
                types.append(event.type)
                if event.type == "trial.metrics" and not metrics:
                    metrics.append(event)
                    await client.cancel(sweep_id)  # the trials sleep for minutes
    assert metrics[0].payload["metrics"] == {"loss": 1.0}
    assert metrics[0].trial_id
    assert types.index("trial.running") < types.index("trial.metrics")
    assert "sweep.stop_requested" in types and types[-1] == "sweep.finished"


async def test_all_sweeps_stream_carries_every_sweep(live: Live, tmp_path: Path) -> None:
    ids = []
    for seed in (1, 2):
        r = await live.client.post(
            "/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl", seed=seed)
        )
        ids.append(r.json()["id"])
    for sweep_id in ids:
        await live.wait_finished(sweep_id)
    async with Client(live.url) as client:
        got = [e async for e in client.events(after=0, follow=False)]
    store = live.running.daemon.store
    assert [e.seq for e in got] == [e.seq for e in await store.read_after(0, limit=10_000)]
    assert {e.sweep_id for e in got} == set(ids)


async def test_cli_events_and_watch(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hbd.cli import main

    r = await live.client.post("/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl"))
    sweep_id = r.json()["id"]
    code = await anyio.to_thread.run_sync(main, ["watch", sweep_id, "--url", live.url])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"sweep {sweep_id}  succeeded" in out and "best loss" in out and "rung 0: promoted" in out
    )
    code = await anyio.to_thread.run_sync(
        main, ["events", sweep_id, "--json", "--type", "rung.decided", "--url", live.url]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert {e["type"] for e in lines} == {"rung.decided", "sweep.finished"}
    code = await anyio.to_thread.run_sync(
        main, ["events", "--no-follow", "--after", "0", "--url", live.url]
    )
    out = capsys.readouterr().out
    assert code == 0 and "sweep.submitted" in out and "sweep.finished" in out
    code = await anyio.to_thread.run_sync(main, ["events", "nope", "--url", live.url])
    assert code == 2 and "no sweep nope" in capsys.readouterr().err
