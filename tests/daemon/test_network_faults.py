"""Faults between daemon and executor, injected by a transport wrapping the real one.

A real daemon and a real local executor agent with real trial processes; every
daemon -> executor request passes through ``FaultyTransport``, which (seeded)
refuses to connect, answers 503 without forwarding, forwards and then loses
the answer (a 502, a read timeout, a dropped connection), or forwards slowly.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from hbd.api.server import LOCAL_EXECUTOR, DaemonOptions, serve_daemon
from hbd.daemon.executors import MAX_ATTEMPTS
from tests.crash.harness import expected_outcome, outcome, trial_starts
from tests.e2e.conftest import sweep_yaml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FAULTS = ("connect", "503", "lost-502", "lost-timeout", "lost-drop", "slow")


class FaultyTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport; each request meets a fault with probability ``rate``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, rate: float, seed: int) -> None:
        self.inner = inner
        self.rate = rate
        self.rng = random.Random(seed)
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.lost_submits = 0  # submits the executor received whose answer was lost

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        if fault is not None:
            self.faults[fault] += 1
            if (
                fault.startswith("lost")
                and request.method == "POST"
                and request.url.path == "/v1/trials"
            ):
                self.lost_submits += 1
        if fault == "connect":
            raise httpx.ConnectError("injected: connection refused", request=request)
        if fault == "503":
            return httpx.Response(503, json={"detail": "injected"})
        if fault == "slow":
            await anyio.sleep(self.rng.uniform(0.05, 0.3))
        response = await self.inner.handle_async_request(request)
        if fault is None or fault == "slow":
            return response
        await response.aread()  # the executor did the work; its answer is lost on the way
        await response.aclose()
        if fault == "lost-502":
            return httpx.Response(502, json={"detail": "injected"})
        if fault == "lost-timeout":
            raise httpx.ReadTimeout("injected: timed out", request=request)
        raise httpx.ReadError("injected: connection reset", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_sweep_completes_through_network_faults_and_nothing_runs_twice(
    tmp_path: Path,
) -> None:
    trials_log = tmp_path / "trials.jsonl"
    text = sweep_yaml(trials_log, max_iterations=27, concurrency=4)
    transport = FaultyTransport(httpx.AsyncHTTPTransport(), rate=0.5, seed=5)
    opts = DaemonOptions(
        db=tmp_path / "hbd.db",
        port=0,
        local_slots=4,
        workdir=tmp_path / "executor",
        transport=transport,
    )
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        daemon = running.daemon
        try:
            sweep_id, _ = await daemon.submit(text, sweep_id="net")
            with anyio.fail_after(60):
                while not (sweep := await daemon.store.get_sweep(sweep_id)) or not sweep.finished:
                    await anyio.sleep(0.05)
            client = daemon.pool.executors[LOCAL_EXECUTOR].client
            attempts, calls = client.attempts, client.calls
        finally:
            tg.cancel_scope.cancel()
    assert sum(transport.faults.values()) >= 20 and set(transport.faults) == set(FAULTS)
    assert transport.lost_submits >= 3  # the retries that could have started a trial twice
    assert attempts == transport.requests  # every attempt went through the transport
    assert calls <= attempts <= calls * MAX_ATTEMPTS
    starts = trial_starts(trials_log)
    assert set(starts.values()) == {1}, f"a trial ran twice: {starts.most_common(3)}"
    outcome(opts.db, sweep_id).same_as(expected_outcome(text, sweep_id))
