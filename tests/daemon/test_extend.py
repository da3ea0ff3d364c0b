"""hbd extend: more Hyperband iterations for a running sweep, logged and replayable."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from hbd.api.routes import create_app
from hbd.core.replay import REPLAY_TYPES, replay
from hbd.daemon.extend import CannotExtend, extend
from hbd.errors import NotFound
from tests.daemon.helpers import FakeExecutor, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


async def test_a_running_sweep_runs_its_extra_iteration_and_replays(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=2, finish_on_submit=True)
    arrived, gate = anyio.Event(), anyio.Event()

    async def gated(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/trials":
            arrived.set()
            await gate.wait()  # the sweep is running while it is extended
        return await executor.handler(request)

    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=1)
    async with running_daemon(tmp_path / "hbd.db", gated) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="ext")
        with anyio.fail_after(10):
            await arrived.wait()
        with pytest.raises(ValueError, match="limit"):
            await extend(daemon, sweep_id, 1000)  # 1001 in all
        assert await extend(daemon, sweep_id, 1) == 2
        gate.set()
        assert await wait_finished(daemon, sweep_id) == "succeeded"
        with pytest.raises(CannotExtend, match="succeeded"):
            await extend(daemon, sweep_id, 1)
        with pytest.raises(NotFound):
            await extend(daemon, "nope", 1)
        # The route maps each refusal to its status, with the reason.
        app = create_app(daemon)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hbd"
        ) as http:
            done = await http.post(f"/v1/sweeps/{sweep_id}/extend", params={"iterations": 1})
            assert done.status_code == 409 and "succeeded" in done.json()["detail"]
            missing = await http.post("/v1/sweeps/nope/extend")
            assert missing.status_code == 404
            bad = await http.post(f"/v1/sweeps/{sweep_id}/extend", params={"iterations": 0})
            assert bad.status_code == 422
        events = await daemon.store.read_after(0, sweep_id=sweep_id, types=REPLAY_TYPES)
        markers = await daemon.store.read_after(0, sweep_id=sweep_id, types={"bracket.started"})
    # Every bracket of both iterations is announced once; the second's say so.
    assert [(m.payload["bracket"], m.payload.get("iteration", 0)) for m in markers] == [
        (2, 0),
        (1, 0),
        (0, 0),
        (2, 1),
        (1, 1),
        (0, 1),
    ]
    assert [e.payload for e in events if e.type == "sweep.extended"] == [{"iterations": 1}]
    second = [t for t in executor.submissions if t.startswith("ext-i1-")]
    first = [t for t in executor.submissions if not t.startswith("ext-i1-")]
    assert second and len(second) == len(first)  # one more iteration of the same plan
    machine = replay(sweep_id, events)
    assert machine.finished is not None and machine.scheduler.iterations == 2
