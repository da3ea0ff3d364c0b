"""The SSE routes against a real HTTP server and a real daemon with no executor.

The test plays the executor: it feeds the sweep's runner a result for each
scheduled trial, so the log grows exactly as the test says, and every stream
is read in finite mode (``follow=false``, or a sweep's stream, which ends
with the sweep).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from hbd.api.asgi import serve_app
from hbd.api.sse import StreamLimits, create_event_router, encode_comment, encode_event
from hbd.client import Client, Event, SSEDecoder
from hbd.core.events import TrialSucceeded
from hbd.daemon.app import Daemon
from hbd.daemon.bus import EventBus
from hbd.daemon.lifecycle import EVENT_TYPES
from hbd.daemon.runner import Observe
from hbd.store.log import StoredEvent, open_store
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio

LIMITS = StreamLimits(heartbeat=0.2, retry_ms=50, page=7, send_stall=2.0, max_subscribers=20)


@dataclass
class Served:
    url: str
    daemon: Daemon
    http: httpx.AsyncClient

    async def log(self, sweep_id: str | None = None) -> list[StoredEvent]:
        events = await self.daemon.store.read_after(0, sweep_id=sweep_id, limit=10_000)
        return events

    async def submit(self, tmp: Path, **kw: Any) -> str:
        sweep_id, _ = await self.daemon.submit(sweep_yaml(tmp / "t.jsonl", **kw))
        return sweep_id

    async def finish_one_rung_step(self, sweep_id: str) -> int:
        """Report a result for every trial still scheduled; returns how many."""
        runner = self.daemon.runners[sweep_id]
        pending = [t for t in runner.machine.trials.values() if not t.state.ended]
        for t in pending:
            loss = 1.0 / (1 + t.index) + 1.0 / float(t.resource)
            await runner.put(Observe(TrialSucceeded(trial_id=t.trial_id, metrics={"loss": loss})))
        return len(pending)

    async def run_to_end(self, sweep_id: str) -> None:
        with anyio.fail_after(30):  # generous: CI machines are shared
            while sweep_id in self.daemon.runners:
                await self.finish_one_rung_step(sweep_id)
                await anyio.sleep(0.02)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = await open_store(tmp_path / "hbd.db")
    async with store, anyio.create_task_group() as tg:
        daemon = Daemon(store)
        await tg.start(daemon.run)
        app = FastAPI()
        app.include_router(create_event_router(daemon, LIMITS))
        port = await tg.start(serve_app, app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Served(url, daemon, http)
        tg.cancel_scope.cancel()


async def read_stream(
    http: httpx.AsyncClient, path: str, *, headers: dict[str, str] | None = None, **params: Any
) -> tuple[int, list[dict[str, Any]], list[str]]:
    """(status, events as dicts, raw lines) of a stream read to its end."""
    events: list[dict[str, Any]] = []
    lines: list[str] = []
    decoder = SSEDecoder()
    with anyio.fail_after(30):
        async with http.stream("GET", path, params=params, headers=headers or {}) as r:
            async for line in r.aiter_lines():
                lines.append(line)
                frame = decoder.feed(line)
                if frame is not None:
                    data = json.loads(frame[2])
                    assert frame[0] == str(data["seq"]) and frame[1] == data["type"]
                    events.append(data)
            return r.status_code, events, lines


def seqs(events: list[Any]) -> list[int]:
    return [e["seq"] if isinstance(e, dict) else e.seq for e in events]


# ---- encoding ----


def test_a_frame_is_id_event_and_one_line_of_json() -> None:
    event = StoredEvent(
        seq=7,
        sweep_id="s",
        type="trial.failed",
        trial_id="s-0-0-0",
        payload={"reason": "boom\nline two"},
        at=1.5,
    )
    text = encode_event(event).decode()
    assert text.endswith("\n\n") and text.count("\n") == 4
    lines = text.splitlines()
    assert lines[0] == "id: 7" and lines[1] == "event: trial.failed"
    assert json.loads(lines[2].removeprefix("data: "))["payload"]["reason"] == "boom\nline two"
    assert encode_comment("a\nb") == b": a\n: b\n\n"


def test_the_decoder_reads_what_the_encoder_writes() -> None:
    event = StoredEvent(
        seq=3, sweep_id="s", type="rung.decided", trial_id=None, payload={"x": 1}, at=2.0
    )
    decoder = SSEDecoder()
    raw = "retry: 2000\n\n: heartbeat\n\n" + encode_event(event).decode()
    frames = [f for f in map(decoder.feed, raw.split("\n")) if f is not None]
    assert decoder.retry_ms == 2000
    assert [(f[0], f[1]) for f in frames] == [("3", "rung.decided")]


# ---- replay ----


async def test_replay_of_a_finished_sweep_is_its_log_then_the_end(
    served: Served, tmp_path: Path
) -> None:
    sweep_id = await served.submit(tmp_path)
    await served.run_to_end(sweep_id)
    log = await served.log(sweep_id)
    status, events, lines = await read_stream(served.http, f"/v1/sweeps/{sweep_id}/events")
    assert status == 200 and lines[0] == "retry: 50"
    assert seqs(events) == seqs(log)  # exactly the log, in order, across pages of 7
    assert events[-1]["type"] == "sweep.finished"
    assert [e["payload"] for e in events] == [e.payload for e in log]
    # from the middle, by Last-Event-ID (it wins over ?after=)
    middle = log[len(log) // 2].seq
    _, tail, _ = await read_stream(
        served.http,
        f"/v1/sweeps/{sweep_id}/events",
        headers={"Last-Event-ID": str(middle)},
        after=0,
    )
    assert seqs(tail) == [e.seq for e in log if e.seq > middle]
    # at the end: 204, which stops an EventSource from reconnecting
    r = await served.http.get(
        f"/v1/sweeps/{sweep_id}/events", headers={"Last-Event-ID": str(log[-1].seq)}
    )
    assert r.status_code == 204


async def test_lifecycle_markers_introduce_each_rung(served: Served, tmp_path: Path) -> None:
    sweep_id = await served.submit(tmp_path)
    await served.run_to_end(sweep_id)
    log = await served.log(sweep_id)
    types = [e.type for e in log]
    assert types[0] == "sweep.submitted" and types[-1] == "sweep.finished"
    assert set(types) <= EVENT_TYPES
    for i, event in enumerate(log):
        if event.type == "rung.started":
            ids = event.payload["trial_ids"]
            following = log[i + 1 : i + 1 + len(ids)]
            assert [e.type for e in following] == ["trial.scheduled"] * len(ids)
            assert [e.trial_id for e in following] == ids
            assert all(
                (e.payload["bracket"], e.payload["rung"])
                == (event.payload["bracket"], event.payload["rung"])
                for e in following
            )
    started = [(e.payload["bracket"], e.payload["rung"]) for e in log if e.type == "rung.started"]
    decided = [(e.payload["bracket"], e.payload["rung"]) for e in log if e.type == "rung.decided"]
    assert len(started) == len(set(started)) and sorted(started) == sorted(decided)
    brackets = [e.payload["bracket"] for e in log if e.type == "bracket.started"]
    assert sorted(brackets) == sorted({b for b, _ in started})
    # no executor at all: the daemon says why nothing runs, once, not per wake-up
    idle = [e.payload for e in log if e.type == "capacity.idle"]
    assert [p["reason"] for p in idle] == ["no_executor"]


async def test_type_filter_keeps_the_end_of_a_sweep(served: Served, tmp_path: Path) -> None:
    sweep_id = await served.submit(tmp_path)
    await served.run_to_end(sweep_id)
    log = await served.log(sweep_id)
    _, events, _ = await read_stream(
        served.http, f"/v1/sweeps/{sweep_id}/events", type=["rung.decided", "trial.succeeded"]
    )
    want = [e.seq for e in log if e.type in ("rung.decided", "trial.succeeded", "sweep.finished")]
    assert seqs(events) == want
    r = await served.http.get(f"/v1/sweeps/{sweep_id}/events", params={"type": "trial.nope"})
    assert r.status_code == 422 and "trial.nope" in r.json()["detail"]
    assert (await served.http.get("/v1/sweeps/nope/events")).status_code == 404
    r = await served.http.get("/v1/events", headers={"Last-Event-ID": "x"})
    assert r.status_code == 422


async def test_all_sweeps_in_finite_mode_stops_at_the_end_of_the_log(
    served: Served, tmp_path: Path
) -> None:
    a = await served.submit(tmp_path, seed=1)
    b = await served.submit(tmp_path, seed=2)
    await served.run_to_end(a)
    _, events, _ = await read_stream(served.http, "/v1/events", follow="false")
    assert seqs(events) == seqs(await served.log())
    assert {e["sweep_id"] for e in events} == {a, b}


# ---- the live tail ----


async def test_live_tail_follows_a_running_sweep_to_its_end(served: Served, tmp_path: Path) -> None:
    sweep_id = await served.submit(tmp_path)
    got: list[Event] = []

    async def consume() -> None:
        async with Client(served.url) as client:
            async for event in client.events(sweep_id, after=0):
                got.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(10):
            while not got:
                await anyio.sleep(0.01)
        await served.run_to_end(sweep_id)
    assert seqs(got) == seqs(await served.log(sweep_id))


async def test_idle_stream_gets_heartbeats(served: Served, tmp_path: Path) -> None:
    lines: list[str] = []
    with anyio.move_on_after(0.7):
        async with served.http.stream("GET", "/v1/events", params={"after": 10**9}) as r:
            async for line in r.aiter_lines():
                lines.append(line)
    assert lines.count(": heartbeat") >= 2


class OverflowingBus(EventBus):
    """Every commit overflows every subscriber once delivered, as a full buffer would.

    (A buffer of 0 overflowed only if a commit happened to land while the stream
    was not parked in receive, and the stream had to reach its live tail before
    the sweep ended: both depended on timing.)
    """

    def publish(self, events: Iterable[StoredEvent]) -> None:
        super().publish(events)  # delivered first, so a waiting stream wakes and sees it
        for sub in self._subs:
            sub.behind = True


async def test_a_subscriber_that_falls_behind_catches_up_from_the_log(
    served: Served, tmp_path: Path
) -> None:
    served.daemon.bus = OverflowingBus()
    sweep_id = await served.submit(tmp_path)
    got: list[dict[str, Any]] = []
    lines: list[str] = []

    async def slow_consumer() -> None:
        decoder = SSEDecoder()
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            async with http.stream("GET", f"/v1/sweeps/{sweep_id}/events") as r:
                async for line in r.aiter_lines():
                    lines.append(line)
                    frame = decoder.feed(line)
                    if frame is not None:
                        got.append(json.loads(frame[2]))
                        await anyio.sleep(0.01)

    async def caught_up() -> None:
        last = (await served.log(sweep_id))[-1].seq
        while not got or got[-1]["seq"] < last:
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_consumer)
        with anyio.fail_after(30):  # generous: CI machines are shared
            # Each step starts once the stream has caught up, so its commits
            # reach the stream in its live tail (where it can fall behind).
            while sweep_id in served.daemon.runners:
                await caught_up()
                await served.finish_one_rung_step(sweep_id)
                await anyio.sleep(0.02)
    assert seqs(got) == seqs(await served.log(sweep_id))
    assert any(line.startswith(": behind") for line in lines)


async def test_streams_end_when_the_daemon_stops(served: Served, tmp_path: Path) -> None:
    done = anyio.Event()

    async def consume() -> None:
        async with served.http.stream("GET", "/v1/events") as r:
            async for _ in r.aiter_lines():
                pass
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(5):
            while served.daemon.bus.subscribers == 0:
                await anyio.sleep(0.01)
        served.daemon.bus.close()
        with anyio.fail_after(5):
            await done.wait()
    r = await served.http.get("/v1/events")  # a closed bus: the stream is the replay, then ends
    assert r.status_code == 200


async def test_streams_beyond_the_cap_are_503_even_when_they_arrive_together(
    served: Served,
) -> None:
    # The cap counts streams accepted, not bus subscriptions (those begin only
    # once a response starts), so requests arriving at once cannot all get in.
    cap = 3
    app = FastAPI()
    app.include_router(create_event_router(served.daemon, replace(LIMITS, max_subscribers=cap)))
    statuses: list[int] = []
    got_all = anyio.Event()
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_app, app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"

        async def open_stream(http: httpx.AsyncClient) -> None:
            async with http.stream("GET", "/v1/events") as r:
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert "Retry-After" in r.headers
                if len(statuses) == cap + 4:
                    got_all.set()
                if r.status_code == 200:
                    await release.wait()

        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as clients:
                    for _ in range(cap + 4):
                        clients.start_soon(open_stream, http)
                    await got_all.wait()
                    assert sorted(statuses) == [200] * cap + [503] * 4
                    release.set()
                # Ended streams give their place back.
                status, _, _ = await read_stream(http, "/v1/events", follow="false")
                assert status == 200
        tg.cancel_scope.cancel()


def test_every_event_type_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    documented = {
        line.removeprefix("### `").removesuffix("`")
        for line in doc.splitlines()
        if line.startswith("### `")
    }
    assert documented == EVENT_TYPES
