"""Stopping a sweep while its trials are on their way: nothing starts, nothing is left running."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from hbd.daemon.clock import FakeClock
from hbd.daemon.executors import MAX_ATTEMPTS
from tests.daemon.helpers import FakeExecutor, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


def _is_submit(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/v1/trials"


async def test_a_trial_whose_post_is_in_flight_is_cancelled_once_it_returns(
    tmp_path: Path,
) -> None:
    executor = FakeExecutor(slots=1)
    arrived, gate = anyio.Event(), anyio.Event()

    async def slow_submit(request: httpx.Request) -> httpx.Response:
        if _is_submit(request):
            arrived.set()
            await gate.wait()  # the cancel comes while the POST is on its way
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=1)
    async with running_daemon(tmp_path / "hbd.db", slow_submit) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="race")
        with anyio.fail_after(10):
            await arrived.wait()
        assert await daemon.cancel(sweep_id)
        await anyio.sleep(0.05)  # the cancel reached the executor before the trial did
        gate.set()
        assert await wait_finished(daemon, sweep_id, timeout=10) == "stopped"
    assert len(executor.trials) == 1
    assert {s.state for s in executor.trials.values()} == {"cancelled"}


async def test_a_failed_post_of_a_stopping_sweep_is_not_sent_again(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=1)
    arrived, gate = anyio.Event(), anyio.Event()
    refused = 0

    async def refused_after_stop(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if _is_submit(request) and refused < MAX_ATTEMPTS:  # the client's every retry
            refused += 1
            arrived.set()
            await gate.wait()
            raise httpx.ConnectError("injected: refused", request=request)
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=1)
    async with running_daemon(tmp_path / "hbd.db", refused_after_stop, clock=FakeClock()) as d:
        sweep_id, _ = await d.submit(text, sweep_id="again")
        with anyio.fail_after(10):
            await arrived.wait()
        assert await d.cancel(sweep_id)
        await anyio.sleep(0.05)
        gate.set()
        assert await wait_finished(d, sweep_id, timeout=10) == "stopped"
        await anyio.sleep(0.1)  # a wrongly re-queued trial would be sent by now
    assert not executor.trials, "a trial of a stopped sweep was started"


async def test_a_trial_its_executor_forgot_is_not_resent_when_the_sweep_stops(
    tmp_path: Path,
) -> None:
    executor = FakeExecutor(slots=2)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=2)
    async with running_daemon(tmp_path / "hbd.db", executor, clock=FakeClock()) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="forgot")
        with anyio.fail_after(10):
            while len(executor.running()) < 2:
                await anyio.sleep(0.005)
        await anyio.sleep(0.05)
        executor.trials.clear()  # its disk is gone: cancels and polls get 404
        assert await daemon.cancel(sweep_id)
        assert await wait_finished(daemon, sweep_id, timeout=10) == "stopped"
        await anyio.sleep(0.1)
    assert not executor.trials, "a forgotten trial of a stopping sweep was sent again"
    assert set(executor.starts.values()) == {1}
