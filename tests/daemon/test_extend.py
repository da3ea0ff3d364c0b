"""hbd extend: more Hyperband iterations for a running sweep, logged and replayable."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from hbd.api.routes import create_app
from hbd.core.replay import REPLAY_TYPES, replay
from hbd.daemon.extend import CannotExtend, extend
from hbd.errors import NotFound
from tests.daemon.helpers import FakeExecutor, running_daemon, wait_finished
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


async def test_a_running_then_a_finished_sweep_run_their_extra_iterations_and_replay(
    tmp_path: Path,
) -> None:
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
        with pytest.raises(NotFound):
            await extend(daemon, "nope", 1)
        # The route maps each refusal to its status, with the reason.
        app = create_app(daemon)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hbd"
        ) as http:
            missing = await http.post("/v1/sweeps/nope/extend")
            assert missing.status_code == 404
            bad = await http.post(f"/v1/sweeps/{sweep_id}/extend", params={"iterations": 0})
            assert bad.status_code == 422
            # A sweep that finished with every bracket done is reopened and runs again.
            again = await http.post(f"/v1/sweeps/{sweep_id}/extend", params={"iterations": 1})
            assert again.status_code == 202 and again.json()["iterations"] == 3
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            # Each iteration's brackets are counted apart: planned = trials, thrice.
            detail = (await http.get(f"/v1/sweeps/{sweep_id}")).json()
        assert [(b["iteration"], b["bracket"]) for b in detail["brackets"]] == [
            (i, b) for i in range(3) for b in (2, 1, 0)
        ]
        assert all(r["trials"] == r["planned"] for b in detail["brackets"] for r in b["rungs"])
        events = await daemon.store.read_after(0, sweep_id=sweep_id, types=REPLAY_TYPES)
        markers = await daemon.store.read_after(0, sweep_id=sweep_id, types={"bracket.started"})
        ends = await daemon.store.read_after(
            0, sweep_id=sweep_id, types={"sweep.extended", "sweep.finished"}
        )
    # Every bracket of every iteration is announced once; later ones say which.
    assert [(m.payload["bracket"], m.payload.get("iteration", 0)) for m in markers] == [
        (b, i) for i in range(3) for b in (2, 1, 0)
    ]
    extended = [e.payload for e in events if e.type == "sweep.extended"]
    assert extended == [{"iterations": 1}, {"iterations": 1}]
    kinds = [e.type for e in ends]
    assert kinds == ["sweep.extended", "sweep.finished", "sweep.extended", "sweep.finished"]
    first = [t for t in executor.submissions if "-i" not in t.removeprefix("ext")]
    for i in (1, 2):  # one more iteration of the same plan each time
        assert len([t for t in executor.submissions if t.startswith(f"ext-i{i}-")]) == len(first)
    machine = replay(sweep_id, events)
    assert machine.finished is not None and machine.scheduler.iterations == 3


async def test_a_stopped_sweep_is_not_extended(tmp_path: Path) -> None:
    executor = FakeExecutor(slots=1)
    text = sweep_yaml(tmp_path / "unused.jsonl", concurrency=1)
    async with running_daemon(tmp_path / "hbd.db", executor) as daemon:
        sweep_id, _ = await daemon.submit(text, sweep_id="stop")
        assert await daemon.cancel(sweep_id)
        assert await wait_finished(daemon, sweep_id) == "stopped"
        with pytest.raises(CannotExtend, match="stopped"):
            await extend(daemon, sweep_id, 1)
        events = await daemon.store.read_after(0, sweep_id=sweep_id, types={"sweep.extended"})
    assert events == []  # nothing was logged


async def test_a_bohb_sweep_extended_while_running_and_finished_ascends_after_the_first(
    tmp_path: Path,
) -> None:
    """bohb's later iterations run s = 0 first (tuner.params.order), whether
    planned at once, added to a running sweep or to a finished one; the
    bracket.started markers say so and the log replays."""
    executor = FakeExecutor(slots=2, finish_on_submit=True)
    arrived, gate = anyio.Event(), anyio.Event()

    async def gated(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/trials":
            arrived.set()
            await gate.wait()
        return await executor.handler(request)

    spec = yaml.safe_load(sweep_yaml(tmp_path / "unused.jsonl", concurrency=1))
    spec["matrix"]["tuner"] = {"hubRef": "bohb"}
    async with running_daemon(tmp_path / "hbd.db", gated) as daemon:
        sweep_id, _ = await daemon.submit(yaml.safe_dump(spec), sweep_id="bohb")
        with anyio.fail_after(10):
            await arrived.wait()
        assert await extend(daemon, sweep_id, 1) == 2
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(daemon)), base_url="http://hbd"
        ) as http:
            running = (await http.get(f"/v1/sweeps/{sweep_id}")).json()  # from the machine
            gate.set()
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            assert await extend(daemon, sweep_id, 1) == 3
            assert await wait_finished(daemon, sweep_id) == "succeeded"
            finished = (await http.get(f"/v1/sweeps/{sweep_id}")).json()  # from the log
        events = await daemon.store.read_after(0, sweep_id=sweep_id, types=REPLAY_TYPES)
        markers = await daemon.store.read_after(0, sweep_id=sweep_id, types={"bracket.started"})
    assert [(m.payload.get("iteration", 0), m.payload["bracket"]) for m in markers] == [
        (0, 2), (0, 1), (0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)
    ]  # fmt: skip
    # hbd status, hbd watch and the web page list the brackets as they ran.
    listed = [(b["iteration"], b["bracket"]) for b in finished["brackets"]]
    assert listed == [(m.payload.get("iteration", 0), m.payload["bracket"]) for m in markers]
    assert [(b["iteration"], b["bracket"]) for b in running["brackets"]] == listed[:6]
    assert running["bracket_order"] == finished["bracket_order"] == "ascending-after-first"
    machine = replay(sweep_id, events)
    assert machine.finished is not None and machine.scheduler.iterations == 3
