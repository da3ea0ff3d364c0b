"""Review: a poll that crosses its trial's result must not send the ended trial again."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from hbd.daemon.app import Daemon
from tests.daemon.helpers import EXECUTOR, FakeExecutor, running_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


async def _ended(daemon: Daemon, sweep_id: str, trial_id: str) -> None:
    with anyio.fail_after(10):
        while not daemon.runners[sweep_id].machine.trials[trial_id].state.ended:
            await anyio.sleep(0.005)
        while trial_id in daemon.placement.flights:  # its end committed, its slot freed
            await anyio.sleep(0.005)


async def test_a_404_to_a_poll_that_crossed_the_result_does_not_send_the_trial_again(
    tmp_path: Path,
) -> None:
    # The poll is decided while the trial runs; its result comes by callback and
    # is committed while the poll is on its way; the agent has forgotten the
    # finished trial meanwhile (its cap of finished trials): 404. The trial ended:
    # it must not be queued and run a second time.
    executor = FakeExecutor(slots=8)
    daemon_box: list[Daemon] = []
    crossing: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        trial_id = request.url.path.split("/")[3] if request.url.path.count("/") >= 3 else ""
        if request.method == "GET" and trial_id in crossing:
            crossing.discard(trial_id)
            daemon = daemon_box[0]
            await daemon.on_update(executor.finish_update(trial_id))
            await _ended(daemon, "pr", trial_id)
            del executor.trials[trial_id]
            return httpx.Response(404, json={"detail": "unknown trial"})
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "u.jsonl", concurrency=None)
    async with running_daemon(tmp_path / "hbd.db", handler) as daemon:
        daemon_box.append(daemon)
        await daemon.submit(text, sweep_id="pr")
        with anyio.fail_after(10):
            while len(executor.running()) < 8:
                await anyio.sleep(0.005)
            while not all(t in daemon.placement.flights for t in executor.running()):
                await anyio.sleep(0.005)
        trial_id = sorted(executor.running())[0]
        crossing.add(trial_id)
        runner = daemon.runners["pr"]
        await daemon.reconciler._poll(runner, trial_id, EXECUTOR)
        await anyio.sleep(0.2)  # a resend would go out now (a free slot, a woken loop)
        assert trial_id not in daemon.placement.flights
        assert executor.posts[trial_id] == 1, "an ended trial was sent again"
