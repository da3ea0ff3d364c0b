"""GET /metrics: Prometheus text with the daemon's state, one registry per daemon."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hbd.api.metrics import DaemonMetrics
from hbd.api.server import DaemonOptions, serve_daemon
from tests.e2e.conftest import sweep_yaml

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_after_a_sweep(tmp_path: Path) -> None:
    opts = DaemonOptions(db=tmp_path / "hbd.db", port=0, local_slots=3)
    async with anyio.create_task_group() as tg:
        running = await tg.start(serve_daemon, opts)
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            before = await http.get("/metrics")
            assert before.status_code == 200
            assert before.headers["content-type"].startswith("text/plain")
            m = samples(before.text)
            assert m[("hbd_sweeps", (("state", "running"),))] == 0
            assert m[("hbd_idle_slots", (("reason", "no_work"),))] == 3
            assert m[("hbd_executor_slots", (("executor", "local"),))] == 3
            assert m[("hbd_executor_up", (("executor", "local"),))] == 1
            assert m[("hbd_dispatch_latency_seconds_count", ())] == 0

            r = await http.post("/v1/sweeps", content=sweep_yaml(tmp_path / "t.jsonl"))
            sweep_id = r.json()["id"]
            with anyio.fail_after(60):
                while True:
                    if (await http.get(f"/v1/sweeps/{sweep_id}")).json()["status"] != "running":
                        break
                    await anyio.sleep(0.1)
            sub = running.daemon.bus.subscribe()  # a live event-stream consumer
            m = samples((await http.get("/metrics")).text)
            running.daemon.bus.unsubscribe(sub)
        tg.cancel_scope.cancel()

    assert m[("hbd_sweeps", (("state", "succeeded"),))] == 1
    assert m[("hbd_trials", (("state", "succeeded"),))] == 22  # maxIterations 9, eta 3
    assert m[("hbd_trials", (("state", "running"),))] == 0
    assert m[("hbd_dispatch_latency_seconds_count", ())] == 22
    assert m[("hbd_dispatch_latency_seconds_sum", ())] > 0
    assert m[("hbd_event_log_events", ())] >= 22 * 3
    assert m[("hbd_subscribers", ())] == 1
    assert m[("hbd_executor_slots_used", (("executor", "local"),))] == 0
    assert m[("hbd_queued_trials", ())] == 0
    assert any(name == "hbd_info" for name, _ in m)


async def test_each_daemon_has_its_own_registry(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        a = await tg.start(serve_daemon, DaemonOptions(db=tmp_path / "a.db", port=0))
        b = await tg.start(serve_daemon, DaemonOptions(db=tmp_path / "b.db", port=0))
        # A third collector set on one daemon does not clash with either.
        DaemonMetrics(a.daemon).dispatch_latency.observe(1.0)
        for url in (a.url, b.url):
            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/metrics")).status_code == 200
        tg.cancel_scope.cancel()
