"""A real daemon (real SQLite, real HTTP on 127.0.0.1) for hostile-input tests."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hbd.api.server import DaemonOptions, Running, serve_daemon
from hbd.core.limits import SpecLimits
from tests.test_service import notify_socket, procs  # noqa: F401 (fixtures: real services)

# /healthz must answer within this while a hostile request is being refused
# (issue 10: "the service stays responsive").
HEALTHZ_DEADLINE = 1.0
# Generous: a hostile request is refused in well under a second, but CI
# machines are shared.
REFUSAL_TIMEOUT = 60.0
# The fuzzed daemon's plan limit: small, so that a fuzzed valid spec starts in
# milliseconds (the limit itself is tested in test_resource_bombs.py).
FUZZ_MAX_TRIAL_RUNS = 500


@dataclass
class Live:
    running: Running
    http: httpx.AsyncClient
    tmp: Path


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with anyio.create_task_group() as tg:
        opts = DaemonOptions(db=tmp_path / "hbd.db", port=0)
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=REFUSAL_TIMEOUT) as http:
            yield Live(running, http, tmp_path)
        tg.cancel_scope.cancel()


async def while_healthy(
    http: httpx.AsyncClient, request: Awaitable[Any], deadline: float = HEALTHZ_DEADLINE
) -> tuple[Any, float]:
    """Await ``request`` while polling /healthz; return its result and the slowest health answer.

    Fails if any health answer takes longer than ``deadline``.
    """
    result: list[Any] = []
    slowest = 0.0

    async def hostile() -> None:
        result.append(await request)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hostile)
        while not result:
            start = time.monotonic()
            with anyio.fail_after(deadline * 5):  # fail loudly, not hang
                r = await http.get("/healthz")
            took = time.monotonic() - start
            assert r.status_code == 200
            slowest = max(slowest, took)
            await anyio.sleep(0.02)
    assert slowest < deadline, f"/healthz took {slowest:.2f}s during a hostile request"
    return result[0], slowest


@pytest.fixture(scope="module")
def daemon_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real daemon served from a background thread, for synchronous (hypothesis) tests.

    No executors: submitted sweeps queue their trials and nothing runs. Plans
    are capped at FUZZ_MAX_TRIAL_RUNS so a fuzzed spec never plans for long.
    """
    db = tmp_path_factory.mktemp("fuzz") / "hbd.db"
    urls: queue.Queue[str | BaseException] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            opts = DaemonOptions(
                db=db, port=0, spec_limits=SpecLimits(max_trial_runs=FUZZ_MAX_TRIAL_RUNS)
            )
            running = await tg.start(serve_daemon, opts)
            urls.put(running.url)
            while not stop.is_set():
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    def thread_main() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:  # handed to the test, never lost
            urls.put(exc)

    thread = threading.Thread(target=thread_main, name="fuzz-daemon")
    thread.start()
    try:
        first = urls.get(timeout=REFUSAL_TIMEOUT)
        if isinstance(first, BaseException):
            raise first
        yield first
    finally:
        stop.set()
        thread.join(timeout=REFUSAL_TIMEOUT)
        assert not thread.is_alive(), "the fuzz daemon did not stop"
