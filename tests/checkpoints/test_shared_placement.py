"""Shared checkpoints with two real agents: a promotion runs where its parent did not.

Two agents on 127.0.0.1 with one slot each, a ``file://`` checkpoint store,
a ``resume: true`` sweep run one trial at a time. The last trial of the
first rung waits on a gate; meanwhile the test stops the agent its best
trial (the one to be promoted) ran on. The promotion must then run on the
other agent and resume from its parent's checkpoint, downloaded from the
store. Without shared checkpoints it would wait for its parent's agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup, TaskStatus

from hbd.api.agent_routes import serve_agent
from hbd.api.server import DaemonOptions, serve_daemon
from tests.checkpoints.conftest import CHECKPOINT_BYTES, ckpt_spec, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def start_agent(tg: TaskGroup, workdir: Path) -> tuple[str, anyio.CancelScope]:
    """A real agent with one slot; cancelling the scope stops it (and its trials)."""
    scope = anyio.CancelScope()

    async def run(*, task_status: TaskStatus[int]) -> None:
        with scope:
            await serve_agent("127.0.0.1", 0, workdir, 1, task_status=task_status)

    port = await tg.start(run)
    return f"http://127.0.0.1:{port}", scope


def by_suffix(trials: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    (found,) = [t for t in trials if t["id"].endswith(suffix)]
    return found


async def test_a_promotion_runs_on_another_agent_and_resumes_from_the_shared_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    gate = tmp_path / "gate"
    async with anyio.create_task_group() as tg:
        a, stop_a = await start_agent(tg, tmp_path / "a")
        b, stop_b = await start_agent(tg, tmp_path / "b")
        stops = {a: stop_a, b: stop_b}
        opts = DaemonOptions(
            db=tmp_path / "hbd.db",
            port=0,
            executors=[a, b],
            checkpoints=f"file://{store}",
            checkpoints_keep="all",
            lost_after=2.0,  # the gated trial, if on the stopped agent, is lost quickly
        )
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
            spec = ckpt_spec(max_iterations=3, concurrency=1, gate=gate, gated="-s1-r0-c2")
            response = await client.post("/v1/sweeps", content=spec)
            assert response.status_code in (200, 201), response.text
            sweep_id = response.json()["id"]
            path = f"/v1/sweeps/{sweep_id}"

            def parent_done_gated_running(trials: list[dict[str, Any]]) -> bool:
                ids = {t["id"][len(sweep_id) :]: t for t in trials}
                parent, gated = ids.get("-s1-r0-c0"), ids.get("-s1-r0-c2")
                return (
                    parent is not None
                    and parent["status"] == "succeeded"
                    and parent["executor"] is not None
                    and gated is not None
                    and gated["status"] == "running"
                )

            trials = await wait_for(client, f"{path}/trials", parent_done_gated_running)
            parent = by_suffix(trials, "-s1-r0-c0")
            # Its checkpoint is in the shared store, uploaded before its result.
            assert (store / parent["id"] / "weights.bin").stat().st_size == CHECKPOINT_BYTES
            stops[parent["executor"]].cancel()  # the parent's agent goes away for good
            gate.write_text("")
            detail = await wait_for(
                client, path, lambda d: d["status"] not in ("running", "stopping"), within=120
            )
            assert detail["status"] == "succeeded", detail
            trials = (await client.get(f"{path}/trials")).json()
        tg.cancel_scope.cancel()
    child = by_suffix(trials, "-s1-r1-c0")
    assert child["parent"] == parent["id"]
    assert child["status"] == "succeeded"
    assert child["executor"] not in (None, parent["executor"])
    # It read its parent's checkpoint, downloaded from the store to the other agent.
    assert child["metrics"]["resumed"] == CHECKPOINT_BYTES
    other = tmp_path / ("b" if parent["executor"] == a else "a")
    assert (other / "checkpoints" / parent["id"] / "weights.bin").is_file()
